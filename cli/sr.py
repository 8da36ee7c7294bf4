"""`sr`: train a Low-to-High SR model on degrader data (`train`), fine-tune it jointly with the degrader
(`finetune`), and use it (`upscale`, `eval`)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.compare import compare_cmd
from cli.options import DIR, HR_PREP, LR_PREP, int_choice, run_options, run_planned
from cli.progress import console, progress_bar, warn_skipped
from cli.settings import make_config, settings_options
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
    "--degrader",
    help="Degrade --hr on the fly: a `degrade fit` run, or bicubic, bilinear, blur-bilinear, realesrgan, bsrgan.",
)
@click.option("--hr", "hr", type=DIR, help="Folder of HR images for --degrader (searched recursively).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to write.  [required]")
@HR_PREP
@click.option(
    "--preset",
    type=click.Choice(["small", "paper"]),
    default="small",
    show_default=True,
    help="small: fast on a CPU, residual over bilinear; paper: 17 blocks (12/3/2), width 64, tanh output.",
)
@click.option(
    "--scale",
    type=click.Choice(["2", "4", "8"]),
    callback=int_choice,
    help="Classical degraders only [4; else the data's].",
)
@click.option("--pixel-only", is_flag=True, help="Train with the L2 loss alone (no discriminator).")
@run_options
@settings_options
def train(dry_run: bool, **options) -> None:
    """Train a Low-to-High SR model on paired shards (--shards) or on the fly (--degrader with --hr).

    Settings beyond these options (loss, warm-up, LR crop, ...): --show-config lists them all; give any with
    --set KEY=VALUE or in --config FILE.

    
    Example:
      sr train --shards shards --out runs/sr --steps 2000
      sr train --degrader runs/degrader --hr faces-hr --out runs/sr-fly --set warmup_steps=500
    """
    from sr.train import SRTrainConfig, plan_train
    from sr.train import train as run_train

    config = make_config(SRTrainConfig, options)
    if config is None:
        return
    listed = None if dry_run else Path(config.out) / "skipped.txt"  # a dry run names every file instead

    def describe(plan) -> None:
        if plan.scan is not None:
            files = plan.scan.skipped
            warn_skipped("--hr", files, shown=3 if listed else len(files), listed_in=listed)
        m, c = plan.model, plan.config
        loss_name = "pixel loss only" if c.pixel_only else f"pixel + {c.loss.beta} GAN, {c.loss.d_steps} D steps"
        if c.warmup_steps and not c.pixel_only:
            loss_name += f" after {c.warmup_steps} pixel-only steps"
        console.print(
            f"{plan.source}; x{m.scale}, {m.lr_size}px -> {m.hr_size}px; preset {c.preset}, G "
            f"{plan.params_g / 1e6:.2f}M / D {plan.params_d / 1e6:.2f}M parameters; {loss_name}; "
            f"{c.steps} steps on {plan.device}"
        )

    progress = lambda plan: progress_bar("sr train", config.steps)  # noqa: E731
    files = ["sr.safetensors", "samples"]
    run_planned(plan_train, run_train, config, dry_run, describe=describe, progress=progress, files=files)


@sr.command()
@click.option("--degrader", type=click.Path(exists=True, path_type=Path), help="`degrade fit` run.")
@click.option("--sr", "sr", type=click.Path(exists=True, path_type=Path), help="`sr train` run.")
@click.option("--hr", "hr", type=DIR, help="Folder of clean HR images.")
@click.option("--lr", "lr", type=DIR, help="Folder of real low-quality images, unpaired with --hr.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory for both new models.  [required]")
@HR_PREP
@LR_PREP
@run_options
@settings_options
def finetune(dry_run: bool, **options) -> None:
    """Fine-tune a degrader and an SR model together, end to end (HR -> degrader -> LR -> SR).

    Settings beyond these options (the loss both GANs share, ...): --show-config lists them all; give any with
    --set KEY=VALUE or in --config FILE.

    
    Example:
      sr finetune --degrader runs/degrader --sr runs/sr --hr faces-hr --lr faces-lr --out runs/joint
      sr finetune --out runs/joint --resume --steps 4000   # the other options from its config.json
    """
    from sr.finetune import FinetuneConfig, plan_finetune
    from sr.finetune import finetune as run_finetune

    config = make_config(FinetuneConfig, options, needed=("degrader", "sr", "hr", "lr"))
    if config is None:
        return

    def describe(plan) -> None:
        warn_skipped("--hr", plan.hr.skipped)
        warn_skipped("--lr", plan.lr.skipped)
        console.print(
            f"{len(plan.hr.paths)} HR images, {len(plan.lr.paths)} real LR images; degrader x{plan.degrader.scale} "
            f"(step {plan.degrader.step}) + SR (step {plan.sr_step}); {config.steps} joint steps on {plan.device}"
        )

    progress = lambda plan: progress_bar("sr finetune", config.steps)  # noqa: E731
    files = ["degrader.safetensors", "sr.safetensors", "samples"]
    run_planned(plan_finetune, run_finetune, config, dry_run, describe=describe, progress=progress, files=files)


# --- `sr upscale` and `sr eval` live in cli/sr_use.py; register them here: ---------------------------------
sr.add_command(upscale)
sr.add_command(eval_cmd)
sr.add_command(compare_cmd)  # cli/compare.py
