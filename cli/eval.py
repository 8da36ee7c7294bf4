"""`degrade eval`: how real does each degrader's LR look? A table, report.json and report.html.

Registered on the `degrade` group by `cli/degrade.py`; torch is imported inside the command body.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DIR, HR_PREP, LR_PREP, threads_option
from cli.progress import console, progress_bar, user_errors, warn_skipped


def print_tables(report: dict) -> None:
    """The realism table and the per-image statistics table, best degrader per column in bold green."""
    from rich.table import Table

    from degrader.eval_report import statistics_columns, summary_columns, table

    for title, columns in (
        ("realism (lower is better; relative: 1 = bicubic, 0 = real)", summary_columns(report["features"] is not None)),
        ("per-image statistics: 1-D Wasserstein distance to the real LR (lower is better)", statistics_columns()),
    ):
        header, rows, best = table(report, columns)
        t = Table(title=title, title_justify="left")
        for j, h in enumerate(header):
            t.add_column(h, justify="left" if j == 0 else "right")
        for i, row in enumerate(rows):
            cells = [f"[bold green]{c}[/]" if i in best.get(j, ()) else c for j, c in enumerate(row)]
            t.add_row(*cells, style="dim italic" if i == 0 else None)
        console.print(t)


@click.command("eval")
@click.option(
    "--degrader",
    "degraders",
    multiple=True,
    required=True,
    help="A `degrade fit` run or checkpoint, or bicubic, bilinear, blur-bilinear, realesrgan, bsrgan; repeat. "
    "bicubic is always included as the reference.",
)
@click.option("--hr", "hr", type=DIR, required=True, help="Folder of HR images to degrade (recursive).")
@click.option("--lr", "lr", type=DIR, required=True, help="Folder of real LR images: what the output should look like.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Report folder.")
@click.option(
    "--n", type=click.IntRange(min=8), default=1000, show_default=True, help="Images per set (2n real LR are drawn)."
)
@click.option(
    "--features",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TorchScript feature extractor (.pt) for FID/KID, called on images in [0, 1]; never downloaded. "
    "A features file is code and runs as written: give only files you trust.",
)
@click.option(
    "--features-size", type=click.IntRange(min=8), default=None, help="Resize images to this side for --features."
)
@click.option(
    "--features-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds the --features file's first call may take before eval stops with an error (it may never return).",
)
@HR_PREP
@LR_PREP
@click.option(
    "--hr-size", type=click.IntRange(min=8), default=64, show_default=True, help="HR side for classical degraders."
)
@click.option("--scale", type=click.IntRange(min=2), default=4, show_default=True, help="For classical degraders.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes image draw, noise and metrics.")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True, help="Where models run."
)
@threads_option(record=False)
@click.option("--overwrite", is_flag=True, help="Replace the report files in a non-empty --out.")
@click.option("--dry-run", is_flag=True, help="Load everything, print the plan, compute and write nothing.")
def eval_cmd(degraders: tuple[str, ...], out: Path, features: Path | None, dry_run: bool, **options) -> None:
    """Measure how real each degrader's LR images look against real LR images, beside the real-vs-real floor.

    
    Example:
      degrade eval --degrader runs/degrader --degrader bicubic --hr faces-hr --lr faces-lr --out eval-report
    """
    import time

    from degrader.eval_report import write_eval_report
    from degrader.evaluate import EvalConfig, evaluate_degraders, plan_evaluation

    config = EvalConfig(
        degraders=list(degraders),
        out=str(out),
        features=str(features) if features else None,
        **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
    )
    start = time.perf_counter()
    with user_errors():
        plan = plan_evaluation(config)
        warn_skipped("--hr", plan.hr.skipped)
        warn_skipped("--lr", plan.lr.skipped)
        lr_size = plan.hr_size // plan.scale
        console.print(
            f"{plan.n} HR images ({plan.hr_size}px, {config.hr_prep}) through {', '.join(plan.specs)}, against "
            f"2 x {plan.n} real LR images ({lr_size}px, {config.lr_prep})"
            + (f"; FID/KID features from {features}" if features else "")
        )
        if plan.n < config.n:
            console.print(f"[yellow]warning:[/] --n {config.n} reduced to {plan.n} by the folder sizes.")
        if dry_run:
            console.print("dry run: nothing computed or written.")
            return
        with progress_bar("eval", unit="image") as on_progress:
            result = evaluate_degraders(plan, on_progress)
        report = write_eval_report(out, result)
    print_tables(report)
    console.print(
        f"report: {out / 'report.html'} (and report.json, samples.png, statistics.png); "
        f"{time.perf_counter() - start:.1f} s"
    )
