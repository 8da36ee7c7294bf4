"""`evaluate_degraders()`: how real does each degrader's LR look, against real LR images and beside the floor?

HR and real LR images are prepared as `fit` prepares them (same scan, same `--hr-prep/--lr-prep`, no
augmentation). The real LR sample is split into two disjoint halves A and B of n images each; every degrader
degrades the same n HR images, and each metric compares its output with A. The floor is the same metric
between B and A, at the same sample size: what "as real as real" scores with n images. Headline figures are
relative to bicubic: (d - floor) / (d_bicubic - floor), 1 = as good as bicubic, 0 = real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from degrader.checkpoint import load_degrader
from degrader.errors import UserError
from degrader.features import TIMEOUT, FeatureExtractor, fid, kid
from degrader.image_stats import STATISTICS, image_statistics, statistics_distances
from degrader.images import draw_images, hash_int
from degrader.progress import Progress
from degrader.realism import SWDReference, classifier_two_sample_test, relative
from degrader.scan import Scan, scan_images
from degrader.texture import texture_swd, texture_two_sample_test

REFERENCE = "bicubic"  # always evaluated: the headline figures are relative to it
LOWER_IS_BETTER = (
    "swd",
    "tex_swd",
    "c2st",
    "tex_c2st",
    *STATISTICS,
    "fid",
    "kid",
)  # the metrics that get a relative figure


@dataclass
class EvalConfig:
    degraders: list[str]  # run dirs, checkpoints, or bicubic / bilinear / blur-bilinear; bicubic is always added
    hr: str  # folder of HR images to degrade
    lr: str  # folder of real LR images (the target)
    out: str  # report folder
    n: int = 1000  # images per compared set; 2n real LR images are drawn (halves A and B)
    features: str | None = None  # TorchScript feature extractor for FID/KID; None skips them
    features_size: int | None = None  # resize images to this side before the extractor; None keeps their size
    features_timeout: float = TIMEOUT  # seconds the extractor's first call may take (the file is code)
    hr_prep: str = "resize"  # as `fit`: "resize" (shorter side + centre crop) or "crop" (random native crops)
    lr_prep: str = "resize"
    hr_size: int = 64  # HR side for classical degraders when no learned degrader fixes it
    scale: int = 4  # likewise
    seed: int = 0  # fixes the image draw, crops, degrader noise, SWD projections and the classifier
    batch_size: int = 64  # HR images per degrader call
    device: str = "cpu"  # where learned degraders run; metrics run on the CPU
    overwrite: bool = False  # write into a non-empty --out


@dataclass(frozen=True)
class EvalPlan:
    """What `evaluate_degraders` will do, checked before anything is computed or written."""

    config: EvalConfig
    degraders: list[Any]  # loaded degraders, bicubic first
    specs: list[str]  # what the user named each by, same order
    hr: Scan
    lr: Scan
    hr_size: int
    scale: int
    n: int  # images per set, after capping by the folder sizes
    features: FeatureExtractor | None


@dataclass
class EvalResult:
    """Every figure, plus the images and per-image statistics the report draws."""

    plan: EvalPlan
    floor: dict[str, float]  # real B vs real A
    rows: list[dict[str, Any]]  # one per degrader: name, spec, sha256, step, metrics, relative
    seconds: float
    hr: torch.Tensor = field(repr=False)  # (n, 3, H, H)
    real: torch.Tensor = field(repr=False)  # (2n, 3, h, h): half A then half B
    fakes: dict[str, torch.Tensor] = field(repr=False)  # degrader name -> (n, 3, h, h)
    stats: dict[str, dict[str, torch.Tensor]] = field(repr=False)  # "real" and each degrader -> statistics

    def to_json(self) -> dict[str, Any]:
        c = self.plan.config
        return {
            "n": self.plan.n,
            "hr": c.hr,
            "lr": c.lr,
            "hr_size": self.plan.hr_size,
            "lr_size": self.plan.hr_size // self.plan.scale,
            "hr_prep": c.hr_prep,
            "lr_prep": c.lr_prep,
            "seed": c.seed,
            "features": c.features,
            "reference": REFERENCE,
            "lower_is_better": list(LOWER_IS_BETTER),
            "floor": self.floor,
            "degraders": self.rows,
            "seconds": round(self.seconds, 2),
        }


def plan_evaluation(config: EvalConfig) -> EvalPlan:
    """Load every degrader, scan both folders and check sizes, without computing or writing anything.

    Raises:
        UserError: an unknown degrader, degraders of different sizes, a folder without usable images,
            too few real LR images, or an unreadable feature extractor.
    """
    specs = [REFERENCE, *[s for s in dict.fromkeys(config.degraders) if s != REFERENCE]]
    learned = [load_degrader(s, None, config.device) for s in specs if not _classical(s)]
    sizes = {(d.hr_size, d.scale) for d in learned}
    if len(sizes) > 1:
        raise UserError(f"--degrader: the learned degraders work at different sizes {sorted(sizes)}; compare alike.")
    hr_size, scale = sizes.pop() if sizes else (config.hr_size, config.scale)
    learned_iter = iter(learned)
    degraders = [load_degrader(s, scale) if _classical(s) else next(learned_iter) for s in specs]
    hr = scan_images(config.hr, min_size=hr_size, option="--hr")
    lr = scan_images(config.lr, min_size=hr_size // scale, option="--lr")
    n = min(config.n, len(hr.paths), len(lr.paths) // 2)
    if n < 8:
        raise UserError(
            f"--lr {config.lr}: {len(lr.paths)} usable images and --hr {len(hr.paths)}; evaluation needs at least "
            "16 real LR images (two halves) and 8 HR images."
        )
    features = None
    if config.features:
        features = FeatureExtractor(config.features, config.features_size, timeout=config.features_timeout)
    _check_out(Path(config.out), config.overwrite)
    return EvalPlan(config, degraders, specs, hr, lr, hr_size, scale, n, features)


def _check_out(out: Path, overwrite: bool) -> None:
    """A report replaces only its own files, so --overwrite never deletes anything else in the folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace the report files in it.")


