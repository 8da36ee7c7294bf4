"""Colour conversions, each defined once: Rec. 601 luma, BT.601 studio-range Y (SR papers' PSNR-Y), and PSNR.

Two lumas on purpose: `luma` keeps the full range (the weights sum to 1, so it works on [-1, 1] images too)
for losses, statistics and the structured generator's colour; `rgb_to_y` is Y in 16..235 as MATLAB's
`rgb2ycbcr` and BasicSR compute it, which is what SR papers' PSNR-Y and SSIM-Y are measured on.
"""

from __future__ import annotations

import torch

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B (JPEG's Y)
STUDIO_Y = (65.481, 128.553, 24.966)  # BT.601 Y in 16..235 from R, G, B in [0, 1] (MATLAB's rgb2ycbcr)
STUDIO_Y_OFFSET = 16.0


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W), Rec. 601 weights (works in [-1, 1] too: the weights sum to 1)."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB images in [0, 1]: (..., 3, H, W) -> (..., 1, H, W), in [16/255, 235/255]."""
    if x.shape[-3] != 3:
        raise ValueError(f"expected RGB images (..., 3, H, W), got {tuple(x.shape)}")
    w = torch.tensor(STUDIO_Y, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return ((x * w).sum(dim=-3, keepdim=True) + STUDIO_Y_OFFSET) / 255.0


def y_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`rgb_to_y(a) - rgb_to_y(b)` in float32, computed on the difference (the offset cancels): (N, 3, H, W) ->
    (N, H, W)."""
    w = torch.tensor(STUDIO_Y, device=a.device).view(1, 3, 1, 1) / 255
    return (a.float() - b.float()).mul(w).sum(dim=1)


def psnr_from_mse(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of mean squared errors of images whose values peak at `peak`; inf for 0."""
    return -10 * torch.log10(mse / peak**2)
