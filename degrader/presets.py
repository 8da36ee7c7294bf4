"""The named starting points of `degrade fit`: each preset's generator, network sizes and losses in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from degrader.gan import LossConfig


@dataclass(frozen=True)
class Preset:
    generator: str  # "structured" (a physical chain driven by z) or "paper" (the authors' network)
    width: int  # paper generator: channels of every residual block
    blocks_per_group: int  # paper generator: pre-activation blocks per resolution group
    residual: bool  # paper generator: a residual over average pooling instead of plain tanh output
    d_width: int  # discriminator width (both generators)
    loss: LossConfig  # losses, optimiser and stabilisers
    sharpen: float = 0.0  # structured generator: the strongest unsharp-mask amount it may learn; 0 no such step

    def network(self) -> dict[str, Any]:
        """The `HighToLowConfig` fields this preset sets."""
        return {k: getattr(self, k) for k in ("width", "blocks_per_group", "residual", "d_width")}

    def training(self) -> dict[str, Any]:
        """The `FitConfig` fields this preset sets, as plain data (`loss` a fresh dict)."""
        return {"generator": self.generator, "sharpen": self.sharpen, "loss": dataclasses.asdict(self.loss)}


# `paper`: the authors' setup; `small`: fast on 2 CPU cores, what won the benchmarks (docs/results.md): the
# structured chain with a camera's sharpening, its noise and JPEG held to what the real LR shows.
PRESETS = {
    "paper": Preset(generator="paper", width=64, blocks_per_group=2, residual=False, d_width=64, loss=LossConfig()),
    "small": Preset(
        generator="structured",
        width=32,
        blocks_per_group=1,
        residual=True,
        d_width=32,
        loss=LossConfig(
            beta=1.0,
            d_steps=1,
            lr_d=4e-4,
            pixel="luma-lowpass",
            augment="translation,colour",
            d_highpass=1.0,
            r1=1.0,
            ema=0.99,
            lr_decay=0.5,
            exposure=100.0,
            colour=100.0,
            noise=1.0,
            jpeg=1.0,
            tone="auto",
        ),
        sharpen=2.0,
    ),
}
