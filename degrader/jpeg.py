"""Differentiable JPEG: baseline libjpeg maths (JFIF YCbCr, 4:2:0, 8x8 DCT, scaled quantisation tables).

The forward pass follows libjpeg closely (the tables are floored as libjpeg floors them, coefficients rounded),
so its artefacts look like a real encoder's; rounding passes gradients straight through (or uses the smooth
cubic approximation of Shin & Song 2017), so a network upstream learns through it and the quality itself
gets a gradient. Images are float tensors in [0, 1]; the quality is a float per image, not only an integer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from degrader.color import LUMA

# The example tables of the JPEG standard (Annex K), which libjpeg scales by quality.
LUMA_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)
CHROMA_TABLE = torch.full((8, 8), 99.0)
CHROMA_TABLE[:4, :4] = torch.tensor(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32
)

RGB_TO_YCBCR = torch.tensor([list(LUMA), [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float32)
YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=torch.float32)
ROUNDINGS = ("ste", "cubic")


def dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n, n): coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def diff_round(x: torch.Tensor, rounding: str = "ste") -> torch.Tensor:
    """Round to integers; "ste": exact forward, identity gradient; "cubic": round(x) + (x - round(x))^3."""
    r = torch.round(x)
    if rounding == "ste":
        return x + (r - x).detach()
    if rounding == "cubic":
        return r.detach() + (x - r.detach()) ** 3
    raise ValueError(f"rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")


def quant_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's quality scaling of both tables, per image: quality (B,) in [1, 100] -> two (B, 8, 8) tables.

    Floored as libjpeg floors them (straight-through, so the quality keeps a gradient) and clamped to 1..255.
    """
    q = quality.float().clamp(1, 100).view(-1, 1, 1)
    s = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    tables = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        t = (base.to(q.device) * s + 50) / 100
        t = t + (torch.floor(t) - t).detach()
        tables.append(t.clamp(1, 255))
    return tables[0], tables[1]


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) with H, W multiples of 8 -> (B, H/8, W/8, 8, 8)."""
    b, h, w = x.shape
    return x.view(b, h // 8, 8, w // 8, 8).transpose(2, 3)


def _unblocks(x: torch.Tensor) -> torch.Tensor:
    b, nh, nw = x.shape[:3]
    return x.transpose(2, 3).reshape(b, nh * 8, nw * 8)


def _code_plane(plane: torch.Tensor, table: torch.Tensor, rounding: str) -> torch.Tensor:
    """DCT, quantise with one table per image, dequantise, inverse DCT. plane (B, H, W) level-shifted."""
    d = dct_matrix().to(plane)
    coef = d @ _blocks(plane) @ d.T  # (B, H/8, W/8, 8, 8)
    t = table.to(plane)[:, None, None]  # (B, 1, 1, 8, 8)
    coef = diff_round(coef / t, rounding) * t
    return _unblocks(d.T @ coef @ d)


def jpeg(x: torch.Tensor, quality: torch.Tensor, *, subsample: bool = True, rounding: str = "ste") -> torch.Tensor:
    """Compress and decompress images, differentiably.

    Args:
        x: (B, 3, H, W) in [0, 1], any H, W (padded by edge replication to whole blocks, then cropped back;
            blocks start at the top-left corner, as in a file).
        quality: (B,) libjpeg quality in [1, 100], float.
        subsample: 4:2:0 chroma subsampling (libjpeg's default), box-averaged and bilinearly upsampled.
        rounding: "ste" or "cubic"; see `diff_round`.

    Returns:
        (B, 3, H, W), about [0, 1] (not clamped, as a decoder before its final clip).
    """
    b, _, h, w = x.shape
    m = 16 if subsample else 8  # the minimum coded unit
    ph, pw = -h % m, -w % m
    x = x * 255
    # edge replication by concatenation: torch.compile's replication-pad backward fails on channels_last strides
    if pw:
        x = torch.cat([x, x[..., -1:].expand(-1, -1, -1, pw)], dim=-1)
    if ph:
        x = torch.cat([x, x[..., -1:, :].expand(-1, -1, ph, -1)], dim=-2)
    ycc = torch.einsum("ij,bjhw->bihw", RGB_TO_YCBCR.to(x), x)  # (B, 3, H', W'), Y in 0..255, CbCr centred
    y_table, c_table = quant_tables(quality)
    y = _code_plane(ycc[:, 0] - 128, y_table, rounding) + 128
    chroma = F.avg_pool2d(ycc[:, 1:], 2) if subsample else ycc[:, 1:]  # (B, 2, H'/2, W'/2) when subsampled
    cb = _code_plane(chroma[:, 0], c_table, rounding)
    cr = _code_plane(chroma[:, 1], c_table, rounding)
    chroma = torch.stack([cb, cr], dim=1)
    if subsample:
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)  # (B, 2, H', W')
    ycc = torch.cat([y.unsqueeze(1), chroma], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", YCBCR_TO_RGB.to(x), ycc)
    return rgb[:, :, :h, :w] / 255
