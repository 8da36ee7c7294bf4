"""`degrade`: learn a degrader (`fit`), run everything on built-in data (`demo`), export and check shards."""

from __future__ import annotations

from pathlib import Path

import click

from cli.apply import apply_cmd, gan_options, loss_from_options
from cli.eval import eval_cmd
from cli.export import export_shards, inspect, verify
from cli.options import DIR, HR_PREP, LR_PREP, as_str, report, resumable, run_options, threads_option
from cli.progress import console, progress_bar, user_errors, warn_skipped
from cli.run_report import fit_summary, report_cmd
from cli.sample import sample


@click.group()
@click.version_option(package_name="degrader")
def degrade() -> None:
    """Learn how real cameras and the web degrade images, and make SR training data from it.

    
    Example:
      degrade demo demo-run
      degrade fit --help
    """


@degrade.command()
@click.option("--hr", "hr", type=DIR, help="Clean HR images (searched recursively); required unless --resume.")
@click.option("--lr", "lr", type=DIR, help="Real low-quality images, unpaired with --hr; required unless --resume.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory to write.")
@HR_PREP
@LR_PREP
@click.option(
    "--preset",
    type=click.Choice(["small", "paper"]),
    default="small",
    show_default=True,
    help="small: fast on a CPU, residual output; paper: the authors' width, plain tanh output.",
)
@click.option(
    "--hr-size", type=click.IntRange(min=16), default=64, show_default=True, help="HR crop size (power of 2)."
)
@click.option("--scale", type=click.Choice(["2", "4", "8"]), default="4", show_default=True, help="HR size / LR size.")
@click.option("--residual/--no-residual", default=None, help="Learn a residual over average pooling [preset's choice].")
@click.option("--val-lr", type=DIR, default=None, help="Real LR images for validation [a --val-split share of --lr].")
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of --lr held out for validation (at most 2 x --val-n images); 0: no validation.",
)
@click.option("--val-n", type=click.IntRange(min=8), default=128, show_default=True, help="Images per validation set.")
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Steps between validations (SWD relative to bicubic); the best weights are kept as best.safetensors.",
)
@click.option(
    "--select",
    type=click.Choice(["mix", "swd"]),
    default="mix",
    show_default=True,
    help="What ranks validation steps: the mean of the SWD and image statistics (steadier SR), or the SWD alone "
    "(README, Results).",
)
@click.option(
    "--min-fidelity",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="dB: a validation step whose LR keeps the content this well (PSNR-Y against bicubic LR of the same HR, "
    "in the --tone map) beats any that does not, so a fit cannot win on realism by destroying the images; 0: off.",
)
@gan_options
@run_options
@resumable("hr", "lr")
def fit(scale: str, dry_run: bool, **options) -> None:
    """Learn a High-to-Low degrader from two unpaired image folders.

    
    Example:
      degrade fit --hr faces-hr --lr faces-lr --out runs/degrader --steps 2000
      degrade fit --out runs/degrader --resume --steps 4000   # --hr, --lr and the rest from its config.json
    """
    from degrader.train import FitConfig, fit, plan_fit

    loss = loss_from_options(options["preset"], options)  # the preset's, with the options given
    config = FitConfig(scale=int(scale), loss=loss, **as_str(options))
    with user_errors():
        plan = plan_fit(config)
        listed = None if dry_run else Path(config.out) / "skipped.txt"  # a dry run names every file instead
        for option, files in (("--hr", plan.hr.skipped), ("--lr", plan.lr.skipped)):
            warn_skipped(option, files, shown=3 if listed else len(files), listed_in=listed)
        m = plan.model
        console.print(
            f"{len(plan.hr.paths)} HR images -> {len(plan.lr.paths)} real LR images, {m.hr_size}px -> {m.lr_size}px, "
            f"preset {config.preset} ({config.generator} generator"
            f"{'' if config.generator == 'structured' else ', residual' if m.residual else ', tanh'}), "
            f"G {plan.params_g / 1e6:.2f}M / "
            f"D {plan.params_d / 1e6:.2f}M parameters, {config.steps} steps on {plan.device}"
        )
        console.print(("" if plan.validation else "[yellow]note:[/] ") + plan.validation_note)
        if plan.tone:
            console.print(f"tone the losses hold each LR image to: {plan.tone.describe()}")
        if dry_run:
            console.print("dry run: nothing trained or written.")
            return
        with progress_bar("fit", config.steps) as on_progress:
            result = fit(plan, on_progress)
    report(result, ["degrader.safetensors", "samples"])
    fit_summary(result)


