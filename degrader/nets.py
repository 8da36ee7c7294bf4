"""Building blocks shared by both networks, the SN ResNet discriminator, config checks and checkpoint key upgrades.

Every network is built of named parts, as in timm and BasicSR: `head` (the first conv, image -> features),
`body` (the residual blocks and resolution changes) and `tail` (features -> image or score). Checkpoint keys
therefore name the part they belong to (`net_g.tail.conv.weight`), not a position in one long Sequential.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from degrader.errors import UserError

# Checkpoint format: 1 stored each network as one anonymous Sequential (`net_g.body.0.weight` was the first
# conv); 2 stores named parts. `upgrade_state_dict` reads 1. Bump when the previous version cannot read a file.
FORMAT = 2


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


class ToImage(nn.Sequential):
    """A generator's tail: the pre-activation blocks' missing BN-ReLU, then a conv to 3 channels."""

    def __init__(self, ch: int):
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(ch), act=nn.ReLU(), conv=nn.Conv2d(ch, 3, 3, padding=1)))

    def zero_init(self) -> None:
        """Output exactly zero at step one (timm's `zero_init_last`): a residual generator starts as its skip."""
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)


def group(in_ch: int, out_ch: int, blocks: int) -> nn.Sequential:
    """`blocks` pre-activation blocks in a row; the first one changes the width."""
    return nn.Sequential(*[PreActBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(blocks)])


def log2_exact(n: int, what: str) -> int:
    """log2 of a power of two, with a clear error otherwise."""
    k = int(round(math.log2(n))) if n > 0 else -1
    if k < 0 or 2**k != n:
        raise ValueError(f"{what} must be a power of two, got {n}")
    return k


# ---------------------------------------------------------------------------------------------- configs


def config_from_dict(cls: type, d: Any, source: str, ranges: dict[str, tuple[int, int]]) -> Any:
    """Build the dataclass `cls` from JSON data, checking every field before any network is allocated.

    A field's type is its default's type (int, bool, float or tuple of ints); int fields and tuple items must
    lie in `ranges[name]` (inclusive). Missing fields take their defaults, so older files keep loading.

    Raises:
        UserError: `d` is not an object, has an unknown field, or a field of the wrong type or out of range;
            the message starts with `source` (the option and file) and names the field.
    """
    if not isinstance(d, dict):
        raise UserError(f"{source}: its model config is a {type(d).__name__}, not an object; is the file damaged?")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise UserError(
            f"{source}: unknown model config field(s) {', '.join(map(str, unknown))}; written by a newer tool?"
        )
    for name, value in d.items():
        default = fields[name].default
        lo, hi = ranges.get(name, (-math.inf, math.inf))
        bad = None
        if isinstance(default, bool):
            bad = None if isinstance(value, bool) else "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
            bad = None if ok else f"an integer in {lo}..{hi}"
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi
            bad = None if ok else f"a number in {lo}..{hi}"
        elif isinstance(default, tuple):
            ok = isinstance(value, list | tuple) and 1 <= len(value) <= 8
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value)
            bad = None if ok else f"a list of 1..8 integers in {lo}..{hi}"
        if bad:
            raise UserError(f"{source}: model config field {name!r} is {value!r:.40}, expected {bad}.")
    return cls(**d)


