"""The hand-made degradations users train real-world SR on, as baselines with a learned degrader's interface.

`RealESRGAN`: Real-ESRGAN's second-order pipeline (Wang et al. 2021, `realesrgan_x4plus.yml`'s ranges).
`BSRGAN`: BSRGAN's shuffled pipeline (Zhang et al. 2021, `utils_blindsr.degradation_bsrgan`), without the
camera ISP noise (it needs a trained ISP model). `docs/baselines.md` tables the ranges and simplifications.

Each image's whole pipeline (every choice, size and kernel) is planned from its own seed with a CPU
`torch.Generator`; its noise is drawn from the same generator while the plan runs. Plans run in lockstep over
the batch: at each step, images in the same state (operation, size, kernel size) go through one batched call,
so an image's LR depends on its HR and seed only, not on its batch neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from degrader.kernels import (
    KINDS,
    RESIZE_MODES,
    check_hr_batch,
    correlated_noise,
    covariance,
    filter2d,
    gaussian_noise,
    jpeg_8bit,
    poisson_noise,
    resize,
    shaped_kernel,
    sinc_kernel,
)

Step = tuple[str, tuple, object]  # (operation, grouping key, per-image argument)


@dataclass(frozen=True)
class RealESRGANConfig:
    """Real-ESRGAN's published ranges (`options/train_realesrgan_x4plus.yml`); sigmas in pixels, noise in /255."""

    kernel_sizes: tuple[int, int] = (7, 21)  # odd sizes, uniformly
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over kernels.KINDS
    # first order
    sinc_prob: float = 0.1  # a sinc (ringing) kernel instead of a Gaussian-like one
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian's shape
    betap: tuple[float, float] = (1.0, 2.0)  # plateau's shape
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5  # else Poisson
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second order
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag2: tuple[float, float] = (0.5, 4.0)
    betap2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)  # relative to the final LR size
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # final step: resize to LR (random mode) + sinc, and JPEG, in a random order
    final_sinc_prob: float = 0.8


@dataclass(frozen=True)
class BSRGANConfig:
    """BSRGAN's published ranges (`utils_blindsr.degradation_bsrgan`); noise levels in /255."""

    half_first_prob: float = 0.25  # at scale 4: halve first (then blur and noise act at scale 2)
    kernel_sizes: tuple[int, int] = (7, 25)  # odd sizes, uniformly
    aniso_prob: float = 0.5  # anisotropic Gaussian (variances 0..scale+4) else isotropic (sigma 0..2+0.2 scale)
    resize_blur_prob: float = 0.25  # the first downsampling: Gaussian blur then every s-th pixel, else a resize
    noise_levels: tuple[int, int] = (2, 25)  # integers
    color_noise_prob: float = 0.4  # colour noise; grey 0.4; cross-channel correlated the remaining 0.2
    gray_noise_prob: float = 0.4
    jpeg_prob: float = 0.9  # the shuffled JPEG step; the final JPEG always happens
    jpeg_range: tuple[int, int] = (30, 95)  # integer qualities


