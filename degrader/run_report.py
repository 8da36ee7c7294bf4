"""`report.html` of a training run: loss curves, the validation realism curve, the sample grids over the steps
and the final eval table, built from the run directory's own files.

`degrade fit` writes it when it ends and `degrade report RUN` for any run, old or new, finished or not. The HTML
refers only to files inside the run directory (its plots `report-*.png`, `samples/step-*.png`, `eval/...`) and
loads nothing from the network, so the folder can be copied or opened offline. Library code: writes files only.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import torch

from degrader.checkpoint import BEST_FILE, Degrader, noise_from_seeds
from degrader.errors import UserError
from degrader.eval_report import summary_columns, table
from degrader.files import atomic_path
from degrader.grids import save_grid
from degrader.report_page import STYLE, html_table, pyplot, save_figure
from degrader.run import CONFIG_FILE, LOG_FILE
from degrader.validation import read_validation_log, summarize, verdict

REPORT_FILE = "report.html"
LOSS_PLOT = "report-losses.png"
REALISM_PLOT = "report-realism.png"
FINGERPRINT_PLOT = "report-fingerprint.png"
KERNELS_IMAGE = "report-kernels.png"
FINGERPRINT_SEEDS = 512  # noise seeds whose parameters make the fingerprint's distributions
EVAL_DIR = "eval"  # `degrade eval --out RUN/eval` puts its table into the run's report
MAX_GRIDS = 12  # sample grids shown, evenly spaced over the steps (the last always)


def read_log(run: Path) -> list[dict[str, Any]]:
    """The loss lines of log.jsonl (validation lines apart); an unreadable line (a kill mid-write) is skipped."""
    path = run / LOG_FILE
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record and "val_swd" not in record:
            records.append(record)
    return records


def _loss_keys(records: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for r in records for k, v in r.items() if isinstance(v, (int, float)))
    return [k for k in keys if k != "step" and not k.endswith("_per_s")]  # throughput is not a loss


def plot_losses(records: list[dict[str, Any]], path: Path) -> None:
    """One small panel per logged loss against the step."""
    plt = pyplot()
    keys = _loss_keys(records)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        ax.plot([s for s, _ in points], [v for _, v in points], linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    save_figure(fig, path)


def plot_realism(records: list[dict[str, Any]], path: Path, best_step: int) -> None:
    """Validation SWD relative to bicubic against the step, with bicubic (1) and real (0) marked, and the fidelity
    (PSNR-Y against bicubic LR of the same HR) on a second axis when the log has it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    relative = all(not math.isnan(r["val_swd_rel"]) for r in records)
    key = "val_swd_rel" if relative else "val_swd"
    steps, values = [r["step"] for r in records], [r[key] for r in records]
    ax.plot(steps, values, marker="o", markersize=3, label="degrader (held-out)")
    if relative:
        ax.axhline(1.0, color="tab:red", linestyle="--", linewidth=1, label="bicubic (1)")
        ax.axhline(0.0, color="0.4", linestyle=":", linewidth=1, label="real vs real (0)")
        ax.set_ylabel("SWD relative to bicubic\n(lower is better)")
    else:  # bicubic at the floor: no relative figure, show raw SWD beside bicubic's
        ax.axhline(records[0]["val_bicubic"], color="tab:red", linestyle="--", linewidth=1, label="bicubic")
        ax.set_ylabel("SWD x1e3\n(lower is better)")
    best = [r for r in records if r["step"] == best_step]
    if best:
        ax.plot([best_step], [best[0][key]], marker="*", markersize=14, color="tab:green", linestyle="none")
        last = best_step == steps[-1] and len(steps) > 1  # label to the left of a point at the right edge
        ax.annotate(
            f"best: step {best_step}", (best_step, best[0][key]), textcoords="offset points",
            xytext=(-8 if last else 8, 8), ha="right" if last else "left",
        )  # fmt: skip
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fidelity = [(r["step"], r["val_fidelity"]) for r in records if "val_fidelity" in r]
    if fidelity:  # a realism figure that improves while this falls: the LR is losing the content
        right = ax.twinx()
        right.plot(*zip(*fidelity, strict=True), color="tab:purple", linewidth=1, alpha=0.7, label="fidelity (dB)")
        # two short lines: a vertical label longer than the axes is cut off at the figure's edges
        right.set_ylabel("fidelity (dB): PSNR-Y vs\nbicubic, in the run's tone", color="tab:purple")
        right.legend(fontsize=8, loc="upper right")
    save_figure(fig, path)


def _evenly(items: list[Path], n: int) -> list[Path]:
    if len(items) <= n:
        return items
    picked = {round(i * (len(items) - 1) / (n - 1)) for i in range(n)}
    return [items[i] for i in sorted(picked)]