def check_fits(net_cls: type, config: Any, tensors: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Refuse weights that do not fit `net_cls(config)` before any memory is allocated for the network.

    The network is built on the meta device (shapes only), so a hostile config cannot make the loader allocate
    gigabytes for weights the file does not hold.

    Raises:
        UserError: a tensor is missing, unexpected or of another shape; the message names the first one.
    """
    with torch.device("meta"):
        probe = net_cls(config)
    want = {f"{prefix}.{k}": tuple(v.shape) for k, v in probe.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(prefix + ".")}
    if want != have:
        key = min(want.keys() ^ have.keys() or {k for k in want if want[k] != have[k]})
        why = f"{key}: {have.get(key, 'missing')} in the file, {want.get(key, 'none')} in the model"
        raise UserError(f"{source} does not fit this model ({why}); was it written with other settings?")


# ---------------------------------------------------------------------------------------------- discriminator


@dataclass
class DiscriminatorConfig:
    in_size: int = 16  # input resolution; 16 for the degrader's LR output, 64 for SR output
    width: int = 64  # channels of every block
    blocks: int = 6  # pre-activation SN blocks; the last log2(in_size / 4) of them max-pool
    # > 0: a patch discriminator instead, this many SN blocks at full resolution and one score per pixel,
    # each seeing a (4 * patch_blocks + 3)-px patch: it judges texture, not whose face it is (docs/results.md)
    patch_blocks: int = 0

    @classmethod
    def from_dict(cls, d: Any, source: str) -> DiscriminatorConfig:
        """The config from JSON data, type- and range-checked (see `config_from_dict`)."""
        ranges = {"in_size": (4, 1024), "width": (1, 512), "blocks": (1, 16), "patch_blocks": (0, 16)}
        return config_from_dict(cls, d, source, ranges)


class Score(nn.Sequential):
    """The discriminator's tail: ReLU, flatten the (B, w, 4, 4) features, one spectral-norm linear score."""

    def __init__(self, ch: int):
        super().__init__(OrderedDict(act=nn.ReLU(), flatten=nn.Flatten(), fc=spectral_norm(nn.Linear(ch * 4 * 4, 1))))


class Discriminator(nn.Module):
    """Spectral-norm ResNet discriminator of the paper: 6 SN blocks, max-pooling only in the last blocks.

    At 16x16 input the last two blocks pool (16 -> 4); at 64x64 the last four do, which is the degrader's
    discriminator with two extra max-pooling layers, as the Low-to-High GAN uses it. With `patch_blocks` it is
    a patch discriminator instead: the same head and blocks without pooling, and a 1x1 conv scoring each pixel.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.head = spectral_norm(nn.Conv2d(3, w, 3, padding=1))
        if config.patch_blocks:
            self.body = nn.Sequential(*[SNBlock(w, w) for _ in range(config.patch_blocks)])  # (B, w, H, W)
            self.tail = nn.Sequential(nn.ReLU(), spectral_norm(nn.Conv2d(w, 1, 1)))
            return
        n_pool = log2_exact(config.in_size, "discriminator input size") - 2
        if not 0 <= n_pool <= config.blocks:
            raise ValueError(f"discriminator input size {config.in_size} needs 4..{4 * 2**config.blocks} pixels")
        body: list[nn.Module] = []
        for i in range(config.blocks):
            body.append(SNBlock(w, w))
            if i >= config.blocks - n_pool:
                body.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*body)  # (B, w, 4, 4)
        self.tail = Score(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, 3, in_size, in_size) in [-1, 1] to unbounded scores: (B,), or (B, H, W) per patch."""
        return self.tail(self.body(self.head(x))).squeeze(1)


# ---------------------------------------------------------------------------------------------- checkpoint keys


def _upgrade_sequential(tensors: dict[str, torch.Tensor], seq: str, head: str, tail: list[tuple[int, str]]) -> None:
    """Rename format-1 keys `seq.N.rest` in place: N = 0 is `head`, the last ones `tail`, the rest `body`.

    `tail` lists (offset from the last index that holds tensors, new name); the body keeps its order, shifted
    by one, since the head no longer sits in front of it.
    """
    pattern = re.compile(re.escape(seq) + r"\.(\d+)\.(.+)")
    found = {k: pattern.fullmatch(k) for k in tensors}
    found = {k: m for k, m in found.items() if m}
    if not found:
        return
    last = max(int(m[1]) for m in found.values())
    names = {last - off: name for off, name in tail}
    prefix = seq.rsplit(".", 1)[0]
    for key, m in found.items():
        i = int(m[1])
        new = head if i == 0 else names.get(i, f"{prefix}.body.{i - 1}")
        tensors[f"{new}.{m[2]}"] = tensors.pop(key)


def upgrade_state_dict(tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Map a checkpoint's tensor names to the current layout, by the format its metadata records.

    Format 1 held each network as one Sequential. Both generators had the same shape: `<net>.body.0` the first
    conv, then the blocks, then BN, ReLU and the output conv. A discriminator was `<net>.features` (conv, blocks,
    ReLU, Flatten) and `<net>.score`. Every network in the file is upgraded (`net_g`, `net_d`, finetune's four).
    Parameter order is unchanged, so optimizer states saved by index stay valid.

    Raises:
        UserError: the format is missing, not an integer, or newer than this version reads; names the version.
    """
    fmt = meta.get("format")
    if type(fmt) is not int or not 1 <= fmt <= FORMAT:
        newer = type(fmt) is int and fmt > FORMAT
        raise UserError(
            f"{source} has checkpoint format {fmt!r} (written by degrader {meta.get('version', '?')}), "
            f"but this version reads formats 1 to {FORMAT}; "
            + ("upgrade degrader to read it." if newer else "no degrader writes that: is the file damaged?")
        )
    tensors = dict(tensors)
    if fmt == 1:
        for net in sorted({k.split(".", 1)[0] for k in tensors}):  # net_g, net_d; finetune's net_hl, net_dh, ...
            _upgrade_sequential(
                tensors, f"{net}.body", f"{net}.head", [(2, f"{net}.tail.norm"), (0, f"{net}.tail.conv")]
            )
            _upgrade_sequential(tensors, f"{net}.features", f"{net}.head", [])
            for key in [k for k in tensors if k.startswith(f"{net}.score.")]:
                tensors[f"{net}.tail.fc." + key[len(f"{net}.score.") :]] = tensors.pop(key)
    return tensors
