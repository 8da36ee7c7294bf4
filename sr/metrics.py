"""PSNR and SSIM as super-resolution papers report them (the BasicSR / MATLAB conventions).

Both images are quantised to 0..255 (as if saved as 8-bit PNG), optionally reduced to the ITU-R BT.601 luma
(Y of YCbCr, 16..235), cropped by `crop_border` pixels on every side, and compared in float64. SSIM uses an
11x11 Gaussian window with sigma 1.5, 'valid' filtering (no padding) and C1 = (0.01 * 255)^2,
C2 = (0.03 * 255)^2; on RGB it is the mean of the three channels' SSIM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from degrader.color import psnr_from_mse, rgb_to_y


def _prepare(a: torch.Tensor, b: torch.Tensor, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as float64 (B, C, H, W) in 0..255, quantised, optionally luma, border cropped."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim not in (3, 4) or a.shape[-3] != 3:
        raise ValueError(f"expected RGB images (3, H, W) or (B, 3, H, W), got {tuple(a.shape)}")
    out = []
    for x in (a, b):
        x = x.detach().to(torch.float64)
        x = x.unsqueeze(0) if x.ndim == 3 else x
        x = x.clamp(0, 1).mul(255).round()  # what an 8-bit PNG would hold
        if y_channel:
            x = rgb_to_y(x / 255) * 255  # luma is not re-rounded (BasicSR's to_y_channel)
        if crop_border:
            x = x[..., crop_border:-crop_border, crop_border:-crop_border]
        out.append(x)
    if out[0].shape[-1] < 1 or out[0].shape[-2] < 1:
        raise ValueError(f"crop_border {crop_border} leaves nothing of {tuple(a.shape)} images")
    return out[0], out[1]


def _squeeze(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values[0] if ndim == 3 else values


def psnr(a: torch.Tensor, b: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, peak 255, per image.

    Args:
        a, b: images in [0, 1], (3, H, W) or (B, 3, H, W), same shape.
        crop_border: pixels left out on every side (SR papers use the scale).
        y_channel: compare the BT.601 luma instead of RGB.

    Returns:
        float64 tensor: a scalar for (3, H, W) input, (B,) for a batch; inf where the images are equal.
    """
    x, y = _prepare(a, b, crop_border, y_channel)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    return _squeeze(psnr_from_mse(mse, 255.0), a.ndim)  # mse 0 gives inf


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) float64 Gaussian window summing to 1 (OpenCV's getGaussianKernel, outer product)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(
    a: torch.Tensor, b: torch.Tensor, *, crop_border: int = 0, y_channel: bool = False, window: int = 11
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels.

    Args:
        a, b: images in [0, 1], (3, H, W) or (B, 3, H, W), same shape; after cropping at least `window` pixels.
        crop_border: pixels left out on every side (SR papers use the scale).
        y_channel: compare the BT.601 luma instead of RGB.
        window: side of the Gaussian window (sigma 1.5).

    Returns:
        float64 tensor: a scalar for (3, H, W) input, (B,) for a batch; 1 where the images are equal.
    """
    x, y = _prepare(a, b, crop_border, y_channel)
    if min(x.shape[-2:]) < window:
        raise ValueError(f"SSIM needs at least {window}x{window} pixels after cropping, got {tuple(x.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    channels = x.shape[1]
    g = gaussian_window(window, 1.5).sum(dim=1).to(x.device)  # the 1-D Gaussian: the window is separable
    g_rows, g_cols = (
        g.view(1, 1, window, 1).expand(channels, -1, -1, -1),
        g.view(1, 1, 1, window).expand(channels, -1, -1, -1),
    )

    def blur(t: torch.Tensor) -> torch.Tensor:
        # two 1-D passes, 5x faster than the 11x11 window in float64; 'valid': (H - window + 1, W - window + 1)
        return F.conv2d(F.conv2d(t, g_rows, groups=channels), g_cols, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return _squeeze(ssim_map.mean(dim=(2, 3)).mean(dim=1), a.ndim)
