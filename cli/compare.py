"""`sr compare`: the paper's Table 1 as one command. Registered on the `sr` group by `cli/sr.py`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from cli.options import DEVICE_HELP, DEVICES, DIR, HR_PREP, LR_PREP, run_planned, threads_option
from cli.progress import console, progress_bar, warn_skipped
from cli.settings import make_config, settings_options

UNITS = {"export": "pair", "sr train": "step", "score": "image"}


@contextmanager
def staged_progress() -> Iterator[tuple]:
    """(on_progress, on_stage): a fresh progress bar for each stage the library announces."""
    current: list = []  # [the open bar's context manager, its callback]

    def close() -> None:
        if current:
            current.pop(0).__exit__(None, None, None)
            current.clear()

    def on_stage(name: str) -> None:
        close()
        bar = progress_bar(name, None, unit=next(u for prefix, u in UNITS.items() if name.startswith(prefix)))
        current[:] = [bar, bar.__enter__()]

    def on_progress(step: int, total: int, logs: dict[str, float]) -> None:
        if current:
            current[1](step, total, logs)

    try:
        yield on_progress, on_stage
    finally:
        close()


def print_table(report: dict) -> None:
    """The comparison table, best per column in bold green; a second one with the per-image statistics."""
    from rich.table import Table

    from sr.compare_report import statistics_columns, summary_columns, table

    title = "sr compare (↑ higher is better, ↓ lower"
    parts = [(title + ("; realism relative: 1 = bicubic upscaling, 0 = real)" if report["floor"] else ")"), False)]
    if report["floor"] is not None:
        parts.append(("per-image statistics of the SR outputs: 1-D Wasserstein distance to the HR set", True))
    for title, stats in parts:
        header, rows, best, has_floor = table(report, statistics_columns() if stats else summary_columns(report))
        t = Table(title=title, title_justify="left")
        for j, h in enumerate(header):
            t.add_column(h, justify="left" if j == 0 else "right")
        for i, row in enumerate(rows):
            cells = [f"[bold green]{c}[/]" if i in best.get(j, ()) else c for j, c in enumerate(row)]
            t.add_row(*cells, style="dim italic" if has_floor and i == 0 else None)
        console.print(t)


@click.command("compare")
@click.option("--hr", "hr", type=DIR, help="HR images: degraded by each degrader; realism reference.  [required]")
@click.option(
    "--degrader",
    "degraders",
    multiple=True,
    help="A `degrade fit` run or checkpoint, or bicubic, bilinear, ...; realesrgan and bsrgan are added.  [required]",
)
@click.option("--lr", "lr", type=DIR, help="Real LR images without ground truth: realism of the SR outputs.")
@click.option("--pairs", type=DIR, help="Folder of NAME_HR / NAME_LR image pairs: PSNR and SSIM.")
@click.option(
    "--features",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TorchScript feature extractor (.pt) for FID/KID, called on images in [0, 1]; never downloaded.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Comparison folder.  [required]")
@HR_PREP
@LR_PREP
@click.option("--preset", type=click.Choice(["small", "paper"]), default="small", show_default=True, help="SR model.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="SR steps per degrader.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Pairs per step.")
@click.option("--seed", type=int, default=0, show_default=True, help="Exports, SR training and realism draws.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@threads_option(record=False)
@click.option("--resume", is_flag=True, help="Continue a killed comparison in --out where it stopped.")
@click.option("--dry-run", is_flag=True, help="Check everything, print the plan, write nothing.")
@settings_options
def compare_cmd(dry_run: bool, **options) -> None:
    """Train the same SR model on each degrader's pairs and score them side by side (the paper's Table 1).

    For each degrader: export shards of --hr, train SR on them; then PSNR/SSIM on --pairs and realism of
    upscaled --lr images against --hr, each against bicubic upscaling. Writes compare.json, grid.png and
    report.html to --out. Settings beyond these options (SR loss, images scored, the classical degraders'
    hr_size and scale, ...): --show-config lists them all; give any with --set KEY=VALUE or in --config FILE.

    
    Example:
      sr compare --degrader runs/degrader --degrader bicubic --hr faces-hr --lr faces-lr --pairs Set5 --out cmp
    """
    import time

    from sr.compare import CompareConfig, compare, plan_compare

    config = make_config(CompareConfig, options, needed=("hr", "degraders"))
    if config is None:
        return
    out, start = Path(config.out), time.perf_counter()

    def describe(plan) -> None:
        warn_skipped("--hr", plan.hr.skipped)
        if plan.lr is not None:
            warn_skipped("--lr", plan.lr.skipped)
        m = plan.model
        scored = [f"{len(plan.pairs)} pairs"] if plan.pairs else []
        if plan.lr is not None:
            scored.append(f"realism of {plan.n} upscaled real LR images" + (" with FID/KID" if plan.features else ""))
        console.print(
            f"{len(plan.arms)} degraders ({', '.join(a.name for a in plan.arms)}) x {len(plan.hr.paths)} HR images; "
            f"SR {config.preset} x{m.scale} {m.lr_size}px -> {m.hr_size}px, {config.steps} steps each, seed "
            f"{config.seed}; scored on {' and '.join(scored)}" + (" (resuming)" if config.resume else "")
        )

    result = run_planned(
        plan_compare,
        lambda plan, callbacks: compare(plan, *callbacks),
        config,
        dry_run,
        describe=describe,
        progress=lambda plan: staged_progress(),
        nothing="exported, trained or written",
        interrupted=f"continue with the same command and --resume ({out}).",
    )
    if result is None:
        return
    if result.interrupted:
        console.print("[yellow]interrupted[/] during SR training; state saved. Continue with --resume.")
        raise click.exceptions.Exit(130)
    print_table(result.report)
    console.print(
        f"report: {out / 'report.html'} (and compare.json, grid.png); SR runs in {out / 'sr'}; "
        f"{time.perf_counter() - start:.1f} s"
    )
