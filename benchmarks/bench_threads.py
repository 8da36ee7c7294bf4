"""Thread policy on a shared machine: `fit` throughput with 1 thread, 2 threads and the default policy.

Each setting runs the real `degrader.train.fit` loop (small preset, batch 16, 64 px HR, 5 D steps, loader
workers as given) on generated images in a fresh process, so OpenMP starts with that setting's environment.
Rows with a fixed count run with torch's defaults (OpenMP's own wait policy), as a user's plain run does;
"policy" goes through `degrader.threads` as the CLI does (`prepare_openmp()` before torch, then
`set_threads(None, loader_workers)`); "policy, torch first" is a library user who imported torch before
(OpenMP spins, so the policy counts busy cores and workers). Both cases print ratios against the best row:

- quiet: nothing else started (the load average before the case is printed: repeat when it was busy);
- busy: a competing process spinning a pure-Python loop on one core, started before and killed after.

`cpu/wall` is the main process's CPU time over wall time: with 2 threads, spinning OpenMP threads show as
a value near 2 even when the second thread has little work; the passive wait policy brings it down.

    python benchmarks/bench_threads.py                  # ~2-4 minutes on 2 cores
    python benchmarks/bench_threads.py --seconds 5 --workers 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (threads or "policy", OMP_WAIT_POLICY or None for OpenMP's default)
SETTINGS = {
    "1 thread": (1, None),
    "2 threads": (2, None),
    "2 threads, passive": (2, "PASSIVE"),
    "policy": ("policy", None),
    "policy, torch first": ("policy-late", None),
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


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


class _Enough(Exception):
    pass


def child(setting: str, data: Path, workers: int, warmup: int, seconds: float) -> None:
    """Run fit in this process with `setting` and print one JSON line of results."""
    threads, _ = SETTINGS[setting]
    if threads == "policy":
        from degrader.threads import prepare_openmp

        prepare_openmp()  # as the CLI does, before torch is imported
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")  # what OpenMP reads when torch loads it
    import torch

    from degrader.gan import LossConfig
    from degrader.threads import set_threads
    from degrader.train import FitConfig, fit, plan_fit

    if threads in ("policy", "policy-late"):  # "policy-late": a library user who imported torch first
        used = set_threads(None, loader_workers=2 * workers)  # fit has an HR and an LR loader
    else:
        used = threads
        torch.set_num_threads(threads)
    times: list[float] = []
    cpu: list[float] = []

    def on_progress(step: int, total: int, logs: dict) -> None:
        times.append(time.perf_counter())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(usage.ru_utime + usage.ru_stime)
        if step > warmup and times[-1] - times[warmup - 1] >= seconds and step - warmup >= 1:
            raise _Enough

    d_steps, batch = 5, 16
    with tempfile.TemporaryDirectory() as tmp:
        config = FitConfig(
            hr=str(data / "hr"), lr=str(data / "lr"), out=str(Path(tmp) / "run"), steps=10_000, batch_size=batch,
            loss=LossConfig(d_steps=d_steps), workers=workers, sample_every=10_000, checkpoint_every=10_000,
        )  # fmt: skip
        with contextlib.suppress(_Enough):
            fit(plan_fit(config), on_progress)
    steps = len(times) - warmup
    wall = times[-1] - times[warmup - 1]
    result = {
        "threads": used,
        "hr_per_s": steps * (d_steps + 1) * batch / wall,
        "cpu_per_wall": (cpu[-1] - cpu[warmup - 1]) / wall,
        "wait_policy": wait_policy,
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)


def run_child(setting: str, args: argparse.Namespace, data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    policy = SETTINGS[setting][1]
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", setting, "--data", str(data), "--workers", str(args.workers)]
    cmd += ["--warmup", str(args.warmup), "--seconds", str(args.seconds)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{setting}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_line() -> tuple[str, float]:
    """The load average and the cores other processes keep busy now, as text, and the latter."""
    from degrader.threads import busy_cores

    one, five, _ = os.getloadavg()
    busy = busy_cores(1.0)
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min), others busy now {busy:.2f} cores", busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="fit's DataLoader workers per loader")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row (at least 1 step)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the best is kept")
    parser.add_argument("--case", choices=["both", "quiet", "busy"], default="both", help="which case to run")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.workers, args.warmup, args.seconds)

    from degrader.threads import usable_cores

    print(
        f"fit, small preset, batch 16, 64 px HR, 1 G + 5 D updates per step, {args.workers} workers per loader; "
        f"{usable_cores()} usable cores; best of {args.repeats}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_images(data / "hr", 64, 64, seed=0)
        write_images(data / "lr", 64, 16, seed=1)
        for case in ("quiet", "busy") if args.case == "both" else (args.case,):
            competitor = None
            if case == "busy":
                competitor = multiprocessing.Process(target=spin, daemon=True)
                competitor.start()
                time.sleep(1.0)
            try:
                before, busy_before = load_line()
                print(f"\n{case}: {before}")
                results = {}
                for _ in range(args.repeats):
                    for setting in SETTINGS:
                        r = run_child(setting, args, data)
                        if setting not in results or r["hr_per_s"] > results[setting]["hr_per_s"]:
                            results[setting] = r
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.join()
            best = max(r["hr_per_s"] for r in results.values())
            header = f"{'setting':<20}{'threads':>8}{'wait policy':>13}{'HR img/s':>10}{'cpu/wall':>10}  vs best"
            print(header)
            print("-" * len(header))
            for setting, r in results.items():
                print(
                    f"{setting:<20}{r['threads']:>8}{r['wait_policy']:>13}{r['hr_per_s']:>10.1f}"
                    f"{r['cpu_per_wall']:>10.2f}  {r['hr_per_s'] / best:.2f}x"
                )
            after, busy_after = load_line()
            print(f"(torch {r['torch']}; after the case: {after})")
            if case == "quiet" and max(busy_before, busy_after) > 0.5:
                print("(other processes were busy around the quiet case: repeat it for quiet figures)")


if __name__ == "__main__":
    main()
