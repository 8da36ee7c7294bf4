"""The structured High-to-Low generator: z drives a chain of physical, differentiable degradation steps.

    HR -> blur (per-image kernel) -> area downsampling -> colour (gains, black level, saturation)
       -> sensor noise (Poisson-Gaussian) -> JPEG (per-image quality) -> free-form residual -> LR

A small MLP embeds z; every step reads the parameters of its image from that embedding through its own head,
so z sets global per-image parameters only and the generator works on images of any size. It starts as
plain area downscaling with a light blur, faint noise and high JPEG quality, and learns the degradation on
top; `params(z)` returns what it learned in physical units (kernels, noise levels, qualities, ...).
Every random choice is a function of z: the noise images are drawn from a generator seeded by z's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from degrader.color import LUMA
from degrader.errors import UserError
from degrader.jpeg import ROUNDINGS, diff_round, jpeg
from degrader.nets import DiscriminatorConfig, config_from_dict

NOISE_CHANNELS = 4  # per pixel: one normal per colour channel and one shared by all three (grey noise)


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
        ranges |= {"d_patch": (0, 16)}
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


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _in_range(raw: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.sigmoid(raw)


def _log_range(raw: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return torch.exp(_in_range(raw, math.log(lo), math.log(hi)))


class Head(nn.Module):
    """A linear map from the z embedding to a step's raw parameters, starting near `init` for every image.

    Weights are stored divided by `lr_mult` and multiplied back in `forward` (StyleGAN's equalised learning
    rate): under Adam this makes the raw parameters move `lr_mult` times faster than the residual network's
    weights, so a physical parameter crosses its range in hundreds of steps at the paper's learning rate.
    """

    def __init__(self, hidden: int, init: list[float], cfg: StructuredConfig):
        super().__init__()
        self.lr_mult = lr_mult = cfg.head_lr_mult
        self.weight = nn.Parameter(torch.randn(len(init), hidden) * (cfg.head_init / math.sqrt(hidden) / lr_mult))
        self.bias = nn.Parameter(torch.tensor(init) / lr_mult)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight * self.lr_mult, self.bias * self.lr_mult)


class Embedding(nn.Sequential):
    """z (B, z_dim) -> h (B, hidden): the shared input of every step's head."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))


# ----------------------------------------------------------------------------------------------- blur


