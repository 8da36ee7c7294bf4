"""The losses of the paper (section 3.5), shared by the High-to-Low and the Low-to-High trainers, and the
stabilisers a short run on few images needs.

Both GANs use the same form: generator loss = alpha * pixel loss + beta * hinge loss, where the pixel target is
the average-pooled HR image for the degrader and the HR image for SR; the discriminator uses the hinge loss on
real images and on detached fakes. Each stabiliser is an option of `LossConfig`, off at the paper's settings:

- `augment`: DiffAugment (Zhao et al. 2020): the same random, differentiable translation / cutout / colour
  change of real and fake images before D, in the D step and the G step alike, so D cannot memorise few images.
  "dihedral" (flips and quarter turns) shows D the faces in 8 orientations, so it judges whose face it is less:
  closer to real web faces, but less SR gain on JPEG-compressed LR (docs/results.md).
- `d_highpass`: frequency separation (Fritsche et al. 2019): D sees only the detail finer than a Gaussian of
  this sigma, plus each image's mean colour, so it judges how an image was degraded, not the layout of what it
  shows (the HR and real LR sets show different people, framed differently).
- `r1`: the R1 penalty (Mescheder et al. 2018), gamma / 2 * E ||grad_x D(x_real)||^2, on real images.
- `lr_d`: a separate D learning rate (two time-scale update rule, Heusel et al. 2017).
- `ema`: an exponential moving average of G's weights (`Ema`); export and evaluation use it.
- `pixel`: "luma" or "luma-lowpass" constrain only brightness (or its coarse layout), so the pixel loss keeps
  the content without pulling colour (or blur and noise) back towards the clean HR image.
- `exposure`: a weight on the squared difference of each image's mean luma, output against target, so the GAN
  cannot make the degradation brighten or darken the image. Unpaired sets differ in lighting, which is content;
  an SR model trained on LR with a brightness bias learns to undo a bias the real LR does not have.
- `tone`: "auto" carries the pixel and exposure targets through an affine luma map measured from the two sets
  before training (`degrader.tone`), so the degrader takes on the real LR set's brightness and contrast where the
  data shows a difference, the same for every image, and holds each image to the HR's tone where it shows none.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from degrader import dist
from degrader.color import luma
from degrader.texture import texture_loss

PIXEL_LOSSES = ("rgb", "luma", "luma-lowpass")
AUGMENTATIONS = ("translation", "cutout", "colour", "dihedral")
TONES = ("off", "auto")


@dataclass
class LossConfig:
    alpha: float = 1.0  # weight of the pixel (L2) loss
    beta: float = 0.05  # weight of the hinge GAN loss; 0 trains with the pixel loss alone
    lr: float = 1e-4  # Adam learning rate of the generator (and of D unless lr_d is set)
    betas: tuple[float, float] = (0.0, 0.9)  # Adam betas (floats: torch rejects an int 0)
    d_steps: int = 5  # discriminator updates per generator update
    lr_d: float | None = None  # Adam learning rate of D; None: the same as lr (the paper)
    pixel: str = "rgb"  # "rgb" (the paper), "luma" or "luma-lowpass" (luma pooled 2x more); see PIXEL_LOSSES
    augment: str = ""  # DiffAugment policy, comma-separated AUGMENTATIONS, e.g. "translation,colour"; "" off
    d_highpass: float = 0.0  # > 0: D sees x - Gaussian blur of x (sigma in px) + each image's mean colour; 0 off
    r1: float = 0.0  # R1 penalty weight gamma on real images; 0 off
    ema: float = 0.0  # decay of the EMA of G's weights, e.g. 0.99; 0 off (export the raw weights)
    lr_decay: float = 0.0  # share of the steps, at the end, over which both lrs fall linearly to 0; 0: constant
    exposure: float = 0.0  # weight of the squared difference of each image's mean luma (output vs target); 0 off
    tone: str = "off"  # "auto": the losses' target takes the real LR set's tone (degrader.tone); "off": the HR's
    tone_map: tuple[float, float] = (1.0, 0.0)  # (gain, offset) on [0, 1] luma, measured before training for "auto"
    colour: float = 0.0  # weight of each image's mean chroma's distance from what colour_map allows (colour_loss)
    colour_map: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)  # (saturation, cast R G B) of chroma, measured for "auto"
    noise: float = 0.0  # weight of the penalty on the chain's noise std above noise_allowed (/255 units); 0 off
    noise_allowed: float = 0.0  # std (/255 at mid-grey) the real LR shows above clean downscaling, measured (tone)
    jpeg: float = 0.0  # weight of the penalty on JPEG quality under jpeg_floor (in tens of quality); 0 off
    jpeg_floor: float = 0.0  # quality held: 95 where the real LR shows no block grid (measured, tone), else 0
    texture: float = 0.0  # weight of the match to the real LR's noise/sharpness/blockiness (degrader.texture); 0 off
    texture_target: tuple[tuple[float, ...], ...] = ()  # their quantiles in the real LR, measured when texture > 0

    def __post_init__(self) -> None:
        self.betas, self.tone_map = tuple(self.betas), tuple(self.tone_map)  # lists after a JSON round trip
        self.colour_map = tuple(self.colour_map)
        if len(self.colour_map) != 4:
            raise ValueError(f"colour_map {self.colour_map} must be (saturation, cast R, cast G, cast B)")
        self.texture_target = tuple(tuple(q) for q in self.texture_target)
        if self.tone not in TONES:
            raise ValueError(f"tone {self.tone!r} is not one of {', '.join(TONES)}")
        if self.pixel not in PIXEL_LOSSES:
            raise ValueError(f"pixel loss {self.pixel!r} is not one of {', '.join(PIXEL_LOSSES)}")
        unknown = set(self.policy) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"augmentation {', '.join(sorted(unknown))} is not one of {', '.join(AUGMENTATIONS)}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema decay {self.ema} must lie in [0, 1)")
        weights = (self.r1, self.d_highpass, self.exposure, self.colour, self.texture, self.noise, self.jpeg)
        if self.d_steps < 1 or min(weights) < 0:
            raise ValueError("d_steps must be >= 1; r1, d_highpass, exposure, colour, texture, noise and jpeg >= 0")
        if not 0 <= self.lr_decay <= 1:
            raise ValueError(f"lr_decay {self.lr_decay} must lie in [0, 1]")

    @property
    def policy(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.augment.split(",") if p.strip())


@contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Stop gradients into `net`'s parameters for the duration of a generator step."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# ------------------------------------------------------------------------------------------- augmentation


def _uniform(n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=gen).to(like)  # drawn on the CPU: the same on every device


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """DiffAugment on (B, C, H, W) images in [-1, 1]: every change is differentiable with respect to `x`.

    colour: brightness +-0.5, saturation x0..2, contrast x0.5..1.5; translation: up to 1/8 of the side, zero
    fill; dihedral: one of the 8 flips and quarter turns (square images); cutout: one square of half the side
    set to 0. All random draws come from `gen` (CPU).
    """
    b, _, h, w = x.shape
    if "dihedral" in policy and h != w:
        raise ValueError(f"the dihedral augmentation turns images by 90 degrees, so they must be square, not {h}x{w}")
    n, mine = b * dist.world(), slice(dist.rank() * b, (dist.rank() + 1) * b)  # draws for the global batch
    if "colour" in policy:
        x = x + (_uniform(n, gen, x)[mine] - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_uniform(n, gen, x)[mine] * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (_uniform(n, gen, x)[mine] + 0.5) + mean
    if "translation" in policy:
        sy, sx = max(1, h // 8), max(1, w // 8)
        dy = torch.randint(-sy, sy + 1, (n,), generator=gen)[mine].tolist()
        dx = torch.randint(-sx, sx + 1, (n,), generator=gen)[mine].tolist()
        padded = F.pad(x, (sx, sx, sy, sy))  # (B, C, H + 2sy, W + 2sx), zeros around
        x = torch.stack([padded[i, :, sy - dy[i] : sy - dy[i] + h, sx - dx[i] : sx - dx[i] + w] for i in range(b)])
    if "dihedral" in policy:
        turns = torch.randint(0, 4, (n,), generator=gen)[mine].tolist()
        flips = torch.randint(0, 2, (n,), generator=gen)[mine].tolist()
        x = torch.stack([torch.rot90(x[i].flip(-1) if flips[i] else x[i], turns[i], dims=(-2, -1)) for i in range(b)])
    if "cutout" in policy:
        ch, cw = h // 2, w // 2
        top = torch.randint(0, h - ch + 1, (n,), generator=gen)[mine]
        left = torch.randint(0, w - cw + 1, (n,), generator=gen)[mine]
        rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        hole = ((rows >= top.view(b, 1, 1)) & (rows < (top + ch).view(b, 1, 1))) & (
            (cols >= left.view(b, 1, 1)) & (cols < (left + cw).view(b, 1, 1))
        )  # (B, H, W)
        x = x * (~hole).unsqueeze(1).to(x)
    return x


def high_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x minus its Gaussian blur (sigma in px, reflect-padded), plus each image's mean per channel: (B, C, H, W).

    What is left is the fine detail (blur, noise, JPEG blocks, sharpness) and the overall colour and brightness,
    but little of where things are in the image.
    """
    c, h, w = x.shape[-3:]
    r = min(math.ceil(3 * sigma), h - 1, w - 1)
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).expand(c, 1, -1)  # (C, 1, 2r + 1): one separable kernel per channel
    low = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.unsqueeze(2), groups=c)  # along rows
    low = F.conv2d(F.pad(low, (0, 0, r, r), mode="reflect"), k.unsqueeze(3), groups=c)  # along columns
    return x - low + x.mean((-2, -1), keepdim=True)


