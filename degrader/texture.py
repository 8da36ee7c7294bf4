"""Texture: a distance that sees only it, and the real LR set's texture as a training target.

`texture`, `texture_swd` and `texture_two_sample_test` compare two sets by their grey detail alone (tone,
colour and shading out): `degrade eval` reports them beside the colour-aware SWD and C2ST.

The target: match the distribution of per-image noise, sharpness and blockiness.

A GAN alone leaves the chain's noise level and JPEG quality where they start, or cycles through them: once
tone and colour match, its discriminator barely sees them. These three statistics do see them (they separate
a camera's LR from bicubic ~10x more than two draws of the camera's), so `LossConfig.texture` adds the 1-D
Wasserstein distance between each statistic's values in the generated batch and in the real LR set, whose
quantiles are measured once before training (`measure_texture`). Statistics are in log units, so each counts
by its relative change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from degrader.image_stats import image_statistics
from degrader.realism import SWDReference, classifier_two_sample_test

STATISTICS = ("noise", "sharpness", "blockiness")
POINTS = 32  # quantiles stored per statistic
IMAGES = 1000  # at most this many LR images are measured


def texture_statistics(x: torch.Tensor) -> torch.Tensor:
    """log noise, log sharpness, log blockiness of each image (N, 3, H, W) in [0, 1] -> (N, 3); differentiable."""
    s = image_statistics(x)
    return torch.stack([torch.log(s[k] + 1e-6) for k in STATISTICS], dim=1)


def measure_texture(lr: torch.Tensor, points: int = POINTS) -> tuple[tuple[float, ...], ...]:
    """Quantiles at (j + 0.5) / points of each statistic over `lr` (N, 3, h, w) in [0, 1]: one tuple per statistic."""
    with torch.no_grad():
        stats = texture_statistics(lr.float()).double()
    probs = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return tuple(tuple(round(float(v), 6) for v in stats[:, k].quantile(probs)) for k in range(len(STATISTICS)))


def _target_at(target: tuple[tuple[float, ...], ...], n: int, like: torch.Tensor) -> torch.Tensor:
    """The target quantile tables linearly interpolated at the probabilities of n sorted samples -> (n, 3)."""
    table = torch.tensor(target, dtype=torch.float64)  # (3, P)
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) / n * table.shape[1] - 0.5).clamp(0, table.shape[1] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=table.shape[1] - 1)
    frac = pos - lo
    return (table[:, lo] * (1 - frac) + table[:, hi] * frac).T.to(like)


def texture_loss(fake: torch.Tensor, target: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """Mean over the statistics of W1(fake batch's values, real set's), in log units; `fake` in [0, 1]."""
    stats = texture_statistics(fake.float()).sort(dim=0).values  # (B, 3), each column sorted
    return (stats - _target_at(target, len(stats), stats)).abs().mean()


def texture(x: torch.Tensor) -> torch.Tensor:
    """The grey detail of each image, `luma - box3x3(luma)` (N, 1, H, W): tone, colour and shading out, texture in."""
    g = (x[:, :1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114) if x.shape[1] == 3 else x
    return g - F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def texture_swd(fake: torch.Tensor, real: torch.Tensor, seed: int = 0, patch: int = 5, **kwargs) -> float:
    """SWD x 1e3 between the 5x5 patches of both sets' `texture`, each set normalised by its own mean and std
    (Karras et al.'s normalisation): a distance that sees noise, blocks and sharpness, not tone or colour."""
    a, b = texture(fake.float()), texture(real.float())
    a = (a - a.mean()) / a.std().clamp_min(1e-8)
    b = (b - b.mean()) / b.std().clamp_min(1e-8)
    ref = SWDReference(b.expand(-1, 3, -1, -1), seed, patch=patch, **kwargs)
    return ref.distance(a.expand(-1, 3, -1, -1))[0]


def texture_two_sample_test(fake: torch.Tensor, real: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """`classifier_two_sample_test` shown only each image's `texture`: how far the noise, blocks and sharpness
    alone give a generated set away. Keys prefixed "tex_" ({"tex_c2st", "tex_c2st_low", ...})."""
    tex = lambda x: texture(x.float()).expand(-1, 3, -1, -1) + 0.5  # noqa: E731
    return {f"tex_{k}": v for k, v in classifier_two_sample_test(tex(fake), tex(real), seed=seed).items()}
