"""`degrade sample`: the paper's Fig. 3 as a PNG grid. Registered on the `degrade` group by `cli/degrade.py`."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DEVICE_HELP, DEVICES, DIR, HR_PREP
from cli.progress import console, user_errors


@click.command("sample")
@click.option(
    "--degrader",
    required=True,
    help="A `degrade fit` run or checkpoint, or bicubic, bilinear, blur-bilinear, realesrgan, bsrgan.",
)
@click.option("--hr", "hr", type=DIR, required=True, help="Folder of HR images; the first --n readable ones are rows.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The PNG to write.")
@click.option("--seeds", type=click.IntRange(min=1), default=4, show_default=True, help="Noise seeds: one column each.")
@click.option("--first-seed", type=int, default=0, show_default=True, help="The first noise seed.")
@click.option("--n", type=click.IntRange(min=1), default=8, show_default=True, help="HR images: one row each.")
@HR_PREP
@click.option(
    "--hr-size", type=click.IntRange(min=8), default=64, show_default=True, help="HR side for classical degraders."
)
@click.option("--scale", type=click.IntRange(min=2), default=4, show_default=True, help="For classical degraders.")
@click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def sample(out: Path, hr: Path, overwrite: bool, **options) -> None:
    """Degrade the first HR images with several noise seeds: rows are images; columns HR, bicubic, each seed.

    
    Example:
      degrade sample --degrader runs/degrader --hr faces-hr --out sample.png --seeds 6
    """
    from degrader.files import check_out_file
    from degrader.seed_grid import SampleConfig, sample_grid

    with user_errors():
        check_out_file(out, overwrite=overwrite)
        path = sample_grid(SampleConfig(hr=str(hr), out=str(out), **options))
    console.print(f"grid (rows: HR images; columns: HR, bicubic, seeds): {path}")