def _scored(net_d: nn.Module, x: torch.Tensor, loss: LossConfig) -> torch.Tensor:
    """D's scores of (augmented) images, through the high-pass filter when `loss.d_highpass` is set."""
    return net_d(high_pass(x, loss.d_highpass) if loss.d_highpass > 0 else x).float()


def _augmented(x: torch.Tensor, loss: LossConfig, gen: torch.Generator | None) -> torch.Tensor:
    if not loss.policy:
        return x
    if gen is None:
        raise ValueError("augment is set, so the caller must pass a torch.Generator for its random draws")
    return diff_augment(x, loss.policy, gen)


# ------------------------------------------------------------------------------------------- losses


def pixel_loss(fake: torch.Tensor, target: torch.Tensor, kind: str = "rgb") -> torch.Tensor:
    """MSE on all channels ("rgb"), on luma ("luma"), or on luma average-pooled 2x ("luma-lowpass")."""
    fake, target = fake.float(), target.float()
    if kind == "rgb":
        return F.mse_loss(fake, target)
    fake, target = luma(fake), luma(target)
    if kind == "luma-lowpass":
        fake, target = F.avg_pool2d(fake, 2), F.avg_pool2d(target, 2)  # (B, 1, h/2, w/2)
    return F.mse_loss(fake, target)


