"""Training throughput of the High-to-Low GAN: HR images per second through full G + d_steps x D iterations.

Runs the loop body of `degrader.train.fit` (the same loss and update functions from `degrader.gan`) on random
tensors, so it measures the networks and optimizers, not disk or decoding: each preset's generator and
discriminator, with the paper's losses (no DiffAugment, R1 or EMA) and `--d-steps` D updates. Counts HR
images as `fit`'s `hr_per_s` log field does: (d_steps + 1) x batch per iteration (one HR batch for the G step,
one per D step).

Each row prints its ratio against baselines measured in the same run: the `small` preset in fp32 on the
same device, and the fp32 eager run of the same preset. On CUDA every preset runs as each variant of
`--variants`: fp32 (eager), bf16 (autocast), cl (channels_last), bf16+cl, and bf16+cl+compile (torch.compile,
as `fit --set bf16=true --set channels_last=true --set compile=true`; the compile time shows apart, its
warm-up is untimed).

    python benchmarks/bench_fit.py                 # CPU, plus CUDA when available
    python benchmarks/bench_fit.py --device cpu --iters 5
    python benchmarks/bench_fit.py --device cuda --variants fp32,bf16+cl+compile --presets small
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader.device import accelerate, autocast  # noqa: E402
from degrader.gan import LossConfig, adam, discriminator_loss, generator_loss, update  # noqa: E402
from degrader.nets import Discriminator  # noqa: E402
from degrader.train import FitConfig, build_generator  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """How a run executes, as the fit settings `bf16`, `channels_last` and `compile` set it."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, name: str) -> Variant:
        parts = set(name.split("+")) - {"fp32"}
        if not parts <= {"bf16", "cl", "compile"}:
            raise SystemExit(f"unknown variant {name!r}: join fp32, bf16, cl and compile with '+'")
        return cls("bf16" in parts, "cl" in parts, "compile" in parts)

    @property
    def name(self) -> str:
        parts = [p for p, on in (("bf16", self.bf16), ("cl", self.channels_last), ("compile", self.compile)) if on]
        return "+".join(parts) or "fp32"


def iteration_fn(preset: str, device: torch.device, variant: Variant, batch: int, hr_size: int, loss: LossConfig):
    """Build G, D and their optimizers; return a function that runs one G step and `d_steps` D steps."""
    torch.manual_seed(0)
    bf16 = variant.bf16
    model = FitConfig(hr="", lr="", out="", preset=preset, hr_size=hr_size, scale=4).model()  # the preset's networks
    net_g = accelerate(build_generator(model).to(device), variant)  # as fit builds them
    net_d = accelerate(Discriminator(model.discriminator()).to(device), variant)
    opt_g, opt_d = adam(net_g, loss), adam(net_d, loss)
    # A small pool of random batches on the device, cycled: no data loading in the measurement.
    gen = torch.Generator().manual_seed(1)
    hr_pool = [(torch.rand(batch, 3, hr_size, hr_size, generator=gen) * 2 - 1).to(device) for _ in range(4)]
    lr_pool = [(torch.rand(batch, 3, model.lr_size, model.lr_size, generator=gen) * 2 - 1).to(device) for _ in range(4)]
    count = [0]

    def next_batch(pool: list[torch.Tensor]) -> torch.Tensor:
        count[0] += 1
        return pool[count[0] % len(pool)]

    def noise() -> torch.Tensor:
        return torch.randn(batch, model.z_dim, device=device)

    def iteration() -> None:
        # G step, D frozen (as in fit).
        hr = next_batch(hr_pool)
        with autocast(device, bf16):
            fake = net_g(hr, noise())  # (B, 3, H/4, H/4)
            g_loss, _ = generator_loss(fake, F.avg_pool2d(hr, model.scale), net_d, loss)
        update(opt_g, g_loss)
        # D steps on real LR and fresh, detached fakes.
        for _ in range(loss.d_steps):
            hr, real = next_batch(hr_pool), next_batch(lr_pool)
            with autocast(device, bf16):
                with torch.no_grad():
                    fake = net_g(hr, noise())
                d_loss, _ = discriminator_loss(net_d, real, fake)
            update(opt_d, d_loss)

    params = sum(p.numel() for p in net_g.parameters()), sum(p.numel() for p in net_d.parameters())
    return iteration, params


def measure(iteration, device: torch.device, warmup: int, iters: int, min_seconds: float) -> tuple[float, float]:
    """Seconds per iteration and of the warm-up: `warmup` untimed iterations, then at least `iters` and
    `min_seconds` timed."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(warmup):
        iteration()
    sync()
    warm = time.perf_counter() - start
    n, start = 0, time.perf_counter()
    while n < iters or time.perf_counter() - start < min_seconds:
        iteration()
        n += 1
        if device.type == "cuda":
            sync()
    sync()
    return (time.perf_counter() - start) / n, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hr-size", type=int, default=64)
    parser.add_argument("--d-steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations (CUDA uses 5x as many)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations at least (CUDA uses 10x as many)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="time each row for at least this long")
    parser.add_argument("--presets", default="small,paper", help="comma-separated presets")
    parser.add_argument(
        "--variants", default="fp32,bf16,cl,bf16+cl,bf16+cl+compile", help="CUDA variants, comma-separated"
    )
    parser.add_argument("--cpu-variants", default="fp32", help="CPU variants (bf16 autocast is CUDA only)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    loss = LossConfig(d_steps=args.d_steps)
    hr_per_iter = (args.d_steps + 1) * args.batch_size
    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average {load:.1f}; "
        f"batch {args.batch_size}, hr {args.hr_size}px, x4, 1 G + {args.d_steps} D updates per iteration "
        f"= {hr_per_iter} HR images"
    )
    header = f"{'device':<8}{'preset':<8}{'variant':<17}{'G/D params':>14}{'s/iter':>9}{'HR img/s':>10}  ratio"
    print(header)
    print("-" * (len(header) + 40))
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        warmup = args.warmup * (5 if device.type == "cuda" else 1)
        iters = args.iters * (10 if device.type == "cuda" else 1)
        variants = [
            Variant.parse(v) for v in (args.variants if device.type == "cuda" else args.cpu_variants).split(",")
        ]
        first = args.presets.split(",")[0]
        baseline: float | None = None  # the first preset, fp32 eager, this device
        for preset in args.presets.split(","):
            eager: float | None = None  # this preset, fp32 eager
            for variant in variants:
                iteration, (pg, pd) = iteration_fn(preset, device, variant, args.batch_size, args.hr_size, loss)
                # compile: the first calls compile each graph (train, no_grad, D frozen or not); untimed
                n_warm = warmup * 3 if variant.compile else warmup
                seconds, warm = measure(iteration, device, n_warm, iters, args.min_seconds)
                rate = hr_per_iter / seconds
                if variant == Variant():  # list fp32 first: the other rows' baseline
                    eager = rate
                    baseline = baseline or rate
                ratios = [f"{rate / baseline:.2f}x {first} fp32"] if baseline else []
                if eager and preset != first:
                    ratios.append(f"{rate / eager:.2f}x {preset} fp32")
                if variant.compile:
                    ratios.append(f"warm-up incl. compile {warm:.0f} s")
                params = f"{pg / 1e6:.2f}M/{pd / 1e6:.2f}M"
                print(
                    f"{device.type:<8}{preset:<8}{variant.name:<17}{params:>14}{seconds:>9.4f}{rate:>10.1f}  "
                    f"{', '.join(ratios)}",
                    flush=True,
                )
                del iteration
        print(f"({device.type}: {name})", flush=True)


if __name__ == "__main__":
    main()
