"""`degrade apply`: degrade whole images of any size with a learned degrader, in tiles, without seams.

The structured generator is fully convolutional except for two things a tiling must respect: JPEG codes
16x16-pixel units from the top-left corner of the image, and the noise images are drawn for the whole image
from z. So the noise is drawn once for the whole LR image and sliced per tile, tiles start on 16-px LR block
boundaries, and each tile is computed with a margin (a whole number of blocks, at least the reach of the
blur, the chroma upsampling and the residual network) that is cut away afterwards. Every output pixel then
sees exactly the inputs it sees in one pass over the whole image. The arithmetic runs in float64: in float32
the CPU's vectorised loops round the last bit differently depending on where a pixel falls in the tensor, and
a JPEG coefficient or the final 8-bit level near a rounding boundary then flips; in float64 such differences
stay ~1e-16, so tiled output equals untiled output.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from degrader.checkpoint import Degrader, DegraderLike, noise_from_seeds
from degrader.errors import UserError
from degrader.files import atomic_path, write_json
from degrader.images import load_rgb, to_tensor
from degrader.progress import Progress
from degrader.scan import output_jobs
from degrader.shards.format import sample_seed
from degrader.structured import StructuredConfig, StructuredGenerator, noise_images

BLOCK = 16  # LR px: JPEG's minimum coded unit with 4:2:0 chroma; tiles and margins are multiples of it


def margin(config: StructuredConfig) -> int:
    """LR pixels of context a tile needs on each side, a whole number of blocks.

    The kept pixels read the JPEG output up to `residual` + `chroma` px away; the blocks holding those pixels
    must be coded from exact inputs, which read the sharpening's and the HR blur's reach beyond the blocks.
    """
    blur = math.ceil((config.kernel_size // 2) / config.scale)  # the HR blur, in LR px
    chroma = 1  # bilinear upsampling of 4:2:0 chroma reads one neighbour
    residual = 3 if config.residual_width > 0 else 0  # three 3x3 convolutions
    sharpen = 3 if config.sharpen_max > 0 else 0  # the unsharp mask's 7x7 Gaussian, before the JPEG
    coded = BLOCK * math.ceil((residual + chroma) / BLOCK)  # whole blocks around the kept region
    return BLOCK * math.ceil((coded + sharpen + blur) / BLOCK)


@torch.no_grad()
def degrade_image(degrader: DegraderLike, hr: torch.Tensor, seed: int, tile: int | None = 256) -> torch.Tensor:
    """Degrade one HR image of any size: (3, H, W) in [0, 1] -> (3, H // s, W // s), in tiles of `tile` LR px.

    H and W are cropped to multiples of the scale. `tile` None (or larger than the image) degrades it in one
    pass; the result is the same either way.

    Raises:
        UserError: the degrader is the paper's network and the image is not its training size, or `tile` is
            not a positive multiple of 16.
    """
    if not isinstance(degrader, Degrader):  # classical or hand-made (`classical.CLASSICAL`): any size, one pass
        s = degrader.scale
        if hr.shape[-2] < s or hr.shape[-1] < s:
            raise UserError(f"the image is {hr.shape[-1]}x{hr.shape[-2]}, smaller than the scale {s}.")
        crop = hr[:, : hr.shape[-2] // s * s, : hr.shape[-1] // s * s]
        return degrader.degrade(crop[None], [seed])[0].cpu()
    net, s = degrader.net_g, degrader.scale
    if not isinstance(net, StructuredGenerator):
        size = degrader.hr_size
        if tuple(hr.shape[-2:]) != (size, size):
            raise UserError(
                f"the paper's generator degrades only {size}x{size} images (its noise layer fixes the size), not "
                f"{hr.shape[-1]}x{hr.shape[-2]}; fit one with generator structured (preset small) for any size."
            )
        return degrader.degrade(hr[None], [seed])[0].cpu()
    if tile is not None and (tile <= 0 or tile % BLOCK):
        raise UserError(f"--tile {tile} must be a positive multiple of {BLOCK} (LR pixels).")
    h, w = hr.shape[-2] // s, hr.shape[-1] // s
    if h == 0 or w == 0:
        raise UserError(f"the image is {hr.shape[-1]}x{hr.shape[-2]}, smaller than the scale {s}.")
    hr = hr[:, : h * s, : w * s].to(degrader.device) * 2 - 1  # (3, H', W') in [-1, 1]
    z = noise_from_seeds([seed], net.config.z_dim).to(degrader.device)
    noise = noise_images(z, h, w)  # (1, 4, h, w): the whole image's noise, drawn once
    tile = tile or max(h, w)
    pad = margin(net.config)
    net = copy.deepcopy(net).double()  # see the module docstring: float64, so that tiles agree to the last bit
    hr, z = hr.double(), z.double()
    out = torch.empty(3, h, w)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            y0, x0 = max(0, top - pad), max(0, left - pad)  # block-aligned: top, left and pad are multiples of 16
            y1, x1 = min(h, top + tile + pad), min(w, left + tile + pad)
            part = net(hr[None, :, y0 * s : y1 * s, x0 * s : x1 * s], z, noise[..., y0:y1, x0:x1])  # (1, 3, ., .)
            keep = part[0, :, top - y0 : top - y0 + tile, left - x0 : left - x0 + tile]
            out[:, top : top + keep.shape[1], left : left + keep.shape[2]] = keep.float().cpu()
    return ((out + 1) / 2).clamp(0, 1)


def degrade_files(
    degrader: DegraderLike,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    seed: int = 0,
    tile: int | None = 256,
    overwrite: bool = False,
    on_progress: Progress | None = None,
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """Degrade image files and folders (searched recursively) into 8-bit PNGs under `out`, keeping the folders'
    layout. Image `name` gets the noise seed `sample_seed(seed, name, 0)`, so each image has its own degradation
    and `degrade_image(degrader, hr, that_seed)` reproduces it.

    Returns:
        (PNG written, its seed) for each image, and (input, reason) for every input that could not be used.
        `out/seeds.json` maps each PNG's name to its seed.

    Raises:
        UserError: `out` is a file, or is not empty and `overwrite` is not set; two inputs would get one output
            name (`a.jpg` and `a.png`, or `same.jpg` in two input folders).
    """
    out = Path(out)
    jobs, failed, sources = output_jobs(inputs, out, overwrite)
    first: dict[Path, Path] = {}  # output name -> the input that takes it
    for path, rel in jobs:  # a.jpg and a.png, or two folders' same.jpg: one output name, so refuse before writing
        other = first.setdefault(rel.with_suffix(".png"), path)
        if other != path:
            raise UserError(
                f"INPUTS {other} and {path} would both be written to {out / rel.with_suffix('.png')}; rename one, "
                "or degrade them in separate runs with their own --out."
            )
    written: list[tuple[Path, int]] = []
    for i, (path, rel) in enumerate(jobs):
        target = out / rel.with_suffix(".png")
        image_seed = sample_seed(seed, rel.as_posix(), 0)
        try:
            if target.resolve() in sources:
                raise UserError(f"the output {target} would overwrite an input; choose another --out.")
            lr = degrade_image(degrader, to_tensor(load_rgb(path)), image_seed, tile)
            pixels = lr.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (h, w, 3)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(tmp, format="PNG")
            written.append((target, image_seed))
        except (UserError, OSError) as e:
            failed.append((path, str(e).removeprefix(f"{path}: ")))
        if on_progress is not None:
            on_progress(i + 1, len(jobs), {})
    if written:
        write_json(out / "seeds.json", {p.relative_to(out).as_posix(): s for p, s in written})
    return written, failed
