"""What every HTML report is built from: its style sheet, a table with the best cells marked, and matplotlib
figures written as PNG files beside the page (`eval_report.py`, `run_report.py`, `sr/compare_report.py`).
"""

from __future__ import annotations

import html
from pathlib import Path

from degrader.files import atomic_path

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}
tr.floor{color:#666;font-style:italic}td.best{font-weight:bold;background:#dfd}img{max-width:100%}"""


def pyplot():
    """matplotlib's pyplot drawing to files only (the Agg backend), imported on first use: reports are optional."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none touched
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write `fig` as a PNG and close it: pyplot keeps every open figure alive."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot().close(fig)


def html_table(header: list[str], rows: list[list[str]], best: dict[int, set[int]], floor: bool = True) -> str:
    """An HTML table; `best[j]`: the rows whose cell in column j is marked best; with `floor`, row 0 is greyed."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="{"best" if i in best.get(j, ()) else ""}">{html.escape(c)}</td>' for j, c in enumerate(row)
        )
        body.append(f'<tr class="{"floor" if floor and i == 0 else ""}">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