def exposure_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images of the squared difference of their mean luma: (B, 3, h, w) each, any sizes."""
    return (luma(fake.float()).mean(dim=(1, 2, 3)) - luma(target.float()).mean(dim=(1, 2, 3))).pow(2).mean()


def saturation_range(saturation: float) -> tuple[float, float]:
    """The saturations, relative to its HR, that an image may take when the LR set's measured one is `saturation`:
    exactly that where the set shows no change (1) or no colour (0); any loss of colour where it shows some
    (sets mix colour and grey images); up to it where the set is more colourful."""
    if saturation in (0.0, 1.0):
        return saturation, saturation
    return (0.0, 1.0) if saturation < 1 else (1.0, saturation)


def colour_loss(
    fake: torch.Tensor, target: torch.Tensor, colour_map: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)
) -> torch.Tensor:
    """Mean over images of the squared distance of each image's mean chroma (image minus its luma) from what the
    colour map allows: its HR's mean chroma times a saturation in `saturation_range`, plus the map's cast."""
    chroma = lambda x: (x - luma(x)).mean(dim=(2, 3))  # noqa: E731  (B, 3)
    fake_c, hr_c = chroma(fake.float()), chroma(target.float())
    lo, hi = saturation_range(colour_map[0])
    rest = fake_c - 2 * torch.tensor(colour_map[1:], device=fake.device)  # the cast in [-1, 1] units
    t = ((rest * hr_c).sum(1) / hr_c.pow(2).sum(1).clamp_min(1e-12)).clamp(lo, hi)  # the closest allowed saturation
    return (rest - t[:, None] * hr_c).pow(2).sum(1).mean()


def mapped_target(target: torch.Tensor, loss: LossConfig) -> torch.Tensor:
    """The HR's average-pooled image (B, 3, h, w) in [-1, 1] carried through the measured tone and colour maps."""
    gain, offset = loss.tone_map
    if loss.colour_map == (1.0, 0.0, 0.0, 0.0):
        if loss.tone_map == (1.0, 0.0):
            return target
        # the map on [0, 1], in the networks' [-1, 1]; clipped as the real LR's pixels are
        return (gain * target + (gain + 2 * offset - 1)).clamp(-1, 1)
    y = luma(target)  # (B, 1, h, w): the tone map acts on luma, the colour map on chroma
    saturation, *cast = loss.colour_map
    cast = torch.tensor(cast, device=target.device, dtype=target.dtype).view(1, 3, 1, 1)
    return (gain * y + (gain + 2 * offset - 1) + saturation * (target - y) + 2 * cast).clamp(-1, 1)