class _Draw:
    """Uniform draws from one image's generator."""

    def __init__(self, g: torch.Generator):
        self.g = g

    def rand(self) -> float:
        return float(torch.rand(1, generator=self.g, dtype=torch.float64))

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.rand()

    def randint(self, lo: int, hi: int) -> int:
        """lo..hi inclusive."""
        return int(torch.randint(lo, hi + 1, (1,), generator=self.g))

    def choice(self, probs: Sequence[float]) -> int:
        """An index drawn with the (unnormalised) probabilities `probs`."""
        u, acc = self.rand() * sum(probs), 0.0
        for i, p in enumerate(probs):
            acc += p
            if u < acc:
                return i
        return len(probs) - 1

    def odd(self, sizes: tuple[int, int]) -> int:
        return 2 * self.randint(sizes[0] // 2, sizes[1] // 2) + 1


def _beta(d: _Draw, lo: float, hi: float) -> float:
    """A shape below 1 half the time, above 1 otherwise, as the paper draws it."""
    return d.uniform(lo, 1.0) if d.rand() < 0.5 else d.uniform(1.0, hi)


def realesrgan_kernel(
    d: _Draw, cfg: RealESRGANConfig, sinc_prob: float, sigma: tuple, betag: tuple, betap: tuple
) -> torch.Tensor:
    """One random blur kernel of Real-ESRGAN's mixture (one order's ranges)."""
    size = d.odd(cfg.kernel_sizes)
    if d.rand() < sinc_prob:
        return sinc_kernel(size, d.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi))
    kind = KINDS[d.choice(cfg.kernel_probs)]
    sx = d.uniform(*sigma)
    iso = kind.endswith("_iso")
    sy, theta = (sx, 0.0) if iso else (d.uniform(*sigma), d.uniform(-math.pi, math.pi))
    shape, beta = "gaussian", 1.0
    if kind.startswith("generalized"):
        shape, beta = "generalized", _beta(d, *betag)
    elif kind.startswith("plateau"):
        shape, beta = "plateau", _beta(d, *betap)
    return shaped_kernel(size, covariance(sx, sy, theta), shape, beta)


def _noise(d: _Draw, gauss_prob: float, levels: tuple, poisson: tuple, gray_prob: float) -> Step:
    if d.rand() < gauss_prob:
        return ("gauss", (), (d.uniform(*levels) / 255, d.rand() < gray_prob))
    return ("poisson", (), (d.uniform(*poisson), d.rand() < gray_prob))


def _resize(d: _Draw, probs: tuple, span: tuple, base: tuple[int, int]) -> Step:
    kind = d.choice(probs)
    factor = d.uniform(1.0, span[1]) if kind == 0 else d.uniform(span[0], 1.0) if kind == 1 else 1.0
    mode = RESIZE_MODES[d.choice([1, 1, 1])]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    return ("resize", (size, mode, False), None)


