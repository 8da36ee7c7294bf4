"""Built-in demo data: procedurally drawn faces and a camera-like degradation, so `degrade demo` needs no download.

Everything is deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from degrader.errors import UserError
from degrader.files import write_json

_SKIN = [(255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 90), (141, 85, 54), (92, 58, 38)]
_HAIR = [(20, 16, 14), (60, 40, 25), (110, 70, 40), (200, 160, 90), (150, 60, 30), (160, 160, 160)]
_SUPERSAMPLE = 2  # drawn at 2x and reduced: smooth edges, yet hair strands and stripes keep fine detail


def _seed(*parts: object) -> int:
    """A stable 63-bit seed from the given parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(c * f) for c in rgb)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _face(size: int, rng: random.Random) -> Image.Image:
    """Draw one face-like RGB image, size x size."""
    s = size * _SUPERSAMPLE
    # Background: a linear gradient between two colours in a random direction, with faint stripes.
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) / s
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    bg = (1 - t) * np.array(_colour(rng)) + t * np.array(_colour(rng))
    period, tilt = rng.uniform(3, 8) * _SUPERSAMPLE, rng.uniform(0, np.pi)
    bg += rng.uniform(4, 14) * np.sin(2 * np.pi * (xx * np.cos(tilt) + yy * np.sin(tilt)) * s / period)[..., None]
    img = Image.fromarray(np.clip(np.rint(bg), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)

    cx, cy = s * (0.5 + rng.uniform(-0.05, 0.05)), s * (0.52 + rng.uniform(-0.04, 0.04))
    hw, hh = s * rng.uniform(0.22, 0.28), s * rng.uniform(0.28, 0.34)  # head half-width, half-height
    skin, hair = _jitter(rng.choice(_SKIN), rng, 12), _jitter(rng.choice(_HAIR), rng, 15)

    # Shoulders in a striped shirt: high-frequency detail at the bottom.
    shirt, stripe = _colour(rng), _colour(rng)
    d.ellipse([cx - 2.2 * hw, cy + 0.85 * hh, cx + 2.2 * hw, cy + 3 * hh], fill=shirt)
    step = rng.randint(2, 4) * _SUPERSAMPLE
    for y in range(int(cy + 0.9 * hh), s, 2 * step):
        d.line([(cx - 2.2 * hw, y), (cx + 2.2 * hw, y)], fill=stripe, width=step // 2 + 1)
    d.ellipse([cx - 0.45 * hw, cy + 0.7 * hh, cx + 0.45 * hw, cy + 1.2 * hh], fill=skin)  # neck

    # Hair mass behind the head, then strands: thin lines of slightly varied colour.
    d.ellipse([cx - 1.15 * hw, cy - 1.2 * hh, cx + 1.15 * hw, cy + rng.uniform(0.0, 0.6) * hh], fill=hair)
    for ex in (-1, 1):  # ears
        d.ellipse([cx + ex * hw - 0.18 * hw, cy - 0.15 * hh, cx + ex * hw + 0.18 * hw, cy + 0.2 * hh], fill=skin)
    d.ellipse([cx - hw, cy - hh, cx + hw, cy + hh], fill=skin)
    fringe = cy - rng.uniform(0.35, 0.6) * hh
    d.chord([cx - 1.05 * hw, cy - 1.25 * hh, cx + 1.05 * hw, fringe + 0.5 * hh], 180, 360, fill=hair)
    for _ in range(rng.randint(25, 45)):
        x0 = cx + rng.uniform(-1.0, 1.0) * hw
        y0 = cy - rng.uniform(0.8, 1.15) * hh
        d.line([(x0, y0), (x0 + rng.uniform(-4, 4) * _SUPERSAMPLE, fringe)], fill=_jitter(hair, rng, 40), width=1)

    # Eyes with iris and pupil, brows, nose, mouth, a few freckles.
    ey, ex, er = cy - rng.uniform(0.05, 0.2) * hh, rng.uniform(0.35, 0.5) * hw, rng.uniform(0.12, 0.18) * hw
    iris = rng.choice([(60, 90, 160), (70, 120, 60), (90, 60, 30), (40, 30, 20)])
    for sgn in (-1, 1):
        x = cx + sgn * ex
        d.ellipse([x - er, ey - 0.6 * er, x + er, ey + 0.6 * er], fill=(245, 245, 240))
        d.ellipse([x - 0.55 * er, ey - 0.55 * er, x + 0.55 * er, ey + 0.55 * er], fill=iris)
        d.ellipse([x - 0.25 * er, ey - 0.25 * er, x + 0.25 * er, ey + 0.25 * er], fill=(5, 5, 5))
        by = ey - rng.uniform(1.3, 2.0) * er
        d.line([(x - er, by + sgn * rng.uniform(-1, 1)), (x + er, by)], fill=hair, width=max(1, int(0.3 * er)))
    d.line([(cx, ey + er), (cx - 0.1 * hw, cy + 0.3 * hh)], fill=_shade(skin, 0.8), width=2)
    mw, my = rng.uniform(0.3, 0.5) * hw, cy + rng.uniform(0.5, 0.62) * hh
    lips = _jitter((170, 60, 70), rng, 30)
    if rng.random() < 0.5:
        d.chord([cx - mw, my - 0.25 * mw, cx + mw, my + 0.35 * mw], 0, 180, fill=lips)  # smile
    else:
        d.line([(cx - mw, my), (cx + mw, my)], fill=lips, width=max(2, int(0.15 * mw)))
    for _ in range(rng.randint(0, 12)):
        fx, fy = cx + rng.uniform(-0.6, 0.6) * hw, cy + rng.uniform(0.0, 0.4) * hh
        d.point((fx, fy), fill=_shade(skin, 0.7))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def make_faces(n: int, size: int, seed: int) -> list[Image.Image]:
    """Draw `n` face-like RGB images of size x size. Image i depends on (seed, i) only.

    Args:
        n: how many.
        size: side in pixels.
        seed: the same seed gives identical images; different seeds give different faces.
    """
    return [_face(size, random.Random(_seed("face", seed, i))) for i in range(n)]


def camera_degrade(img: Image.Image, scale: int, rng: random.Random) -> Image.Image:
    """A camera-like real-world degradation: blur, downscale, colour loss, noise and JPEG.

    Args:
        img: an RGB image, W x H.
        scale: downscale factor; the output is (W // scale) x (H // scale).
        rng: all random choices come from it.
    """
    w, h = img.size
    # Optics: a Gaussian blur wider than the anti-aliasing of a plain downscale.
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 0.35) * scale))
    img = img.resize((w // scale, h // scale), Image.Resampling.BOX)  # sensor: area sampling
    # Colour: sometimes gray, sometimes washed out, and a white-balance cast.
    r = rng.random()
    if r < 0.2:
        img = img.convert("L").convert("RGB")
    elif r < 0.6:
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.3, 0.9))
    a = np.asarray(img).astype(np.float64)
    a *= np.array([rng.uniform(0.9, 1.1) for _ in range(3)])
    # Noise: read noise (Gaussian) plus shot noise whose variance grows with the signal (Poisson-like).
    noise = np.random.RandomState(rng.getrandbits(32))  # legacy stream: frozen across numpy versions
    sigma = np.sqrt(rng.uniform(2, 6) ** 2 + rng.uniform(0.05, 0.2) * np.clip(a, 0, 255))
    a += noise.standard_normal(a.shape) * sigma
    img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")
    # Compression: JPEG in memory, at qualities web images use (a 16 px image at quality < 50 is mostly blocks).
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randint(50, 90))
    buf.seek(0)
    with Image.open(buf) as jpeg:
        return jpeg.convert("RGB")


