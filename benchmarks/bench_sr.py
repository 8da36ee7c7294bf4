"""SR training throughput: LR->HR pairs/s through one full iteration (G step + 5 D steps) for each preset.

    python benchmarks/bench_sr.py [--batch-size 16] [--iters 3] [--device cpu|cuda|auto] [--bf16]
    python benchmarks/bench_sr.py --end-to-end   # also time `sr.train.train` itself (bicubic, generated images)
    python benchmarks/bench_sr.py --device cuda --variants fp32,bf16,cl,bf16+cl,bf16+cl+compile

The baseline, measured in the same run on the same batches, is the pixel-only generator step of the same
preset (what `--pixel-only` trains); the ratio says what the GAN part costs. A pair counts once per batch
the iteration consumes: (d_steps + 1) * batch_size per iteration, as in the training loop.
`--variants` adds G+5D rows per preset for each variant (bf16 autocast, cl = channels_last, compile, as
`sr train --set bf16=true --set channels_last=true --set compile=true` runs), as ratios against the same
preset in fp32 eager.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fit import Variant  # noqa: E402  (the same variants as the fit benchmark)

from degrader.device import accelerate, autocast, resolve_device  # noqa: E402
from degrader.gan import LossConfig, adam, discriminator_loss, generator_loss, update  # noqa: E402
from degrader.nets import Discriminator  # noqa: E402
from sr.model import PRESETS, LowToHighConfig, LowToHighGenerator  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def iteration_rate(
    preset: str,
    device: torch.device,
    b: int,
    iters: int,
    bf16: bool,
    pixel_only: bool,
    variant: Variant | None = None,
    lr_size: int = 16,
    warmup: int = 1,
) -> float:
    """Pairs/s of the training loop's math on in-memory batches (no data loading); `variant` overrides `bf16`."""
    torch.manual_seed(0)
    variant = variant or Variant(bf16=bf16)
    bf16 = variant.bf16
    model = LowToHighConfig(lr_size=lr_size, **PRESETS[preset])
    loss = LossConfig(beta=0.0) if pixel_only else LossConfig()
    net_g = accelerate(LowToHighGenerator(model).to(device), variant)  # as sr train builds them
    net_d = accelerate(Discriminator(model.discriminator()).to(device), variant)
    opt_g, opt_d = adam(net_g, loss), adam(net_d, loss)
    k = 0 if pixel_only else loss.d_steps  # LossConfig refuses d_steps=0
    lr = torch.rand(k + 1, b, 3, model.lr_size, model.lr_size, device=device) * 2 - 1
    hr = torch.rand(k + 1, b, 3, model.hr_size, model.hr_size, device=device) * 2 - 1

    def one() -> None:
        with autocast(device, bf16):
            g_loss, _ = generator_loss(net_g(lr[0]), hr[0], net_d, loss)
        update(opt_g, g_loss)
        for i in range(1, k + 1):
            with autocast(device, bf16):
                with torch.no_grad():
                    fake = net_g(lr[i])
                d_loss, _ = discriminator_loss(net_d, hr[i], fake)
            update(opt_d, d_loss)

    for _ in range(warmup):  # allocator, cuDNN autotuning, compilation
        one()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        one()
    sync(device)
    return iters * (k + 1) * b / (time.perf_counter() - start)


def end_to_end(preset: str, device: str, b: int, steps: int, pixel_only: bool) -> float:
    """Pairs/s of `sr.train.train` itself: on-the-fly bicubic pairs from generated faces, samples and checkpoints."""
    from degrader.synthetic import make_faces
    from sr.train import SRTrainConfig, plan_train, train

    with tempfile.TemporaryDirectory() as tmp:
        hr = Path(tmp) / "hr"
        hr.mkdir()
        for i, img in enumerate(make_faces(64, 64, seed=0)):
            img.save(hr / f"{i:03d}.png")
        config = SRTrainConfig(
            out=f"{tmp}/run", degrader="bicubic", hr=str(hr), preset=preset, steps=steps, batch_size=b,
            pixel_only=pixel_only, device=device, workers=1, sample_every=steps, checkpoint_every=steps,
        )  # fmt: skip
        start = time.perf_counter()
        train(plan_train(config))
        return config.pairs_before(steps) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per measurement (after one warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--end-to-end", action="store_true", help="also time sr.train.train (small preset)")
    parser.add_argument("--steps", type=int, default=4, help="training steps for --end-to-end")
    parser.add_argument("--presets", default="small,paper", help="comma-separated presets")
    parser.add_argument("--variants", default="", help="e.g. fp32,bf16,cl,bf16+cl,bf16+cl+compile (fp32 first)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    b = args.batch_size
    print(f"device {device}, {torch.get_num_threads()} CPU threads, batch {b}, torch {torch.__version__}")
    print(f"{'preset':8} {'pixel-only pairs/s':>19} {'G+5D pairs/s':>13} {'ratio':>7}")
    full = {}
    presets = args.presets.split(",")
    for preset in presets:
        base = iteration_rate(preset, device, b, args.iters, args.bf16, pixel_only=True)
        full[preset] = iteration_rate(preset, device, b, args.iters, args.bf16, pixel_only=False)
        print(f"{preset:8} {base:19.1f} {full[preset]:13.1f} {full[preset] / base:7.2f}")
    if "small" in full and "paper" in full:
        print(f"small / paper, G+5D: {full['small'] / full['paper']:.2f}x")
    if args.variants:
        print(f"{'preset':8} {'variant':17} {'G+5D pairs/s':>13}  ratio to fp32 eager")
        for preset in presets:
            eager = None
            for variant in map(Variant.parse, args.variants.split(",")):
                warmup = 3 if variant.compile else 1  # the compile happens in the untimed warm-up
                rate = iteration_rate(preset, device, b, args.iters, False, False, variant, warmup=warmup)
                eager = eager or (rate if variant == Variant() else None)
                ratio = f"{rate / eager:.2f}" if eager else "-"
                print(f"{preset:8} {variant.name:17} {rate:13.1f}  {ratio}", flush=True)
    if args.end_to_end:
        math = full["small"]
        e2e = end_to_end("small", str(device), b, args.steps, pixel_only=False)
        print(f"sr.train.train, small, G+5D: {e2e:.1f} pairs/s = {e2e / math:.2f} of the in-memory rate (data + I/O)")


if __name__ == "__main__":
    main()
