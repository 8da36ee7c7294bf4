"""Training throughput of the High-to-Low GAN: HR images per second through full G + d_steps x D iterations.

Runs the loop body of `degrader.train.fit` (the same loss and update functions from `degrader.gan`) on random
tensors, so it measures the networks and optimizers, not disk or decoding. Counts HR images as `fit`'s
`hr_per_s` log field does: (d_steps + 1) x batch per iteration (one HR batch for the G step, one per D step).

Each row prints its ratio against a baseline measured in the same run: the `small` preset in fp32 on the
same device, and for bf16 rows also the fp32 run of the same preset.

    python benchmarks/bench_fit.py                 # CPU, plus CUDA when available
    python benchmarks/bench_fit.py --device cpu --iters 5
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from degrader.gan import LossConfig, adam, discriminator_loss, generator_loss, update
from degrader.model import PRESETS, HighToLowConfig, HighToLowGenerator
from degrader.nets import Discriminator
from degrader.run import autocast


def iteration_fn(preset: str, device: torch.device, bf16: bool, batch: int, hr_size: int, loss: LossConfig):
    """Build G, D and their optimizers; return a function that runs one G step and `d_steps` D steps."""
    torch.manual_seed(0)
    model = HighToLowConfig(hr_size=hr_size, scale=4, **PRESETS[preset])
    net_g = HighToLowGenerator(model).to(device)
    net_d = Discriminator(model.discriminator()).to(device)
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


def measure(iteration, device: torch.device, warmup: int, iters: int, min_seconds: float) -> float:
    """Seconds per iteration: `warmup` untimed iterations, then at least `iters` and `min_seconds` timed."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        iteration()
    sync()
    n, start = 0, time.perf_counter()
    while n < iters or time.perf_counter() - start < min_seconds:
        iteration()
        n += 1
        if device.type == "cuda":
            sync()
    sync()
    return (time.perf_counter() - start) / n


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
    header = f"{'device':<8}{'preset':<8}{'precision':<10}{'G/D params':>14}{'s/iter':>9}{'HR img/s':>10}  ratio"
    print(header)
    print("-" * (len(header) + 30))
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        warmup = args.warmup * (5 if device.type == "cuda" else 1)
        iters = args.iters * (10 if device.type == "cuda" else 1)
        precisions = [False, True] if device.type == "cuda" else [False]
        baseline: float | None = None  # small, fp32, this device
        fp32: dict[str, float] = {}
        for preset in ("small", "paper"):
            for bf16 in precisions:
                iteration, (pg, pd) = iteration_fn(preset, device, bf16, args.batch_size, args.hr_size, loss)
                seconds = measure(iteration, device, warmup, iters, args.min_seconds)
                rate = hr_per_iter / seconds
                baseline = baseline or rate
                ratios = [f"{rate / baseline:.2f}x small fp32"]
                if bf16:
                    ratios.append(f"{rate / fp32[preset]:.2f}x {preset} fp32")
                else:
                    fp32[preset] = rate
                params = f"{pg / 1e6:.2f}M/{pd / 1e6:.2f}M"
                precision = "bf16" if bf16 else "fp32"
                print(
                    f"{device.type:<8}{preset:<8}{precision:<10}{params:>14}{seconds:>9.3f}{rate:>10.1f}  "
                    f"{', '.join(ratios)}",
                    flush=True,
                )
                del iteration
        print(f"({device.type}: {name})")


if __name__ == "__main__":
    main()
