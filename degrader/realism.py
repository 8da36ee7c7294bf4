"""How real do generated images look? Distances between two image sets, pure functions on tensors (no I/O).

Every distance here compares a generated set with a real one, and means little alone: `degrader.evaluate` shows
each beside its floor (the same distance between two disjoint halves of the real set, at the same sample size)
and relative to bicubic downscaling. Images are float (N, 3, H, W) in [0, 1]; results are plain floats.

- `swd`: sliced Wasserstein distance over multi-scale 7x7 patches of a Laplacian pyramid (Karras et al. 2018).
- `classifier_two_sample_test`: a small CNN learns real vs generated on one split; its held-out accuracy with a
  Wilson interval (0.5: indistinguishable).
- `image_statistics` + `wasserstein_1d` (in `degrader.image_stats`): per-image colourfulness, sharpness, noise,
  blockiness, brightness and contrast, compared as distributions.
- FID and KID live in `degrader.features` (they need a user-provided feature extractor).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from degrader.image_stats import (  # noqa: F401  (re-exported: the statistics are part of the realism API)
    DEGRADATION_STATISTICS,
    STATISTICS,
    blockiness,
    fidelity,
    image_statistics,
    statistics_distances,
    wasserstein_1d,
)

# ---------------------------------------------------------------------------------------------- SWD

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # the 5-tap Gaussian of Burt & Adelson's pyramid


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.outer(_BINOMIAL, _BINOMIAL).to(x).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first, then the low-pass residual: `levels` tensors, side halving each time."""
    out = []
    for _ in range(levels - 1):
        down = _blur(x)[..., ::2, ::2]  # (N, C, H/2, W/2)
        up = torch.zeros_like(x)
        up[..., ::2, ::2] = down * 4  # zero-insertion upsampling; the blur interpolates, x4 keeps the gain
        out.append(x - _blur(up))
        x = down
    return [*out, x]


def pyramid_levels(side: int, patch: int = 7) -> int:
    """How many levels fit: the coarsest level is the smallest whose side still holds one patch.

    ProGAN stops at 16x16; our LR images *are* 16x16, so with 7x7 patches the pyramid is 16x16 (the detail
    band: noise, blur, blocks) and 8x8 (the low-pass: colour and shading), and a 64x64 image gets 64, 32, 16, 8.
    """
    levels = 1
    while side // 2 >= patch:
        side //= 2
        levels += 1
    return levels


