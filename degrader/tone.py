"""The tone of the real LR set against the HR set's: one affine map of luma, measured before training.

Two unpaired sets differ in tone for two reasons: the degradation (a camera's tone curve, a website's
auto-levels) and the content (other photos under other light). A GAN left alone learns some tone change, and
not reliably: on the camera benchmark every fit drifted 2-6/255 brighter than the truth, which costs SR. So the
exposure and pixel losses hold each degraded image to its HR's tone; by default to the HR's own tone, and with
`LossConfig.tone = "auto"` to the HR's tone carried through the map measured here:

    LR luma ~ gain * HR luma + offset     (on [0, 1], at a quarter of the LR resolution)

The map matches the mean and the standard deviation of the two sets' coarse luma, where blur, noise and JPEG
hardly reach. Each of its two parts (brightness and contrast) is kept only where it exceeds `Z` bootstrap
standard errors, so a set that differs from the HR only by sampling noise gets the identity map, exactly.

Colour gets the same treatment (`measure_colour`, for `LossConfig.colour`): chroma, each pixel minus its
luma, is mapped as

    LR chroma ~ saturation * HR chroma + cast     (per channel, at the same coarse scale)

where the saturation matches the spread of the two sets' chroma about its mean (0 for a greyscale LR set) and
the cast their mean chroma per channel. Left alone, a GAN on two sets of different scenes answers the scenes'
colours with a colour cast (City100 in docs/results.md). `degrader.gan.colour_loss` holds each image's mean
chroma to its HR's, scaled within `degrader.gan.saturation_range` of the measured saturation, plus the cast: so
the degrader takes on only the colour the data shows (and a set that mixes grey and colour images keeps both).

Noise too (`measure_noise`, for `LossConfig.noise`): the sensor noise the real LR shows above clean area
downscaling, read off the flattest tenth of each set's images (Immerkaer's estimate, where scene texture
reaches least), a lower bound on the camera's. A GAN on two sets of different scenes answers busier scenes with
noise (City100 in docs/results.md); the loss holds the chain's noise at or below what is measured here.
JPEG likewise (`measure_blocks`, for `LossConfig.jpeg`): where the real LR shows no more of the 8-px block
grid than clean downscaling, the chain's JPEG quality is held high.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from degrader.color import luma
from degrader.image_stats import blockiness, image_statistics

Z = 3.0  # standard errors a difference must exceed to count
BOOTSTRAP = 200  # resamples for the standard errors
COARSE = 4  # the map is measured at LR resolution / COARSE
IMAGES = 1000  # images per set that `degrader.train.plan_fit` reads for the measurement
MIN_DISTINCT = 8  # distinct images per set, at least: the bootstrap's spread of fewer is no standard error


@dataclass(frozen=True)
class ToneMap:
    """LR luma ~ gain * HR luma + offset on [0, 1]; `shift_z` and `gain_z` say how far each part is from noise."""

    gain: float = 1.0
    offset: float = 0.0
    shift_z: float = 0.0  # the difference of the mean luma, in bootstrap standard errors
    gain_z: float = 0.0  # the log ratio of the standard deviations, in bootstrap standard errors
    warning: str = ""  # why the map is the identity without a measurement (too few distinct images), or ""

    def describe(self) -> str:
        if self.warning:
            return "the HR's own (not measured: too few distinct images)"
        if (self.gain, self.offset) == (1.0, 0.0):
            return f"the HR's own (sets differ by {self.shift_z:+.1f} SE in brightness, {self.gain_z:+.1f} in contrast)"
        z = f"z {self.shift_z:+.1f} and {self.gain_z:+.1f}"
        return f"LR luma = {self.gain:.3f} x HR luma {self.offset * 255:+.1f}/255 (brightness and contrast {z})"


@dataclass(frozen=True)
class ColourMap:
    """LR chroma ~ saturation * HR chroma + cast (per channel, on [0, 1]); the `_z` fields as in `ToneMap`."""

    saturation: float = 1.0
    cast: tuple[float, float, float] = (0.0, 0.0, 0.0)
    saturation_z: float = 0.0  # the difference of the RMS chroma ratio from 1, in bootstrap standard errors
    cast_z: tuple[float, float, float] = (0.0, 0.0, 0.0)  # each channel's mean chroma difference, in SEs

    @property
    def parts(self) -> tuple[float, float, float, float]:
        """(saturation, cast R, cast G, cast B): what `LossConfig.colour_map` holds."""
        return (self.saturation, *self.cast)

    def describe(self) -> str:
        z = f"{self.saturation_z:+.1f} SE in saturation, " + " ".join(f"{c:+.1f}" for c in self.cast_z)
        if self.parts == (1.0, 0.0, 0.0, 0.0):
            return f"the HR's own (sets differ by {z} in cast R G B)"
        cast = " ".join(f"{c * 255:+.1f}" for c in self.cast)
        return f"LR chroma = {self.saturation:.3f} x HR chroma, cast R G B {cast}/255 (z {z})"


@dataclass(frozen=True)
class NoiseFloor:
    """The noise std (/255) the real LR's flattest images show above clean downscaling's; 0 within `Z` SEs."""

    excess: float = 0.0  # sqrt(real^2 - clean^2) where the difference counts, else 0
    real: float = 0.0  # the flattest tenth's noise estimate, real LR
    clean: float = 0.0  # the same for the HR set area-downscaled
    z: float = 0.0  # real - clean in bootstrap standard errors

    def describe(self) -> str:
        seen = f"flattest tenth: real LR {self.real:.2f}, clean downscaling {self.clean:.2f}, z {self.z:+.1f}"
        return f"at most {self.excess:.2f}/255 at mid-grey ({seen})"


@dataclass(frozen=True)
class BlockGrid:
    """Whether the real LR shows JPEG's 8-px block grid beyond clean downscaling (mean blockiness, ~1: none)."""

    real: float = 1.0  # mean blockiness of the real LR
    clean: float = 1.0  # the same for the HR set area-downscaled
    z: float = 0.0  # real - clean in bootstrap standard errors

    @property
    def shown(self) -> bool:
        return self.z > Z

    def describe(self) -> str:
        seen = f"blockiness: real LR {self.real:.3f}, clean downscaling {self.clean:.3f}, z {self.z:+.1f}"
        return f"{'any' if self.shown else 'high only (no block grid in the real LR)'} ({seen})"


