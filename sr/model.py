"""The Low-to-High generator (paper section 3.4): LR image -> SR image, and its checkpoint kind.

Layout. The paper's 17 pre-activation blocks sit in 3 groups; following the authors' released code, the big
group works at LR resolution, where it is cheap: x4 runs 12 blocks at 16x16, 3 at 32x32 and 2 at 64x64, with
a bilinear x2 between groups. Each group is a `SkipGroup` (a skip from its first block's input to its last
block's output). For other scales the last group always runs at the HR size, so the output is refined at
full resolution, and earlier groups step up one x2 each while more than one x2 is left:
    x2: 16 [12] 16 [3] -> 32 [2]            (15 blocks at LR, 2 at HR)
    x4: 16 [12] -> 32 [3] -> 64 [2]
    x8: 16 [12] -> 32 [3] -> 64 -> 128 [2]  (the extra x2 comes right before the last group)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from degrader.checkpoint import build_network, load_checkpoint, module_tensors, resolve_checkpoint, save_checkpoint
from degrader.nets import DiscriminatorConfig, ToImage, config_from_dict, group, log2_exact

SR_FILE = "sr.safetensors"
SR_KIND = "low-to-high"


@dataclass
class LowToHighConfig:
    lr_size: int = 16  # LR input resolution (square) the network trains on; any size works at inference
    scale: int = 4  # HR size / LR size; a power of two >= 2 (x2, x4, x8)
    width: int = 64  # channels of every residual block
    blocks: tuple[int, ...] = (12, 3, 2)  # pre-activation blocks per group, from LR to HR resolution (17 in all)
    residual: bool = False  # add the output to a bilinear upscale of the LR input (last conv zero-init), no tanh
    d_width: int = 64  # discriminator width

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)  # JSON gives back a list

    @property
    def hr_size(self) -> int:
        return self.lr_size * self.scale

    def discriminator(self) -> DiscriminatorConfig:
        """The degrader's discriminator at HR size: at 64x64 it max-pools in two more blocks than at 16x16."""
        return DiscriminatorConfig(in_size=self.hr_size, width=self.d_width)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> LowToHighConfig:
        """The config a checkpoint stores, type- and range-checked before a network is built from it.

        Raises:
            UserError: a field of the wrong type, out of range or unknown; the message starts with `source`.
        """
        ranges = {"lr_size": (1, 1024), "scale": (2, 16), "width": (1, 512), "blocks": (1, 64), "d_width": (1, 512)}
        return config_from_dict(cls, d, source, ranges)


# `paper` is the authors' generator (block counts as in their code, one width) with plain tanh output;
# `small` is for 2 CPU cores: a residual over bilinear upscaling (step one already gives a sensible image),
# blocks mostly at LR where they are cheap, and a thin discriminator: at 64x64 its two full-resolution blocks
# cost most of a G+5D iteration, so halving its width speeds it up most (benchmarks/README.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(width=64, blocks=(12, 3, 2), residual=False, d_width=64),
    "small": dict(width=32, blocks=(4, 1, 1), residual=True, d_width=16),
}


class SkipGroup(nn.Module):
    """A group of pre-activation blocks with one skip connection from its input to its last block's output."""

    def __init__(self, in_ch: int, out_ch: int, blocks: int):
        super().__init__()
        self.body = group(in_ch, out_ch, blocks)
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling, as in the paper (no learned weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def group_levels(n_groups: int, n_up: int) -> list[int]:
    """How many x2 steps precede each group: the last group at HR size, earlier ones one x2 apart."""
    return [min(i, n_up - 1) for i in range(n_groups - 1)] + [n_up]


class LowToHighGenerator(nn.Module):
    """ResNet that upscales LR images by `scale`: SkipGroups of pre-activation blocks and bilinear x2 steps.

    With lr_size 16 and scale 4: conv in, 12 blocks at 16x16, x2, 3 blocks at 32x32, x2, 2 blocks at 64x64,
    BN-ReLU-conv out, tanh (or a residual over bilinear upscaling of the input).
    """

    def __init__(self, config: LowToHighConfig):
        super().__init__()
        self.config = config
        n_up = log2_exact(config.scale, "scale")
        if n_up < 1:
            raise ValueError(f"scale must be 2 or more, got {config.scale}")
        if not config.blocks or min(config.blocks) < 1:
            raise ValueError(f"every group needs at least one block, got {config.blocks}")
        w = config.width
        self.head = nn.Conv2d(3, w, 3, padding=1)  # (B, w, h, w)
        body: list[nn.Module] = []
        level = 0
        for n_blocks, target in zip(config.blocks, group_levels(len(config.blocks), n_up), strict=True):
            for _ in range(target - level):
                body.append(Upsample2x())  # resolution doubles
            level = target
            body.append(SkipGroup(w, w, n_blocks))
        self.body = nn.Sequential(*body)  # (B, w, h*s, w*s)
        self.tail = ToImage(w)  # (B, 3, h*s, w*s)
        self.init_weights()

    def init_weights(self) -> None:
        """PyTorch's default init, except the residual variant's output conv, which starts at zero.

        As timm's `zero_init_last`: the residual generator then starts as plain bilinear upscaling, a sensible
        image from step one, and training learns the missing detail. The tanh variant has no skip to start from.
        """
        if self.config.residual:
            self.tail.zero_init()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Map lr (B, 3, h, w) in [-1, 1] to sr (B, 3, h*s, w*s), about [-1, 1]."""
        out = self.tail(self.body(self.head(lr)))  # (B, 3, h*s, w*s)
        if self.config.residual:
            return F.interpolate(lr, scale_factor=self.config.scale, mode="bilinear", align_corners=False) + out
        return torch.tanh(out)


def save_sr_generator(path: str | Path, net_g: LowToHighGenerator, step: int, **meta: Any) -> None:
    """Write the generator as the checkpoint `load_sr_generator` reads (atomically)."""
    meta = {"kind": SR_KIND, "config": vars(net_g.config), "step": step, **meta}
    save_checkpoint(path, module_tensors("net_g", net_g), meta)


def load_sr_generator(
    path: str | Path, device: str | torch.device = "cpu", *, option: str = "--checkpoint"
) -> tuple[LowToHighGenerator, dict[str, Any]]:
    """Load an `sr train` / `sr finetune` generator from a run directory or its `sr.safetensors` file.

    Returns the generator in eval mode on `device`, and the checkpoint's metadata ("config", "step", ...).

    Raises:
        UserError: missing file, not a checkpoint, another kind of model, or weights that do not fit.
    """
    file = resolve_checkpoint(path, SR_FILE, option)
    tensors, meta = load_checkpoint(file, SR_KIND, option=option)
    net_g = build_network(LowToHighConfig, LowToHighGenerator, tensors, meta, file, option)
    return net_g.to(device).eval(), meta
