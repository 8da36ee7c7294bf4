"""`degrade eval`'s report: `report.json`, `report.html` and its plots (matplotlib), written beside each other.

The HTML refers only to files in its own folder and loads nothing from the network, so a report folder can be
copied, zipped or opened offline. Library code: it writes files and prints nothing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from degrader.files import atomic_path, write_json
from degrader.grids import numbered, save_grid
from degrader.image_stats import STATISTICS
from degrader.report_page import STYLE, html_table, pyplot, save_figure

GRID_IMAGES = 8  # columns of the sample grid
FLOOR_LABEL = "real B vs real A (floor)"


def _num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"


def _c2st(m: dict[str, float]) -> str:
    return f"{m['c2st']:.3f} [{m['c2st_low']:.2f}, {m['c2st_high']:.2f}]"


# (title, metric key, cell text from (metrics, relative)); every column is lower-is-better
Column = tuple[str, str, Callable[[dict, dict], str]]


def summary_columns(has_features: bool) -> list[Column]:
    """The main table: the headline (SWD relative to bicubic, with colour and on texture alone), then each metric
    beside its floor."""
    cols: list[Column] = [
        ("realism (SWD rel.)", "rel:swd", lambda m, r: _num(r.get("swd"))),
        ("texture (SWD rel.)", "rel:tex_swd", lambda m, r: _num(r.get("tex_swd"))),
        ("SWD x1e3", "swd", lambda m, r: _num(m["swd"])),
        ("C2ST acc. [95% CI]", "c2st", lambda m, r: _c2st(m)),
        ("C2ST rel.", "rel:c2st", lambda m, r: _num(r.get("c2st"))),
        ("texture C2ST acc.", "tex_c2st", lambda m, r: _num(m.get("tex_c2st"))),
    ]
    if has_features:
        cols += [
            ("FID", "fid", lambda m, r: _num(m["fid"])),
            ("FID rel.", "rel:fid", lambda m, r: _num(r.get("fid"))),
            ("KID x1e3", "kid", lambda m, r: _num(m["kid"] * 1e3)),
        ]
    return cols


def statistics_columns() -> list[Column]:
    """The second table: 1-D Wasserstein distance of each per-image statistic's distribution to the real one."""
    return [(name, name, lambda m, r, name=name: _num(m[name])) for name in STATISTICS]


def table(report: dict[str, Any], columns: list[Column]) -> tuple[list[str], list[list[str]], dict[int, set[int]]]:
    """Header, rows (the floor first, then each degrader) and, per column, the row indices of the best degraders."""
    header = ["degrader", *[f"{title} ↓" for title, _, _ in columns]]
    rows = [[FLOOR_LABEL, *[cell(report["floor"], _floor_relative(key)) for _, key, cell in columns]]]
    rows += [[r["name"], *[cell(r["metrics"], r["relative"]) for _, key, cell in columns]] for r in report["degraders"]]
    best = {}
    for j, (_, key, _) in enumerate(columns):
        values = [_value(r, key) for r in report["degraders"]]
        finite = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
        if len(finite) > 1 and len({v for v, _ in finite}) > 1:  # nothing to highlight when all tie
            low = min(v for v, _ in finite)
            best[j + 1] = {i + 1 for v, i in finite if v == low}  # +1: the floor row comes first
    return header, rows, best


def _floor_relative(key: str) -> dict[str, float]:
    return {key[4:]: 0.0} if key.startswith("rel:") else {}


def _value(row: dict[str, Any], key: str) -> float | None:
    return row["relative"].get(key[4:]) if key.startswith("rel:") else row["metrics"].get(key)


# ---------------------------------------------------------------------------------------------- plots


def plot_histograms(stats: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """One panel per statistic: the real set's histogram, and each degrader's as a line over the same bins."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
    for ax, name in zip(axes.flat, STATISTICS, strict=True):
        values = {k: v[name].double().numpy() for k, v in stats.items()}
        lo = min(float(v.min()) for v in values.values())
        hi = max(float(v.max()) for v in values.values())
        bins = torch.linspace(lo, hi if hi > lo else lo + 1e-6, 31).numpy()
        for label, v in values.items():
            if label == "real":
                ax.hist(v, bins=bins, color="0.75", label="real LR", density=True)
            else:
                ax.hist(v, bins=bins, histtype="step", linewidth=1.6, label=label, density=True)
        ax.set_title(name)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Per-image statistics: real LR (gray) against each degrader")
    save_figure(fig, path)


def plot_samples(rows: list[tuple[str, torch.Tensor]], path: Path, n: int = GRID_IMAGES) -> None:
    """A grid with row and column captions in the image: rows are (caption, (N, 3, h, w) images in [0, 1])."""
    images = [batch[:n] for _, batch in rows]  # LR rows are enlarged (nearest) to the HR row's height
    columns = numbered(max(len(batch) for batch in images))
    save_grid(images, path, row_labels=[caption for caption, _ in rows], col_labels=columns)


# ---------------------------------------------------------------------------------------------- eval report


def write_eval_report(out: str | Path, result) -> dict[str, Any]:
    """Write `report.json`, `samples.png`, `statistics.png` and `report.html` for a `degrader.evaluate` result.

    Returns:
        The JSON report.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = result.to_json()
    n = GRID_IMAGES
    grid = [("HR", result.hr[:n])]
    grid += [(name, fake[:n]) for name, fake in result.fakes.items()]
    grid.append(("real LR (unpaired)", result.real[:n]))
    plot_samples(grid, out / "samples.png")
    plot_histograms(result.stats, out / "statistics.png")
    write_json(out / "report.json", report)

    main = table(report, summary_columns(report["features"] is not None))
    stats = table(report, statistics_columns())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>degrade eval</title><style>{STYLE}</style></head><body>
<h1>degrade eval: how real is each degrader's LR?</h1>
<p>{report["n"]} HR images from <code>{html.escape(report["hr"])}</code> degraded by each degrader, against
{report["n"]} real LR images (half A) from <code>{html.escape(report["lr"])}</code>, {report["hr_size"]} px to
{report["lr_size"]} px, seed {report["seed"]}. The floor is each metric between two disjoint halves of the real set
(B against A) at the same sample size. <b>Relative</b> figures are (d &minus; floor) / (d<sub>bicubic</sub> &minus;
floor): 1 is as good as bicubic, below 1 better, 0 as real as real. Every column: lower is better; the best
degrader is highlighted. C2ST: accuracy of a small CNN telling generated from real on held-out images, 0.5 means
indistinguishable. Evaluation took {report["seconds"]:.1f} s.</p>
<h2>Realism</h2>{html_table(*main)}
<h2>Per-image statistics (1-D Wasserstein distance to the real distribution)</h2>{html_table(*stats)}
<img src="statistics.png" alt="per-image statistics histograms">
<h2>Samples</h2><p>Columns are the same HR images with the same noise seeds; the last row is real LR images
(unpaired, for comparison).</p><img src="samples.png" alt="sample grid">
<p>All figures: <a href="report.json">report.json</a>.</p>
</body></html>
"""
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return report
