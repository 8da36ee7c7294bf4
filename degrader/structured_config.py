"""The structured generator's config: every step's range and starting point, checked when a checkpoint loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from degrader.errors import UserError
from degrader.jpeg import ROUNDINGS
from degrader.nets import DiscriminatorConfig, config_from_dict

SHARPEN_SIGMA = (0.5, 1.5)  # LR px: the range of the unsharp mask's Gaussian width (a 7x7 kernel covers 1.5)


@dataclass
class StructuredConfig:
    hr_size: int = 64  # HR training crop; the generator itself takes any size divisible by `scale`
    scale: int = 4  # HR size / LR size
    z_dim: int = 64  # noise vector length; z only sets per-image parameters (and seeds the noise images)
    hidden: int = 64  # width of the MLP that embeds z
    head_init: float = 0.1  # scale of the heads' initial weights: how much images differ at step 0
    head_lr_mult: float = 100.0  # the heads learn this many times faster than the rest (equalised lr)
    # blur: a mixture of anisotropic Gaussians in HR pixels
    kernel_size: int = 13  # odd; covers sigma up to about kernel_size / 6
    gaussians: int = 2  # mixture components
    sigma_min: float = 0.2  # HR px; 0.2 is a delta to within 1e-4
    sigma_max: float = 2.5
    sigma_init: float = 0.7  # between area downscaling (a delta) and bicubic's wider kernel
    # colour, applied after downsampling
    max_log_gain: float = 0.4  # white-balance gains within exp(+-0.4) = 0.67..1.49
    max_offset: float = 0.15  # black level per channel, in [0, 1] units
    max_saturation: float = 1.5  # 0 is grey, 1 unchanged
    # sensor noise: variance a * x + b for x in [0, 1]; a, b log-uniform in their ranges
    shot_range: tuple[float, float] = (1e-6, 3e-2)  # a
    read_range: tuple[float, float] = (1e-7, 1e-2)  # b
    noise_init: float = 0.05  # initial position of log a and log b in their ranges (near the low end)
    # sharpening (unsharp mask) at LR, after the noise, as a camera's or a website's pipeline sharpens
    sharpen_max: float = 0.0  # the strongest amount; 0 leaves the step out (degraders saved before it)
    sharpen_init: float = 0.05  # starting amount: next to none
    sharpen_sigma: float = 1.0  # starting width of the mask's Gaussian, LR px (learned within SHARPEN_SIGMA)
    # JPEG
    quality_min: float = 10.0
    quality_max: float = 100.0
    quality_init: float = 95.0
    subsample: bool = True  # learn a per-image mix of 4:4:4 and 4:2:0 chroma (most encoders' default)
    subsample_init: float = 0.1  # initial weight of the 4:2:0 decode
    rounding: str = "ste"  # "ste" or "cubic" rounding of DCT coefficients
    # free-form residual on the LR output (the paper's network's role), zero-initialised
    residual_width: int = 32  # 0 turns it off
    residual_max: float = 0.1  # bound on its change per pixel ([0, 1] units), so it cannot replace the chain
    round_output: bool = True  # quantise to 8 bits (straight-through), as every real image is
    d_width: int = 32  # discriminator width
    d_patch: int = 0  # 0: the paper's ResNet discriminator; N > 0: a patch discriminator of N blocks

    def __post_init__(self) -> None:
        self.shot_range, self.read_range = tuple(self.shot_range), tuple(self.read_range)  # lists from JSON
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding {self.rounding!r} is not one of {', '.join(ROUNDINGS)}")
        if not self.sigma_min < self.sigma_init < self.sigma_max:
            raise ValueError(f"sigma_init {self.sigma_init} must lie in ({self.sigma_min}, {self.sigma_max})")
        if self.sharpen_max < 0:
            raise ValueError(f"sharpen_max {self.sharpen_max} must be >= 0 (0: no sharpening step)")
        lo, hi = SHARPEN_SIGMA
        if self.sharpen_max and not (0 < self.sharpen_init < self.sharpen_max and lo < self.sharpen_sigma < hi):
            raise ValueError(f"need 0 < sharpen_init < sharpen_max and {lo} < sharpen_sigma < {hi} (LR px)")
        if not 1 <= self.quality_min < self.quality_init < self.quality_max <= 100:
            raise ValueError("need 1 <= quality_min < quality_init < quality_max <= 100")

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale

    def discriminator(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(in_size=self.lr_size, width=self.d_width, patch_blocks=self.d_patch)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> StructuredConfig:
        """The config a checkpoint stores, type- and range-checked before a network is built from it.

        Raises:
            UserError: a field of the wrong type, out of range or unknown; the message starts with `source`.
        """
        ranges = {"hr_size": (4, 4096), "scale": (1, 64), "z_dim": (1, 512), "hidden": (1, 1024)}
        ranges |= {"kernel_size": (1, 63), "gaussians": (1, 16), "residual_width": (0, 512), "d_width": (1, 512)}
        ranges |= {"d_patch": (0, 16), "sharpen_max": (0, 10)}
        pairs = {}  # (low, high) float fields, which config_from_dict does not type-check
        for name in ("shot_range", "read_range"):
            value = d.get(name) if isinstance(d, dict) else None
            if value is None:
                continue
            ok = isinstance(value, list | tuple) and len(value) == 2
            ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            if not ok or not 0 < value[0] < value[1] <= 1:
                raise UserError(f"{source}: model config field {name!r} is {value!r:.40}, expected [lo, hi] in (0, 1].")
            pairs[name] = tuple(float(v) for v in value)
        if isinstance(d, dict) and not isinstance(d.get("rounding", "ste"), str):
            raise UserError(f"{source}: model config field 'rounding' is not a string.")
        rest = {k: v for k, v in d.items() if k not in pairs} if isinstance(d, dict) else d
        try:
            return dataclasses.replace(config_from_dict(cls, rest, source, ranges), **pairs)
        except ValueError as e:
            raise UserError(f"{source}: unusable model config ({e}).") from None
