"""The pieces of the hand-made degradation pipelines (`degrader/handmade.py`), each from its definition.

Blur kernels (Gaussian with any covariance, generalized Gaussian, plateau, circular low-pass "sinc"), a
per-image filter, resizing, Gaussian (colour, grey, cross-channel correlated) and Poisson noise, and a real
8-bit JPEG round trip. Kernels are built on the CPU in float64 and returned as float32 (k, k) tensors that
sum to 1; the image operations work on batches on the images' device. Random draws take a CPU
`torch.Generator` per image, so each image's noise is a function of its own seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from degrader.color import luma
from degrader.jpeg import jpeg

KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
FFT_KERNEL, FFT_PIXELS = 13, 128 * 128  # from this kernel size and image area filter2d uses FFTs (faster there)


def check_hr_batch(hr: torch.Tensor, seeds: Sequence[int], scale: int) -> None:
    """The input every non-learned degrader takes: (B, 3, H, W) with H, W divisible by `scale`, one seed per image."""
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise ValueError(f"expected HR images (B, 3, H, W), got {tuple(hr.shape)}")
    if hr.shape[-1] % scale or hr.shape[-2] % scale:
        raise ValueError(f"HR size {tuple(hr.shape[-2:])} is not divisible by the scale {scale}")
    if len(seeds) != hr.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {hr.shape[0]} images")


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets from the centre of an odd (size, size) kernel: x (columns) and y (rows), float64."""
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    return ax.view(1, -1).expand(size, size), ax.view(-1, 1).expand(size, size)


def covariance(sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """The 2x2 covariance R diag(sigma_x^2, sigma_y^2) R^T, R the rotation by `theta` (radians), float64."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return rot @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rot.T


def shaped_kernel(size: int, cov: torch.Tensor, kind: str = "gaussian", beta: float = 1.0) -> torch.Tensor:
    """A kernel from the quadratic form Q = [x y] cov^-1 [x y]^T, normalised to sum 1. (size, size) float32.

    kind "gaussian": exp(-Q / 2); "generalized": exp(-Q^beta / 2); "plateau": 1 / (1 + Q^beta).
    """
    x, y = _grid(size)
    inv = torch.linalg.inv(cov.double())
    q = inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y
    if kind == "gaussian":
        k = torch.exp(-0.5 * q)
    elif kind == "generalized":
        k = torch.exp(-0.5 * q.pow(beta))
    elif kind == "plateau":
        k = 1 / (1 + q.pow(beta))
    else:
        raise ValueError(f"kernel kind {kind!r} is not gaussian, generalized or plateau")
    return (k / k.sum()).float()


def sinc_kernel(size: int, cutoff: float) -> torch.Tensor:
    """The circular low-pass filter of cutoff `cutoff` (radians per pixel, up to pi), truncated to (size, size).

    Its ideal frequency response is 1 inside the disc |w| < cutoff and 0 outside: the ringing of a sharp
    resizer. Impulse response cutoff * J1(cutoff * r) / (2 pi r), cutoff^2 / (4 pi) at r = 0; sums to 1.
    """
    x, y = _grid(size)
    r = torch.sqrt(x * x + y * y)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    k = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), k)
    return (k / k.sum()).float()


def pulse_kernel(size: int) -> torch.Tensor:
    """The identity kernel: 1 at the centre."""
    k = torch.zeros(size, size)
    k[size // 2, size // 2] = 1
    return k


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad an odd kernel to an odd (size, size), centred."""
    p = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, (p, p, p, p))


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image with its own kernel, same size out. x (B, C, H, W), kernels (B, k, k), k odd.

    Mirror padding (reflect), replication where the image is too small to mirror. One grouped convolution, or
    FFTs for large kernels on large images (the choice depends on the shapes only, never on the batch).
    """
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    p = k // 2
    mode = "reflect" if min(h, w) > p else "replicate"
    x = F.pad(x, (p, p, p, p), mode=mode)  # (B, C, H + k - 1, W + k - 1)
    if k >= FFT_KERNEL and h * w >= FFT_PIXELS:  # by FFT: 4x faster at 256 px and 21 taps on one CPU thread
        size = x.shape[-2:]
        spectrum = torch.fft.rfft2(kernels.to(x).flip(-2, -1), s=size)[:, None]  # (B, 1, ., .)
        return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=size)[..., k - 1 :, k - 1 :]
    weight = kernels.to(x).unsqueeze(1).repeat_interleave(c, dim=0)  # (B*C, 1, k, k)
    return F.conv2d(x.reshape(1, b * c, h + 2 * p, w + 2 * p), weight, groups=b * c).view(b, c, h, w)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize to `size` (h, w) with "area", "bilinear", "bicubic" (no antialiasing, as OpenCV and
    `F.interpolate` do by default) or "bicubic-aa" (antialiased, MATLAB's `imresize`)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    aa = mode.endswith("-aa")
    return F.interpolate(x, size=size, mode=mode.removesuffix("-aa"), align_corners=False, antialias=aa)


def gaussian_noise(
    x: torch.Tensor, sigmas: Sequence[float], grays: Sequence[bool], gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation sigma (in [0, 1] units) per image; a grey image's
    noise is the same in the three channels. Drawn on the CPU from each image's generator."""
    _, c, h, w = x.shape
    noise = [
        torch.randn(1 if gray else c, h, w, generator=g).expand(c, h, w) * s
        for s, gray, g in zip(sigmas, grays, gens, strict=True)
    ]
    return x + torch.stack(noise).to(x)


def correlated_noise(x: torch.Tensor, covs: Sequence[torch.Tensor], gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Add noise whose three channels are jointly Gaussian with the (3, 3) covariance of each image."""
    _, c, h, w = x.shape
    noise = []
    for cov, g in zip(covs, gens, strict=True):
        chol = torch.linalg.cholesky(cov.double() + 1e-12 * torch.eye(3, dtype=torch.float64)).float()
        noise.append(torch.einsum("ij,jhw->ihw", chol, torch.randn(c, h, w, generator=g)))
    return x + torch.stack(noise).to(x)


def poisson_noise(
    x: torch.Tensor, scales: Sequence[float], grays: Sequence[bool], gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """Add shot noise: the 8-bit image times v counts, v the power of two at or above its number of distinct
    levels, is drawn as Poisson counts; the difference, times `scale`, is added. Its variance is
    scale^2 x / v: proportional to the signal. A grey image's noise comes from its luma, equal in all channels."""
    out = []
    for img, scale, gray, g in zip(x, scales, grays, gens, strict=True):
        src = luma(img[None])[0] if gray else img  # (1 or 3, h, w)
        q = (src * 255).round().clamp(0, 255) / 255
        v = 2 ** math.ceil(math.log2(max(len(torch.unique(q)), 2)))
        counts = torch.poisson((q * v).double().cpu(), generator=g).to(img)
        out.append(img + ((counts / v - q) * scale).expand_as(img))
    return torch.stack(out)


def jpeg_8bit(x: torch.Tensor, qualities: Sequence[float]) -> torch.Tensor:
    """A real JPEG round trip at libjpeg `quality` per image (4:2:0): the image is taken to 8 bits first and
    the decoded one rounded to 8 bits, as a file on disk would be. (B, 3, H, W) in [0, 1]."""
    q8 = (x.clamp(0, 1) * 255).round() / 255
    out = jpeg(q8, torch.tensor([float(q) for q in qualities], device=x.device))
    return (out.clamp(0, 1) * 255).round() / 255