def _classical(spec: str) -> bool:
    from degrader.classical import CLASSICAL

    return spec in CLASSICAL


def compare(
    fake: torch.Tensor,
    real: torch.Tensor,
    reference: SWDReference,
    real_stats: dict[str, torch.Tensor],
    real_features: torch.Tensor | None,
    features: FeatureExtractor | None,
    seed: int,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Every metric of `fake` against `real` (half A). Returns the metrics and the fake set's statistics."""
    per_level = reference.distance(fake)
    side = min(real.shape[-2:])
    metrics = {"swd": sum(per_level) / len(per_level)}
    metrics.update({f"swd_{side >> i}": d for i, d in enumerate(per_level)})
    metrics.update(classifier_two_sample_test(fake, real, seed))
    metrics["tex_swd"] = texture_swd(fake, real, seed)  # texture alone: each set normalised by its own statistics
    metrics.update(texture_two_sample_test(fake, real, seed))
    stats = image_statistics(fake)
    metrics.update(statistics_distances(stats, real_stats))
    if features is not None and real_features is not None:
        f = features(fake)
        metrics["fid"] = fid(f, real_features)
        metrics["kid"], metrics["kid_std"] = kid(f, real_features, seed=seed)
    return metrics, stats


def evaluate_degraders(plan: EvalPlan, on_progress: Progress | None = None) -> EvalResult:
    """Degrade n HR images with each degrader and measure how real the results look (see the module doc).

    Args:
        plan: the result of `plan_evaluation(config)`.
        on_progress: called as `on_progress(done, total, {})`, counting images loaded and sets compared.

    Returns:
        An `EvalResult`; `degrader.eval_report.write_eval_report` turns it into report.json / report.html.
    """
    start = time.perf_counter()
    n, cfg, lr_size = plan.n, plan.config, plan.hr_size // plan.scale
    total = 3 * n + n * (1 + len(plan.degraders))
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        if on_progress:
            on_progress(done, total, {})

    # --- data: n HR images, 2n real LR images (halves A and B), prepared as fit does ---
    hr = draw_images(plan.hr.paths, n, plan.hr_size, cfg.hr_prep, cfg.seed, "eval-hr", tick)  # (n, 3, H, H)
    real = draw_images(plan.lr.paths, 2 * n, lr_size, cfg.lr_prep, cfg.seed, "eval-lr", tick)  # (2n, 3, h, h)
    real_a, real_b = real[:n], real[n:]
    reference = SWDReference(real_a, cfg.seed)
    real_stats = image_statistics(real_a)
    real_features = plan.features(real_a) if plan.features else None

    # --- the floor: half B against half A ---
    floor, _ = compare(real_b, real_a, reference, real_stats, real_features, plan.features, cfg.seed)
    tick(n)

    # --- each degrader: the same HR images and noise seeds ---
    seeds = [hash_int("eval-noise", cfg.seed, i) % 2**62 for i in range(n)]
    rows, fakes, stats = [], {}, {"real": real_stats}
    for spec, degrader in zip(plan.specs, plan.degraders, strict=True):
        fake = torch.cat([
            degrader.degrade(hr[i : i + cfg.batch_size], seeds[i : i + cfg.batch_size]).float().cpu()
            for i in range(0, n, cfg.batch_size)
        ])  # (n, 3, h, h)  # fmt: skip
        name = degrader.name if degrader.name not in fakes else spec  # two runs may share a folder name
        metrics, stats[name] = compare(fake, real_a, reference, real_stats, real_features, plan.features, cfg.seed)
        fakes[name] = fake
        rows.append({
            "name": name, "spec": spec, "sha256": getattr(degrader, "sha256", ""),
            "step": getattr(degrader, "step", None), "metrics": metrics,
        })  # fmt: skip
        tick(n)
    bicubic = rows[0]["metrics"]
    for row in rows:
        row["relative"] = {
            k: relative(row["metrics"][k], floor[k], bicubic[k]) for k in LOWER_IS_BETTER if k in row["metrics"]
        }
    return EvalResult(plan, floor, rows, time.perf_counter() - start, hr, real, fakes, stats)
