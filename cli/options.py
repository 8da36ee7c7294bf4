"""Click options and reporting shared by the training commands of both groups (`degrade fit`, `sr train`, ...)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.progress import console

DIR = click.Path(exists=True, file_okay=False, path_type=Path)
DEVICES = click.Choice(["auto", "cpu", "cuda"])

HR_PREP = click.option(
    "--hr-prep",
    type=click.Choice(["resize", "crop"]),
    default="resize",
    show_default=True,
    help="resize: shorter side + centre crop (face crops); crop: random crops at native resolution.",
)
LR_PREP = click.option(
    "--lr-prep",
    type=click.Choice(["resize", "crop"]),
    default="resize",
    show_default=True,
    help="As --hr-prep, for the LR folder; use crop for large real photos to keep their noise.",
)


def loss_options(f):
    """--alpha, --beta, --d-steps: the loss of paper section 3.5."""
    f = click.option("--d-steps", type=click.IntRange(min=1), default=5, show_default=True, help="D updates per G.")(f)
    f = click.option("--beta", type=click.FloatRange(min=0), default=0.05, show_default=True, help="GAN weight.")(f)
    f = click.option("--alpha", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Pixel weight.")(f)
    return f


def run_options(f):
    """Options every training run shares."""
    for option in reversed(
        [
            click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="G updates."),
            click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--device", type=DEVICES, default="auto", show_default=True),
            click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA only)."),
            click.option("--channels-last", is_flag=True, help="channels_last memory format (faster on CUDA)."),
            click.option("--compile", is_flag=True, help="torch.compile the networks (slow start, faster steps)."),
            click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Loader procs."),
            click.option(
                "--cache-mb",
                type=click.FloatRange(min=0),
                default=256,
                show_default=True,
                help="Decoded-image cache per loader worker and folder, MiB (large photos decode once); 0: off.",
            ),
            click.option("--sample-every", type=click.IntRange(min=1), default=250, show_default=True),
            click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True),
            click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
            click.option("--overwrite", is_flag=True, help="Replace what --out holds."),
            click.option("--dry-run", is_flag=True, help="Check the data and settings, print the plan, train nothing."),
        ]
    ):
        f = option(f)
    return f


def as_str(options: dict) -> dict:
    """Paths as strings, for the JSON-serialisable config dataclasses."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def report(result, files: list[str]) -> None:
    """Say where a finished (or Ctrl-C'd) run left its files."""
    if result.interrupted:
        console.print(f"[yellow]interrupted[/] at step {result.step}; state saved. Continue with --resume.")
    console.print("  ".join(f"{name}: {result.out / name}" for name in files))
