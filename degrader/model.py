"""The High-to-Low generator (paper section 3.3): HR image + noise vector -> realistic LR image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from degrader.nets import DiscriminatorConfig, ToImage, config_from_dict, group, log2_exact


@dataclass
class HighToLowConfig:
    hr_size: int = 64  # HR input resolution (square); the bottleneck is always 4x4
    scale: int = 4  # HR size / LR size
    z_dim: int = 64  # noise vector length; a linear layer maps it to one extra HR-sized input channel
    width: int = 64  # channels of every residual block (the authors' released code uses 64)
    blocks_per_group: int = 2  # pre-activation blocks per resolution group
    residual: bool = False  # add the output to avg-pooled HR (last layer zero-initialised) instead of plain tanh
    d_width: int = 64  # discriminator width
    d_patch: int = 0  # 0: the paper's ResNet discriminator; N > 0: a patch discriminator of N blocks

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale

    def discriminator(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(in_size=self.lr_size, width=self.d_width, patch_blocks=self.d_patch)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> HighToLowConfig:
        """The config a checkpoint stores, type- and range-checked before a network is built from it.

        The ranges are generous (the paper uses 64, 4, 64, 64, 2) but keep a damaged or hostile file from
        asking for gigabytes, e.g. width 2**31.

        Raises:
            UserError: a field of the wrong type, out of range or unknown; the message starts with `source`.
        """
        ranges = {"hr_size": (4, 512), "scale": (1, 64), "z_dim": (1, 512), "width": (1, 512)}
        ranges |= {"blocks_per_group": (0, 16), "d_width": (1, 512), "d_patch": (0, 16)}
        return config_from_dict(cls, d, source, ranges)


class NoiseChannel(nn.Module):
    """Project z (B, z_dim) to one (B, 1, H, W) channel with a fully connected layer."""

    def __init__(self, z_dim: int, size: int):
        super().__init__()
        self.size = size
        self.fc = nn.Linear(z_dim, size * size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z).view(-1, 1, self.size, self.size)


class Upsample(nn.Module):
    """x2 upsampling by pixel shuffle: a conv to 4x the channels, then rearranged to double resolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch * 4, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HighToLowGenerator(nn.Module):
    """Encoder-decoder ResNet: pools the HR image (and noise channel) to 4x4, then pixel-shuffles up to LR size.

    With hr_size 64 and scale 4: 6 groups of pre-activation blocks, 64 -> 32 -> 16 -> 8 -> 4 by 4 poolings,
    then 4 -> 8 -> 16 by 2 pixel shuffles, as in the paper.
    """

    def __init__(self, config: HighToLowConfig):
        super().__init__()
        self.config = config
        n_down = log2_exact(config.hr_size, "hr_size") - 2
        n_up = n_down - log2_exact(config.scale, "scale")
        if n_up < 0:
            raise ValueError(f"hr_size {config.hr_size} is too small for scale {config.scale}")
        w, b = config.width, config.blocks_per_group
        self.noise = NoiseChannel(config.z_dim, config.hr_size)
        self.head = nn.Conv2d(4, w, 3, padding=1)  # HR and noise channel in
        body: list[nn.Module] = []
        for _ in range(n_down):
            body += [group(w, w, b), nn.AvgPool2d(2)]  # resolution halves, down to (B, w, 4, 4)
        for _ in range(n_up):
            body += [group(w, w, b), Upsample(w)]  # resolution doubles, up to (B, w, H/s, W/s)
        self.body = nn.Sequential(*body)
        self.tail = ToImage(w)  # (B, 3, H/s, W/s)
        self.init_weights()

    def init_weights(self) -> None:
        """PyTorch's default init everywhere, except the residual variant's output conv, which starts at zero.

        Zero-initialising the last layer of a residual branch (timm's `zero_init_last`) makes the residual
        generator start as plain average pooling, so every face survives step one and training adds the
        degradation. The plain variant keeps it random: its tanh output has no skip to fall back on.
        """
        if self.config.residual:
            self.tail.zero_init()

    def forward(self, hr: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Map hr (B, 3, H, H) in [-1, 1] and z (B, z_dim) to lr (B, 3, H/s, H/s), about [-1, 1]."""
        x = torch.cat([hr, self.noise(z)], dim=1)  # (B, 4, H, H)
        out = self.tail(self.body(self.head(x)))  # (B, 3, H/s, H/s)
        if self.config.residual:
            return F.avg_pool2d(hr, self.config.scale) + out
        return torch.tanh(out)
