"""The classical baselines of the paper's Table 1, and the hand-made pipelines users train real-world SR on
(`realesrgan`, `bsrgan`: `degrader/handmade.py`), with the same interface as a learned `Degrader`.

Each one maps HR images (B, 3, H, W) in [0, 1] and one integer seed per image to LR images
(B, 3, H/s, W/s) in [0, 1]. The seed fixes whatever randomness the method has, per image, so
`export_shards` writes them through the same path as a trained degrader and a sample can be regenerated
from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from degrader.errors import UserError
from degrader.handmade import BSRGAN, HandMade, RealESRGAN
from degrader.kernels import check_hr_batch


class Bicubic:
    """Antialiased bicubic downsampling (what most SR papers call "bicubic"). Deterministic; seeds are unused."""

    name = "bicubic"
    mode = "bicubic"
    antialias = True

    def __init__(self, scale: int = 4):
        self.scale = scale
        self.sha256 = ""  # no weights
        self.hr_size: int | None = None  # any HR size divisible by the scale; runs on its input's device

    def _downsample(self, hr: torch.Tensor) -> torch.Tensor:
        size = (hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
        return F.interpolate(hr, size=size, mode=self.mode, align_corners=False, antialias=self.antialias)

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Degrade (B, 3, H, W) HR images in [0, 1]. Returns (B, 3, H/s, W/s) in [0, 1]."""
        check_hr_batch(hr, seeds, self.scale)
        return self._downsample(hr.float()).clamp(0, 1)


class Bilinear(Bicubic):
    """Plain bilinear downsampling without antialiasing: the aliased baseline."""

    name = "bilinear"
    mode = "bilinear"
    antialias = False


def blur_kernel(seed: int) -> torch.Tensor:
    """The random Gaussian blur kernel of one sample: size 2 to 6 px and sigma from the seed. (k, k), sums to 1.

    Even sizes shift the image by half a pixel, a misalignment real cameras and resizers also produce.
    """
    g = torch.Generator().manual_seed(int(seed))
    size = int(torch.randint(2, 7, (1,), generator=g))  # 2..6 px
    sigma = size * (0.25 + 0.25 * float(torch.rand(1, generator=g)))  # a quarter to a half of the size
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k1 = torch.exp(-(x**2) / (2 * sigma**2))
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


class BlurBilinear(Bilinear):
    """A random Gaussian blur of 2 to 6 px per image (fixed by its seed), then plain bilinear downsampling."""

    name = "blur-bilinear"

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Degrade (B, 3, H, W) HR images in [0, 1]; seed i fixes the blur of image i. Returns (B, 3, H/s, W/s)."""
        check_hr_batch(hr, seeds, self.scale)
        blurred = []
        for img, seed in zip(hr.float(), seeds, strict=True):
            kernel = blur_kernel(seed).to(img.device)
            k = kernel.shape[0]
            # "same" output size; an even kernel takes one more pixel of padding on the right and bottom
            padded = F.pad(img[None], ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="reflect")
            weight = kernel.expand(3, 1, k, k)
            blurred.append(F.conv2d(padded, weight, groups=3))  # (1, 3, H, W)
        return self._downsample(torch.cat(blurred)).clamp(0, 1)


CLASSICAL: dict[str, type[Bicubic] | type[HandMade]] = {
    "bicubic": Bicubic,
    "bilinear": Bilinear,
    "blur-bilinear": BlurBilinear,
    "realesrgan": RealESRGAN,
    "bsrgan": BSRGAN,
}
HANDMADE = ("realesrgan", "bsrgan")  # defined for scale 2 and 4 only


def make_classical(name: str, scale: int = 4) -> Bicubic | HandMade:
    """Build the classical degrader `name` (one of `CLASSICAL`) for an integer `scale` >= 2.

    Raises:
        UserError: unknown name or bad scale.
    """
    if name not in CLASSICAL:
        raise UserError(f"--degrader {name!r} is not a classical degrader; choose one of {', '.join(CLASSICAL)}.")
    if int(scale) < 2:
        raise UserError(f"--scale {scale}: a degrader needs a scale of 2 or more.")
    if name in HANDMADE and int(scale) not in (2, 4):
        raise UserError(f"--scale {scale}: the {name} pipeline is defined for scale 2 and 4; pick one of them.")
    return CLASSICAL[name](int(scale))
