"""`sr upscale` and `sr eval`: use a trained SR model on image files, folders, pairs and shards."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cli.options import DEVICE_HELP, DEVICES, DIR, threads_option
from cli.progress import console, progress_bar, user_errors, warn_skipped

CHECKPOINT = click.Path(exists=True, path_type=Path)


@click.command()
@click.option("--checkpoint", type=CHECKPOINT, required=True, help="`sr train` run directory or its sr.safetensors.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the PNGs.")
@click.option("--tile", type=click.IntRange(min=1), default=64, show_default=True, help="LR pixels per tile core.")
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    help="LR pixels of context around each tile [default: the model's receptive field, seamless].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Tiles per pass.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@threads_option(record=False)
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out, replacing same-named files.")
def upscale(
    checkpoint: Path,
    inputs: tuple[Path, ...],
    out: Path,
    tile: int,
    overlap: int | None,
    batch_size: int,
    device: str,
    overwrite: bool,
) -> None:
    """Upscale image files and folders (searched recursively) into PNGs under --out.

    Large images are processed in overlapping tiles, so memory does not grow with the image. Unreadable
    inputs are reported one by one and the rest are still processed; the exit status is then non-zero.

    
    Example:
      sr upscale --checkpoint runs/sr photos/ extra.jpg --out photos-x4
    """
    from sr.upscale import SuperResolver, upscale_files

    with user_errors():
        model = SuperResolver.load(checkpoint, device)
        with progress_bar("sr upscale", None, unit="image") as on_progress:  # the total comes with each call
            written, failed = upscale_files(
                model, inputs, out, tile=tile, overlap=overlap, batch_size=batch_size, overwrite=overwrite,
                on_progress=on_progress,
            )  # fmt: skip
    for path, why in failed:
        console.print(f"[yellow]warning:[/] {path}: {why}")
    console.print(f"wrote {len(written)} images, x{model.scale}, to {out}")
    if failed:
        total = len(failed) + len(written)
        raise click.ClickException(f"{len(failed)} of {total} inputs failed (see the warnings above).")


def _add_rows(table: Table, name: str, size: str, scores: dict, **style: str) -> None:
    """Two table rows, SR then bicubic; the better value of each metric is green."""
    for method, label in (("model", "SR"), ("bicubic", "bicubic")):
        other = scores["bicubic" if method == "model" else "model"]
        cells = []
        for metric in ("psnr", "ssim", "psnr_y", "ssim_y"):
            value = scores[method][metric]
            text = f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}"
            cells.append(f"[green]{text}[/]" if value > other[metric] else text)
        table.add_row(name if method == "model" else "", size if method == "model" else "", label, *cells, **style)


def render_report(report, shown: int) -> Table:
    """Per-image rows (the first `shown`) and the mean, SR and bicubic for each."""
    title = f"{report.checkpoint} on {report.source}\nx{report.scale}, {report.crop_border} px border left out"
    table = Table(title=title)
    for name in ("image", "HR size", "method", "PSNR", "SSIM", "PSNR-Y", "SSIM-Y"):
        table.add_column(name, justify="left" if name in ("image", "method") else "right")
    for row in report.rows[:shown]:
        h, w = row.hr_size
        _add_rows(table, row.name, f"{w}x{h}", row.scores)
    if len(report.rows) > shown:
        table.add_row(f"... {len(report.rows) - shown} more")
    table.add_section()
    _add_rows(table, f"mean of {len(report.rows)}", "", report.mean, style="bold")
    return table


def bicubic_verdict(report) -> tuple[bool | None, str]:
    """One line on the mean PSNR-Y of SR against bicubic upscaling, and whether SR is at or above it (None: no
    finite mean, e.g. identical images)."""
    sr, bic = report.mean["model"]["psnr_y"], report.mean["bicubic"]["psnr_y"]
    if not (math.isfinite(sr) and math.isfinite(bic)):
        return None, f"PSNR-Y {sr:.2f} (SR) vs {bic:.2f} dB (bicubic upscaling) over {len(report.rows)} images"
    figure = f"PSNR-Y {sr:.2f} vs {bic:.2f} dB ({sr - bic:+.2f}) over {len(report.rows)} images"
    if sr >= bic:
        return True, f"SR beats bicubic upscaling: {figure}."
    return False, (
        f"SR scores BELOW bicubic upscaling: {figure}; these LR images are not like its training LR, or it "
        "needs more steps: train longer, or on shards degraded like these images"
    )


@click.command("eval")
@click.option("--checkpoint", type=CHECKPOINT, required=True, help="`sr train` run directory or its sr.safetensors.")
@click.option("--pairs", type=DIR, help="Folder of NAME_HR.png / NAME_LR.png pairs (searched recursively).")
@click.option("--hr", "hr", type=DIR, help="Folder of HR images, matched by file name with --lr.")
@click.option("--lr", "lr", type=DIR, help="Folder of LR images, matched by file name with --hr.")
@click.option("--shards", help="Paired shards: a directory, manifest, glob or brace pattern.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N shard samples.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write all scores here.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), help="PNG: LR, bicubic, SR, HR per row.")
@click.option("--grid-images", type=click.IntRange(min=1), default=8, show_default=True, help="Rows in --grid.")
@click.option("--show", type=click.IntRange(min=0), default=50, show_default=True, help="Images listed in the table.")
@click.option("--tile", type=click.IntRange(min=1), default=64, show_default=True, help="LR pixels per tile core.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@threads_option(record=False)
@click.option("--overwrite", is_flag=True, help="Replace an existing --json or --grid file.")
def eval_cmd(
    checkpoint: Path,
    pairs: Path | None,
    hr: Path | None,
    lr: Path | None,
    shards: str | None,
    limit: int | None,
    json_out: Path | None,
    grid: Path | None,
    grid_images: int,
    show: int,
    tile: int,
    device: str,
    overwrite: bool,
) -> None:
    """PSNR and SSIM (RGB and Y, border = scale) of the SR model against bicubic upscaling, per image and mean.

    Give one source: --pairs DIR, or --hr DIR with --lr DIR, or --shards.

    
    Example:
      sr eval --checkpoint runs/sr --pairs Set5 --json set5.json --grid set5.png
    """
    from degrader.files import check_out_file
    from degrader.images import save_grid
    from sr.evaluate import evaluate_pairs, evaluate_shards
    from sr.upscale import SuperResolver

    given = [name for name, v in (("--pairs", pairs), ("--hr/--lr", hr or lr), ("--shards", shards)) if v]
    if len(given) != 1:
        raise click.UsageError("give exactly one source: --pairs DIR, --hr DIR with --lr DIR, or --shards URLS.")
    if limit is not None and shards is None:
        raise click.UsageError("--limit applies to --shards only.")
    examples = grid_images if grid else 0
    with user_errors():
        for option, path in (("--json", json_out), ("--grid", grid)):
            if path is not None:
                check_out_file(path, overwrite=overwrite, option=option)  # before the work, not after it
        model = SuperResolver.load(checkpoint, device)
        model.name = str(checkpoint)
        with progress_bar("sr eval", None, unit="image") as on_progress:
            if shards is not None:
                report = evaluate_shards(
                    model, shards, limit=limit, tile=tile, examples=examples, on_progress=on_progress
                )
            else:
                report = evaluate_pairs(
                    model, pairs, hr_dir=hr, lr_dir=lr, tile=tile, examples=examples, on_progress=on_progress
                )
        source = "--pairs" if pairs else "--shards" if shards else "--hr/--lr"
        warn_skipped(source, [(Path(p), why) for p, why in report.skipped], shown=len(report.skipped))
        stdout = Console()
        stdout.print(render_report(report, show))
        beat, line = bicubic_verdict(report)
        stdout.print(line if beat is not False else f"[bold red]warning:[/] {line}", highlight=False)
        if json_out is not None:
            try:
                json_out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise click.ClickException(f"--json {json_out}: cannot create its folder ({e.strerror}).") from None
            report.write_json(json_out)
            console.print(f"scores: {json_out}")
        if grid is not None:
            import torch

            rows = [torch.stack([e["lr"], e["bicubic"], e["sr"], e["hr"]]) for e in report.examples]
            names = [e["name"] for e in report.examples]
            save_grid(rows, grid, row_labels=names, col_labels=["LR (enlarged)", "bicubic", "SR", "HR"])
            console.print(f"grid (LR, bicubic, SR, HR): {grid}")
