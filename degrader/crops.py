"""The HR crops an export degrades: one centred crop, seeded random crops (several per decode), or a grid.

Each crop's id, and so its noise seed, depends only on the image's relative path, the mode and the crop index.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from degrader.errors import UserError
from degrader.images import load_rgb, prepare
from degrader.shards import PNG_LEVEL, encode_png, sample_seed


def grid_boxes(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners of every non-overlapping size x size crop, the grid centred in the image."""
    rows, cols = height // size, width // size
    top0, left0 = (height - rows * size) // 2, (width - cols * size) // 2
    return [(top0 + r * size, left0 + c * size) for r in range(rows) for c in range(cols)]


def crop_id(image_id: str, crop: int, mode: str) -> str:
    """The id seeds derive from: the image's relative path, plus the crop index in grid mode and for random crops
    after the first (so an export of one random crop per image keeps the seeds it always had)."""
    return f"{image_id}#{crop}" if mode == "grid" or crop > 0 else image_id


class HRCrops(Dataset):
    """Image i -> (i, image id, [(top, left) or None, HR uint8 (H, W, 3), HR PNG bytes], failure reason)."""

    def __init__(
        self,
        paths: list[Path],
        root: Path,
        size: int,
        mode: str,
        seed: int,
        random_crops: int = 1,
        level: int = PNG_LEVEL,
    ):
        self.paths, self.root, self.size, self.mode, self.seed = paths, root, size, mode, seed
        self.random_crops, self.level = random_crops, level  # level: the HR PNG's zlib level

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str, list, str | None]:
        image_id = self.paths[i].relative_to(self.root).as_posix()
        try:
            img = load_rgb(self.paths[i])
            if self.mode == "center":
                crops = [(None, np.array(prepare(img, self.size, "resize", random.Random(0))))]
            elif self.mode == "random":  # one decode, many crops; each position from its own stable seed
                seeds = [sample_seed(self.seed, crop_id(image_id, c, "random"), -1) for c in range(self.random_crops)]
                crops = [(None, np.array(prepare(img, self.size, "crop", random.Random(s)))) for s in seeds]
            else:
                a, s = np.asarray(img), self.size
                crops = [((y, x), a[y : y + s, x : x + s].copy()) for y, x in grid_boxes(img.width, img.height, s)]
        except UserError as e:
            return i, image_id, [], str(e).removeprefix(f"{self.paths[i]}: ")
        return i, image_id, [(box, a, encode_png(a, self.level)) for box, a in crops], None
