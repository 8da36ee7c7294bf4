"""Which linear camera explains real aligned pairs: a least-squares fit of blur, area sampling and sharpening.

    python benchmarks/camera_kernel.py --hr DIR --lr DIR [--scale 4] [--out RUN]

HR and LR are folders of aligned pairs with the same file names, LR at 1/scale (bench_camera's split: `hr/`
and `own-lr/`, scenes 1-40 and their own real LR area-downscaled). Each LR pixel's luma is modelled as a linear
function of the HR patch around it; the script prints the RMS error (/255) of plain area sampling, of bicubic,
of area sampling after the best Gaussian blur, and of the structured generator's chain: Gaussian blur, area
sampling, then an unsharp mask at LR (`x + amount * (x - Gaussian(x))`), grid-searched. `--out` writes a
structured degrader with exactly that chain and nothing else (no noise, JPEG or colour change), a reference for
SR: `bench_camera.py --tag lsq --degraders learned` exports it when `RUN` is `CACHE/x4/runs/degrader-lsq-s0`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader.color import luma  # noqa: E402
from degrader.images import load_rgb, to_tensor  # noqa: E402

PATCH = 32  # HR px of context per LR pixel: the widest blur and mask of the grid fit inside
SIGMAS = (0.4, 0.8, 1.2, 1.5, 1.8, 2.2)  # Gaussian blur before area sampling, HR px
AMOUNTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # unsharp mask amount
MASK_SIGMAS = (0.7, 1.0, 1.5)  # the mask's Gaussian, LR px


def gaussian(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return torch.outer(g, g) / g.sum() ** 2


def conv_same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2-D convolution of kernel `a` with kernel `b`, cropped to `a`'s size (centred)."""
    out = F.conv2d(a[None, None], b.flip(-1, -2)[None, None], padding=b.shape[-1] // 2)
    return out[0, 0]


def camera_kernel(scale: int, sigma: float, amount: float, mask_sigma: float) -> torch.Tensor:
    """The HR footprint (PATCH, PATCH) of one LR pixel under blur -> area sampling -> unsharp mask at LR."""
    off = (PATCH - scale) // 2
    area = torch.zeros(PATCH, PATCH, dtype=torch.float64)
    area[off : off + scale, off : off + scale] = 1 / scale**2
    k = conv_same(area, gaussian(sigma, 6)) if sigma > 0 else area
    mask = -amount * gaussian(mask_sigma, 3)
    mask[3, 3] += 1 + amount
    dilated = torch.zeros(6 * scale + 1, 6 * scale + 1, dtype=torch.float64)
    dilated[::scale, ::scale] = mask  # the LR-grid mask as an HR kernel
    return conv_same(k, dilated)


def bicubic_kernel(scale: int) -> torch.Tensor:
    """The HR footprint of one LR pixel under antialiased bicubic downscaling (torch's, as `degrade` uses)."""
    off, k = (PATCH - scale) // 2, torch.zeros(PATCH, PATCH, dtype=torch.float64)
    for u, v in itertools.product(range(PATCH), repeat=2):
        img = torch.zeros(1, 1, 4 * PATCH, 4 * PATCH, dtype=torch.float64)
        img[0, 0, 2 * PATCH + u - off, 2 * PATCH + v - off] = 1  # LR pixel (2P/s, 2P/s) covers HR 2P..2P+s-1
        k[u, v] = F.interpolate(img, scale_factor=1 / scale, mode="bicubic", antialias=True)[0, 0, 2 * PATCH // scale][
            2 * PATCH // scale
        ]
    return k


def samples(hr_dir: Path, lr_dir: Path, scale: int, per_image: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """HR luma patches (N, PATCH * PATCH) and the LR luma each explains (N,), from random LR pixels of each pair."""
    gen, off, rows, ys = torch.Generator().manual_seed(0), (PATCH - scale) // 2, [], []
    for p in sorted(hr_dir.glob("*.png")):
        hr, lr = luma(to_tensor(load_rgb(p))[None])[0, 0].double(), luma(to_tensor(load_rgb(lr_dir / p.name))[None])
        lr = lr[0, 0].double()
        margin = math.ceil(PATCH / scale)
        i = torch.randint(margin, lr.shape[0] - margin, (per_image,), generator=gen)
        j = torch.randint(margin, lr.shape[1] - margin, (per_image,), generator=gen)
        windows = hr.unfold(0, PATCH, 1).unfold(1, PATCH, 1)  # (H', W', PATCH, PATCH)
        rows.append(windows[scale * i - off, scale * j - off].flatten(1))
        ys.append(lr[i, j])
    return torch.cat(rows), torch.cat(ys)


def fit(hr_dir: Path, lr_dir: Path, scale: int) -> dict:
    """RMS errors (/255) of the reference kernels and the best blur + sharpening chain on the pairs."""
    a, y = samples(hr_dir, lr_dir, scale)
    rms = lambda k: float((a @ k.flatten() - y).pow(2).mean().sqrt() * 255)  # noqa: E731
    chains = {
        (s, m, ms): rms(camera_kernel(scale, s, m, ms)) for s, m, ms in itertools.product(SIGMAS, AMOUNTS, MASK_SIGMAS)
    }
    best = min(chains, key=chains.get)
    blur_only = min((k for k in chains if k[1] == 0), key=chains.get)
    return {
        "pixels": len(y),
        "area": rms(camera_kernel(scale, 0, 0, 1.0)),
        "bicubic": rms(bicubic_kernel(scale)),
        "blur": {"sigma": blur_only[0], "rms": chains[blur_only]},
        "blur+sharpen": {"sigma": best[0], "amount": best[1], "mask_sigma": best[2], "rms": chains[best]},
    }


def lsq_degrader(sigma: float, amount: float, mask_sigma: float, scale: int):
    """A structured degrader with exactly that chain: every image the same, no noise, JPEG or colour change."""
    from degrader.checkpoint import Degrader
    from degrader.structured import StructuredConfig, StructuredGenerator
    from degrader.structured_config import SHARPEN_SIGMA

    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    fraction = lambda v, lo, hi: min(max((v - lo) / (hi - lo), 1e-6), 1 - 1e-6)  # noqa: E731  (ends: just inside)
    cfg = StructuredConfig(scale=scale, sharpen_max=2.0)
    net = StructuredGenerator(cfg)
    raw = {
        net.blur: [logit(fraction(sigma, cfg.sigma_min, cfg.sigma_max))] * 2 + [0.0, 0.0],
        net.colour: [0.0] * 6 + [1.0],
        net.noise: [-30.0, -30.0, math.pi / 4],  # the floor of both ranges
        net.jpeg: [30.0, -30.0],  # quality 100, 4:4:4
        net.sharpen: [logit(fraction(amount, 0, cfg.sharpen_max)), logit(fraction(mask_sigma, *SHARPEN_SIGMA))],
    }
    with torch.no_grad():
        for step, values in raw.items():
            values = values * cfg.gaussians if step is net.blur else values
            step.head.weight.zero_()
            step.head.bias.copy_(torch.tensor(values) / step.head.lr_mult)
    return Degrader(net, name="lsq")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hr", type=Path, required=True)
    p.add_argument("--lr", type=Path, required=True)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--out", type=Path, help="a run folder to write the fitted chain into, as degrader.safetensors")
    args = p.parse_args()
    for option, folder in (("--hr", args.hr), ("--lr", args.lr)):
        if not folder.is_dir() or not any(folder.glob("*.png")):
            print(f"skipped: {option} {folder} holds no PNG files")
            return 0
    r = fit(args.hr, args.lr, args.scale)
    print(f"{r['pixels']} LR pixels; RMS error of each linear camera (/255):")
    print(f"  area sampling            {r['area']:.2f}")
    print(f"  bicubic                  {r['bicubic']:.2f}")
    print(f"  blur + area              {r['blur']['rms']:.2f}  (sigma {r['blur']['sigma']} HR px)")
    b = r["blur+sharpen"]
    chain = f"sigma {b['sigma']} HR px, amount {b['amount']}, mask {b['mask_sigma']} LR px"
    print(f"  blur + area + sharpen    {b['rms']:.2f}  ({chain})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        lsq_degrader(b["sigma"], b["amount"], b["mask_sigma"], args.scale).save(args.out / "degrader.safetensors")
        print(f"wrote {args.out / 'degrader.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
