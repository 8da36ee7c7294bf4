"""`compare()`: the paper's Table 1 in one call: one SR model per degrader, trained alike, scored side by side.

For each degrader (a `degrade fit` run, or bicubic / bilinear / blur-bilinear / realesrgan / bsrgan; the
`baselines`, Real-ESRGAN's and BSRGAN's pipelines, are added by default) it exports paired shards of the same
HR images, trains the same SR model on them with the same steps and seed, then scores every model beside
plain bicubic upscaling:
- on paired images (`pairs`): PSNR and SSIM, as `sr eval` measures them;
- on real LR images without ground truth (`lr`): how real the SR outputs look against the HR set at HR size
  (SWD, classifier two-sample test, per-image statistics, FID/KID with a user's features; `degrader.evaluate`'s
  machinery), each beside its floor (two disjoint halves of the HR set) and relative to bicubic upscaling:
  1 = as real as bicubic upscaling, 0 = as real as real HR images. The paper's FID column.

Each stage is complete before the next uses it, so a killed comparison continues where it stopped (`resume`):
    OUT/settings.json       what was asked (a resume with other settings is refused)
    OUT/shards/<k>-<name>/  each degrader's export: resumable, reused once its manifest and checksums are whole
    OUT/sr/<k>-<name>/      each SR run: resumes exactly from its last checkpoint
    OUT/compare.json        the table, reused while the models are unchanged; OUT/grid.png and OUT/report.html
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from degrader.checkpoint import load_degrader
from degrader.classical import CLASSICAL
from degrader.errors import UserError
from degrader.evaluate import LOWER_IS_BETTER
from degrader.evaluate import compare as realism_metrics
from degrader.export import ExportConfig, ExportPlan, export_shards, plan_export
from degrader.features import FeatureExtractor
from degrader.files import read_json, sha256_file, write_json
from degrader.gan import LossConfig
from degrader.grids import save_grid
from degrader.image_stats import image_statistics
from degrader.images import draw_images, load_rgb, to_tensor
from degrader.progress import Progress
from degrader.realism import SWDReference, relative
from degrader.run import STATE_FILE, config_dict
from degrader.scan import Scan, scan_images
from sr.compare_report import write_html
from sr.evaluate import bicubic_upscale, evaluate_pairs, find_pairs
from sr.model import PRESETS, LowToHighConfig
from sr.train import SRTrainConfig, plan_train, train
from sr.upscale import SuperResolver

SETTINGS = "settings.json"
RESULT = "compare.json"
GRID = "grid.png"
BICUBIC = "bicubic upscaling"  # the row every model is measured against
BASELINES = ("realesrgan", "bsrgan")  # the hand-made pipelines users train on instead: rows of every comparison
RUN_ONLY = ("out", "resume", "device", "workers")  # settings that never change the table
EXPORT_CROP = {"resize": "center", "crop": "random"}  # --hr-prep -> export --crop: HR crops as `fit` makes them
GRID_CROP = 32  # LR pixels: pair images are centre-cropped to this for the grid


@dataclass
class CompareConfig:
    hr: str  # HR images: every degrader degrades them, and SR outputs are compared with them (realism)
    degraders: list[str]  # `degrade fit` runs or checkpoints, or `classical.CLASSICAL` names
    out: str  # the comparison's folder
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))  # compared after `degraders`; [] for none
    lr: str | None = None  # real LR images without ground truth: realism of the SR outputs
    pairs: str | None = None  # a folder of NAME_HR / NAME_LR image pairs: PSNR and SSIM
    steps: int = 2000  # SR training steps, the same for every degrader
    preset: str = "small"  # the SR model (sr.model.PRESETS)
    loss: LossConfig = field(default_factory=LossConfig)  # as `sr train`
    pixel_only: bool = False  # the L2 loss alone (Table 1's "pixel loss" rows)
    warmup_steps: int = 0  # first steps with the L2 loss alone
    batch_size: int = 16
    per_image: int = 1  # LR variants per HR image in each export
    n: int = 1000  # real LR images upscaled for realism; 2n HR images are drawn (halves A and B)
    features: str | None = None  # TorchScript feature extractor for FID/KID; None skips them
    features_size: int | None = None  # resize images to this side before the extractor
    hr_prep: str = "resize"  # as `fit`: "resize" (face crops) or "crop" (random native crops)
    lr_prep: str = "resize"
    hr_size: int = 64  # HR side when no learned degrader fixes it
    scale: int = 4  # likewise
    seed: int = 0  # exports, SR initialisation and data order, realism draws
    grid_images: int = 8  # rows of grid.png
    checkpoint_every: int = 500  # SR steps between checkpoints (what a resume after a kill starts from)
    workers: int = 2  # loader and export processes
    device: str = "auto"  # where degraders and SR models run
    resume: bool = False  # continue the comparison in `out`


@dataclass(frozen=True)
class Arm:
    """One degrader's branch: its export and its SR run."""

    spec: str  # what the user named it by
    name: str  # its display name
    export: ExportPlan
    shards: Path
    run: Path


