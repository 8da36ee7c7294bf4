"""Terminal output shared by every command: the rich console, progress bars and user-error handling.

Deliberately free of torch imports so that `degrade --help` and `sr --help` answer at once.
"""

from __future__ import annotations

import math
import os
import time
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


def _numbers(logs: dict[str, float], shown: int) -> str:
    numbers = [(k, v) for k, v in logs.items() if isinstance(v, (int, float))][:shown]
    return "  ".join(f"{k} {v:.3g}" for k, v in numbers)


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


class PlainProgress:
    """Progress as plain lines, for output that is not a terminal (`2>&1 | tee`, CI logs, nohup), where a live bar
    shows nothing until the end: one line every `percent` of the total or every `seconds`, whichever comes first,
    and the last step. The library's callback `on_progress(step, total, logs)`."""

    def __init__(
        self, description: str, unit: str = "step", shown: int = 3, percent: float = 5.0, seconds: float = 30.0
    ):
        self.description, self.unit, self.shown, self.percent, self.seconds = description, unit, shown, percent, seconds
        self.start: tuple[int, float] | None = None  # (step, time) of the first call: the rate counts from there
        self.printed: tuple[int, float] = (0, 0.0)  # (step, time) of the last line
        self.pending: tuple[int, int, dict[str, float]] | None = None  # the last call, when not yet printed

    def __call__(self, step: int, total: int, logs: dict[str, float]) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = self.printed = (step, now)  # a resumed run starts past 0; the rate counts from here
        last_step, last_time = self.printed
        every = total * self.percent / 100 if total else math.inf
        self.pending = (step, total, logs)
        if step >= (total or math.inf) or step >= last_step + every or now - last_time >= self.seconds:
            self.finish()

    def line(self, step: int, total: int, logs: dict[str, float], now: float) -> str:
        """`fit 150/300 (50%)  2.31 step/s  eta 1:05  loss_g 0.123 ...`"""
        first_step, first_time = self.start
        rate = (step - first_step) / (now - first_time) if step > first_step and now > first_time else None
        done = f"{step}/{total} ({100 * step / total:.0f}%)" if total else str(step)
        parts = [f"{self.description} {done}"]
        parts.append(f"{rate:.3g} {self.unit}/s" if rate else f"? {self.unit}/s")
        if total and rate and step < total:
            parts.append(f"eta {_clock((total - step) / rate)}")
        return "  ".join([*parts, _numbers(logs, self.shown)]).rstrip()

    def finish(self) -> None:
        """The last call's line, when it was not printed (a run that stopped early, or a total not known)."""
        if self.pending is not None:
            now = time.monotonic()
            console.print(self.line(*self.pending, now), markup=False, highlight=False, soft_wrap=True)
            self.printed, self.pending = (self.pending[0], now), None


@contextmanager
def progress_bar(
    description: str, total: int | None = None, unit: str = "step", shown: int = 3
) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """Show a bar with rate, ETA and the first `shown` logged numbers; plain lines when the console is not a
    terminal (see `PlainProgress`).

    Yields the library's callback, `on_progress(step, total, logs)`.
    """
    if not console.is_terminal and not console.is_jupyter:
        plain = PlainProgress(description, unit, shown)
        yield plain
        plain.finish()
        return
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
            progress.update(task, completed=step, total=total, logs=_numbers(logs, shown))

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
