"""Image folders: robust decoding, preparation, augmentation, seeded draws (scan: `scan.py`; the infinite,
resumable loader over them: `loader.py`).

Every sample is a pure function of `(index, sample_seed)`, so a run gives the same data whatever the number
of workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from degrader.errors import BadImageError, NotRegularFileError, UserError
from degrader.grids import save_grid as save_grid  # re-exported: grids with captions live in grids.py
from degrader.scan import IMAGE_SUFFIXES as IMAGE_SUFFIXES  # re-exported: callers find the scan here too
from degrader.scan import Scan, open_regular
from degrader.scan import scan_images as scan_images

PREP_MODES = ("resize", "crop")
AUGMENTS = ("none", "flip", "paper")
LATE = "(failed to decode during training; the next image took its place)"  # marks these lines in a run's list
CACHE_MB = 256  # default decoded-image cache per DataLoader worker (and per folder: `fit` loads two)


# ---------------------------------------------------------------------------------------------- decoding


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB. Alpha is composited on black (transparent pixels become black)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit data (PIL also uses "I" for some 16-bit files): scale 0..65535 to 0..255, never clip.
        a = np.asarray(im).astype(np.float64) / 257.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        # Floats are taken as 0..1 when they fit in it, else as 0..255.
        a = np.asarray(im).astype(np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        im = Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (0, 0, 0))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return im if im.mode == "RGB" else im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image fully into 8-bit RGB, upright according to its EXIF orientation.

    Grayscale, palette, 16-bit, float and CMYK images are converted; 16-bit values are scaled (65535 -> 255).
    Alpha is composited on black.

    Raises:
        BadImageError: the file cannot be read or decoded; the message names it.
    """
    try:
        with open_regular(path) as f, Image.open(f) as im:
            im.load()
            # Broken EXIF must not cost the image itself: keep the stored orientation then.
            with contextlib.suppress(Exception):
                im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{path}: too large to decode safely ({e}); downscale or remove it.") from None
    except NotRegularFileError:
        raise BadImageError(f"{path} is not a regular file (a named pipe, socket or device); remove it.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{path}: cannot decode ({e}); remove or replace the file.") from None


# ---------------------------------------------------------------------------------------------- preparation


def _randint(rng: random.Random | torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi] from either kind of generator."""
    if isinstance(rng, torch.Generator):
        return int(torch.randint(lo, hi + 1, (1,), generator=rng).item())
    return rng.randint(lo, hi)


def prepare(
    img: Image.Image, size: int, mode: str, rng: random.Random | torch.Generator, frame: float = 1.0
) -> Image.Image:
    """Bring an image to size x size.

    Args:
        img: an RGB image.
        size: output side in pixels.
        mode: "resize": shorter side to `size` (bicubic, antialiased), centre crop (aligned face crops).
            "crop": a random size x size crop at native resolution, never resampled, since resampling a real
            LR photo erases the noise the degrader must learn.
        rng: used by "crop" only.
        frame: "resize" only: the centre fraction of the shorter side kept (1: all of it; 0.7 zooms in 1.4x,
            to match a set of wider-framed faces to a tightly framed one).

    Raises:
        UserError: unknown mode, or an image smaller than the crop in "crop" mode.
    """
    w, h = img.size
    if mode == "resize":
        side = min(w, h) * frame
        left, top = (w - side) / 2, (h - side) / 2
        # Resampling only the centre square is the same as resize-then-crop, in one pass.
        return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    if mode == "crop":
        if w < size or h < size:
            raise UserError(f"image is {w}x{h}, smaller than the {size}x{size} crop; scan with min_size={size}.")
        x, y = _randint(rng, 0, w - size), _randint(rng, 0, h - size)
        return img.crop((x, y, x + size, y + size))
    raise UserError(f"prep mode {mode!r} is not one of {', '.join(PREP_MODES)}.")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 (3, H, W) in [0, 1]."""
    a = np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)


