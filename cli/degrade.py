"""`degrade`: learn a degrader (`fit`), run everything on built-in data (`demo`), export and check shards."""

from __future__ import annotations

from pathlib import Path

import click

from cli.apply import apply_cmd
from cli.eval import eval_cmd
from cli.export import export_shards, inspect, verify
from cli.options import DIR, HR_PREP, LR_PREP, int_choice, run_options, run_planned, threads_option
from cli.progress import console, progress_bar, user_errors, warn_skipped
from cli.run_report import fit_summary, report_cmd
from cli.sample import sample
from cli.settings import make_config, settings_options

FIT_FILES = ["degrader.safetensors", "samples"]


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
@click.option("--val-lr", type=DIR, default=None, help="Real LR images for validation [a val_split share of --lr].")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory to write.  [required]")
@HR_PREP
@LR_PREP
@click.option(
    "--preset",
    type=click.Choice(["small", "paper"]),
    default="small",
    show_default=True,
    help="small: fast on a CPU, structured generator; paper: the authors' setup.",
)
@click.option(
    "--scale", type=click.Choice(["2", "4", "8"]), default="4", show_default=True, callback=int_choice, help="HR / LR."
)
@run_options
@settings_options
def fit(dry_run: bool, **options) -> None:
    """Learn a High-to-Low degrader from two unpaired image folders.

    Settings beyond these options (losses, discriminator, validation, ...): --show-config lists them all, with
    the preset's values; give any with --set KEY=VALUE or in --config FILE.

    
    Example:
      degrade fit --hr faces-hr --lr faces-lr --out runs/degrader --steps 2000
      degrade fit --hr faces-hr --lr faces-lr --out runs/d2 --set loss.exposure=0 --set generator=paper
      degrade fit --out runs/degrader --resume --steps 4000   # --hr, --lr and the rest from its config.json
    """
    from degrader.presets import PRESETS
    from degrader.train import FitConfig, fit, plan_fit

    def preset(name: str) -> dict:
        return PRESETS[name].training() if name in PRESETS else {}  # plan_fit names a bad preset

    config = make_config(FitConfig, options, needed=("hr", "lr"), base=preset)
    if config is None:
        return
    listed = None if dry_run else Path(config.out) / "skipped.txt"  # a dry run names every file instead

    def describe(plan) -> None:
        for option, files in (("--hr", plan.hr.skipped), ("--lr", plan.lr.skipped)):
            warn_skipped(option, files, shown=3 if listed else len(files), listed_in=listed)
        m, c = plan.model, plan.config
        console.print(
            f"{len(plan.hr.paths)} HR images -> {len(plan.lr.paths)} real LR images, {m.hr_size}px -> {m.lr_size}px, "
            f"preset {c.preset} ({c.generator} generator"
            f"{'' if c.generator == 'structured' else ', residual' if m.residual else ', tanh'}), "
            f"G {plan.params_g / 1e6:.2f}M / D {plan.params_d / 1e6:.2f}M parameters, {c.steps} steps on {plan.device}"
        )
        console.print(("" if plan.validation else "[yellow]note:[/] ") + plan.validation_note)
        if plan.tone:
            console.print(f"tone the losses hold each LR image to: {plan.tone.describe()}")
            if plan.tone.warning:
                console.print(f"[yellow]warning:[/] {plan.tone.warning}")
        if plan.colour:
            console.print(f"colour the losses hold each LR image to: {plan.colour.describe()}")
        if plan.noise:
            console.print(f"sensor noise the losses allow: {plan.noise.describe()}")
        if plan.blocks:
            console.print(f"JPEG quality the losses allow: {plan.blocks.describe()}")

    progress = lambda plan: progress_bar("fit", config.steps)  # noqa: E731
    result = run_planned(plan_fit, fit, config, dry_run, describe=describe, progress=progress, files=FIT_FILES)
    if result is not None:
        fit_summary(result)


DEMO_FOLDERS = ("data", "degrader", "shards", "sr")  # what `degrade demo` writes into OUT, and nothing else
DEMO_FILES = ("shards-contact.png", "sr-results.png", "sr-results.json")


def clear_demo(out: Path) -> None:
    """Remove an earlier demo's own folders and files from `out` (its marker: data/demo.json); keep the rest."""
    import shutil

    if not (out / "data" / "demo.json").is_file():
        return
    for name in DEMO_FOLDERS:
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    for name in DEMO_FILES:
        if (out / name).is_file() or (out / name).is_symlink():
            (out / name).unlink()


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
    from cli.eval import eval_cmd as degrade_eval
    from cli.sr import eval_cmd
    from cli.sr import train as sr_train
    from degrader.run_report import write_run_report
    from degrader.synthetic import write_demo_data, write_eval_data
    from degrader.train import FitConfig, fit, plan_fit

    with user_errors():
        if out.exists() and any(out.iterdir()) and not (out / "data" / "demo.json").exists():
            raise click.ClickException(f"{out} is not empty and holds no earlier demo; give an empty or new folder.")
        clear_demo(out)  # an earlier demo's output: the demo always starts fresh
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
