"""`sample_grid()`: the paper's Fig. 3. One HR image per row: the image, its bicubic downscale, then the
degrader's output for several noise seeds, so one sees both what the degrader does and how much it varies.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from degrader.checkpoint import load_degrader
from degrader.classical import CLASSICAL
from degrader.errors import BadImageError, UserError
from degrader.grids import save_grid
from degrader.images import load_rgb, prepare, scan_images, to_tensor


@dataclass
class SampleConfig:
    degrader: str  # a `degrade fit` run or checkpoint, or bicubic | bilinear | blur-bilinear
    hr: str  # folder of HR images; the first `n` readable ones (in name order) are the rows
    out: str  # the PNG to write
    seeds: int = 4  # columns of degraded images: noise seeds first_seed .. first_seed + seeds - 1
    n: int = 8  # rows
    first_seed: int = 0
    hr_prep: str = "resize"  # "resize" (shorter side + centre crop) or "crop" (a crop seeded per image)
    hr_size: int = 64  # for classical degraders; a learned one has its own
    scale: int = 4  # likewise
    device: str = "auto"


def first_images(folder: str, n: int, size: int, prep: str) -> tuple[list[str], torch.Tensor]:
    """Names (relative paths) and the first `n` readable images of `folder`, prepared. (k, 3, size, size)."""
    scan = scan_images(folder, min_size=size, option="--hr")
    names, images = [], []
    for i, path in enumerate(scan.paths):
        if len(images) == n:
            break
        try:
            images.append(to_tensor(prepare(load_rgb(path), size, prep, random.Random(i))))
        except BadImageError:
            continue
        names.append(path.relative_to(scan.root).as_posix())
    if not images:
        raise UserError(f"--hr {folder}: none of the {len(scan.paths)} images decodes; replace the damaged files.")
    return names, torch.stack(images)


@torch.no_grad()
def sample_grid(config: SampleConfig) -> Path:
    """Write the grid: rows are HR images; columns HR, bicubic, then one per seed. Returns the PNG's path.

    Raises:
        UserError: unknown degrader, an HR folder without usable images, or a bad option.
    """
    if config.seeds < 1 or config.n < 1:
        raise UserError("--seeds and --n must be at least 1.")
    degrader = load_degrader(config.degrader, config.scale if config.degrader in CLASSICAL else None, config.device)
    bicubic = load_degrader("bicubic", degrader.scale)
    size = degrader.hr_size or config.hr_size
    if size % degrader.scale:
        raise UserError(f"--hr-size {size} is not divisible by the scale {degrader.scale}.")
    names, hr = first_images(config.hr, config.n, size, config.hr_prep)  # (k, 3, H, H)
    seeds = list(range(config.first_seed, config.first_seed + config.seeds))
    columns = [hr, bicubic.degrade(hr, [0] * len(hr))]
    columns += [degrader.degrade(hr, [seed] * len(hr)).float().cpu() for seed in seeds]  # each (k, 3, H/s, H/s)
    columns[1:] = [F.interpolate(c, size=(size, size), mode="nearest") for c in columns[1:]]  # pixels stay visible
    labels = ["HR", f"bicubic /{degrader.scale}", *[f"seed {seed}" for seed in seeds]]
    rows = [torch.stack([c[i] for c in columns]) for i in range(len(hr))]
    save_grid(rows, config.out, row_labels=names, col_labels=labels)
    return Path(config.out)