# ---------------------------------------------------------------------------------------------- augmentation


def _augment(x: torch.Tensor, kind: str, rng: random.Random) -> torch.Tensor:
    """Augment a (3, H, W) tensor with parameters drawn from `rng` only (the global RNG is not touched)."""
    if kind == "none":
        return x
    if rng.random() < 0.5:
        x = v2.functional.horizontal_flip(x)
    if kind == "flip":  # real LR: geometry and colour stay as the camera made them
        return x
    # "paper": scale 0.9-1.1, rotation +-10 degrees, colour jitter. Reflect padding keeps the corners
    # that rotation and zoom-out reveal filled with image content instead of black.
    size = x.shape[-1]
    p = max(1, min(size // 4, x.shape[-2] - 1, size - 1))
    x = v2.functional.pad(x, [p, p, p, p], padding_mode="reflect")
    x = v2.functional.affine(
        x,
        angle=rng.uniform(-10.0, 10.0),
        translate=[0, 0],
        scale=rng.uniform(0.9, 1.1),
        shear=[0.0, 0.0],
        interpolation=v2.InterpolationMode.BILINEAR,
    )
    x = v2.functional.center_crop(x, [x.shape[-2] - 2 * p, x.shape[-1] - 2 * p])
    x = v2.functional.adjust_brightness(x, rng.uniform(0.85, 1.15))
    x = v2.functional.adjust_contrast(x, rng.uniform(0.85, 1.15))
    x = v2.functional.adjust_saturation(x, rng.uniform(0.85, 1.15))
    x = v2.functional.adjust_hue(x, rng.uniform(-0.02, 0.02))
    return x.clamp_(0.0, 1.0)


class DecodeCache:
    """Decoded images by key within a byte budget; the least recently used go first.

    Large photos cropped many times decode once instead of once per crop. A cache never changes a sample:
    decoding is deterministic, and crops and augmentation still come from the sample's seed. Every DataLoader
    worker holds its own copy (the dataset is copied into each), so the memory used is up to `budget` bytes
    per worker.
    """

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self.items: OrderedDict[object, tuple[Image.Image, int]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: object, load: Callable[[], Image.Image]) -> Image.Image:
        if key in self.items:
            self.items.move_to_end(key)
            self.hits += 1
            return self.items[key][0]
        self.misses += 1
        img = load()
        size = img.width * img.height * (1 if img.mode in ("1", "L", "P") else 4)  # PIL stores RGB as 4 bytes
        if size <= self.budget:  # an image larger than the whole budget is never kept
            while self.used + size > self.budget:
                self.used -= self.items.popitem(last=False)[1][1]
            self.items[key] = (img, size)
            self.used += size
        return img


class ImageFolder(torch.utils.data.Dataset):
    """Map-style dataset over image paths, indexed by `(index, sample_seed)`.

    A sample is a pure function of (index, sample_seed): crop position, flips and augmentation come from
    `random.Random(sample_seed)`, never from the global RNG (which is left untouched). A file that fails to
    decode is replaced by the next one, `(index + 1) % len`, with the same seed, so a long run goes on; with
    `failed_log`, it is appended there as `option<TAB>path<TAB>reason` (once per process; workers share the file).

    `cache_mb` > 0 keeps decoded images in a `DecodeCache` of that many MiB per process (per DataLoader
    worker): whole images for "crop", the prepared size x size image for "resize" (small, so a face folder
    fits whole). The samples are the same bytes with or without it.
    """

    def __init__(
        self,
        paths: list[Path],
        size: int,
        prep: str = "resize",
        augment: str = "none",
        cache_mb: float = 0,
        failed_log: tuple[Path, str] | None = None,  # (file, option): where late decode failures are listed
        frame: float = 1.0,  # "resize" only: the centre fraction kept (see `prepare`)
    ):
        if prep not in PREP_MODES:
            raise UserError(f"prep mode {prep!r} is not one of {', '.join(PREP_MODES)}.")
        if augment not in AUGMENTS:
            raise UserError(f"augmentation {augment!r} is not one of {', '.join(AUGMENTS)}.")
        if not paths:
            raise UserError("no images to load; the image folder scan found none.")
        self.paths = [Path(p) for p in paths]
        self.size, self.prep, self.augment, self.frame = size, prep, augment, frame
        self.cache = DecodeCache(int(cache_mb * 2**20)) if cache_mb > 0 else None
        self.failed_log, self._noted = failed_log, set()

    def _decoded(self, i: int) -> Image.Image:
        """Image i, decoded; prepared already in "resize" mode, which draws nothing from the seed."""
        if self.prep == "resize":
            load = lambda: prepare(load_rgb(self.paths[i]), self.size, "resize", random.Random(0), self.frame)  # noqa: E731
        else:
            load = lambda: load_rgb(self.paths[i])  # noqa: E731
        return self.cache.get(i, load) if self.cache is not None else load()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, int] | int) -> torch.Tensor:
        index, sample_seed = item if isinstance(item, tuple) else (item, 0)
        errors = []
        for k in range(len(self.paths)):  # bounded: a list of only broken files must still fail
            i = (index + k) % len(self.paths)
            rng = random.Random(sample_seed)
            try:
                img = self._decoded(i)
                img = img if self.prep == "resize" else prepare(img, self.size, self.prep, rng)
            except UserError as e:  # undecodable file, or too small to crop
                errors.append(str(e))
                self._note(i, str(e))
                continue
            return _augment(to_tensor(img), self.augment, rng)
        raise BadImageError(f"{len(errors)} images in a row failed to load, last: {errors[-1]}")

    def _note(self, i: int, reason: str) -> None:
        if self.failed_log is None or i in self._noted:
            return
        self._noted.add(i)
        path, option = self.failed_log
        line = f"{option}\t{self.paths[i]}\t{reason.removeprefix(f'{self.paths[i]}: ')} {LATE}\n"
        with contextlib.suppress(OSError), open(path, "a") as f:  # a note only: never stop training for it
            f.write(line)


