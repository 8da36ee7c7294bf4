"""Export's limit, in one run: degrader inference alone (a), the bare CPU work per pair on 1 and N processes (b),
and `export_shards` itself (c); prints c/a and c/min(a, b_N).

    python benchmarks/bench_export_limit.py --degrader bicubic --workers 2           # the CPU side alone
    python benchmarks/bench_export_limit.py --device cuda --degrader paper --workers 8 --batch-size 256 --images 8192
    python benchmarks/bench_export_limit.py --degrader bicubic --profile             # cProfile of export's main process
    python benchmarks/bench_export_limit.py --degrader bicubic --png-levels 3,1,0    # shard bytes and rate per level

(b) is what a pair costs on the CPU whoever does it: decode and crop the HR image and PNG-encode it (the export's
own `HRCrops`), PNG-encode the LR (computed beforehand), the members, the tar, fsync and sha256 (`ShardWriter`),
with the images split over N processes that share nothing (`--processes`, all cores by default). An export that
reaches b_N has no bound of its own; one that reaches a has the degrader as its bound. The CPU milliseconds per
pair (export's main process and its workers, against the bare work's) say what the export adds, whatever else
the machine runs. Generated images only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import inference_only, make_degrader, write_images  # noqa: E402

from degrader.checkpoint import load_degrader  # noqa: E402
from degrader.crops import HRCrops  # noqa: E402
from degrader.export import ExportConfig, export_shards, plan_export  # noqa: E402
from degrader.images import scan_images  # noqa: E402
from degrader.shards import ShardWriter, encode_png, sample_key, sample_seed, to_uint8  # noqa: E402


def lr_arrays(spec: str, hr_dir: Path, hr_size: int, per_image: int, batch_size: int, device: str) -> dict[str, list]:
    """Each image's LR uint8 arrays (one per variant), made beforehand so that (b) times only the CPU work."""
    degrader = load_degrader(spec, None, device)
    scan = scan_images(hr_dir, min_size=hr_size)
    crops = HRCrops(scan.paths, scan.root, hr_size, "center", 0)
    items = [crops[i] for i in range(len(crops))]
    pairs = [(image_id, k, c[0][1]) for _, image_id, c, _ in items for k in range(per_image)]
    out: dict[str, list] = {image_id: [] for _, image_id, _, _ in items}
    for at in range(0, len(pairs), batch_size):
        part = pairs[at : at + batch_size]
        hr = torch.from_numpy(np.stack([a for _, _, a in part])).permute(0, 3, 1, 2).float().div(255)
        with torch.inference_mode():
            lr = to_uint8(degrader.degrade(hr, [sample_seed(0, image_id, k) for image_id, k, _ in part]))
        for (image_id, _, _), a in zip(part, lr, strict=True):
            out[image_id].append(a)
    return out


def bare_work(
    part: list[int], hr_dir: str, hr_size: int, lrs: dict, per_shard: int, out: str, tag: int
) -> tuple[int, float]:
    """The CPU work of the pairs of images `part`, in this process: decode + crop + HR PNG, LR PNG, tar, sha256.
    Returns the pairs and the CPU seconds they took."""
    torch.set_num_threads(1)
    cpu = time.process_time()
    scan = scan_images(hr_dir, min_size=hr_size)
    crops = HRCrops([scan.paths[i] for i in part], scan.root, hr_size, "center", 0)
    writer, n = ShardWriter(out, per_shard, rank=tag), 0
    for j in range(len(crops)):
        _, image_id, items, _ = crops[j]
        _, hr, hr_png = items[0]
        for k, lr in enumerate(lrs[image_id]):
            meta = {"seed": sample_seed(0, image_id, k), "source": image_id, "crop": 0, "box": None, "k": k}
            meta.update(hr_size=list(hr.shape[:2]), lr_size=list(lr.shape[:2]), scale=4, degrader="x", version="0")
            members = {"hr.png": hr_png, "lr.png": encode_png(lr), "seed.txt": str(meta["seed"]).encode()}
            members["json"] = json.dumps(meta, sort_keys=True).encode()
            writer.write(sample_key(image_id, 0, k), members)
            n += 1
    writer.finish_shard()
    return n, time.process_time() - cpu


def bare_rate(processes: int, hr_dir: Path, hr_size: int, lrs: dict, per_shard: int, root: Path) -> tuple[float, float]:
    """Pairs/s of the bare CPU work with the images split over `processes` processes that share nothing, and its
    CPU milliseconds per pair."""
    n_images = len(lrs)
    parts = [list(range(n_images))[p::processes] for p in range(processes)]
    out = root / f"bare{processes}"
    out.mkdir(parents=True)
    args = [(part, str(hr_dir), hr_size, lrs, per_shard, str(out), p) for p, part in enumerate(parts)]
    with mp.get_context("fork").Pool(processes) as pool:  # started before the clock: a pool's start is not work
        pool.apply(os.getpid)
        start = time.perf_counter()
        done = pool.starmap(bare_work, args)
        wall = time.perf_counter() - start
    pairs = sum(n for n, _ in done)
    return pairs / wall, 1000 * sum(cpu for _, cpu in done) / pairs