@dataclass(frozen=True)
class ComparePlan:
    """What `compare` will do, checked before anything is written (also the answer to --dry-run)."""

    config: CompareConfig
    arms: list[Arm]
    model: LowToHighConfig  # the SR model every arm trains
    hr: Scan
    lr: Scan | None
    pairs: list[tuple[str, Path, Path]]  # (name, HR, LR); empty without `pairs`
    n: int  # realism images per set (0 without `lr`)
    features: FeatureExtractor | None
    recorded: dict[str, Any]  # the settings that fix the table


@dataclass
class CompareResult:
    out: Path
    interrupted: bool  # stopped by Ctrl-C during SR training (state saved: continue with resume)
    report: dict[str, Any] | None  # compare.json's content once scored


def _filled(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _check_out(out: Path, recorded: dict[str, Any], resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the comparison.")
    if _filled(out) and not resume:
        raise UserError(f"--out {out} is not empty; pass --resume to continue the comparison there, or a new --out.")
    if resume and not _filled(out):
        raise UserError(f"--resume: --out {out} holds no comparison to continue; drop --resume.")
    if resume:
        if not (out / SETTINGS).is_file():
            raise UserError(f"--resume: {out} holds no {SETTINGS}, so it is not a comparison; choose a new --out.")
        saved = read_json(out / SETTINGS, "comparison's settings", "choose a new --out")
        changed = sorted(k for k in saved.keys() | recorded.keys() if saved.get(k) != recorded.get(k))
        if changed:
            raise UserError(
                f"--resume: {out} was compared with other settings ({', '.join(changed)}); use a new --out."
            )


NEITHER = "name ends in neither _HR nor _LR"  # `find_pairs`' reason for a file that is no part of a pair


def _check_pairs(pairs: list[tuple[str, Path, Path]], scale: int) -> None:
    """Every pair `scale` apart, from the headers: a mismatch is found now, not after hours of training."""
    for name, hr_path, lr_path in pairs:
        with Image.open(hr_path) as hr, Image.open(lr_path) as lr:
            (w, h), (big_w, big_h) = lr.size, hr.size
        if not (0 <= big_h - h * scale < scale and 0 <= big_w - w * scale < scale):
            raise UserError(
                f"--pairs: {name}: HR is {big_w}x{big_h} but LR {w}x{h} times the scale {scale} is "
                f"{w * scale}x{h * scale}; give x{scale} pairs."
            )


def plan_compare(config: CompareConfig) -> ComparePlan:
    """Load every degrader, scan every folder and check every setting, without writing anything.

    Raises:
        UserError: no degrader, nothing to score, an unknown degrader or preset, degraders of different sizes,
            unusable folders, pairs of another scale, or an `out` that holds something else.
    """
    if not config.degraders:
        raise UserError("--degrader: name at least one degrader to compare (a `degrade fit` run, or bicubic).")
    if config.lr is None and config.pairs is None:
        raise UserError("give --lr (real LR images) and/or --pairs (HR/LR pairs): without them nothing is scored.")
    if config.preset not in PRESETS:
        raise UserError(f"--preset {config.preset!r} is not one of {', '.join(PRESETS)}.")
    if config.hr_prep not in EXPORT_CROP or config.lr_prep not in EXPORT_CROP:
        raise UserError(f"--hr-prep and --lr-prep must be one of {', '.join(EXPORT_CROP)}.")
    if min(config.steps, config.n, config.grid_images, config.checkpoint_every) < 1:
        raise UserError("--steps, n, grid_images and checkpoint_every must be at least 1.")
    out = Path(config.out)
    recorded = {k: v for k, v in config_dict(config).items() if k not in RUN_ONLY}
    _check_out(out, recorded, config.resume)

    specs = list(dict.fromkeys([*config.degraders, *config.baselines]))
    learned = {s: load_degrader(s, None, config.device) for s in specs if s not in CLASSICAL}
    sizes = {(d.hr_size, d.scale) for d in learned.values()}
    if len(sizes) > 1:
        raise UserError(f"--degrader: the learned degraders work at different sizes {sorted(sizes)}; compare alike.")
    hr_size, scale = sizes.pop() if sizes else (config.hr_size, config.scale)
    if scale not in (2, 4) and set(config.baselines) & set(BASELINES):
        raise UserError(
            f"scale {scale}: the baselines {', '.join(config.baselines)} take x2 or x4; add --set baselines=[]."
        )
    try:
        model = LowToHighConfig(lr_size=hr_size // scale, scale=scale, **PRESETS[config.preset])
    except ValueError as e:
        raise UserError(f"hr_size/scale: {e}.") from None

    names = [learned[s].name if s in learned else s for s in specs]
    arms = []
    for i, (spec, name) in enumerate(zip(specs, names, strict=True)):
        name = spec if names.count(name) > 1 else name  # two runs may share a folder name
        slug = f"{i + 1}-{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-')}"
        shards = out / "shards" / slug
        export = ExportConfig(
            degrader=spec, hr=config.hr, out=str(shards), per_image=config.per_image, seed=config.seed,
            crop=EXPORT_CROP[config.hr_prep], hr_size=hr_size, scale=None if spec in learned else scale,
            workers=config.workers, device=config.device, resume=_filled(shards),
        )  # fmt: skip
        arms.append(Arm(spec, name, plan_export(export), shards, out / "sr" / slug))

    lr = scan_images(config.lr, min_size=model.lr_size, option="--lr") if config.lr else None
    hr = arms[0].export.scan
    n = min(config.n, len(hr.paths) // 2, len(lr.paths)) if lr else 0
    if lr and n < 8:
        raise UserError(
            f"--lr {config.lr}: {len(lr.paths)} usable images and --hr {len(hr.paths)}; realism needs at least 8 "
            "real LR images and 16 HR images (two halves)."
        )
    pairs, left_out = find_pairs(config.pairs) if config.pairs else ([], [])
    broken = [(path, why) for path, why in left_out if why != NEITHER]  # a pair would be lost without a word
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise UserError(f"--pairs: {broken[0][0]}: {broken[0][1]}{more}; fix or remove it, so every pair is scored.")
    _check_pairs(pairs, scale)
    features = FeatureExtractor(config.features, config.features_size) if config.features else None
    return ComparePlan(config, arms, model, hr, lr, pairs, n, features, recorded)


def train_config(plan: ComparePlan, arm: Arm) -> SRTrainConfig:
    """The SR run of one arm: the same model, steps and seed for all; resumed when it has a saved state."""
    c = plan.config
    resume = (arm.run / STATE_FILE).exists()
    return SRTrainConfig(
        out=str(arm.run), shards=str(arm.shards), preset=c.preset, steps=c.steps, batch_size=c.batch_size,
        loss=c.loss, pixel_only=c.pixel_only, warmup_steps=c.warmup_steps, seed=c.seed, device=c.device,
        workers=c.workers, checkpoint_every=c.checkpoint_every, sample_every=min(250, c.steps), resume=resume,
        overwrite=not resume and _filled(arm.run),  # killed before its first checkpoint: start it again
    )  # fmt: skip


def _check_shards(arm: Arm, manifest: dict[str, Any]) -> None:
    """A finished export is reused only when every shard it lists is there with its checksum."""
    for entry in manifest["shards"]:
        path = arm.shards / entry["name"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise UserError(
                f"{path} is missing or damaged; remove {arm.shards} and rerun with --resume to export it again."
            )


def compare(
    plan: ComparePlan, on_progress: Progress | None = None, on_stage: Callable[[str], None] | None = None
) -> CompareResult:
    """Export, train and score as the plan says; writes everything to `plan.config.out` (see the module doc).

    Args:
        plan: the result of `plan_compare(config)`.
        on_progress: called as `on_progress(done, total, logs)` within each stage.
        on_stage: called with a short description (e.g. "export bicubic") before each stage starts.

    Returns:
        A `CompareResult`; `report` is None when Ctrl-C stopped an SR run (its state is saved).
    """
    out = Path(plan.config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS, plan.recorded)
    stage = on_stage or (lambda _: None)
    done = on_progress or (lambda *_: None)  # a reused stage reports itself complete too

    # --- 1. one export per degrader; a finished one is checked whole and reused ---
    for arm in plan.arms:
        stage(f"export {arm.name}")
        manifest = export_shards(arm.export, on_progress)
        _check_shards(arm, manifest)
        done(manifest["totals"]["samples"], manifest["totals"]["samples"], {})

    # --- 2. the same SR model, steps and seed on each export; a finished run is left as it is ---
    for arm in plan.arms:
        stage(f"sr train on {arm.name}")
        result = train(plan_train(train_config(plan, arm)), on_progress)
        if result.interrupted:
            return CompareResult(out, True, None)
        done(result.step, plan.config.steps, result.logs)

    # --- 3. scores, unless compare.json already holds them for these very models ---
    stage("score")
    models = [SuperResolver.load(arm.run, plan.config.device) for arm in plan.arms]
    saved = read_json(out / RESULT, "comparison's table", "remove it to score again") if (out / RESULT).exists() else {}
    same_models = [r["sha256"] for r in saved.get("rows", [])[1:]] == [m.sha256 for m in models]
    if saved.get("settings") == plan.recorded and same_models:
        report = saved
    else:
        report = score(plan, models, on_progress)
        write_json(out / RESULT, report)
    write_grid(plan, models, out / GRID)
    write_html(out, report)
    return CompareResult(out, False, report)


def score(plan: ComparePlan, models: list[SuperResolver], on_progress: Progress | None = None) -> dict[str, Any]:
    """The table: bicubic upscaling, then each model; PSNR/SSIM on the pairs, realism on the real LR images."""
    c, done = plan.config, 0
    total = len(plan.pairs) * len(models) + (plan.n * (len(models) + 2) if plan.lr else 0)

    def tick(k: int = 1) -> None:
        nonlocal done
        done += k
        if on_progress:
            on_progress(done, total, {})

    rows: list[dict[str, Any]] = [{"name": BICUBIC, "degrader": None, "sha256": "", "step": None}]
    for arm, m in zip(plan.arms, models, strict=True):
        rows.append({"name": f"SR on {arm.name}", "degrader": arm.spec, "sha256": m.sha256, "step": m.step})
    if plan.pairs:
        for row, m in zip(rows[1:], models, strict=True):
            result = evaluate_pairs(m, c.pairs, on_progress=lambda *_: tick())
            row["pairs"], rows[0]["pairs"] = result.mean["model"], result.mean["bicubic"]
    floor = None
    if plan.lr:
        real_lr = draw_images(plan.lr.paths, plan.n, plan.model.lr_size, c.lr_prep, c.seed, "compare-lr")
        hr = draw_images(plan.hr.paths, 2 * plan.n, plan.model.hr_size, c.hr_prep, c.seed, "compare-hr")
        hr_a, hr_b = hr[: plan.n], hr[plan.n :]  # (n, 3, H, H) each: the reference and the floor's other half
        reference, stats = SWDReference(hr_a, c.seed), image_statistics(hr_a)
        features = plan.features(hr_a) if plan.features else None

        def metrics(images: torch.Tensor) -> dict[str, float]:
            m = realism_metrics(images, hr_a, reference, stats, features, plan.features, c.seed)[0]
            tick(plan.n)
            return m

        floor = metrics(hr_b)
        for row, images in zip(rows, upscaled(real_lr, models), strict=True):
            row["realism"] = metrics(images)
        bicubic = rows[0]["realism"]
        for row in rows:
            row["relative"] = {
                k: relative(row["realism"][k], floor[k], bicubic[k]) for k in LOWER_IS_BETTER if k in floor
            }
    return {
        "settings": plan.recorded,
        "hr_size": plan.model.hr_size,
        "lr_size": plan.model.lr_size,
        "n": plan.n,
        "pairs": len(plan.pairs),
        "features": c.features,
        "floor": floor,
        "rows": rows,
    }


def upscaled(lr: torch.Tensor, models: list[SuperResolver]) -> list[torch.Tensor]:
    """Bicubic upscaling (PIL, as `sr eval`), then each model's output, of (n, 3, h, w) LR images."""
    scale = models[0].scale
    bicubic = torch.stack([bicubic_upscale(x, scale) for x in lr])  # (n, 3, h*s, w*s)
    return [bicubic, *[m.upscale(lr).cpu() for m in models]]


def write_grid(plan: ComparePlan, models: list[SuperResolver], path: Path) -> None:
    """Rows: real LR images (or the pairs' LR, centre crops, with HR beside); columns: LR, bicubic, each model."""
    c, s, k = plan.config, plan.model.scale, plan.config.grid_images
    hr = None
    if plan.lr:
        lr = draw_images(plan.lr.paths, min(k, plan.n), plan.model.lr_size, c.lr_prep, c.seed, "compare-lr")
        names = [f"real LR {i + 1}" for i in range(len(lr))]
    else:  # the pairs' images differ in size: the same centre crop of each, HR cropped to match
        names = [name for name, _, _ in plan.pairs[:k]]
        images = [(to_tensor(load_rgb(lr)), to_tensor(load_rgb(hr))) for _, hr, lr in plan.pairs[:k]]
        side = min(GRID_CROP, *(min(x.shape[-2:]) for x, _ in images))
        crops = []
        for x, y in images:
            top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
            y = y[:, top * s : (top + side) * s, left * s : (left + side) * s]
            crops.append((x[:, top : top + side, left : left + side], y))
        lr, hr = torch.stack([x for x, _ in crops]), torch.stack([y for _, y in crops])
    columns = [F.interpolate(lr, scale_factor=s, mode="nearest"), *upscaled(lr, models)]  # each (k, 3, H, W)
    labels = ["LR", BICUBIC, *[f"SR on {arm.name}" for arm in plan.arms]]
    if hr is not None:
        columns.append(hr)
        labels.append("HR")
    rows = [torch.stack([col[i] for col in columns]) for i in range(len(lr))]
    save_grid(rows, path, row_labels=names, col_labels=labels)
