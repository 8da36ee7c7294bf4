"""Export throughput against pure degrader inference on the same batches (the ratio is what I/O costs).

    python benchmarks/bench_export.py [--images 256] [--per-image 2] [--workers 2] [--degrader small|bicubic]
    python benchmarks/bench_export.py --device cuda --degrader paper --workers 8 --batch-size 256
    python benchmarks/bench_export.py --degrader realesrgan   # a hand-made pipeline; bsrgan likewise

Generated images only; prints pairs/s for both and their ratio, measured in the same run, and the degrader's
inference rate against bicubic's (`--baseline`) on the same batches. With `--device cuda`
both run the degrader batched on the GPU (export's `--device cuda`); the ratio then says how much of the GPU's
rate the CPU side (decode, PNG encode, tar) lets through.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader.checkpoint import load_degrader  # noqa: E402
from degrader.export import ExportConfig, export_shards, plan_export  # noqa: E402
from degrader.images import load_rgb, prepare, scan_images, to_tensor  # noqa: E402
from degrader.shards import sample_seed  # noqa: E402


def write_images(root: Path, n: int, size: int) -> None:
    """Smooth gradients plus mild noise: compresses like photos, unlike pure noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        img = c0 * xx[..., None] + c1 * yy[..., None] + rng.normal(0, 6, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"{i:05d}.png")


def make_degrader(kind: str, root: Path, hr_size: int) -> str:
    """An untrained learned degrader of preset `kind` ("small" or "paper"), or a classical one by name."""
    if kind not in ("small", "paper"):
        return kind
    from degrader.checkpoint import Degrader
    from degrader.model import HighToLowConfig, HighToLowGenerator
    from degrader.presets import PRESETS

    torch.manual_seed(0)
    path = root / "untrained.safetensors"
    Degrader(HighToLowGenerator(HighToLowConfig(hr_size=hr_size, scale=4, **PRESETS[kind].network()))).save(path)
    return str(path)


def inference_only(spec: str, hr_dir: Path, hr_size: int, per_image: int, batch_size: int, device: str) -> float:
    """Pairs/s of the degrader alone on the same crops, seeds and batches, all decoded beforehand (in CPU memory,
    as export hands them over)."""
    degrader = load_degrader(spec, None, device)
    scan = scan_images(hr_dir, min_size=hr_size)
    crops, seeds = [], []
    for path in scan.paths:
        crop = to_tensor(prepare(load_rgb(path), hr_size, "resize", random.Random(0)))
        for k in range(per_image):
            crops.append(crop)
            seeds.append(sample_seed(0, path.relative_to(hr_dir).as_posix(), k))
    hr = torch.stack(crops)
    with torch.inference_mode():
        degrader.degrade(hr[:batch_size], seeds[:batch_size]).cpu()  # warm-up: CUDA context, cuDNN autotuning
        start = time.perf_counter()
        for i in range(0, len(hr), batch_size):
            degrader.degrade(hr[i : i + batch_size], seeds[i : i + batch_size]).cpu()  # export takes LR back too
    return len(hr) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--per-image", type=int, default=2)
    parser.add_argument("--size", type=int, default=80, help="generated image side (centre-cropped to --hr-size)")
    parser.add_argument("--hr-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--degrader", default="small", help="small or paper (untrained learned degrader), bicubic, ...")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the degrader runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the main process (0: default)")
    parser.add_argument("--baseline", default="bicubic", help="inference measured beside --degrader's ('' skips)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "hr", args.images, args.size)
        spec = make_degrader(args.degrader, root, args.hr_size)
        infer = inference_only(spec, root / "hr", args.hr_size, args.per_image, args.batch_size, args.device)
        base = args.baseline and inference_only(
            args.baseline, root / "hr", args.hr_size, args.per_image, args.batch_size, args.device
        )
        config = ExportConfig(
            degrader=spec, hr=str(root / "hr"), out=str(root / "shards"), per_image=args.per_image,
            samples_per_shard=200, hr_size=args.hr_size, workers=args.workers, batch_size=args.batch_size,
            device=args.device,
        )  # fmt: skip
        start = time.perf_counter()
        manifest = export_shards(plan_export(config))
        export = manifest["totals"]["samples"] / (time.perf_counter() - start)
    where = torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"degrader {args.degrader} on {where}, {manifest['totals']['samples']} pairs, {args.hr_size}px HR, x4, "
          f"workers {args.workers}, batch {args.batch_size}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"inference only (decoded beforehand): {infer:9.1f} pairs/s")
    print(f"export_shards (decode+infer+PNG+tar): {export:9.1f} pairs/s")
    print(f"ratio export / inference: {export / infer:.2f}")
    if base:
        print(f"{args.baseline} inference only: {base:9.1f} pairs/s")
        print(f"ratio {args.degrader} / {args.baseline} inference: {infer / base:.4f}")


if __name__ == "__main__":
    main()