def gaussian_kernels(sigma: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Anisotropic Gaussians, each summing to 1: sigma (..., 2) along the rotated axes, angle (...) -> (..., k, k)."""
    r = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - size // 2
    v, u = torch.meshgrid(r, r, indexing="ij")  # rows, columns
    c, s = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    along, across = c * u + s * v, -s * u + c * v  # coordinates in the kernel's own axes
    q = (along / sigma[..., 0, None, None]) ** 2 + (across / sigma[..., 1, None, None]) ** 2
    k = torch.exp(-0.5 * q)
    return k / k.sum(dim=(-2, -1), keepdim=True)


def blur(x: torch.Tensor, kernels: torch.Tensor, scale: int = 1) -> torch.Tensor:
    """Convolve each image with its own kernel (reflect-padded), then average-pool by `scale`.

    x (B, C, H, W), kernels (B, k, k) -> (B, C, H/scale, W/scale). Blur and pooling are one strided
    convolution by the kernel widened with the scale x scale box: (k + s - 1)^2 taps per LR pixel instead of
    s^2 k^2 per LR pixel, about 7x less work (and the backward pass's, the larger part) at s = 4, k = 13.
    """
    b, c, h, w = x.shape
    p = kernels.shape[-1] // 2
    weight = kernels.flip(-2, -1).unsqueeze(1).to(x.dtype)  # (B, 1, k, k); flipped: a convolution
    if scale > 1:
        box = torch.full((1, 1, scale, scale), 1 / scale**2, dtype=x.dtype, device=x.device)
        weight = F.conv2d(F.pad(weight, (scale - 1,) * 4), box)  # (B, 1, k + s - 1, k + s - 1)
    x = F.pad(x, (p, p, p, p), mode="reflect").reshape(1, b * c, h + 2 * p, w + 2 * p)
    out = F.conv2d(x, weight.repeat_interleave(c, dim=0), stride=scale, groups=b * c)
    return out.view(b, c, h // scale, w // scale)


class Blur(nn.Module):
    """Optics: a per-image mixture of `gaussians` anisotropic Gaussian kernels at HR, then the sensor's area
    sampling by `scale` (the paper's pixel-loss target is the same average pooling)."""

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        self.cfg = cfg
        frac = (cfg.sigma_init - cfg.sigma_min) / (cfg.sigma_max - cfg.sigma_min)
        # per component: two sigmas, an angle, a mixture logit
        self.head = Head(hidden, [_logit(frac), _logit(frac), 0.0, 0.0] * cfg.gaussians, cfg)

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        raw = self.head(h).view(-1, cfg.gaussians, 4)
        sigma = _in_range(raw[..., :2], cfg.sigma_min, cfg.sigma_max)  # (B, G, 2)
        weights = torch.softmax(raw[..., 3], dim=-1)  # (B, G)
        kernels = gaussian_kernels(sigma, raw[..., 2], cfg.kernel_size)  # (B, G, k, k)
        kernel = (weights[..., None, None] * kernels).sum(1)  # (B, k, k)
        return {"kernel": kernel, "sigma": sigma, "angle": raw[..., 2], "mix": weights}

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return blur(x, self.params(h)["kernel"], self.cfg.scale)


# ----------------------------------------------------------------------------------------------- colour


class Colour(nn.Module):
    """The camera's colour processing: white-balance gains, black level, then saturation (0 gives exact grey)."""

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        self.cfg = cfg
        self.head = Head(hidden, [0.0] * 6 + [1.0], cfg)  # gains, offsets, saturation
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, raw = self.cfg, self.head(h)
        return {
            "gains": torch.exp(cfg.max_log_gain * torch.tanh(raw[:, :3])),  # (B, 3)
            "offset": cfg.max_offset * torch.tanh(raw[:, 3:6]),  # (B, 3)
            # clamped, not squashed, so that exact grey (as in a greyscale LR set) is reachable
            "saturation": raw[:, 6].clamp(0, cfg.max_saturation),  # (B,)
        }

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.params(h)
        x = x * p["gains"][:, :, None, None] + p["offset"][:, :, None, None]
        grey = (x * self.luma).sum(1, keepdim=True)
        return grey + p["saturation"].view(-1, 1, 1, 1) * (x - grey)


# ----------------------------------------------------------------------------------------------- noise


def noise_images(z: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Standard normal images (B, NOISE_CHANNELS, height, width), each a function of its row of z alone.

    Drawn on the CPU from a generator seeded by the bytes of the row, so a seed's z gives the same noise on
    every device and in every batch. For tiles, draw the whole image's noise once and slice it.
    """
    rows = z.detach().float().cpu().contiguous()
    out = []
    for row in rows:
        seed = int.from_bytes(hashlib.sha256(row.numpy().tobytes()).digest()[:8], "little") >> 1
        gen = torch.Generator().manual_seed(seed)
        out.append(torch.randn(NOISE_CHANNELS, height, width, generator=gen))
    return torch.stack(out).to(z.device)


class SensorNoise(nn.Module):
    """Poisson-Gaussian noise, variance a * x + b per pixel, partly shared by the channels (grey noise)."""

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        self.cfg = cfg
        self.head = Head(hidden, [_logit(cfg.noise_init)] * 2 + [math.pi / 4], cfg)

    def _split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, raw = self.cfg, self.head(h)
        shot = _log_range(raw[:, 0], *cfg.shot_range)  # a, (B,)
        read = _log_range(raw[:, 1], *cfg.read_range)  # b, (B,)
        angle = raw[:, 2].clamp(0, math.pi / 2)  # mixes shared and per-channel noise at constant variance
        return shot, read, angle

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        shot, read, angle = self._split(h)
        # grey_noise: the fraction of the variance shared by all three channels
        return {"shot": shot, "read": read, "grey_noise": torch.cos(angle) ** 2}

    def forward(self, x: torch.Tensor, h: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, 3, h, w) in about [0, 1]; noise (B, NOISE_CHANNELS, h, w) standard normal."""
        shot, read, angle = (t.view(-1, 1, 1, 1) for t in self._split(h))
        unit = torch.cos(angle) * noise[:, 3:4] + torch.sin(angle) * noise[:, :3]  # (B, 3, h, w), unit variance
        return x + (shot * x.clamp(0, 1) + read).sqrt() * unit


# ----------------------------------------------------------------------------------------------- JPEG


class Jpeg(nn.Module):
    """Differentiable JPEG (`degrader.jpeg`) at a per-image quality.

    With `subsample`, each image is a mix of its 4:4:4 and 4:2:0 decodes with a learned per-image weight
    (exact at 0 and 1): starting mostly 4:4:4 keeps the chroma of the first steps close to plain downscaling.
    """

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        self.cfg = cfg
        frac = (cfg.quality_init - cfg.quality_min) / (cfg.quality_max - cfg.quality_min)
        self.head = Head(hidden, [_logit(frac), _logit(cfg.subsample_init)], cfg)

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.head(h)
        p = {"quality": _in_range(raw[:, 0], self.cfg.quality_min, self.cfg.quality_max)}  # (B,)
        if self.cfg.subsample:
            p["subsampled"] = torch.sigmoid(raw[:, 1])  # (B,) weight of the 4:2:0 decode
        return p

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p, rounding = self.params(h), self.cfg.rounding
        q = p["quality"].float()
        with torch.autocast(x.device.type, enabled=False):  # bf16 would blur the DCT and the rounding steps
            x = x if x.dtype == torch.float64 else x.float()  # float64 where `degrader.apply` asks for it
            y = jpeg(x, q, subsample=False, rounding=rounding)
            if self.cfg.subsample:
                w = p["subsampled"].float().view(-1, 1, 1, 1)
                y = (1 - w) * y + w * jpeg(x, q, subsample=True, rounding=rounding)
        return y


# ----------------------------------------------------------------------------------------------- residual


class Residual(nn.Module):
    """The free-form part: a small conv net on the LR image and its noise, zero-initialised, added on top.

    z enters as a per-image bias after the first conv. No normalisation layers, so every image is
    independent of the rest of its batch. Its output is bounded (`residual_max` * tanh): unbounded, with a
    weak pixel loss, it learned a texture of its own from the noise images that covered every face.
    """

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        w = cfg.residual_width
        self.max = cfg.residual_max
        self.inp = nn.Conv2d(3 + NOISE_CHANNELS, w, 3, padding=1)
        self.style = nn.Linear(hidden, w)
        self.body = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(w, w, 3, padding=1), nn.LeakyReLU(0.2))
        self.out = nn.Conv2d(w, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        y = self.inp(torch.cat([x * 2 - 1, noise], dim=1)) + self.style(h)[:, :, None, None]
        return x + self.max * torch.tanh(self.out(self.body(y)))


# ----------------------------------------------------------------------------------------------- generator


class StructuredGenerator(nn.Module):
    """HR (B, 3, H, W) in [-1, 1] and z (B, z_dim) -> LR (B, 3, H/s, W/s) in [-1, 1], for any H, W divisible by s.

    Same call as `HighToLowGenerator`; the steps work in [0, 1] inside.
    """

    def __init__(self, config: StructuredConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = Embedding(cfg.z_dim, cfg.hidden)
        self.blur = Blur(cfg.hidden, cfg)
        self.colour = Colour(cfg.hidden, cfg)
        self.noise = SensorNoise(cfg.hidden, cfg)
        self.jpeg = Jpeg(cfg.hidden, cfg)
        self.residual = Residual(cfg.hidden, cfg) if cfg.residual_width > 0 else None

    def forward(self, hr: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Degrade `hr`; `noise` (B, NOISE_CHANNELS, H/s, W/s) defaults to `noise_images(z, H/s, W/s)`."""
        s = self.config.scale
        if hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[-2] % s or hr.shape[-1] % s:
            raise ValueError(f"expected HR images (B, 3, H, W) with H, W divisible by {s}, got {tuple(hr.shape)}")
        if noise is None:
            noise = noise_images(z, hr.shape[-2] // s, hr.shape[-1] // s)
        h = self.embed(z)  # (B, hidden)
        x = (hr + 1) / 2  # [0, 1]: light intensities for the physical steps
        x = self.blur(x, h)  # blurred and area-downsampled: (B, 3, H/s, W/s)
        x = self.colour(x, h)
        x = self.noise(x, h, noise).clamp(0, 1)  # the sensor clips
        x = self.jpeg(x, h)
        if self.residual is not None:
            x = self.residual(x, h, noise)
        x = x.clamp(0, 1)
        if self.config.round_output:
            x = diff_round(x * 255) / 255
        return x * 2 - 1

    @torch.no_grad()
    def params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-image parameters z selects, in physical units (the degrader's "fingerprint").

        Keys: kernel (B, k, k), sigma (B, G, 2) in HR px, angle (B, G), mix (B, G), gains (B, 3),
        offset (B, 3), saturation (B,), shot and read (B,) (noise variance a * x + b on [0, 1]),
        grey_noise (B,), quality (B,), subsampled (B,) (weight of 4:2:0 chroma; absent without `subsample`).
        """
        h = self.embed(z)
        return {
            **self.blur.params(h),
            **self.colour.params(h),
            **self.noise.params(h),
            **self.jpeg.params(h),
        }