def _sums(x: torch.Tensor, pool: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 3): per image, the count, sum and sum of squares of its coarse luma."""
    y = luma(F.avg_pool2d(x.double(), pool)).flatten(1)  # (N, H/pool * W/pool)
    return torch.stack([torch.full_like(y[:, 0], y.shape[1]), y.sum(1), y.pow(2).sum(1)], dim=1)


def _resampled(a: torch.Tensor, b: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`BOOTSTRAP` resamples of each set's per-image rows: (N, K), (M, K) -> (BOOTSTRAP, N, K), (BOOTSTRAP, M, K)."""
    gen = torch.Generator().manual_seed(seed)
    return (x[torch.randint(len(x), (BOOTSTRAP, len(x)), generator=gen)] for x in (a, b))  # a's draws first


def _moments(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N, 3) per-image sums -> the mean and standard deviation of all their pixels together."""
    n, s1, s2 = sums.sum(-2).unbind(-1)
    mean = s1 / n
    return mean, (s2 / n - mean**2).clamp_min(1e-12).sqrt()


def measure_tone(hr: torch.Tensor, lr: torch.Tensor, scale: int, seed: int = 0) -> ToneMap:
    """The affine luma map from the HR set's tone to the LR set's (module docstring).

    With fewer than `MIN_DISTINCT` distinct images in either set, the map is the identity, with a `warning`.

    Args:
        hr: HR images (N, 3, H, W) in [0, 1].
        lr: real LR images (M, 3, h, w) in [0, 1], unpaired with `hr`; h = H / scale.
        scale: HR size / LR size.
        seed: fixes the bootstrap resamples.
    """
    pool = max(1, min(COARSE, *lr.shape[-2:]))
    a, b = _sums(hr, scale * pool), _sums(lr, pool)  # (N, 3), (M, 3): HR compared at the same coarse scale
    distinct = {"HR": len(torch.unique(a, dim=0)), "LR": len(torch.unique(b, dim=0))}  # copies resample as one
    few = {name: n for name, n in distinct.items() if n < MIN_DISTINCT}
    if few:
        sets = " and ".join(f"the {name} set {n} distinct image{'s' * (n != 1)}" for name, n in few.items())
        return ToneMap(warning=f"tone auto: {sets}, fewer than {MIN_DISTINCT}; the tone map is the identity.")
    boot_a, boot_b = _resampled(a, b, seed)
    (mean_a, sd_a), (mean_b, sd_b) = _moments(a), _moments(b)
    (boot_mean_a, boot_sd_a), (boot_mean_b, boot_sd_b) = _moments(boot_a), _moments(boot_b)
    shift_z = float((mean_b - mean_a) / (boot_mean_b - boot_mean_a).std().clamp_min(1e-12))
    log_gain = torch.log(sd_b / sd_a)
    gain_z = float(log_gain / torch.log(boot_sd_b / boot_sd_a).std().clamp_min(1e-12))
    gain = float(sd_b / sd_a) if abs(gain_z) > Z else 1.0
    target_mean = float(mean_b) if abs(shift_z) > Z else float(mean_a)
    return ToneMap(gain, target_mean - gain * float(mean_a), shift_z, gain_z)  # neither part: exactly (1.0, 0.0)


def _chroma_sums(x: torch.Tensor, pool: int) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 5): per image, the count, the sums of its coarse chroma per channel and of its squared
    norm."""
    x = F.avg_pool2d(x.double(), pool)
    c = (x - luma(x)).flatten(2)  # (N, 3, H/pool * W/pool): each pixel minus its luma
    count = torch.full_like(c[:, 0, 0], c.shape[2])
    return torch.cat([count[:, None], c.sum(2), c.pow(2).sum((1, 2))[:, None]], dim=1)


