"""Click options, the plan-then-run sequence and the reporting that the long commands (`degrade fit`, ...) share."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

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


def int_choice(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A callback: the number a `click.Choice` of numbers picked, as an int."""
    return None if value is None else int(value)


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


def run_options(f):
    """The options every training run takes per run; every other setting comes through cli.settings."""
    for option in reversed(
        [
            click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="G updates."),
            click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Per step."),
            click.option("--seed", type=int, default=0, show_default=True, help="Fixes init, data order, noise."),
            click.option("--device", type=DEVICES, default="auto", show_default=True, help=DEVICE_HELP),
            threads_option(),
            click.option("--resume", is_flag=True, help="Continue the run in --out with its config.json's settings."),
            click.option("--overwrite", is_flag=True, help="Replace what --out holds."),
            click.option("--dry-run", is_flag=True, help="Check the data and settings, print the plan, train nothing."),
        ]
    ):
        f = option(f)
    return f


def run_planned(
    plan_fn: Callable[[Any], Any],
    run_fn: Callable[[Any, Any], Any],
    config: Any,
    dry_run: bool,
    *,
    describe: Callable[[Any], None],
    progress: Callable[[Any], AbstractContextManager],
    nothing: str = "trained or written",
    interrupted: str | None = None,
    files: list[str] | None = None,
) -> Any:
    """What every long command does: plan, print the plan, stop there on --dry-run, else run under a progress bar.

    Args:
        plan_fn: `plan_fit`, `plan_train`, ...: checks everything and writes nothing.
        run_fn: `fit`, `train`, ...: called as `run_fn(plan, on_progress)`.
        describe: prints the plan (and its warnings).
        progress: the progress context for the plan; what it yields is `run_fn`'s second argument.
        nothing: what a dry run did not do, for its last line.
        interrupted: what to say when Ctrl-C reaches here (exit status 130); None: the run handles Ctrl-C.
        files: the run's files to point to afterwards (`report`).

    Returns:
        The run's result, or None after a dry run.
    """
    with user_errors():
        plan = plan_fn(config)
        describe(plan)
        if dry_run:
            console.print(f"dry run: nothing {nothing}.")
            return None
        try:
            with progress(plan) as on_progress:
                result = run_fn(plan, on_progress)
        except KeyboardInterrupt:
            if interrupted is None:
                raise
            console.print(f"[yellow]interrupted[/]; {interrupted}")
            raise click.exceptions.Exit(130) from None
    if files is not None:
        report(result, files)
    return result


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
