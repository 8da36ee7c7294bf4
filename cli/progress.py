"""Terminal output shared by every command: the rich console, progress bars and user-error handling.

Deliberately free of torch imports so that `degrade --help` and `sr --help` answer at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Under torchrun only rank 0 talks; the other ranks' errors still reach stderr through click.
console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")


class RateColumn(ProgressColumn):
    """Steps (or samples) per second, averaged by rich over the last seconds."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"? {self.unit}/s", style="progress.data.speed")


@contextmanager
def progress_bar(
    description: str, total: int | None = None, unit: str = "step", shown: int = 3
) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """Show a bar with rate, ETA and the first `shown` logged numbers.

    Yields the library's callback, `on_progress(step, total, logs)`.
    """
    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[logs]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, logs="")

        def on_progress(step: int, total: int, logs: dict[str, float]) -> None:
            numbers = [(k, v) for k, v in logs.items() if isinstance(v, (int, float))][:shown]
            progress.update(task, completed=step, total=total, logs="  ".join(f"{k} {v:.3g}" for k, v in numbers))

        yield on_progress


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's `UserError` into a one-line click error (no traceback), and Ctrl-C into exit status 130."""
    from degrader.errors import UserError

    try:
        yield
    except UserError as e:
        raise click.ClickException(_one_line(str(e))) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (Ctrl-C).")
        raise click.exceptions.Exit(130) from None


def _one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker comes back wrapped in the worker's traceback; keep its message."""
    if "Original Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]  # "degrader.errors.ShardError: <the message>"
    return last.split(": ", 1)[1] if ": " in last else last


def warn_skipped(option: str, skipped: list, shown: int = 3, listed_in=None) -> None:
    """One warning line for unreadable or too-small inputs, naming the first `shown` and the file `listed_in`
    that lists them all (a run's skipped.txt)."""
    if skipped:
        names = ", ".join(f"{p.name} ({why})" for p, why in skipped[:shown])
        more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
        more += f"; all of them in {listed_in}" if listed_in is not None and more else ""
        console.print(f"[yellow]warning:[/] {option}: skipped {len(skipped)} files: {names}{more}")