def export_rate(config: ExportConfig, profile: bool) -> tuple[float, dict, str, tuple[float, float]]:
    """Pairs/s of `export_shards`, its manifest, (with `profile`) the main process's top functions, and the CPU
    milliseconds per pair of the main process and of its workers (loader and writers, counted once ended)."""
    plan = plan_export(config)
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time, not waits
    before = os.times()
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    manifest = export_shards(plan)
    if profiler:
        profiler.disable()
    rate = manifest["totals"]["samples"] / (time.perf_counter() - start)
    after, pairs = os.times(), manifest["totals"]["samples"]
    main_cpu = (after.user + after.system - before.user - before.system) * 1000 / pairs
    children = after.children_user + after.children_system - before.children_user - before.children_system
    text = ""
    if profiler:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(18)
        text = buf.getvalue()
    return rate, manifest, text, (main_cpu, children * 1000 / pairs)


def shard_bytes(out: Path, manifest: dict) -> float:
    return sum((out / s["name"]).stat().st_size for s in manifest["shards"]) / max(1, manifest["totals"]["samples"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--per-image", type=int, default=2)
    parser.add_argument("--size", type=int, default=80, help="generated image side (centre-cropped to --hr-size)")
    parser.add_argument("--hr-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="export's --workers (loader and writer processes each)")
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="N of b_N [all cores]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples-per-shard", type=int, default=200)
    parser.add_argument("--degrader", default="bicubic", help="bicubic (the CPU side alone), small, paper, ...")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the degrader runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--profile", action="store_true", help="cProfile export's main process (slows it)")
    parser.add_argument("--png-levels", default="", help="also export at these png_level settings, e.g. 3,1,0")
    parser.add_argument("--repeat", type=int, default=1, help="measure (b) and (c) this many times, report the best")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "hr", args.images, args.size)
        spec = make_degrader(args.degrader, root, args.hr_size)
        infer = inference_only(spec, root / "hr", args.hr_size, args.per_image, args.batch_size, args.device)
        lrs = lr_arrays(spec, root / "hr", args.hr_size, args.per_image, args.batch_size, args.device)
        base = dict(degrader=spec, hr=str(root / "hr"), per_image=args.per_image, hr_size=args.hr_size)
        base.update(samples_per_shard=args.samples_per_shard, batch_size=args.batch_size, device=args.device)
        b1 = bn = export = 0.0
        profile = ""
        for r in range(args.repeat):
            rate, b1_cpu = bare_rate(1, root / "hr", args.hr_size, lrs, args.samples_per_shard, root / f"r{r}")
            b1 = max(b1, rate)
            rate, _ = bare_rate(args.processes, root / "hr", args.hr_size, lrs, args.samples_per_shard, root / f"s{r}")
            bn = max(bn, rate)
            config = ExportConfig(**base, out=str(root / f"out{r}"), workers=args.workers)
            rate, manifest, text, cpu = export_rate(config, args.profile and r == 0)
            profile = profile or text
            export = max(export, rate)
            size = shard_bytes(root / f"out{r}", manifest)
        levels = []
        for level in [int(x) for x in args.png_levels.split(",") if x]:
            out = root / f"level{level}"
            rate, m, _, _ = export_rate(
                ExportConfig(**base, out=str(out), workers=args.workers, png_level=level), False
            )
            levels.append((level, rate, shard_bytes(out, m)))
    where = torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"degrader {args.degrader} on {where}, {manifest['totals']['samples']} pairs, {args.hr_size}px HR, x4, "
          f"workers {args.workers}, batch {args.batch_size}, {args.samples_per_shard} pairs/shard, "
          f"main threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"(a) inference alone:             {infer:9.1f} pairs/s")
    print(f"(b) bare CPU work, 1 process:    {b1:9.1f} pairs/s")
    print(f"(b) bare CPU work, {args.processes} processes:  {bn:9.1f} pairs/s")
    print(f"(c) export_shards:               {export:9.1f} pairs/s, {size:.0f} bytes/pair")
    n = args.processes
    print(f"c/a {export / infer:.2f}   c/min(a, b_{n}) {export / min(infer, bn):.2f}   c/b_{n} {export / bn:.2f}   "
          f"b_{n}/b_1 {bn / b1:.2f}")  # fmt: skip
    print(f"CPU per pair: bare work {b1_cpu:.2f} ms; export {cpu[0]:.2f} ms in the main process + {cpu[1]:.2f} ms "
          f"in its workers = {sum(cpu):.2f} ms; bare / export {b1_cpu / sum(cpu):.2f}")  # fmt: skip
    for level, rate, size in levels:
        print(f"png_level {level}: export {rate:9.1f} pairs/s, {size:8.0f} bytes/pair, c/b_{n} {rate / bn:.2f}")
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