def plan_realesrgan(cfg: RealESRGANConfig, g: torch.Generator, hr: tuple[int, int], scale: int) -> list[Step]:
    """Every random choice of one image's Real-ESRGAN degradation, drawn from its generator."""
    d = _Draw(g)
    lr = (hr[0] // scale, hr[1] // scale)
    steps: list[Step] = []
    # first order: blur, resize, noise, JPEG
    k = realesrgan_kernel(d, cfg, cfg.sinc_prob, cfg.blur_sigma, cfg.betag, cfg.betap)
    steps.append(("blur", (k.shape[-1],), k))
    steps.append(_resize(d, cfg.resize_prob, cfg.resize_range, hr))
    steps.append(_noise(d, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range, cfg.gray_noise_prob))
    steps.append(("jpeg", (), d.uniform(*cfg.jpeg_range)))
    # second order: the same, relative to the LR size, with narrower ranges
    if d.rand() < cfg.second_blur_prob:
        k = realesrgan_kernel(d, cfg, cfg.sinc_prob2, cfg.blur_sigma2, cfg.betag2, cfg.betap2)
        steps.append(("blur", (k.shape[-1],), k))
    steps.append(_resize(d, cfg.resize_prob2, cfg.resize_range2, lr))
    steps.append(_noise(d, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2, cfg.gray_noise_prob2))
    # final: [resize to LR + sinc] and JPEG, in a random order
    final: list[Step] = [("resize", (lr, RESIZE_MODES[d.choice([1, 1, 1])], False), None)]
    if d.rand() < cfg.final_sinc_prob:
        size = d.odd(cfg.kernel_sizes)
        k = sinc_kernel(size, d.uniform(math.pi / 3, math.pi))
        final.append(("blur", (size,), k))
    quality = ("jpeg", (), d.uniform(*cfg.jpeg_range2))
    steps += [*final, quality] if d.rand() < 0.5 else [quality, *final]
    return steps


def _bsrgan_blur(d: _Draw, cfg: BSRGANConfig, sf: int) -> Step:
    if d.rand() < cfg.aniso_prob:
        var1, var2 = (4.0 + sf) * d.rand(), (4.0 + sf) * d.rand()  # variances along the two axes
        size, theta = d.odd(cfg.kernel_sizes), d.rand() * math.pi
        cov = covariance(math.sqrt(max(var1, 1e-6)), math.sqrt(max(var2, 1e-6)), theta)
    else:
        size = d.odd(cfg.kernel_sizes)
        sigma = max((2.0 + 0.2 * sf) * d.rand(), 1e-3)
        cov = covariance(sigma, sigma, 0.0)
    return ("blur", (size,), shaped_kernel(size, cov))


def _bsrgan_mode(d: _Draw) -> str:
    return RESIZE_MODES[d.choice([1, 1, 1])]


def plan_bsrgan(cfg: BSRGANConfig, g: torch.Generator, hr: tuple[int, int], scale: int) -> list[Step]:
    """Every random choice of one image's BSRGAN degradation, drawn from its generator."""
    d = _Draw(g)
    steps: list[Step] = []
    size, sf = hr, scale
    if scale == 4 and d.rand() < cfg.half_first_prob:
        mode = _bsrgan_mode(d) if d.rand() < 0.5 else "bicubic-aa"
        size, sf = (hr[0] // 2, hr[1] // 2), 2
        steps.append(("resize", (size, mode, True), None))
    order = torch.randperm(7, generator=g).tolist()
    i2, i3 = order.index(2), order.index(3)
    if i2 > i3:  # the second downsampling comes after the first
        order[i2], order[i3] = order[i3], order[i2]
    for op in order:
        if op in (0, 1):
            steps.append(_bsrgan_blur(d, cfg, sf))
        elif op == 2:
            before = size
            if d.rand() >= cfg.resize_blur_prob:
                factor = d.uniform(1.0, 2.0 * sf)
                size = (max(1, int(size[0] / factor)), max(1, int(size[1] / factor)))
                steps.append(("resize", (size, _bsrgan_mode(d), True), None))
            else:
                k = shaped_kernel(25, covariance(*(2 * [d.uniform(0.1, 0.6 * sf)]), 0.0))
                size = (-(-size[0] // sf), -(-size[1] // sf))
                steps += [("blur", (25,), k), ("stride", (sf,), None)]
        elif op == 3:
            steps.append(("resize", ((before[0] // sf, before[1] // sf), _bsrgan_mode(d), True), None))
        elif op == 4:
            level, kind = d.randint(*cfg.noise_levels) / 255, d.rand()
            if kind < cfg.color_noise_prob or kind >= cfg.color_noise_prob + cfg.gray_noise_prob:
                steps.append(("gauss", (), (level, kind >= cfg.color_noise_prob)))
            else:  # a random covariance between the channels, at the top level's scale
                q, _ = torch.linalg.qr(torch.rand(3, 3, generator=g, dtype=torch.float64))
                diag = torch.diag(torch.rand(3, generator=g, dtype=torch.float64))
                steps.append(("cnoise", (), (cfg.noise_levels[1] / 255) ** 2 * q.T @ diag @ q))
        elif op == 5 and d.rand() < cfg.jpeg_prob:
            steps.append(("jpeg", (), float(d.randint(*cfg.jpeg_range))))
        # op 6: the camera ISP noise, skipped (it needs a trained ISP model)
    steps.append(("jpeg", (), float(d.randint(*cfg.jpeg_range))))
    return steps


def _stride(x: torch.Tensor, sf: int) -> torch.Tensor:
    o = (sf - 1) // 2  # the sample nearest the centre of each s x s block
    return x[..., o::sf, o::sf]


def run_step(op: str, key: tuple, x: torch.Tensor, args: list, gens: list[torch.Generator]) -> torch.Tensor:
    """One step of the plans of a batch in the same state: x (B, 3, H, W), one argument and generator each."""
    if op == "blur":
        return filter2d(x, torch.stack(args))
    if op == "resize":
        size, mode, clamp = key
        out = resize(x, size, mode)
        return out.clamp(0, 1) if clamp else out
    if op == "stride":
        return _stride(x, key[0]).clamp(0, 1)
    if op == "gauss":
        return gaussian_noise(x, [a[0] for a in args], [a[1] for a in args], gens).clamp(0, 1)
    if op == "poisson":
        return poisson_noise(x, [a[0] for a in args], [a[1] for a in args], gens).clamp(0, 1)
    if op == "cnoise":
        return correlated_noise(x, args, gens).clamp(0, 1)
    if op == "jpeg":
        return jpeg_8bit(x, args)
    raise ValueError(f"unknown step {op!r}")


def run_plans(hr: torch.Tensor, plans: list[list[Step]], gens: list[torch.Generator]) -> list[torch.Tensor]:
    """Run each image's plan, batching the images that are in the same state at each step."""
    images = list(hr.unbind(0))
    for i in range(max(len(p) for p in plans)):
        groups: dict[tuple, list[int]] = {}
        for j, plan in enumerate(plans):
            if i < len(plan):
                groups.setdefault((plan[i][0], plan[i][1], tuple(images[j].shape)), []).append(j)
        for (op, key, _), idx in groups.items():
            out = run_step(op, key, torch.stack([images[j] for j in idx]), [plans[j][i][2] for j in idx],
                           [gens[j] for j in idx])  # fmt: skip
            for j, o in zip(idx, out, strict=True):
                images[j] = o
    return images


class HandMade:
    """A hand-made pipeline as a `DegraderLike`: any HR size divisible by the scale, on its input's device."""

    name = ""
    planner: Callable[..., list[Step]]

    def __init__(self, scale: int = 4, config: object | None = None):
        if scale not in (2, 4):
            raise ValueError(f"the {self.name} pipeline is defined for scale 2 and 4, not {scale}")
        self.scale = scale
        self.config = config if config is not None else self.default_config()
        self.sha256 = ""  # no weights
        self.hr_size: int | None = None

    def default_config(self) -> object:
        raise NotImplementedError

    def plans(self, seeds: Sequence[int], hr: tuple[int, int]) -> tuple[list[list[Step]], list[torch.Generator]]:
        """Each image's plan and its generator (seeded from its seed, already past the plan's draws)."""
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        return [type(self).planner(self.config, g, hr, self.scale) for g in gens], gens

    @torch.no_grad()
    def degrade(self, hr: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Degrade (B, 3, H, W) HR images in [0, 1]; seed i fixes every choice for image i. Returns (B, 3, H/s,
        W/s) in [0, 1], on 8-bit levels."""
        check_hr_batch(hr, seeds, self.scale)
        plans, gens = self.plans(seeds, (hr.shape[-2], hr.shape[-1]))
        lr = torch.stack(run_plans(hr.float(), plans, gens))  # (B, 3, H/s, W/s)
        return ((lr.clamp(0, 1) * 255).round() / 255).contiguous()


class RealESRGAN(HandMade):
    """Real-ESRGAN's second-order degradation with its published ranges (`RealESRGANConfig`)."""

    name = "realesrgan"
    planner = staticmethod(plan_realesrgan)

    def default_config(self) -> RealESRGANConfig:
        return RealESRGANConfig()


class BSRGAN(HandMade):
    """BSRGAN's shuffled degradation with its published ranges (`BSRGANConfig`), without camera ISP noise."""

    name = "bsrgan"
    planner = staticmethod(plan_bsrgan)

    def default_config(self) -> BSRGANConfig:
        return BSRGANConfig()
