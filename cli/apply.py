"""`degrade apply`: degrade whole images of any size with a learned degrader, and the GAN options of `degrade fit`."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DEVICE_HELP, DEVICES
from cli.progress import console, progress_bar, user_errors

LOSS_FIELDS = (
    "alpha",
    "beta",
    "d_steps",
    "lr_d",
    "pixel",
    "augment",
    "d_highpass",
    "r1",
    "ema",
    "lr_decay",
    "exposure",
    "tone",
)


def gan_options(f):
    """`degrade fit`'s generator, loss and stabiliser options; one left out takes the preset's value, shown in
    the help as [small / paper]."""
    options = [
        click.option(
            "--generator",
            type=click.Choice(["structured", "paper"]),
            help="structured: a physical chain driven by z, any image size; paper: the authors' network. "
            "[structured / paper]",
        ),
        click.option("--alpha", type=click.FloatRange(min=0), help="Pixel-loss weight. [1 / 1]"),
        click.option("--beta", type=click.FloatRange(min=0), help="GAN-loss weight. [1 / 0.05]"),
        click.option("--d-steps", type=click.IntRange(min=1), help="D updates per G update. [1 / 5]"),
        click.option("--lr-d", type=click.FloatRange(min=0, min_open=True), help="D learning rate. [4e-4 / 1e-4]"),
        click.option(
            "--pixel",
            type=click.Choice(["rgb", "luma", "luma-lowpass"]),
            help="What the pixel loss compares with the average-pooled HR image. [luma-lowpass / rgb]",
        ),
        click.option(
            "--augment",
            help="DiffAugment: any of translation,cutout,colour,dihedral or ''. [translation,colour / '']",
        ),
        click.option(
            "--d-highpass",
            type=click.FloatRange(min=0),
            help="D sees only detail finer than a Gaussian of this sigma (LR px), plus each image's mean colour; "
            "0: the whole image. [1 / 0]",
        ),
        click.option("--r1", type=click.FloatRange(min=0), help="R1 penalty weight on real images. [1 / 0]"),
        click.option(
            "--ema", type=click.FloatRange(min=0, max=1, max_open=True), help="EMA decay of G; 0: off. [0.99 / 0]"
        ),
        click.option(
            "--lr-decay",
            type=click.FloatRange(0, 1),
            help="Share of the steps, at the end, over which both learning rates fall linearly to 0; 0: constant. "
            "--resume with other --steps follows the new count. [0.5 / 0]",
        ),
        click.option(
            "--exposure",
            type=click.FloatRange(min=0),
            help="Weight of a loss that holds each image's mean luma to the HR's, so that the degradation does "
            "not learn the two sets' different lighting; 0: off. [100 / 0]",
        ),
        click.option(
            "--tone",
            type=click.Choice(["auto", "off"]),
            help="auto: measure how much brighter and more contrasted the LR set is than the HR set, where the "
            "data shows it beyond sampling noise, and hold the pixel and exposure losses to that; off: to the HR's "
            "own tone. [auto / off]",
        ),
        click.option(
            "--d-patch",
            type=click.IntRange(0, 8),
            default=0,
            show_default=True,
            help="Discriminator: 0 is the paper's, one score per image; N a patch D of N blocks, one score per "
            "(4N+3)-px patch of the LR.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def loss_from_options(preset: str, options: dict):
    """The preset's LossConfig with the options given replaced (and removed from `options`)."""
    import dataclasses

    from degrader.presets import PRESETS

    given = {name: options.pop(name) for name in LOSS_FIELDS}
    if preset not in PRESETS:
        return None  # plan_fit names the bad preset
    try:
        return dataclasses.replace(PRESETS[preset].loss, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--augment") from None


@click.command("apply")
@click.option(
    "--degrader",
    "run",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="Run directory or checkpoint.",
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
    run: Path, inputs: tuple[Path, ...], out: Path, seed: int, tile: int, device: str, overwrite: bool
) -> None:
    """Degrade image files and folders (searched recursively) of any size into PNGs under --out, 1/scale the size.

    Large images are degraded in tiles that start on JPEG's 16-pixel blocks, with enough context that the
    result equals one pass over the whole image: no seams. Needs a structured degrader (`fit --generator
    structured`); the paper's network takes only its training size.

    
    Example:
      degrade apply --degrader runs/degrader photos/ extra.jpg --out photos-lr --seed 0
    """
    from degrader.apply import degrade_files
    from degrader.checkpoint import Degrader
    from degrader.device import resolve_device

    with user_errors():
        degrader = Degrader.load(run, device=resolve_device(device))
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
