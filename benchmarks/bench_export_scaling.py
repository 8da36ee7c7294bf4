"""Export rate with 1 and with N processes under torchrun, and the scaling efficiency.

    python benchmarks/bench_export_scaling.py [--procs 1,2] [--images 192] [--per-image 2] [--degrader small]
    python benchmarks/bench_export_scaling.py --procs 1,2,4,8 --device cuda --degrader paper --images 4096

Generated images only. Each row runs `export_shards` under `torchrun --standalone --nproc_per_node N` (each rank
exports its own part of the images); the rate counts the export itself, from the first rank's start to the
manifest, not the launch. Efficiency = rate(N) / (N x rate(1)), measured in the same run. On the CPU, give each
process its own cores (`--threads`, `--workers`); with one GPU per process, use `--device cuda`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_export import make_degrader, write_images  # noqa: E402

RUNNER = """
import json, sys, time
import torch
from degrader import dist
from degrader.export import ExportConfig, export_shards, plan_export

config = ExportConfig(**json.loads(sys.argv[1]))
torch.set_num_threads(int(sys.argv[2]))
plan = plan_export(config)
dist.barrier()
start = time.perf_counter()
manifest = export_shards(plan)
if dist.is_main():
    print(json.dumps({"seconds": time.perf_counter() - start, "samples": manifest["totals"]["samples"]}))
"""


def run(procs: int, config: dict, threads: int, root: Path) -> float:
    """Pairs/s of one export by `procs` processes."""
    script = root / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    out = subprocess.run(
        [*args, str(script), json.dumps(config), str(threads)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["samples"] / result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts; the first is the baseline")
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--per-image", type=int, default=2)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--degrader", default="small", help="small or paper (untrained learned degrader), bicubic, ...")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="decode/encode worker processes per rank")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "hr", args.images, args.size)
        spec = make_degrader(args.degrader, root, 64)
        rates = {}
        for n in procs:
            config = dict(
                degrader=spec, hr=str(root / "hr"), out=str(root / f"shards-{n}"), per_image=args.per_image,
                samples_per_shard=100, hr_size=64, workers=args.workers, batch_size=args.batch_size,
                device=args.device,
            )  # fmt: skip
            rates[n] = run(n, config, args.threads, root)
    base = procs[0]
    print(f"export, degrader {args.degrader} on {args.device}, {args.images * args.per_image} pairs, "
          f"{args.threads} thread(s) and {args.workers} worker(s) per process")  # fmt: skip
    for n, rate in rates.items():
        efficiency = rate / (rates[base] * n / base)
        print(f"  {n} process{'es' if n > 1 else '  '}: {rate:7.1f} pairs/s  x{rate / rates[base]:.2f}  "
              f"scaling efficiency {efficiency:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