def _write_set(final: Path, images: list[Image.Image]) -> None:
    """Write PNGs into a hidden temporary folder, then rename it to `final`: no half-written set."""
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, img in enumerate(images):
        img.save(tmp / f"{i:05d}.png", format="PNG")
    os.replace(tmp, final)


def write_demo_data(
    root: Path, *, n_hr: int = 400, n_lr: int = 400, hr_size: int = 64, scale: int = 4, seed: int = 0
) -> tuple[Path, Path, Path]:
    """Write the demo data set: clean HR faces, unpaired "real" LR faces, and a few held-out LR faces.

    `root/hr` holds clean faces; `root/lr` a disjoint set of faces through `camera_degrade`; `root/heldout_hr`
    8 further clean faces and `root/heldout_lr` the same faces degraded (same file names), for evaluating SR;
    8 further degraded faces for showing SR results. A second call with the same arguments reuses the files.

    Returns:
        (hr_dir, lr_dir, heldout_lr_dir, heldout_hr_dir).

    Raises:
        UserError: `root` already holds other data under those names.
    """
    root = Path(root)
    dirs = (root / "hr", root / "lr", root / "heldout_lr", root / "heldout_hr")
    params = {"n_hr": n_hr, "n_lr": n_lr, "hr_size": hr_size, "scale": scale, "seed": seed, "n_heldout": 8}
    marker = root / "demo.json"
    if marker.exists() and json.loads(marker.read_text()) == params and all(d.is_dir() for d in dirs):
        return dirs
    for d in dirs:
        if d.exists():
            raise UserError(f"{d} already exists and is not this demo's data; choose an empty folder or delete it.")
    root.mkdir(parents=True, exist_ok=True)

    def degraded(kind: str, n: int) -> list[Image.Image]:
        faces = make_faces(n, hr_size, _seed(kind, seed))
        return [camera_degrade(f, scale, random.Random(_seed(kind, "degrade", seed, i))) for i, f in enumerate(faces)]

    _write_set(dirs[0], make_faces(n_hr, hr_size, _seed("hr", seed)))
    _write_set(dirs[1], degraded("lr", n_lr))
    _write_set(dirs[2], degraded("heldout", params["n_heldout"]))
    _write_set(dirs[3], make_faces(params["n_heldout"], hr_size, _seed("heldout", seed)))
    write_json(marker, params)  # last: its presence means all three sets are complete
    return dirs


def write_eval_data(root: Path, *, n: int = 100, hr_size: int = 64, scale: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """Write a set for `degrade eval`: `root/eval_hr` holds `n` clean faces, `root/eval_lr` 2n camera-degraded faces
    of other people; both are disjoint from `write_demo_data`'s sets (other seeds), so nothing in them was trained
    or validated on. Returns (eval_hr_dir, eval_lr_dir).

    Raises:
        UserError: either folder exists already.
    """
    hr_dir, lr_dir = Path(root) / "eval_hr", Path(root) / "eval_lr"
    for d in (hr_dir, lr_dir):
        if d.exists():
            raise UserError(f"{d} already exists; choose an empty folder or delete it.")
    _write_set(hr_dir, make_faces(n, hr_size, _seed("eval-hr", seed)))
    faces = make_faces(2 * n, hr_size, _seed("eval-lr", seed))
    rngs = [random.Random(_seed("eval-lr", "degrade", seed, i)) for i in range(2 * n)]
    _write_set(lr_dir, [camera_degrade(face, scale, rng) for face, rng in zip(faces, rngs, strict=True)])
    return hr_dir, lr_dir