def first_readable(
    scan: Scan, n: int, size: int, prep: str, rng: torch.Generator, frame: float = 1.0
) -> list[torch.Tensor]:
    """Up to `n` prepared images; files that pass the scan but fail to decode are skipped, as the loader does."""
    images: list[torch.Tensor] = []
    for path in scan.paths:
        if len(images) == n:
            break
        try:
            images.append(to_tensor(prepare(load_rgb(path), size, prep, rng, frame)))
        except BadImageError:
            continue
    if not images:
        raise BadImageError(f"{scan.root}: none of the {len(scan.paths)} images decodes; replace the damaged files.")
    return images


# ---------------------------------------------------------------------------------------------- sampling


def hash_int(*parts: object) -> int:
    """A stable 63-bit integer from the given parts (same on every machine and Python version)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def shuffled(items: list, seed: int, tag: str) -> list:
    """`items` in a random order fixed by (seed, tag): the same on every machine; other tags draw independently."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(hash_int(tag, seed) % 2**63))
    return [items[int(i)] for i in order]


def draw_images(
    paths: list,
    count: int,
    size: int,
    prep: str,
    seed: int,
    tag: str = "eval",
    tick: Callable | None = None,
    frame: float = 1.0,
) -> torch.Tensor:
    """`count` images drawn at random and prepared as `fit` prepares them, without augmentation. (count, 3, s, s).

    The draw and the crops ("crop" prep) are fixed by (seed, tag); different tags draw independently. A file
    that fails to decode is replaced by the next one, as in `fit`. Also what a `RealismProbe` is built from.
    """
    folder = ImageFolder(shuffled(paths, seed, tag)[:count], size, prep, "none", frame=frame)
    images = []
    for i in range(count):
        images.append(folder[i, hash_int(tag, seed, i)])
        if tick:
            tick(1)
    return torch.stack(images)