def _chroma_moments(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N, 5) per-image sums -> the mean chroma per channel (..., 3) and the RMS chroma about it (...): the
    spread of the colours, which a cast leaves alone."""
    total = sums.sum(-2)
    mean = total[..., 1:4] / total[..., :1]
    return mean, (total[..., 4] / total[..., 0] - mean.pow(2).sum(-1)).clamp_min(0).sqrt()


def measure_colour(hr: torch.Tensor, lr: torch.Tensor, scale: int, seed: int = 0) -> ColourMap:
    """The chroma map from the HR set's colour to the LR set's (module docstring); each part is kept only where it
    exceeds `Z` bootstrap standard errors. Arguments as `measure_tone`; too few distinct images give the identity."""
    pool = max(1, min(COARSE, *lr.shape[-2:]))
    a, b = _chroma_sums(hr, scale * pool), _chroma_sums(lr, pool)  # (N, 5), (M, 5)
    distinct = [len(torch.unique(_sums(x, p), dim=0)) for x, p in ((hr, scale * pool), (lr, pool))]  # by luma:
    if min(distinct) < MIN_DISTINCT:  # every grey image has the same chroma sums
        return ColourMap()
    boot_a, boot_b = _resampled(a, b, seed)
    (mean_a, rms_a), (mean_b, rms_b) = _chroma_moments(a), _chroma_moments(b)
    (boot_mean_a, boot_rms_a), (boot_mean_b, boot_rms_b) = _chroma_moments(boot_a), _chroma_moments(boot_b)
    ratio, boot_ratio = rms_b / rms_a.clamp_min(1e-12), boot_rms_b / boot_rms_a.clamp_min(1e-12)
    saturation_z = float(((ratio - 1) / boot_ratio.std().clamp_min(1e-12)).clamp(-999, 999))  # 0 is reachable
    saturation = round(float(ratio), 6) if abs(saturation_z) > Z else 1.0  # rounded: a grey set's 4e-16 is 0
    diff = mean_b - saturation * mean_a  # (3,): the mean chroma the saturation does not explain
    cast_z = (diff / (boot_mean_b - saturation * boot_mean_a).std(0).clamp_min(1e-12)).clamp(-999, 999)
    cast = tuple(round(float(d), 6) if abs(z) > Z else 0.0 for d, z in zip(diff, cast_z, strict=True))
    return ColourMap(saturation, cast, saturation_z, tuple(float(z) for z in cast_z))


def measure_noise(hr: torch.Tensor, lr: torch.Tensor, scale: int, seed: int = 0) -> NoiseFloor:
    """The noise the real LR set shows beyond clean downscaling (module docstring); both (N, 3, ., .) in [0, 1]."""
    flattest = lambda x: x.quantile(0.1, dim=-1) * 255  # noqa: E731  (..., N) -> (...)
    clean = image_statistics(F.avg_pool2d(hr.float(), scale))["noise"].double()[:, None]  # (N, 1)
    real = image_statistics(lr.float())["noise"].double()[:, None]
    boot_clean, boot_real = _resampled(clean, real, seed)
    diff = flattest(real[:, 0]) - flattest(clean[:, 0])
    z = float(diff / (flattest(boot_real[..., 0]) - flattest(boot_clean[..., 0])).std().clamp_min(1e-12))
    r, c = float(flattest(real[:, 0])), float(flattest(clean[:, 0]))
    return NoiseFloor((r**2 - c**2) ** 0.5 if z > Z else 0.0, r, c, z)


def measure_blocks(hr: torch.Tensor, lr: torch.Tensor, scale: int, seed: int = 0) -> BlockGrid:
    """Whether the real LR set shows more of JPEG's block grid than clean downscaling (module docstring)."""
    clean = blockiness(luma(F.avg_pool2d(hr.float(), scale))).double()[:, None]  # (N, 1)
    real = blockiness(luma(lr.float())).double()[:, None]
    boot_clean, boot_real = _resampled(clean, real, seed)
    diff = real.mean() - clean.mean()
    z = float(diff / (boot_real.mean((1, 2)) - boot_clean.mean((1, 2))).std().clamp_min(1e-12))
    return BlockGrid(float(real.mean()), float(clean.mean()), z)