def _patches(x: torch.Tensor, patch: int, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """Random patch x patch neighbourhoods, `per_image` of each image, or all of them if fewer. (M, C, p, p)."""
    n, c, h, w = x.shape
    ny, nx = h - patch + 1, w - patch + 1
    if ny * nx <= per_image:  # e.g. the 8x8 level of a 16x16 image holds only 4 positions: take them all
        pos = torch.arange(ny * nx).expand(n, -1)
    else:
        pos = torch.stack([torch.randperm(ny * nx, generator=gen)[:per_image] for _ in range(n)])
    unfolded = F.unfold(x, patch)  # (N, C*p*p, ny*nx)
    picked = unfolded.gather(2, pos[:, None, :].expand(-1, unfolded.shape[1], -1))  # (N, C*p*p, P)
    return picked.permute(0, 2, 1).reshape(-1, c, patch, patch)


def _projected_sorted(desc: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    # (D, M): each direction's 1-D distribution, sorted. numpy's SIMD sort of contiguous rows is ~10x faster
    # than torch.sort on the CPU (0.05 s vs 0.6 s for 512 x 12,800).
    return torch.from_numpy(np.sort((dirs.T @ desc.T).numpy(), axis=1))


def _matched(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted projections of different lengths compared at the same quantiles (rows of the shorter one)."""
    if a.shape[1] == b.shape[1]:
        return a, b
    short, long = (a, b) if a.shape[1] < b.shape[1] else (b, a)
    idx = ((torch.arange(short.shape[1]) + 0.5) * long.shape[1] / short.shape[1]).long().clamp(max=long.shape[1] - 1)
    return (short, long[:, idx]) if short is a else (long[:, idx], short)


class SWDReference:
    """The real side of an SWD, prepared once: per-level normalisation, directions and sorted projections.

    Karras et al. normalise each set by its own per-channel mean and std, which hides a global colour or
    brightness shift; here both sets are normalised with the *reference* set's statistics, so a colour cast
    counts. Scoring a generated set then costs one pyramid, one projection and one sort per level.

    Args:
        real: the reference images (N, 3, H, W) in [0, 1].
        seed: fixes patch positions and projection directions.
        patch: patch side (7, as ProGAN).
        per_image: patches drawn per image and level (ProGAN draws 128 from 1024px images; a 16x16 image has
            only 100 positions at its finest level).
        directions: random unit projections (ProGAN: 4 x 128).
    """

    def __init__(self, real: torch.Tensor, seed: int = 0, patch: int = 7, per_image: int = 32, directions: int = 512):
        if min(real.shape[-2:]) < patch:
            raise ValueError(f"images of {tuple(real.shape[-2:])} are smaller than the {patch}x{patch} patch")
        self.seed, self.patch, self.per_image = seed, patch, per_image
        self.levels = pyramid_levels(min(real.shape[-2:]), patch)
        gen = torch.Generator().manual_seed(seed)
        dim = 3 * patch * patch
        self.dirs = [F.normalize(torch.randn(dim, directions, generator=gen), dim=0) for _ in range(self.levels)]
        self.mean, self.std, self.sorted = [], [], []
        for level, desc in enumerate(self._descriptors(real)):
            self.mean.append(desc.mean(dim=(0, 2, 3), keepdim=True))
            self.std.append(desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8))
            self.sorted.append(_projected_sorted(self._flat(desc, level), self.dirs[level]))

    def _descriptors(self, x: torch.Tensor) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1)  # the same positions for image i of either set
        pyramid = laplacian_pyramid(x.float(), self.levels)
        return [_patches(level, self.patch, self.per_image, gen) for level in pyramid]

    def _flat(self, desc: torch.Tensor, level: int) -> torch.Tensor:
        return ((desc - self.mean[level]) / self.std[level]).flatten(1)  # (M, 3*p*p)

    def distance(self, fake: torch.Tensor) -> list[float]:
        """SWD x 1e3 (ProGAN's unit) between `fake` and the reference, per level, finest first."""
        out = []
        for level, desc in enumerate(self._descriptors(fake)):
            a, b = _matched(_projected_sorted(self._flat(desc, level), self.dirs[level]), self.sorted[level])
            out.append(float((a - b).abs().mean()) * 1e3)
        return out


def swd(fake: torch.Tensor, real: torch.Tensor, seed: int = 0, **kwargs) -> dict[str, float]:
    """Sliced Wasserstein distance over Laplacian-pyramid patches, x 1e3; lower is closer to `real`.

    Returns:
        {"swd": the mean over levels, "swd_<side>": each level's, e.g. swd_16 and swd_8 for 16x16 images}.
        See `SWDReference` for the settings (`kwargs`).
    """
    per_level = SWDReference(real, seed, **kwargs).distance(fake)
    side = min(real.shape[-2:])
    out = {"swd": sum(per_level) / len(per_level)}
    out.update({f"swd_{side >> i}": d for i, d in enumerate(per_level)})
    return out


# ---------------------------------------------------------------------------------------------- C2ST


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for z = 1.96); sane at 0 and n successes too."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class TwoSampleNet(nn.Sequential):
    """A small CNN that scores an image as real (> 0) or generated; any size, global average pooling at the end."""

    def __init__(self, width: int = 16):
        super().__init__(
            nn.Conv2d(3, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),  # (N, 2w, H/2, W/2)
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),  # (N, 2w, H/4, W/4)
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 1),
        )


def classifier_two_sample_test(
    fake: torch.Tensor, real: torch.Tensor, seed: int = 0, epochs: int = 8, batch_size: int = 64, lr: float = 3e-3
) -> dict[str, float]:
    """Train `TwoSampleNet` to tell `fake` from `real` on half of each, and test it on the other halves.

    Both sets are cut to the same size, so 0.5 is chance. About 1 s per 1,000 16x16 images per set on one
    CPU thread at the defaults. Seeded: the same inputs and seed give the same accuracy.

    Returns:
        {"c2st": held-out accuracy, "c2st_low"/"c2st_high": its 95% Wilson interval, "c2st_n": test images}.
    """
    n = min(len(fake), len(real))
    if n < 4:
        raise ValueError(f"a two-sample test needs at least 4 images per set, got {n}")
    gen = torch.Generator().manual_seed(seed)
    fake = fake[torch.randperm(len(fake), generator=gen)[:n]].float() * 2 - 1
    real = real[torch.randperm(len(real), generator=gen)[:n]].float() * 2 - 1
    half = n // 2
    x_train = torch.cat([fake[:half], real[:half]])
    y_train = torch.cat([torch.zeros(half), torch.ones(half)])
    x_test = torch.cat([fake[half:], real[half:]])
    y_test = torch.cat([torch.zeros(n - half), torch.ones(n - half)])
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        net = TwoSampleNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(x_train), generator=gen)
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                loss = F.binary_cross_entropy_with_logits(net(x_train[idx]).squeeze(1), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.no_grad():
        correct = int(((net(x_test).squeeze(1) > 0).float() == y_test).sum())
    low, high = wilson_interval(correct, len(y_test))
    return {"c2st": correct / len(y_test), "c2st_low": low, "c2st_high": high, "c2st_n": float(len(y_test))}


# ---------------------------------------------------------------------------------------------- validation


def relative(d: float, floor: float, reference: float) -> float | None:
    """(d - floor) / (reference - floor): 0 = as real as real, 1 = as good as the reference (bicubic), < 1 better.

    None when the reference is no worse than the floor, since the ratio then means nothing.
    """
    gap = reference - floor
    return (d - floor) / gap if gap > 1e-12 else None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


class RealismProbe:
    """A fast realism figure for validation during training, relative to bicubic on held-out real LR.

    Built once from fixed HR images and held-out real LR images: the real LR set is split into two halves A
    and B, the reference is A, the floor is the distance of B to A and bicubic's figure is that of bicubic(HR),
    all with m = min(len(hr), len(real_lr) // 2) images per set. `score` then degrades the same m HR images with
    the same seeds and costs one degrader pass plus one SWD: the pass dominates, so keep m at 128-256 and score
    every few hundred steps (timings: benchmarks/README.md). At m = 128 the figure is noisier than `degrade eval`'s.

    Beside the SWD, `score` reports `val_mix`: the mean of the SWD's relative figure and those of the
    per-image statistics of the degradation (`DEGRADATION_STATISTICS`, Wasserstein-1) on which bicubic is at
    least twice as far from A as B is, the statistics that can tell bicubic from real at this m (colourfulness,
    when the real set is grey, has a floor of 0), since the SWD alone cannot see JPEG strength once colour matches.
    `fit` ranks steps by `val_mix` (`select="swd"` for the SWD), after `val_fidelity`: a step below
    `min_fidelity` loses to any above it, since on real LR of other content both figures reward LR that has lost
    its content (docs/results.md).

    Args:
        hr: fixed HR images (N, 3, H, W) in [0, 1].
        real_lr: held-out real LR images (M, 3, H/scale, W/scale) in [0, 1]; the order should be random.
        scale: the degrader's downscaling factor (for the bicubic baseline).
        seed: fixes the split-independent SWD settings and the noise seeds handed to the degrader.
        tone: (gain, offset) of the luma map the degrader was trained to apply (`degrader.tone`); the fidelity
            reference is bicubic LR carried through it, so the map itself costs no fidelity.
    """

    def __init__(
        self, hr: torch.Tensor, real_lr: torch.Tensor, scale: int, seed: int = 0, tone: tuple[float, float] = (1.0, 0.0)
    ):
        m = min(len(hr), len(real_lr) // 2)
        if m < 2:
            raise ValueError(
                f"a realism probe needs at least 2 HR and 4 real LR images, got {len(hr)} and {len(real_lr)}"
            )
        self.hr, self.seeds = hr[:m].float(), [seed * 1_000_003 + i for i in range(m)]
        self.reference = SWDReference(real_lr[:m], seed)
        self.floor_levels = self.reference.distance(real_lr[m : 2 * m])
        size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        bicubic = F.interpolate(self.hr, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        self.bicubic_levels = self.reference.distance(bicubic)
        gain, offset = tone  # fidelity is to the content: against bicubic in the tone the fit was told to take
        self.fidelity_reference = bicubic if tone == (1.0, 0.0) else (gain * bicubic + offset).clamp(0, 1)
        self.floor, self.bicubic = _mean(self.floor_levels), _mean(self.bicubic_levels)
        self.stats = image_statistics(real_lr[:m])
        floor = statistics_distances(image_statistics(real_lr[m : 2 * m]), self.stats)
        reference = statistics_distances(image_statistics(bicubic), self.stats)
        self.stat_scales = {
            k: (floor[k], reference[k])
            for k in DEGRADATION_STATISTICS
            if reference[k] >= 2 * floor[k] and reference[k] - floor[k] > 1e-12  # so `relative` has a scale
        }

    @torch.no_grad()
    def score(self, degrade) -> dict[str, float]:
        """Score `degrade(hr, seeds) -> lr` (a `Degrader.degrade`, or a wrapper around a training generator).

        Returns:
            {"val_swd": SWD x 1e3, "val_swd_rel": relative to bicubic (nan when bicubic is at the floor),
            "val_swd_rel_levels": the relative figure of each pyramid level, finest first,
            "val_<statistic>_rel" for each statistic used, "val_mix": the mean of those relative figures (nan
            when there are none), "val_fidelity": PSNR of the luma against bicubic LR of the same HR images
            (in `tone`), dB}.
        """
        fake = degrade(self.hr, self.seeds).float().cpu()
        levels = self.reference.distance(fake)
        d = _mean(levels)
        rel = relative(d, self.floor, self.bicubic)
        out = {"val_swd": d, "val_swd_rel": _nan_if_none(rel)}
        # per pyramid level, finest first: the coarsest carries the tone and layout of the images (what they show),
        # the finer ones mostly the blur, noise and JPEG (how they were degraded)
        per_level = zip(levels, self.floor_levels, self.bicubic_levels, strict=True)
        out["val_swd_rel_levels"] = [_nan_if_none(relative(*figures)) for figures in per_level]
        figures = [] if rel is None else [rel]
        distances = statistics_distances(image_statistics(fake), self.stats)
        for name, (floor, reference) in self.stat_scales.items():
            out[f"val_{name}_rel"] = relative(distances[name], floor, reference)
            figures.append(out[f"val_{name}_rel"])
        out["val_mix"] = sum(figures) / len(figures) if figures else float("nan")
        out["val_fidelity"] = fidelity(fake, self.fidelity_reference)
        return out
