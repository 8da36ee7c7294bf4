"""Click options and reporting shared by the training commands of both groups (`degrade fit`, `sr train`, ...)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from cli.progress import console, user_errors

DIR = click.Path(exists=True, file_okay=False, path_type=Path)
DEVICES = click.Choice(["auto", "cpu", "cuda"])
DEVICE_HELP = "Where the model runs; auto picks CUDA when there is a GPU."

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


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Set torch's thread count as the command starts (not for --help); the count in use becomes the value."""
    if ctx.resilient_parsing:
        return value
    from degrader.threads import set_threads

    with user_errors():
        return set_threads(value)


def threads_option(record: bool = True):
    """--threads: applied as the command starts; `record` passes the count on (training runs store it)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        callback=_apply_threads,
        expose_value=record,
        help="CPU threads for torch [one per core this process may use, or OMP_NUM_THREADS]"
        + ("; training is byte-identical only for the same count, which config.json records." if record else "."),
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
            click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Per step."),
            click.option("--seed", type=int, default=0, show_default=True, help="Fixes init, data order, noise."),
            click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP),
            click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA only)."),
            click.option("--channels-last", is_flag=True, help="channels_last memory format (faster on CUDA)."),
            click.option("--compile", is_flag=True, help="torch.compile the networks (slow start, faster steps)."),
            click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Loader procs."),
            threads_option(),
            click.option(
                "--cache-mb",
                type=click.FloatRange(min=0),
                default=256,
                show_default=True,
                help="Decoded-image cache per loader worker and folder, MiB (large photos decode once); 0: off.",
            ),
            click.option(
                "--sample-every", type=click.IntRange(min=1), default=250, show_default=True, help="Steps per grid."
            ),
            click.option(
                "--checkpoint-every",
                type=click.IntRange(min=1),
                default=500,
                show_default=True,
                help="Steps between checkpoints.",
            ),
            click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
            click.option("--overwrite", is_flag=True, help="Replace what --out holds."),
            click.option("--dry-run", is_flag=True, help="Check the data and settings, print the plan, train nothing."),
        ]
    ):
        f = option(f)
    return f


def resumable(*needed: str):
    """With --resume, options not given on the command line come from the run's config.json (--out/config.json).

    Options given again are checked against the config by the library, which names any that differ. Without
    --resume, each option in `needed` must be given. Put this decorator directly above the command function.
    """

    def decorate(f):
        @functools.wraps(f)
        def command(**params):
            ctx = click.get_current_context()
            if params.get("resume"):
                params.update(_saved_options(ctx, params))
            missing = [name for name in needed if params.get(name) is None]
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in missing)
            if missing and params.get("resume"):
                out = params["out"]
                raise click.UsageError(f"--resume: --out {out} holds no run to continue; drop --resume, give {flags}.")
            if missing:
                raise click.UsageError(f"missing option {flags} (or --resume a run in --out that has it).")
            return f(**params)

        return command

    return decorate


def _saved_options(ctx: click.Context, params: dict) -> dict:
    """The options of the run in --out that the command line left at their defaults, converted as click does."""
    import json

    try:
        saved = json.loads((Path(params["out"]) / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # no config to read from: the library says why --resume cannot continue
    if not isinstance(saved, dict):
        return {}
    loss = saved.get("loss") if isinstance(saved.get("loss"), dict) else {}
    if loss:  # a loss setting added to the code since the run was written: the run had its default, not a preset's
        from degrader.gan import LossConfig

        loss = {f.name: f.default for f in dataclasses.fields(LossConfig)} | loss
    flat = {**loss, **saved}  # loss.lr is not --lr
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    options = {}
    for param in ctx.command.params:
        if param.name in ("out", "resume", "overwrite", "dry_run") or param.name not in flat:
            continue
        if ctx.get_parameter_source(param.name) in given or flat[param.name] is None:
            continue
        value = flat[param.name]
        options[param.name] = param.type_cast_value(ctx, str(value) if isinstance(param.type, click.Choice) else value)
    return options


def as_str(options: dict) -> dict:
    """Paths as strings, for the JSON-serialisable config dataclasses."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}


def report(result, files: list[str]) -> None:
    """Say where a finished (or Ctrl-C'd) run left its files; a Ctrl-C'd run exits with status 130, as shells do."""
    console.print("  ".join(f"{name}: {result.out / name}" for name in files if (result.out / name).exists()))
    listed = result.out / "skipped.txt"
    if listed.exists():
        from degrader.images import LATE

        late = {line.split("\t")[1] for line in listed.read_text().splitlines() if line.endswith(LATE)}
        if late:
            console.print(
                f"[yellow]warning:[/] {len(late)} files passed the scan but failed to decode during training (the "
                f"next image took their place); every skipped file is listed in {listed}"
            )
    if result.interrupted:
        console.print(f"[yellow]interrupted[/] at step {result.step}; state saved. Continue with --resume.")
        raise click.exceptions.Exit(130)