def _grids_section(run: Path, best_step: int | None) -> str:
    """Up to MAX_GRIDS sample grids evenly over the steps, plus the best step's grid, marked."""
    grids = sorted(run.glob("samples/step-*.png"))
    best = run / "samples" / f"step-{best_step:06d}.png" if best_step else None
    shown = sorted({*_evenly(grids, MAX_GRIDS), *([best] if best in grids else [])})
    figures = "".join(
        f'<figure class="best"><img src="samples/{p.name}" alt="{p.stem}"><figcaption>{p.stem}: <b>best</b>, '
        f"the weights {BEST_FILE} holds and Degrader.load uses</figcaption></figure>"
        if p == best
        else f'<figure><img src="samples/{p.name}" alt="{p.stem}"><figcaption>{p.stem}</figcaption></figure>'
        for p in shown
    )
    missing = (
        f"<p>No grid of the best step ({best_step}): fit draws it when it ends (runs of older versions have none).</p>"
        if best is not None and best not in grids
        else ""
    )
    return (figures or "<p>No sample grids yet.</p>") + missing


def _eval_section(run: Path) -> str:
    path = run / EVAL_DIR / "report.json"
    if not path.exists():
        return (
            f"<p>No evaluation yet: <code>degrade eval --degrader {html.escape(str(run))} --hr HR --lr REAL_LR "
            f"--out {html.escape(str(run / EVAL_DIR))}</code> puts its table here.</p>"
        )
    try:
        report = json.loads(path.read_text())
        main = table(report, summary_columns(report.get("features") is not None))
    except (ValueError, KeyError, TypeError) as e:
        return f"<p>{EVAL_DIR}/report.json is unreadable ({html.escape(str(e))}).</p>"
    links = f'<a href="{EVAL_DIR}/report.html">the full eval report</a>'
    grid = f'<img src="{EVAL_DIR}/samples.png" alt="eval samples">' if (run / EVAL_DIR / "samples.png").exists() else ""
    return (
        f"<p>{report.get('n')} HR images degraded against {report.get('n')} held-out real LR images from "
        f"<code>{html.escape(str(report.get('lr')))}</code> (relative: 1 = bicubic, 0 = real; lower is better). "
        f"See {links}.</p>{html_table(*main)}{grid}"
    )


def fingerprint(net_g, n: int = FINGERPRINT_SEEDS) -> dict[str, torch.Tensor]:
    """The physical parameters a structured generator draws for seeds 0..n-1, one value per seed and quantity."""
    p = net_g.params(noise_from_seeds(range(n), net_g.config.z_dim).to(next(net_g.parameters()).device))
    sigma = (p["mix"][..., None] * p["sigma"] ** 2).sum(1).mean(-1).sqrt()  # (n,) RMS width of the mixture
    values = {
        "blur sigma (HR px)": sigma,
        "saturation (0 = grey)": p["saturation"],
        "JPEG quality": p["quality"],
        "noise std at mid-grey (/255)": (p["shot"] * 0.5 + p["read"]).sqrt() * 255,
        "grey share of the noise": p["grey_noise"],
    }
    if "subsampled" in p:
        values["4:2:0 chroma weight"] = p["subsampled"]
    if "sharpen" in p:
        values["sharpening amount"] = p["sharpen"]
    return {k: v.float().cpu() for k, v in values.items()} | {"kernel": p["kernel"].float().cpu()}


def _fingerprint_section(run: Path) -> str:
    """What a structured degrader learned: its parameter distributions and kernels (a fingerprint of the LR set)."""
    try:
        degrader = Degrader.load(run)
    except UserError:
        return "<p>No degrader checkpoint yet.</p>"
    if not hasattr(degrader.net_g, "params"):
        return "<p>The paper's generator has no readable parameters (the structured generator has them).</p>"
    values = fingerprint(degrader.net_g)
    kernels = values.pop("kernel")[:8]  # (8, k, k)
    kernels = (kernels / kernels.amax(dim=(1, 2), keepdim=True))[:, None].expand(-1, 3, -1, -1)
    save_grid([kernels], run / KERNELS_IMAGE, col_labels=[f"seed {i}" for i in range(len(kernels))], scale_to=64)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(values), figsize=(3 * len(values), 2.6))
    for ax, (name, v) in zip(axes, values.items(), strict=True):
        ax.hist(v.numpy(), bins=30, color="#357")
        ax.set_title(name, fontsize=9)
    save_figure(fig, run / FINGERPRINT_PLOT)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v.quantile(0.1):.3g}</td><td>{v.median():.3g}</td>"
        f"<td>{v.quantile(0.9):.3g}</td></tr>"
        for name, v in values.items()
    )
    return (
        f"<p>The parameters that {html.escape(degrader.file.name if degrader.file else 'the degrader')} "
        f"(step {degrader.step}) draws for "
        f"{FINGERPRINT_SEEDS} noise seeds: a fingerprint of the real LR set, and the first place to look when a "
        f"result looks wrong.</p><table><tr><th>parameter</th><th>10%</th><th>median</th><th>90%</th></tr>{rows}"
        f'</table><img src="{FINGERPRINT_PLOT}" alt="parameter distributions">'
        f'<p>Blur kernels of seeds 0-7 (each scaled to its peak):</p><img src="{KERNELS_IMAGE}" alt="kernels">'
    )


