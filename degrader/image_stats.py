"""Per-image statistics of what a degradation changes (colourfulness, sharpness, noise, blockiness, tone), the
1-D Wasserstein distance that compares them as distributions, and `fidelity` (does the content survive?).

Pure functions on float (N, 3, H, W) tensors in [0, 1]; `degrader.realism` and `degrader.texture` build on them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from degrader.color import luma, psnr_from_mse, y_difference

STATISTICS = ("colourfulness", "sharpness", "noise", "blockiness", "brightness", "contrast")
# what a degradation changes; brightness and contrast follow the images' content and framing as much
DEGRADATION_STATISTICS = ("colourfulness", "sharpness", "noise", "blockiness")

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def fidelity(lr: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean PSNR (dB) of the luma of `lr` against `reference` (N, 3, h, w) in [0, 1]: does the content survive?

    Realism figures compare distributions, so LR that has lost its faces under strong JPEG and noise can score
    well on them; this figure, against bicubic LR of the same HR images, tells (what it scores: docs/results.md).
    """
    mse = y_difference(lr, reference).pow(2).mean(dim=(1, 2)).clamp_min(1e-10)  # BT.601 studio-range luma
    return float(psnr_from_mse(mse).mean())


def blockiness(y: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Mean |step| across the 8x8 JPEG block boundaries over the mean |step| inside blocks, per image; ~1: none.

    Only meaningful where the JPEG grid is aligned with the image, i.e. for LR images compressed at their own
    size (a 16x16 image has one inner boundary per axis, at 8). Images resized after compression (`--lr-prep
    resize` of larger web images) score ~1 whatever their artefacts; images narrower than 2 blocks score 1.
    """
    dx = (y[..., :, 1:] - y[..., :, :-1]).abs()  # (N, 1, H, W-1): step between columns j and j+1
    dy = (y[..., 1:, :] - y[..., :-1, :]).abs()
    edge_x = (torch.arange(dx.shape[-1]) % block) == block - 1
    edge_y = (torch.arange(dy.shape[-2]) % block) == block - 1
    if not edge_x.any() and not edge_y.any():
        return torch.ones(y.shape[0])
    at_edges = torch.cat([dx[..., edge_x].flatten(1), dy[..., edge_y, :].flatten(1)], 1).mean(1)
    inside = torch.cat([dx[..., ~edge_x].flatten(1), dy[..., ~edge_y, :].flatten(1)], 1).mean(1)
    return (at_edges + 1e-4) / (inside + 1e-4)  # the epsilon keeps flat images at 1


def image_statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of (N, 3, H, W) images in [0, 1], each a (N,) tensor (names in `STATISTICS`).

    - colourfulness: Hasler & Suesstrunk (2003) on [0, 1] values: 0 for gray images.
    - sharpness: mean squared Laplacian of the luma (Laplacian energy; blur lowers it, noise raises it).
    - noise: Immerkaer's (1996) fast noise standard deviation of the luma (insensitive to smooth structure).
    - blockiness: see `blockiness`.
    - brightness, contrast: mean and standard deviation of the luma.
    """
    x = x.float()
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    colourfulness = torch.sqrt(rg.flatten(1).var(1, correction=0) + yb.flatten(1).var(1, correction=0)) + 0.3 * (
        torch.sqrt(rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2)
    )
    y = luma(x)  # (N, 1, H, W)
    lap = F.conv2d(y, _LAPLACIAN[None, None])  # valid positions only: no padding artefacts at the borders
    h, w = y.shape[-2:]
    noise = (
        math.sqrt(math.pi / 2) * F.conv2d(y, _IMMERKAER[None, None]).abs().flatten(1).sum(1) / (6 * (w - 2) * (h - 2))
    )
    return {
        "colourfulness": colourfulness,
        "sharpness": lap.pow(2).flatten(1).mean(1),
        "noise": noise,
        "blockiness": blockiness(y),
        "brightness": y.flatten(1).mean(1),
        "contrast": y.flatten(1).std(1, correction=0),
    }


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    """The 1-D Wasserstein-1 distance between two empirical distributions (any sizes): the area between CDFs."""
    a, b = torch.sort(a.double().flatten()).values, torch.sort(b.double().flatten()).values
    values = torch.sort(torch.cat([a, b])).values
    deltas = values[1:] - values[:-1]
    cdf_a = torch.searchsorted(a, values[:-1], right=True) / len(a)
    cdf_b = torch.searchsorted(b, values[:-1], right=True) / len(b)
    return float(((cdf_a - cdf_b).abs() * deltas).sum())


def statistics_distances(fake: dict[str, torch.Tensor], real: dict[str, torch.Tensor]) -> dict[str, float]:
    """`wasserstein_1d` between matching `image_statistics` of two sets."""
    return {name: wasserstein_1d(fake[name], real[name]) for name in STATISTICS}
