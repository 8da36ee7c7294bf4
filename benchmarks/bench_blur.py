"""The structured generator's blur + area downsampling: one strided convolution against blur, then pooling.

`degrader.structured.blur(x, kernels, scale)` folds the s x s average pooling into the per-image kernel and
convolves with stride s. This times forward + backward (gradients to the image and to the kernels, as in a
G step) of both forms on the same tensors, checks that they agree, and prints the fused form's speed-up.
It then times whole `small`-preset training steps (G step and one D step, with the preset's stabilisers)
of the structured generator with the fused blur against the same step with blur-then-pool patched in.

    OMP_NUM_THREADS=1 python benchmarks/bench_blur.py
    python benchmarks/bench_blur.py --batch 64 --size 128 --iters 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader import structured  # noqa: E402
from degrader.gan import Ema, adam, discriminator_loss, generator_loss, update  # noqa: E402
from degrader.nets import Discriminator  # noqa: E402
from degrader.presets import PRESETS  # noqa: E402


def timed(fn, iters: int) -> float:
    """Seconds per call, after two warm-up calls."""
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


FUSED = structured.blur


def unfused(x: torch.Tensor, kernels: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """The previous form: blur at HR (the same function at scale 1), then pool."""
    return F.avg_pool2d(FUSED(x, kernels), scale)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="HR side")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--iters", type=int, default=30)
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = structured.StructuredConfig(hr_size=args.size, scale=args.scale)
    sigma = torch.rand(args.batch, 2) * 2 + 0.3
    kernels = structured.gaussian_kernels(sigma, torch.rand(args.batch), cfg.kernel_size).requires_grad_(True)
    x = torch.rand(args.batch, 3, args.size, args.size, requires_grad=True)
    out = {}
    for name, fn in (("blur, then pool", unfused), ("fused (stride)", FUSED)):
        out[name] = fn(x, kernels, args.scale).detach()
        out[name + " s"] = timed(lambda fn=fn: fn(x, kernels, args.scale).square().sum().backward(), args.iters)
    err = float((out["blur, then pool"] - out["fused (stride)"]).abs().max())
    base = out["blur, then pool s"]
    print(f"blur + {args.scale}x pooling, forward + backward, batch {args.batch} at {args.size} px "
          f"({torch.get_num_threads()} threads); max difference {err:.1e}")  # fmt: skip
    for name in ("blur, then pool", "fused (stride)"):
        print(f"  {name:16s} {out[name + ' s'] * 1e3:8.2f} ms   x{base / out[name + ' s']:.2f}")

    # whole training steps of the small preset, fused against the old form patched in
    loss = PRESETS["small"].loss
    net_g, net_d = structured.StructuredGenerator(cfg), Discriminator(cfg.discriminator())
    opt_g, opt_d, ema = adam(net_g, loss), adam(net_d, loss, discriminator=True), Ema(net_g, loss.ema)
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    real = torch.rand(args.batch, 3, args.size // args.scale, args.size // args.scale) * 2 - 1

    def step() -> None:
        fake = net_g(hr, torch.randn(args.batch, cfg.z_dim, generator=gen))
        update(opt_g, generator_loss(fake, F.avg_pool2d(hr, args.scale), net_d, loss, gen)[0])
        ema.update(net_g)
        with torch.no_grad():
            fake = net_g(hr, torch.randn(args.batch, cfg.z_dim, generator=gen))
        update(opt_d, discriminator_loss(net_d, real, fake, loss, gen)[0])

    fused_s = timed(step, args.iters)
    structured.blur = unfused  # Blur.forward looks the function up at call time
    try:
        old_s = timed(step, args.iters)
    finally:
        structured.blur = FUSED
    print(f"small-preset training step (G + 1 D, stabilisers on), batch {args.batch}")
    print(f"  {'blur, then pool':16s} {old_s * 1e3:8.2f} ms   x1.00")
    print(f"  {'fused (stride)':16s} {fused_s * 1e3:8.2f} ms   x{old_s / fused_s:.2f}")


if __name__ == "__main__":
    main()
