"""`sr`: train a Low-to-High SR model on degrader data (`train`), fine-tune it jointly with the degrader
(`finetune`), and use it (`upscale`, `eval`)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.compare import compare_cmd
from cli.options import DIR, HR_PREP, LR_PREP, as_str, loss_options, report, resumable, run_options
from cli.progress import console, progress_bar, user_errors, warn_skipped
from cli.sr_use import eval_cmd, upscale


@click.group()
@click.version_option(package_name="degrader")
def sr() -> None:
    """Super-resolution trained on realistic, learned degradations (Bulat et al., ECCV 2018).

    
    Example:
      sr train --shards shards --out runs/sr
      sr upscale --checkpoint runs/sr photos --out photos-x4
    """


@sr.command()
@click.option("--shards", help="Paired shards: a directory, manifest, glob or brace pattern (local files).")
@click.option(
    "--no-verify",
    "no_verify",
    is_flag=True,
    help="Skip comparing each shard's sha256 with its manifest before training (reads every byte once).",
)
@click.option(
    "--degrader",
    help="Degrade --hr on the fly: a `degrade fit` run directory, or bicubic, bilinear or blur-bilinear.",
)
@click.option("--hr", "hr", type=DIR, help="Folder of HR images for --degrader (searched recursively).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
@click.option(
    "--preset",
    type=click.Choice(["small", "paper"]),
    default="small",
    show_default=True,
    help="small: fast on a CPU, residual over bilinear; paper: 17 blocks (12/3/2), width 64, tanh output.",
)
@click.option("--scale", type=click.Choice(["2", "4", "8"]), help="Classical degraders only [4; else the data's].")
@click.option("--lr-size", type=click.IntRange(min=4), help="LR training crop in pixels [the data's; 16 classical].")
@HR_PREP
@click.option("--pixel-only", is_flag=True, help="Train with the L2 loss alone (no discriminator).")
@click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First steps with the L2 loss alone, then the GAN loss joins (short runs: GAN from scratch lags bicubic).",
)
@loss_options
@run_options
@resumable()
def train(scale: str | None, alpha: float, beta: float, d_steps: int, dry_run: bool, **options) -> None:
    """Train a Low-to-High SR model on paired shards (--shards) or on the fly (--degrader with --hr).

    
    Example:
      sr train --shards shards --out runs/sr --steps 2000
      sr train --degrader runs/degrader --hr faces-hr --out runs/sr-fly
    """
    from degrader.gan import LossConfig
    from sr.train import SRTrainConfig, plan_train
    from sr.train import train as run_train

    loss = LossConfig(alpha=alpha, beta=beta, d_steps=d_steps)
    verify = not options.pop("no_verify")
    config = SRTrainConfig(scale=int(scale) if scale else None, loss=loss, verify=verify, **as_str(options))
    with user_errors():
        plan = plan_train(config)
        if plan.scan is not None:
            listed = None if dry_run else Path(config.out) / "skipped.txt"  # a dry run names every file instead
            files = plan.scan.skipped
            warn_skipped("--hr", files, shown=3 if listed else len(files), listed_in=listed)
        m = plan.model
        loss_name = "pixel loss only" if config.pixel_only else f"pixel + {loss.beta} GAN, {loss.d_steps} D steps"
        if config.warmup_steps and not config.pixel_only:
            loss_name += f" after {config.warmup_steps} pixel-only steps"
        console.print(
            f"{plan.source}; x{m.scale}, {m.lr_size}px -> {m.hr_size}px; preset {config.preset}, G "
            f"{plan.params_g / 1e6:.2f}M / D {plan.params_d / 1e6:.2f}M parameters; {loss_name}; "
            f"{config.steps} steps on {plan.device}"
        )
        if dry_run:
            console.print("dry run: nothing trained or written.")
            return
        with progress_bar("sr train", config.steps) as on_progress:
            result = run_train(plan, on_progress)
    report(result, ["sr.safetensors", "samples"])


@sr.command()
@click.option("--degrader", type=click.Path(exists=True, path_type=Path), help="`degrade fit` run.")
@click.option("--sr", "sr", type=click.Path(exists=True, path_type=Path), help="`sr train` run.")
@click.option("--hr", "hr", type=DIR, help="Folder of clean HR images.")
@click.option("--lr", "lr", type=DIR, help="Folder of real low-quality images, unpaired with --hr.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory for both new models.")
@HR_PREP
@LR_PREP
@loss_options
@run_options
@resumable("degrader", "sr", "hr", "lr")
def finetune(sr: Path, alpha: float, beta: float, d_steps: int, dry_run: bool, **options) -> None:
    """Fine-tune a degrader and an SR model together, end to end (HR -> degrader -> LR -> SR).

    
    Example:
      sr finetune --degrader runs/degrader --sr runs/sr --hr faces-hr --lr faces-lr --out runs/joint
      sr finetune --out runs/joint --resume --steps 4000   # the other options from its config.json
    """
    from degrader.gan import LossConfig
    from sr.finetune import FinetuneConfig, plan_finetune
    from sr.finetune import finetune as run_finetune

    loss = LossConfig(alpha=alpha, beta=beta, d_steps=d_steps)
    config = FinetuneConfig(sr=str(sr), loss=loss, **as_str(options))
    with user_errors():
        plan = plan_finetune(config)
        warn_skipped("--hr", plan.hr.skipped)
        warn_skipped("--lr", plan.lr.skipped)
        console.print(
            f"{len(plan.hr.paths)} HR images, {len(plan.lr.paths)} real LR images; degrader x{plan.degrader.scale} "
            f"(step {plan.degrader.step}) + SR (step {plan.sr_step}); {config.steps} joint steps on {plan.device}"
        )
        if dry_run:
            console.print("dry run: nothing trained or written.")
            return
        with progress_bar("sr finetune", config.steps) as on_progress:
            result = run_finetune(plan, on_progress)
    report(result, ["degrader.safetensors", "sr.safetensors", "samples"])


# --- `sr upscale` and `sr eval` live in cli/sr_use.py; register them here: ---------------------------------
sr.add_command(upscale)
sr.add_command(eval_cmd)
sr.add_command(compare_cmd)  # cli/compare.py
