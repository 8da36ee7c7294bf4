"""Crop rate on large photos against 64 px face crops: `fit --hr-prep crop` with and without the decoded-image cache.

    python benchmarks/bench_crops.py [--photos 40] [--width 1500] [--height 1000] [--workers 0] [--export]

Generated PNGs only (smooth colour fields plus sensor-like noise, so they decode like photos). Each row is HR
crops/s through `degrader.loader.make_loader` as `fit` builds it (batch 16, "paper" augmentation), and its
ratio against the baseline measured in the same run: 64 px face images, `--hr-prep resize`, no cache.
The "first epoch" row times a fresh loader (worker start-up too) over about one pass: every image decoded once;
"steady" rows come after that pass, as most of a long fit does. Other rows skip the first batch (start-up).
`--export` adds `export-shards` pairs/s (bicubic) on the photos for `--crop random` with one and with 32
`--crops-per-image`, and `--crop grid`, against `--crop center` on the faces: export decodes every image once,
however many crops it cuts from it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader.images import CACHE_MB  # noqa: E402
from degrader.loader import make_loader  # noqa: E402
from degrader.synthetic import make_faces  # noqa: E402

BATCH = 16


def write_photos(root: Path, n: int, width: int, height: int) -> list[Path]:
    """Smooth colour fields with mild per-pixel noise: about the PNG size and decode time of a real photo."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = c0 * (xx / width)[..., None] + c1 * (yy / height)[..., None]
        img += rng.normal(0, 6, (height, width, 3)).astype(np.float32)
        path = root / f"{i:04d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def write_faces(root: Path, n: int, size: int) -> list[Path]:
    root.mkdir(parents=True)
    paths = []
    for i, img in enumerate(make_faces(n, size, seed=0)):
        img.save(root / f"{i:04d}.png")
        paths.append(root / f"{i:04d}.png")
    return paths


def crop_rate(paths: list[Path], prep: str, cache_mb: float, workers: int, skip: int, crops: int) -> float:
    """HR crops/s over `crops` crops (whole batches) after `skip` untimed ones; `skip=0` times the loader's start."""
    loader = make_loader(paths, 64, prep, "paper", batch_size=BATCH, seed=0, workers=workers, cache_mb=cache_mb)
    for _ in islice(loader, -(-skip // BATCH)):  # as fit's HR loader
        pass
    n, start = 0, time.perf_counter()
    for batch in islice(loader, -(-crops // BATCH)):
        n += len(batch)
    return n / (time.perf_counter() - start)


def export_rate(hr: Path, out: Path, crop: str, workers: int, crops_per_image: int = 1) -> tuple[float, int]:
    from degrader.export import ExportConfig, export_shards, plan_export

    config = ExportConfig(
        degrader="bicubic", hr=str(hr), out=str(out), crop=crop, crops_per_image=crops_per_image, workers=workers,
        device="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    manifest = export_shards(plan_export(config))
    n = manifest["totals"]["samples"]
    return n / (time.perf_counter() - start), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--faces", type=int, default=400, help="64 px face images for the baseline")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (each holds its own cache)")
    parser.add_argument("--uncached-crops", type=int, default=48, help="crops timed without the cache (slow)")
    parser.add_argument("--crops", type=int, default=800, help="crops timed in the other rows")
    parser.add_argument("--cache-mb", type=float, default=CACHE_MB, help="per worker, as fit's --cache-mb")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as on a busy shared machine)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each row prints its best")
    parser.add_argument("--export", action="store_true", help="also time export-shards grid vs center")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = write_photos(root / "photos", args.photos, args.width, args.height)
        faces = write_faces(root / "faces", args.faces, 64)
        mb = sum(p.stat().st_size for p in photos) / args.photos / 2**20
        decoded_mb = args.width * args.height * 4 / 2**20  # PIL holds RGB in 4 bytes a pixel
        print(
            f"{args.photos} photos {args.width}x{args.height} PNG ({mb:.1f} MiB each, {decoded_mb:.1f} MiB decoded), "
            f"{args.faces} faces 64x64; 64 px crops, batch {BATCH}, 'paper' augmentation, {args.workers} workers, "
            f"{torch.get_num_threads()} torch threads, cache {args.cache_mb:g} MiB per worker"
        )
        n, w, c = args.photos, args.workers, args.cache_mb
        # Steady: every image in the cache of every worker. Workers take alternate batches, so with several a
        # worker may miss an image for a few passes.
        warm = n if w == 0 else 6 * n
        rows = {  # name: (paths, prep, cache, untimed crops, timed crops)
            "faces 64px, resize, no cache (baseline)": (faces, "resize", 0, BATCH, args.crops),
            "faces 64px, resize, cache, steady": (faces, "resize", c, warm * args.faces // n, args.crops),
            "photos, crop, no cache": (photos, "crop", 0, BATCH, args.uncached_crops),
            "photos, crop, cache, first epoch": (photos, "crop", c, 0, n),
            "photos, crop, cache, steady": (photos, "crop", c, warm, args.crops),
        }
        best = dict.fromkeys(rows, 0.0)
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits every row alike
            for name, (paths, prep, cache, skip, crops) in rows.items():
                best[name] = max(best[name], crop_rate(paths, prep, cache, w, skip, crops))
        base = best["faces 64px, resize, no cache (baseline)"]
        print(f"{'loader (best of ' + str(args.repeats) + ')':<44}{'crops/s':>10}  ratio to faces")
        for name, rate in best.items():
            print(f"{name:<44}{rate:>10.1f}  {rate / base:.3f}")
        uncached, steady = best["photos, crop, no cache"], best["photos, crop, cache, steady"]
        print(f"photos: cache steady / no cache = {steady / uncached:.1f}x")
        if args.export:
            workers = max(1, w)
            runs = {
                "faces, center (baseline)": (root / "faces", "center", 1),
                "photos, random, 1 crop per image": (root / "photos", "random", 1),
                "photos, random, 32 crops per image": (root / "photos", "random", 32),
                "photos, grid": (root / "photos", "grid", 1),
            }
            print(f"{'export-shards, bicubic, ' + str(workers) + ' workers':<44}{'pairs/s':>10}  ratio to faces")
            base = None
            for i, (name, (hr, crop, per)) in enumerate(runs.items()):
                rate, pairs = export_rate(hr, root / f"shards-{i}", crop, workers, per)
                base = base or rate
                print(f"{name:<44}{rate:>10.1f}  {rate / base:.3f}  ({pairs} pairs)")


if __name__ == "__main__":
    main()
