"""Building blocks shared by both networks: pre-activation residual blocks and the SN ResNet discriminator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PreActBlock(nn.Module):
    """Pre-activation basic block with batch norm (He et al. 2016, "Identity mappings"): BN-ReLU-conv twice."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        )
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class SNBlock(nn.Module):
    """Pre-activation block for the discriminator: no batch norm, spectral norm on every conv."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            spectral_norm(nn.Conv2d(in_ch, out_ch, 3, padding=1)),
            nn.ReLU(),
            spectral_norm(nn.Conv2d(out_ch, out_ch, 3, padding=1)),
        )
        self.shortcut = nn.Identity() if in_ch == out_ch else spectral_norm(nn.Conv2d(in_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


def group(in_ch: int, out_ch: int, blocks: int) -> nn.Sequential:
    """`blocks` pre-activation blocks in a row; the first one changes the width."""
    return nn.Sequential(*[PreActBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(blocks)])


def log2_exact(n: int, what: str) -> int:
    """log2 of a power of two, with a clear error otherwise."""
    k = int(round(math.log2(n))) if n > 0 else -1
    if k < 0 or 2**k != n:
        raise ValueError(f"{what} must be a power of two, got {n}")
    return k


@dataclass
class DiscriminatorConfig:
    in_size: int = 16  # input resolution; 16 for the degrader's LR output, 64 for SR output
    width: int = 64  # channels of every block
    blocks: int = 6  # pre-activation SN blocks; the last log2(in_size / 4) of them max-pool


class Discriminator(nn.Module):
    """Spectral-norm ResNet discriminator of the paper: 6 SN blocks, max-pooling only in the last blocks.

    At 16x16 input the last two blocks pool (16 -> 4); at 64x64 the last four do, which is the degrader's
    discriminator with two extra max-pooling layers, as the Low-to-High GAN uses it.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        n_pool = log2_exact(config.in_size, "discriminator input size") - 2
        if not 0 <= n_pool <= config.blocks:
            raise ValueError(f"discriminator input size {config.in_size} needs 4..{4 * 2**config.blocks} pixels")
        w = config.width
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, w, 3, padding=1))]
        for i in range(config.blocks):
            layers.append(SNBlock(w, w))
            if i >= config.blocks - n_pool:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.ReLU(), nn.Flatten()]  # (B, w * 4 * 4)
        self.features = nn.Sequential(*layers)
        self.score = spectral_norm(nn.Linear(w * 4 * 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, 3, in_size, in_size) in [-1, 1] to one unbounded score each, (B,)."""
        return self.score(self.features(x)).squeeze(1)
