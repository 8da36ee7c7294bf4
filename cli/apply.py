"""`degrade apply`: degrade whole images of any size with a learned, classical or hand-made degrader."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DEVICE_HELP, DEVICES
from cli.progress import console, progress_bar, user_errors


@click.command("apply")
@click.option(
    "--degrader",
    "run",
    required=True,
    help="Run directory or checkpoint, or bicubic, bilinear, blur-bilinear, realesrgan, bsrgan (x4).",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the PNGs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Image NAME gets the noise seed hash(SEED, NAME).")
@click.option(
    "--tile", type=click.IntRange(min=16), default=256, show_default=True, help="LR px per tile, multiple of 16."
)
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out, replacing same-named files.")
def apply_cmd(
    run: str, inputs: tuple[Path, ...], out: Path, seed: int, tile: int, device: str, overwrite: bool
) -> None:
    """Degrade image files and folders (searched recursively) of any size into PNGs under --out, 1/scale the size.

    Large images are degraded in tiles that start on JPEG's 16-pixel blocks, with enough context that the
    result equals one pass over the whole image: no seams. Needs a structured degrader (`fit --set
    generator=structured`); the paper's network takes only its training size.

    
    Example:
      degrade apply --degrader runs/degrader photos/ extra.jpg --out photos-lr --seed 0
    """
    from degrader.apply import degrade_files
    from degrader.checkpoint import load_degrader

    with user_errors():
        degrader = load_degrader(run, None, device)
        with progress_bar("degrade apply", None, unit="image") as on_progress:
            written, failed = degrade_files(
                degrader, inputs, out, seed=seed, tile=tile, overwrite=overwrite, on_progress=on_progress
            )
    for path, why in failed:
        console.print(f"[yellow]warning:[/] {path}: {why}")
    console.print(f"wrote {len(written)} images, /{degrader.scale}, to {out} (seeds in {out / 'seeds.json'})")
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(failed) + len(written)} inputs failed (see the warnings above)."
        )
