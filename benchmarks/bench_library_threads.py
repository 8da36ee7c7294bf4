"""The README's Python against the CLI on a busy machine: N `fit` steps, each way in a fresh process.

Each row runs the same fit (`FitConfig` defaults, as the README's snippet: small preset, batch 16, 64 px HR,
2 loader workers; generated images) for `--steps` steps while a competing process spins a pure-Python loop on
one core, and times the whole process (start-up, plan, fit). The rows:

- cli: `degrade fit` (the thread policy applied by the CLI: OpenMP's passive wait, one thread per usable core);
- library: `import degrader` first, then `plan_fit`/`fit`, as the README does (the policy applied on import and
  by `fit`);
- library, torch first: a notebook that imported torch before degrader: OpenMP spins, so `fit`'s policy
  leaves room for the busy core;
- library, before: torch first and torch's own thread count kept, as the library did before it applied the
  policy (the 6-9x slower case).

Ratios are against the CLI row of the same run; the target for the library rows is 1.5x at most.

    python benchmarks/bench_library_threads.py              # 30 steps: ~2-6 minutes on a busy 2-core machine
    python benchmarks/bench_library_threads.py --steps 5 --rows cli library
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # a new user sets none
CLI = "from cli.degrade import degrade; degrade()"
LIBRARY = """
import sys
{first}
from degrader.train import FitConfig, fit, plan_fit
{before}
hr, lr, out, steps = sys.argv[1:5]
fit(plan_fit(FitConfig(hr=hr, lr=lr, out=out, steps=int(steps))))
"""
ROWS = {
    "cli": None,
    "library": LIBRARY.format(first="import degrader", before=""),
    "library, torch first": LIBRARY.format(first="import torch", before=""),
    "library, before": LIBRARY.format(
        first="import torch", before="import degrader.threads; degrader.threads._chosen = True  # keep torch's count"
    ),
}


def write_images(folder: Path, n: int, size: int, seed: int) -> None:
    """Smooth random colour images (a 4x4 random grid enlarged bicubically)."""
    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.RandomState(seed)
    for i in range(n):
        small = Image.fromarray(rs.randint(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
        small.resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:03d}.png")


def spin() -> None:
    """A CPU-bound competitor: one core, pure Python, until killed."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) % 2147483648


def run_row(row: str, data: Path, out: Path, steps: int) -> float:
    """Seconds for the whole process of `row`, with a competitor spinning throughout."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    hr, lr = str(data / "hr"), str(data / "lr")
    if ROWS[row] is None:
        cmd = [sys.executable, "-c", CLI, "fit", "--hr", hr, "--lr", lr, "--out", str(out), "--steps", str(steps)]
    else:
        cmd = [sys.executable, "-c", ROWS[row], hr, lr, str(out), str(steps)]
    competitor = multiprocessing.Process(target=spin, daemon=True)
    competitor.start()
    try:
        time.sleep(0.5)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        competitor.kill()
        competitor.join()
    if done.returncode != 0:
        raise SystemExit(f"{row}: failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="fit steps per row")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="rows to run")
    args = parser.parse_args()
    rows = ["cli", *[r for r in args.rows if r != "cli"]]  # the baseline always runs

    from degrader.threads import usable_cores

    load = os.getloadavg()[0]
    print(f"{args.steps} fit steps (FitConfig defaults), a competing process spinning on one core; "
          f"{usable_cores()} usable cores, load average {load:.2f} before")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_images(data / "hr", 64, 64, seed=0)
        write_images(data / "lr", 64, 16, seed=1)
        times = {row: run_row(row, data, data / row.replace(" ", "-").replace(",", ""), args.steps) for row in rows}
    print(f"{'row':<24}{'seconds':>9}  vs cli")
    for row, seconds in times.items():
        print(f"{row:<24}{seconds:>9.1f}  {seconds / times['cli']:.2f}x")
    print(f"(load average {os.getloadavg()[0]:.2f} after)")


if __name__ == "__main__":
    main()