def _tone_line(config: dict[str, Any]) -> str:
    """The tone map a `loss.tone = "auto"` fit measured and held its LR to (from config.json), or nothing."""
    loss = config.get("loss") if isinstance(config.get("loss"), dict) else {}
    tone = loss.get("tone_map")
    numbers = isinstance(tone, list) and len(tone) == 2 and all(isinstance(v, (int, float)) for v in tone)
    if loss.get("tone") != "auto" or not numbers:
        return ""
    gain, offset = tone
    found = "the sets differ in tone beyond sampling noise" if tone != [1.0, 0.0] else "the identity: no difference"
    colour = loss.get("colour_map") if (loss.get("colour") or 0) > 0 else None
    held = ""
    if isinstance(colour, list) and len(colour) == 4 and all(isinstance(v, (int, float)) for v in colour):
        cast = " ".join(f"{c * 255:+.1f}" for c in colour[1:])
        held = f" Colour: LR chroma = {colour[0]:.3f} x HR chroma, cast R G B {cast}/255; each image's mean held to it."
    return (
        f"<p>Tone, measured from the two training sets before training (loss.tone auto): LR luma = {gain:.3f} x HR "
        f"luma {offset * 255:+.1f}/255 ({found}). The losses held each LR image to its HR's tone through it.{held}</p>"
    )


def write_run_report(run: str | Path) -> Path:
    """Write `report.html` (and `report-losses.png`, `report-realism.png`) into the run directory `run`.

    Returns:
        The path of report.html.

    Raises:
        UserError: `run` is not a run directory (it has no config.json).
    """
    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise UserError(f"{run} holds no {CONFIG_FILE}; give a run directory of `degrade fit` or `sr train`.")
    try:
        config = json.loads((run / CONFIG_FILE).read_text())
    except ValueError as e:
        raise UserError(f"{run / CONFIG_FILE} is not valid JSON ({e}); is the run directory damaged?") from None
    if not isinstance(config, dict):
        raise UserError(f"{run / CONFIG_FILE} is not a JSON object; is the run directory damaged?")
    losses, vals = read_log(run), read_validation_log(run)
    parts, used_step = [], None

    # --- validation: the verdict and the realism curve ---
    if vals:
        last = vals[-1]
        kept = [r for r in vals if r["step"] == last.get("val_best_step")]  # the step fit kept (by select)
        best = kept[0] if kept else min(vals, key=lambda r: r["val_swd"])
        figures = best["val_swd"], last["val_floor"], last["val_bicubic"], int(last.get("val_n", 0))
        fidelity = best.get("val_fidelity", math.nan), config.get("min_fidelity", 0.0)
        beat, line = verdict(summarize(best["step"], *figures, *fidelity))
        colour = "#060" if beat else "#a00"
        plot_realism(vals, run / REALISM_PLOT, best["step"])
        used_step = best["step"] if (run / BEST_FILE).is_file() else None
        parts.append(
            f'<h2>Validation realism</h2><p style="color:{colour};font-weight:bold">'
            f"The degrader {html.escape(line)}</p>"
            f"<p>SWD over Laplacian-pyramid patches against held-out real LR images, relative to bicubic "
            f"downscaling: 1 = as good as bicubic, 0 = as real as two halves of the real set.</p>"
            f'<img src="{REALISM_PLOT}" alt="validation realism over the steps">'
        )
    else:
        parts.append("<h2>Validation realism</h2><p>This run logged no validation (val_split 0 or too few LR).</p>")

    # --- losses ---
    if losses and _loss_keys(losses):
        plot_losses(losses, run / LOSS_PLOT)
        parts.append(f'<h2>Losses</h2><img src="{LOSS_PLOT}" alt="loss curves">')
    else:
        parts.append("<h2>Losses</h2><p>No loss lines logged yet.</p>")

    # --- sample grids over the steps, the best step's always (its weights are the ones Degrader.load uses) ---
    parts.append(f"<h2>Samples over the steps</h2>{_grids_section(run, used_step)}")

    # --- what a structured degrader learned ---
    if (run / "degrader.safetensors").exists() or (run / "best.safetensors").exists():
        parts.append(f"<h2>What the degrader learned</h2>{_tone_line(config)}{_fingerprint_section(run)}")

    # --- the eval table, then the config ---
    parts.append(f"<h2>Evaluation</h2>{_eval_section(run)}")
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>")
    models = [p.name for p in sorted(run.glob("*.safetensors")) if p.name != "state.safetensors"]
    steps = losses[-1]["step"] if losses else 0
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(run.name)}: run report</title><style>{STYLE}
figure{{display:inline-block;margin:0 1em 1em 0}}figcaption{{text-align:center;color:#555}}
figure.best img{{outline:3px solid #060}}</style></head><body>
<h1>Run report: {html.escape(run.name)}</h1>
<p>Logged up to step {steps} of {config.get("steps", "?")}; models: {html.escape(", ".join(models) or "none yet")}.
Files: <a href="{CONFIG_FILE}">{CONFIG_FILE}</a>, <a href="{LOG_FILE}">{LOG_FILE}</a>.</p>
{"".join(parts)}
</body></html>
"""
    with atomic_path(run / REPORT_FILE) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return run / REPORT_FILE
