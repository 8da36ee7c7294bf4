"""The `sr compare` table as cells (for the terminal and HTML) and `report.html`, from compare.json's content.

The HTML refers only to files beside it (grid.png, compare.json) and loads nothing from the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from degrader.files import atomic_path
from degrader.image_stats import STATISTICS
from degrader.report_page import STYLE, html_table

FLOOR = "real HR B vs A (floor)"

# (title, value of a row, cell format, higher is better)
Column = tuple[str, Callable[[dict[str, Any]], float | None], str, bool]


def _get(part: str, key: str, factor: float = 1.0) -> Callable[[dict[str, Any]], float | None]:
    def value(row: dict[str, Any]) -> float | None:
        v = (row.get(part) or {}).get(key)
        return None if v is None else v * factor

    return value


def summary_columns(report: dict[str, Any]) -> list[Column]:
    """PSNR/SSIM on the pairs (Y channel, the benchmarks' convention), then realism of SR outputs against HR."""
    cols: list[Column] = []
    if report["pairs"]:
        cols += [
            ("PSNR-Y dB", _get("pairs", "psnr_y"), "{:.2f}", True),
            ("SSIM-Y", _get("pairs", "ssim_y"), "{:.4f}", True),
            ("PSNR dB", _get("pairs", "psnr"), "{:.2f}", True),
        ]
    if report["floor"] is not None:
        cols += [
            ("realism (SWD rel.)", _get("relative", "swd"), "{:.3f}", False),
            ("SWD x1e3", _get("realism", "swd"), "{:.3g}", False),
            ("C2ST acc.", _get("realism", "c2st"), "{:.3f}", False),
        ]
        if report["features"]:
            cols += [
                ("FID", _get("realism", "fid"), "{:.2f}", False),
                ("FID rel.", _get("relative", "fid"), "{:.3f}", False),
                ("KID x1e3", _get("realism", "kid", 1e3), "{:.3g}", False),
            ]
    return cols


def statistics_columns() -> list[Column]:
    """1-D Wasserstein distance of each per-image statistic of the SR outputs to the HR set's."""
    return [(name, _get("realism", name), "{:.3g}", False) for name in STATISTICS]


def table(
    report: dict[str, Any], columns: list[Column]
) -> tuple[list[str], list[list[str]], dict[int, set[int]], bool]:
    """Header, cell rows (the floor first when there is one), the best rows per column, and whether a floor leads."""
    rows = list(report["rows"])
    has_floor = report["floor"] is not None
    if has_floor:
        rows.insert(0, {"name": FLOOR, "realism": report["floor"], "relative": dict.fromkeys(report["floor"], 0.0)})
    header = ["model", *[f"{title} {'↑' if up else '↓'}" for title, _, _, up in columns]]
    cells = []
    for row in rows:
        values = [(get(row), fmt) for _, get, fmt, _ in columns]
        cells.append([row["name"], *["–" if _missing(v) else fmt.format(v) for v, fmt in values]])
    best: dict[int, set[int]] = {}
    first = 1 if has_floor else 0  # the floor is a reference, never "best"
    for j, (_, get, _, up) in enumerate(columns):
        values = [(get(row), i) for i, row in enumerate(rows) if i >= first and not _missing(get(row))]
        if len({v for v, _ in values}) > 1:  # nothing to highlight when all tie
            target = (max if up else min)(v for v, _ in values)
            best[j + 1] = {i for v, i in values if v == target}
    return header, cells, best, has_floor


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def write_html(out: str | Path, report: dict[str, Any], grid: str = "grid.png") -> None:
    """Write `report.html` beside compare.json and the grid, atomically."""
    s = report["settings"]
    parts = [
        f"<h1>sr compare: one SR model per degrader, {s['steps']} steps each, seed {s['seed']}</h1>",
        f"<p>Each degrader degraded the HR images of <code>{html.escape(s['hr'])}</code> into paired shards; the same "
        f"{html.escape(s['preset'])} SR model was trained on each. <i>bicubic upscaling</i> is the classical baseline.",
    ]
    if report["pairs"]:
        parts.append(
            f" PSNR/SSIM: {report['pairs']} pairs of <code>{html.escape(s['pairs'])}</code>, border = scale, "
            "Y channel and RGB."
        )
    if report["floor"] is not None:
        parts.append(
            f" Realism: {report['n']} real LR images of <code>{html.escape(s['lr'])}</code>, upscaled to "
            f"{report['hr_size']} px by each, against {report['n']} HR images (half A); the floor is two disjoint "
            "halves of the HR set. <b>Relative</b>: (d &minus; floor) / (d<sub>bicubic upscaling</sub> &minus; "
            "floor): 1 = as real as bicubic upscaling, 0 = as real as real HR. C2ST: held-out accuracy of a small "
            "CNN telling SR outputs from HR images, 0.5 = indistinguishable."
        )
    parts.append("</p><h2>Table</h2>" + html_table(*table(report, summary_columns(report))))
    if report["floor"] is not None:
        parts.append("<h2>Per-image statistics (1-D Wasserstein distance to the HR set)</h2>")
        parts.append(html_table(*table(report, statistics_columns())))
    parts.append(
        "<h2>Grid</h2><p>Rows: LR images; columns: the LR image enlarged, bicubic upscaling, each SR model.</p>"
        f'<img src="{html.escape(grid)}" alt="comparison grid">'
        '<p>All figures: <a href="compare.json">compare.json</a>.</p>'
    )
    page = (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>sr compare</title><style>{STYLE}</style>'
        f"</head><body>\n{''.join(parts)}\n</body></html>\n"
    )
    with atomic_path(Path(out) / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
