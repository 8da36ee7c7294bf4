"""Evaluate an SR model against bicubic upscaling on image pairs or paired shards: PSNR and SSIM, RGB and Y.

Follows the usual SR benchmark protocol: HR is cropped to LR x scale ("mod-crop") when its size does not
divide, and `scale` pixels are left out on every border. The bicubic baseline is PIL's bicubic (a = -0.5,
like MATLAB's imresize) on the 8-bit LR image, which reproduces the published bicubic numbers (Set5 x4:
28.43 dB on Y, against 28.42 in the literature).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from degrader.errors import UserError
from degrader.files import write_json
from degrader.images import load_rgb, scan_images, to_tensor
from degrader.progress import Progress
from degrader.shards import ShardDataset
from sr.metrics import psnr, ssim
from sr.upscale import SuperResolver

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
METHODS = ("model", "bicubic")


@dataclass
class EvalRow:
    """Scores of one image: {"model": {metric: value}, "bicubic": {...}} with the metrics of `METRICS`."""

    name: str
    lr_size: tuple[int, int]  # (h, w)
    hr_size: tuple[int, int]  # after the mod-crop
    scores: dict[str, dict[str, float]]


@dataclass
class EvalReport:
    """Per-image rows, their means, and the first few images (LR, bicubic, SR, HR) for a grid."""

    checkpoint: str
    source: str
    scale: int
    crop_border: int
    rows: list[EvalRow]
    mean: dict[str, dict[str, float]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): unreadable or unpaired
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: no tensors, and infinite PSNR (identical images) as null."""

        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return x if math.isfinite(x) else None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        data = {k: v for k, v in asdict(self).items() if k != "examples"}
        return clean(data)

    def write_json(self, path: str | Path) -> None:
        """Write `to_dict()` as JSON, atomically."""
        write_json(path, self.to_dict())


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The classical baseline: PIL bicubic of the 8-bit image. (3, h, w) in [0, 1] -> (3, h*s, w*s) in [0, 1]."""
    a = (lr.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(np.ascontiguousarray(a), "RGB")
    return to_tensor(img.resize((img.width * scale, img.height * scale), Image.Resampling.BICUBIC))


def mod_crop(hr: torch.Tensor, lr: torch.Tensor, scale: int, name: str) -> torch.Tensor:
    """Crop HR (3, H, W) to the LR size times `scale`; a pair that is not `scale` apart is a UserError."""
    (h, w), (big_h, big_w) = lr.shape[-2:], hr.shape[-2:]
    if not (0 <= big_h - h * scale < scale and 0 <= big_w - w * scale < scale):
        raise UserError(
            f"{name}: HR is {big_w}x{big_h} but LR {w}x{h} times the model's scale {scale} is "
            f"{w * scale}x{h * scale}; is the pair matched, and the model trained for this scale?"
        )
    return hr[:, : h * scale, : w * scale]


def score(sr: torch.Tensor, hr: torch.Tensor, crop: int) -> dict[str, float]:
    """PSNR and SSIM of one (3, H, W) image on RGB and on Y, with `crop` border pixels left out."""
    return {
        "psnr": psnr(sr, hr, crop_border=crop).item(),
        "ssim": ssim(sr, hr, crop_border=crop).item(),
        "psnr_y": psnr(sr, hr, crop_border=crop, y_channel=True).item(),
        "ssim_y": ssim(sr, hr, crop_border=crop, y_channel=True).item(),
    }


def _evaluate(
    model: SuperResolver,
    pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    *,
    checkpoint: str,
    source: str,
    total: int,
    tile: int | None,
    examples: int,
    on_progress: Progress | None,
    skipped: list[tuple[str, str]],
) -> EvalReport:
    s = model.scale
    rows: list[EvalRow] = []
    kept: list[dict[str, Any]] = []
    for name, lr, hr in pairs:
        try:  # one bad pair is named in `skipped`; the rest are still scored
            hr = mod_crop(hr, lr, s, name)  # (3, h*s, w*s)
            if min(hr.shape[-2:]) - 2 * s < 11:
                raise UserError(f"{name}: HR {hr.shape[-1]}x{hr.shape[-2]} is too small for SSIM after a {s} px crop.")
        except UserError as e:
            skipped.append((name, str(e).removeprefix(f"{name}: ")))
            continue
        sr = model.upscale(lr[None], tile=tile)[0].cpu()  # (3, h*s, w*s)
        bic = bicubic_upscale(lr, s)
        rows.append(
            EvalRow(
                name,
                tuple(lr.shape[-2:]),
                tuple(hr.shape[-2:]),
                {"model": score(sr, hr, s), "bicubic": score(bic, hr, s)},
            )
        )
        if len(kept) < examples:
            lr_big = F.interpolate(lr[None], scale_factor=s, mode="nearest")[0]
            kept.append({"name": name, "lr": lr_big, "bicubic": bic, "sr": sr, "hr": hr})
        if on_progress is not None:
            on_progress(len(rows), total, {f"{m}_{k}": rows[-1].scores[m][k] for m in METHODS for k in ("psnr_y",)})
    if not rows:
        why = f" ({len(skipped)} skipped, first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise UserError(f"{source}: no image pairs to evaluate{why}.")
    mean = {m: {k: sum(r.scores[m][k] for r in rows) / len(rows) for k in METRICS} for m in METHODS}
    return EvalReport(checkpoint, source, s, s, rows, mean, skipped, kept)


def _resolver(checkpoint: SuperResolver | str | Path, device: str) -> tuple[SuperResolver, str]:
    if isinstance(checkpoint, SuperResolver):
        return checkpoint, checkpoint.name
    return SuperResolver.load(checkpoint, device), str(checkpoint)


def _unambiguous(images: dict[str, list[Path]], role: str, skipped: list[tuple[str, str]]) -> dict[str, Path]:
    """One file per name; a name with several files (x_HR.png and x_HR.webp) is left out, each file named."""
    for name, paths in images.items():
        if len(paths) > 1:
            names = " and ".join(p.name for p in paths)
            skipped += [(str(p), f"ambiguous {role} of {name}: {names}; rename or move all but one") for p in paths]
    return {name: paths[0] for name, paths in images.items() if len(paths) == 1}


def find_pairs(
    pairs_dir: str | Path | None = None, *, hr_dir: str | Path | None = None, lr_dir: str | Path | None = None
) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, str]]]:
    """Match HR and LR images, either `*_HR.*` / `*_LR.*` in one folder, or two folders by file name.

    Returns (name, hr_path, lr_path) sorted by name, and the (file, reason) of files left out.

    Raises:
        UserError: a folder is missing, the options are mixed, or no pair is found.
    """
    if (pairs_dir is None) == (hr_dir is None and lr_dir is None) or (hr_dir is None) != (lr_dir is None):
        raise UserError("give either --pairs DIR, or both --hr DIR and --lr DIR.")
    skipped: list[tuple[str, str]] = []
    if pairs_dir is not None:
        scan = scan_images(pairs_dir, option="--pairs")
        skipped += [(str(p), r) for p, r in scan.skipped]
        hr, lr = {}, {}
        for p in scan.paths:
            rel = p.relative_to(scan.root).with_suffix("").as_posix()
            if rel.upper().endswith("_HR"):
                hr.setdefault(rel[:-3], []).append(p)
            elif rel.upper().endswith("_LR"):
                lr.setdefault(rel[:-3], []).append(p)
            else:
                skipped.append((str(p), "name ends in neither _HR nor _LR"))
        where = f"--pairs {pairs_dir}"
    else:
        hr_scan, lr_scan = scan_images(hr_dir, option="--hr"), scan_images(lr_dir, option="--lr")
        skipped += [(str(p), r) for p, r in hr_scan.skipped + lr_scan.skipped]
        hr, lr = {}, {}
        for images, scan in ((hr, hr_scan), (lr, lr_scan)):
            for p in scan.paths:
                images.setdefault(p.relative_to(scan.root).with_suffix("").as_posix(), []).append(p)
        where = f"--hr {hr_dir} and --lr {lr_dir}"
    hr, lr = _unambiguous(hr, "HR", skipped), _unambiguous(lr, "LR", skipped)
    skipped += [(str(hr[k]), "no LR partner") for k in sorted(hr.keys() - lr.keys())]
    skipped += [(str(lr[k]), "no HR partner") for k in sorted(lr.keys() - hr.keys())]
    pairs = [(k, hr[k], lr[k]) for k in sorted(hr.keys() & lr.keys())]
    if not pairs:
        hint = "name them NAME_HR.png and NAME_LR.png" if pairs_dir is not None else "give both images the same name"
        raise UserError(f"{where}: no HR/LR image pairs found; {hint}.")
    return pairs, skipped


def evaluate_pairs(
    checkpoint: SuperResolver | str | Path,
    pairs_dir: str | Path | None = None,
    *,
    hr_dir: str | Path | None = None,
    lr_dir: str | Path | None = None,
    device: str = "cpu",
    tile: int | None = None,
    examples: int = 0,
    on_progress: Progress | None = None,
) -> EvalReport:
    """Score an SR model and bicubic upscaling on HR/LR image pairs (see `find_pairs` for the layouts).

    Args:
        checkpoint: an `sr train` run directory, its `sr.safetensors`, or a loaded `SuperResolver`.
        pairs_dir: one folder of `*_HR.*` and `*_LR.*` images; or give `hr_dir` and `lr_dir`.
        device: where the model runs.
        tile: LR tile size for `SuperResolver.upscale`.
        examples: how many images to keep (LR enlarged, bicubic, SR, HR) in `report.examples`.
        on_progress: called after each image as (done, total, {"model_psnr_y", "bicubic_psnr_y"}).

    Raises:
        UserError: bad folders, or no pair left to score. Unreadable, ambiguous or mismatched pairs are left
            out and named in the report's `skipped`.
    """
    pairs, skipped = find_pairs(pairs_dir, hr_dir=hr_dir, lr_dir=lr_dir)
    model, name = _resolver(checkpoint, device)

    def load() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for key, hr_path, lr_path in pairs:
            try:
                lr, hr = to_tensor(load_rgb(lr_path)), to_tensor(load_rgb(hr_path))
            except UserError as e:  # named in the report's `skipped`; the other pairs are still scored
                skipped.append((key, str(e)))
                continue
            yield key, lr, hr

    source = str(pairs_dir) if pairs_dir is not None else f"{hr_dir} + {lr_dir}"
    return _evaluate(
        model,
        load(),
        checkpoint=name,
        source=source,
        total=len(pairs),
        tile=tile,
        examples=examples,
        on_progress=on_progress,
        skipped=skipped,
    )


def evaluate_shards(
    checkpoint: SuperResolver | str | Path,
    urls: str | Path | list[str | Path],
    *,
    device: str = "cpu",
    limit: int | None = None,
    tile: int | None = None,
    examples: int = 0,
    on_progress: Progress | None = None,
) -> EvalReport:
    """Score an SR model and bicubic upscaling on the (lq, gt) samples of paired shards, in shard order.

    Args:
        checkpoint: an `sr train` run directory, its `sr.safetensors`, or a loaded `SuperResolver`.
        urls: anything `degrader.shards.shard_urls` accepts (directory, glob, brace pattern, list).
        limit: evaluate only the first `limit` samples.
        device, tile, examples, on_progress: as for `evaluate_pairs`.

    Raises:
        UserError: no shards, a corrupt shard, or samples whose scale differs from the model's.
    """
    dataset = ShardDataset(urls)
    model, name = _resolver(checkpoint, device)
    try:
        total = len(dataset)
    except TypeError:  # no manifest: unknown until read
        total = 0
    total = min(total, limit) if limit is not None and total else (limit or total)

    def load() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for i, sample in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            yield sample["key"], sample["lq"], sample["gt"]

    source = urls if isinstance(urls, (str, Path)) else " ".join(map(str, urls))
    return _evaluate(
        model,
        load(),
        checkpoint=name,
        source=str(source),
        total=total,
        tile=tile,
        examples=examples,
        on_progress=on_progress,
        skipped=[],
    )
