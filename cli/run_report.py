"""`degrade report RUN`, and the end of `degrade fit`: the validation verdict in one line and the run's report.html.

Registered on the `degrade` group by `cli/degrade.py`; the library is imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import DIR
from cli.progress import console, user_errors


def fit_summary(result) -> None:
    """After `fit`: whether the degrader beat bicubic on the held-out set (a warning when not), and report.html."""
    from degrader import dist
    from degrader.run_report import write_run_report
    from degrader.validation import verdict

    if not dist.is_main():  # under torchrun, rank 0 reports for all
        return
    beat, line = verdict(result.validation)
    if beat is None:
        console.print(f"validation: {line}")
    elif beat:
        console.print(f"[bold green]validation:[/] the degrader {line}")
    else:
        console.print(f"[bold red]warning:[/] the degrader {line}")
    with user_errors():
        console.print(f"report: {write_run_report(result.out)}")


@click.command("report")
@click.argument("run", type=DIR)
def report_cmd(run: Path) -> None:
    """Write RUN/report.html: loss curves, validation realism, sample grids over the steps and the eval table.

    Works for any `degrade fit` run (also one still running or stopped), and for `sr train` runs. The page
    and its plots refer only to files inside RUN: open it offline, or copy the folder.

    
    Example:
      degrade report runs/degrader
    """
    from degrader.run_report import write_run_report

    with user_errors():
        path = write_run_report(run)
    console.print(f"report: {path}")