def noise_loss(noise_std: torch.Tensor, allowed: float) -> torch.Tensor:
    """Mean over images of the squared excess (in /255) of the chain's noise std (B,) in [0, 1] units over `allowed`."""
    return F.relu(noise_std.float() * 255 - allowed).pow(2).mean()


def jpeg_loss(quality: torch.Tensor, floor: float) -> torch.Tensor:
    """Mean over images of the squared shortfall, in tens of quality, of the chain's JPEG quality (B,) under `floor`."""
    return (F.relu(floor - quality.float()) / 10).pow(2).mean()


def chain_loss(net_g: nn.Module, z: torch.Tensor, loss: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The structured chain's noise and JPEG held to what the real LR shows (`noise_loss`, `jpeg_loss`), weighted;
    zero for a generator without them (the paper's network)."""
    total, logs = torch.zeros((), device=z.device), {}
    if loss.noise > 0 and hasattr(net_g, "noise_std"):
        excess = noise_loss(net_g.noise_std(z), loss.noise_allowed)
        total, logs["g_noise"] = total + loss.noise * excess, excess.item()
    if loss.jpeg > 0 and loss.jpeg_floor > 0 and hasattr(net_g, "jpeg_quality"):
        shortfall = jpeg_loss(net_g.jpeg_quality(z), loss.jpeg_floor)
        total, logs["g_jpeg"] = total + loss.jpeg * shortfall, shortfall.item()
    return total, logs


def generator_loss(
    fake: torch.Tensor,
    target: torch.Tensor,
    net_d: nn.Module,
    loss: LossConfig,
    aug_gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * pixel loss + beta * hinge generator loss (+ exposure, colour and texture losses), `net_d` frozen.

    `aug_gen` draws the augmentation when `loss.augment` is set. Returns the loss to back-propagate and its
    parts as floats for the log.
    """
    hr_target, target = target, mapped_target(target, loss)
    pixel = pixel_loss(fake, target, loss.pixel)
    if loss.beta > 0:
        with frozen(net_d):
            adversarial = -_scored(net_d, _augmented(fake, loss, aug_gen), loss).mean()
    else:
        adversarial = torch.zeros((), device=fake.device)
    total = loss.alpha * pixel + loss.beta * adversarial
    logs = {"g_pixel": pixel.item(), "g_adv": adversarial.item()}
    if loss.exposure > 0:
        exposure = exposure_loss(fake, target)
        total = total + loss.exposure * exposure
        logs["g_exposure"] = exposure.item()
    if loss.colour > 0:
        colour = colour_loss(fake, hr_target, loss.colour_map)
        total = total + loss.colour * colour
        logs["g_colour"] = colour.item()
    if loss.texture > 0:
        if not loss.texture_target:
            raise ValueError("loss.texture > 0 needs loss.texture_target (degrader.texture.measure_texture)")
        texture = texture_loss((fake + 1) / 2, loss.texture_target)
        total = total + loss.texture * texture
        logs["g_texture"] = texture.item()
    return total, logs


def discriminator_loss(
    net_d: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    loss: LossConfig | None = None,
    aug_gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss: push real scores above +1 and scores of (detached) fakes below -1; plus R1 when `loss.r1`."""
    loss = loss or LossConfig()
    real = _augmented(real.detach(), loss, aug_gen)
    if loss.r1 > 0:
        real.requires_grad_(True)
    real_score = _scored(net_d, real, loss)
    fake_score = _scored(net_d, _augmented(fake.detach(), loss, aug_gen), loss)
    total = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
    logs = {"d_loss": total.item(), "d_real": real_score.mean().item(), "d_fake": fake_score.mean().item()}
    if loss.r1 > 0:
        per_image = real_score.sum() / real_score[0].numel()  # a patch D: the gradient of each image's mean score
        (grad,) = torch.autograd.grad(per_image, real, create_graph=True)
        penalty = grad.float().pow(2).flatten(1).sum(1).mean()
        total = total + loss.r1 / 2 * penalty
        logs["d_r1"] = penalty.item()
    return total, logs


# ------------------------------------------------------------------------------------------- optimisers, EMA


def _base_lr(loss: LossConfig, discriminator: bool) -> float:
    return loss.lr_d if discriminator and loss.lr_d is not None else loss.lr


def adam(net: nn.Module, loss: LossConfig, *, discriminator: bool = False) -> torch.optim.Adam:
    """The paper's optimizer: Adam with lr 1e-4 and betas (0.0, 0.9); D's lr is `loss.lr_d` when set."""
    return torch.optim.Adam(
        net.parameters(), lr=_base_lr(loss, discriminator), betas=(float(loss.betas[0]), float(loss.betas[1]))
    )


def set_lr(opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, loss: LossConfig, done: float) -> None:
    """Both learning rates for the next update, `done` (in [0, 1)) of the training behind: constant, then falling
    linearly towards 0 over the last `loss.lr_decay` of it (CycleGAN's schedule), so that the last steps settle."""
    factor = min(1.0, (1.0 - done) / loss.lr_decay) if loss.lr_decay > 0 else 1.0
    for opt, discriminator in ((opt_g, False), (opt_d, True)):
        for group in opt.param_groups:
            group["lr"] = _base_lr(loss, discriminator) * factor


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on `loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Ema:
    """An exponential moving average of a network's weights (buffers are copied as they are).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so that a short run is not
    dominated by its random or zero initialisation. `module` is the averaged copy, in eval mode.
    """

    def __init__(self, net: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.module.parameters(), net.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - d)
        for avg, b in zip(self.module.buffers(), net.buffers(), strict=True):
            avg.copy_(b)
