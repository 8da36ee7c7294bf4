"""The structured High-to-Low generator: z drives a chain of physical, differentiable degradation steps.

    HR -> blur (per-image kernel) -> area downsampling -> colour (gains, black level, saturation)
       -> sensor noise (Poisson-Gaussian) -> sharpening (unsharp mask, when `sharpen_max` > 0)
       -> JPEG (per-image quality) -> free-form residual -> LR

A small MLP embeds z; every step reads the parameters of its image from that embedding through its own head,
so z sets global per-image parameters only and the generator works on images of any size. It starts as
plain area downscaling with a light blur, faint noise and high JPEG quality, and learns the degradation on
top; `params(z)` returns what it learned in physical units (kernels, noise levels, qualities, ...).
Every random choice is a function of z: the noise images are drawn from a generator seeded by z's bytes.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from degrader.color import LUMA
from degrader.jpeg import diff_round, jpeg
from degrader.structured_config import SHARPEN_SIGMA, StructuredConfig

__all__ = ["NOISE_CHANNELS", "StructuredConfig", "StructuredGenerator", "blur", "gaussian_kernels", "noise_images"]

NOISE_CHANNELS = 4  # per pixel: one normal per colour channel and one shared by all three (grey noise)


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


# ----------------------------------------------------------------------------------------------- sharpening


class Sharpen(nn.Module):
    """The camera's sharpening at the output resolution: an unsharp mask, x + amount * (x - Gaussian(x)).

    A blur followed by sharpening is how phone and web pipelines render detail: the kernel it makes has
    negative side lobes, which no blur alone can give (a real camera's LR, docs/results.md).
    """

    def __init__(self, hidden: int, cfg: StructuredConfig):
        super().__init__()
        self.cfg = cfg
        lo, hi = SHARPEN_SIGMA
        frac = (cfg.sharpen_sigma - lo) / (hi - lo)
        self.head = Head(hidden, [_logit(cfg.sharpen_init / cfg.sharpen_max), _logit(frac)], cfg)

    def params(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = self.head(h)
        return {
            "sharpen": _in_range(raw[:, 0], 0.0, self.cfg.sharpen_max),  # (B,) amount; 0 leaves the image as it is
            "sharpen_sigma": _in_range(raw[:, 1], *SHARPEN_SIGMA),  # (B,) width of the mask's blur, LR px
        }

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.params(h)
        sigma = p["sharpen_sigma"][:, None].expand(-1, 2)  # (B, 2): isotropic
        size = min(7, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # radius 3 covers sigma 1.5; reflect needs < side
        low = blur(x, gaussian_kernels(sigma, torch.zeros_like(sigma[:, 0]), size))
        return x + p["sharpen"].view(-1, 1, 1, 1) * (x - low)


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
        self.sharpen = Sharpen(cfg.hidden, cfg) if cfg.sharpen_max > 0 else None
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
        if self.sharpen is not None:
            x = self.sharpen(x, h).clamp(0, 1)  # halos clip at white and black, as in an 8-bit pipeline
        x = self.jpeg(x, h)
        if self.residual is not None:
            x = self.residual(x, h, noise)
        x = x.clamp(0, 1)
        if self.config.round_output:
            x = diff_round(x * 255) / 255
        return x * 2 - 1

    def noise_std(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) the std of the sensor noise's luma at mid-grey on [0, 1], differentiable (`degrader.gan.noise_loss`).

        Luma, as `degrader.image_stats` measures noise: the grey share passes whole, the per-channel rest shrinks
        by the norm of the luma weights.
        """
        shot, read, angle = self.noise._split(self.embed(z))
        grey = torch.cos(angle) ** 2
        return ((shot * 0.5 + read) * (grey + (1 - grey) * sum(c * c for c in LUMA))).sqrt()

    def jpeg_quality(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) the JPEG quality z selects, differentiable (for `degrader.gan.jpeg_loss`)."""
        return self.jpeg.params(self.embed(z))["quality"]

    @torch.no_grad()
    def params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-image parameters z selects, in physical units (the degrader's "fingerprint").

        Keys: kernel (B, k, k), sigma (B, G, 2) in HR px, angle (B, G), mix (B, G), gains (B, 3),
        offset (B, 3), saturation (B,), shot and read (B,) (noise variance a * x + b on [0, 1]),
        grey_noise (B,), quality (B,), subsampled (B,) (weight of 4:2:0 chroma; absent without `subsample`),
        sharpen and sharpen_sigma (B,) (the unsharp mask's amount and width in LR px; absent without the step).
        """
        h = self.embed(z)
        steps = [self.blur, self.colour, self.noise, self.jpeg] + ([self.sharpen] if self.sharpen is not None else [])
        return {k: v for step in steps for k, v in step.params(h).items()}