@degrade.command()
@click.argument("out", type=click.Path(path_type=Path), default="degrade-demo")
@click.option("--steps", type=click.IntRange(min=1), default=150, show_default=True, help="Degrader training steps.")
@click.option("--sr-steps", type=click.IntRange(min=1), default=400, show_default=True, help="SR training steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fixes the data and every model.")
@threads_option(record=False)
@click.pass_context
def demo(ctx: click.Context, out: Path, steps: int, sr_steps: int, seed: int) -> None:
    """Run the whole pipeline on built-in generated data (no downloads), in a few minutes on a CPU.

    Makes clean HR faces and a disjoint set of camera-degraded "real" LR faces, fits a small degrader on
    them, exports paired shards with it, trains a small SR model on the shards and upscales held-out LR
    faces; ends with `degrade eval` of the learned degrader against bicubic on faces it never saw, and
    prints the table. Everything lands in OUT.

    
    Example:
      degrade demo demo-run --steps 150 --sr-steps 400
    """
    import shutil

    from cli.eval import eval_cmd as degrade_eval
    from cli.sr import eval_cmd
    from cli.sr import train as sr_train
    from degrader.run_report import write_run_report
    from degrader.synthetic import write_demo_data, write_eval_data
    from degrader.train import FitConfig, fit, plan_fit

    with user_errors():
        if out.exists() and any(out.iterdir()) and not (out / "data" / "demo.json").exists():
            raise click.ClickException(f"{out} is not empty and holds no earlier demo; give an empty or new folder.")
        shutil.rmtree(out, ignore_errors=True)  # an earlier demo's output: the demo always starts fresh
        console.rule("1. built-in data")
        hr_dir, lr_dir, heldout_lr, heldout_hr = write_demo_data(out / "data", seed=seed)
        eval_hr, eval_lr = write_eval_data(out / "data", seed=seed)  # other people again: for degrade eval
        console.print(f"clean HR faces: {hr_dir}\ncamera-degraded 'real' LR faces (other people): {lr_dir}")

        console.rule("2. degrade fit: learn the degradation from the unpaired folders")
        config = FitConfig(
            hr=str(hr_dir), lr=str(lr_dir), out=str(out / "degrader"), steps=steps, batch_size=16,
            seed=seed, workers=1, sample_every=steps, checkpoint_every=steps,  # the small preset's GAN settings
            eval_every=25,  # 20 held-out images: a probe costs little, and the report gets a curve
        )  # fmt: skip
        with progress_bar("fit", steps) as on_progress:
            result = fit(plan_fit(config), on_progress)
        console.print(f"degrader: {out / 'degrader'}  samples: {out / 'degrader' / 'samples'}")
        fit_summary(result)  # validation on 10% of the LR faces, held out of training

    console.rule("3. degrade export-shards: paired (seed, LR, HR) shards from the learned degrader")
    shards = out / "shards"
    ctx.invoke(export_shards, degrader=str(out / "degrader"), hr=hr_dir, out=shards, per_image=2,
               samples_per_shard=200, seed=seed, workers=1)  # fmt: skip
    ctx.invoke(inspect, shards=str(shards), contact_sheet=str(out / "shards-contact.png"))

    # A few hundred GAN steps leave SR behind bicubic; the pixel loss alone gets ahead within a CPU minute.
    console.rule("4. sr train --pixel-only: a small SR model on the shards")
    ctx.invoke(sr_train, shards=str(shards), out=out / "sr", steps=sr_steps, pixel_only=True, seed=seed, workers=1,
               sample_every=sr_steps, checkpoint_every=sr_steps)  # fmt: skip

    console.rule("5. sr eval: upscale held-out degraded faces, against bicubic")
    ctx.invoke(eval_cmd, checkpoint=out / "sr", hr=heldout_hr, lr=heldout_lr, grid=out / "sr-results.png",
               json_out=out / "sr-results.json")  # fmt: skip
    console.rule("6. degrade eval: is the learned LR more real than bicubic? Faces never trained or validated on")
    ctx.invoke(degrade_eval, degraders=(str(out / "degrader"),), hr=eval_hr, lr=eval_lr, out=out / "degrader" / "eval",
               n=100, seed=seed)  # fmt: skip
    with user_errors():
        console.print(f"run report with the eval table: {write_run_report(out / 'degrader')}")
    console.print(f"[bold green]demo done[/]: everything is in {out}; the SR result grid is {out / 'sr-results.png'}")


# Shard commands live in their own module; registered here so `degrade --help` lists them.
degrade.add_command(export_shards)
degrade.add_command(inspect)
degrade.add_command(verify)
degrade.add_command(eval_cmd)
degrade.add_command(report_cmd)
degrade.add_command(sample)  # cli/sample.py
degrade.add_command(apply_cmd)  # cli/apply.py
