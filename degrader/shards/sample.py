"""One raw sample to training tensors: decoding and the aligned crop and flips both readers share."""

from __future__ import annotations

import random
from typing import Any

import torch

from degrader.errors import UserError
from degrader.shards.format import decode_png
from degrader.shards.tar import ShardError


def decode_sample(raw: dict[str, Any], kair_keys: bool = False) -> dict[str, Any]:
    """Decode a raw sample to {"lq", "gt" (float CHW in [0, 1]), "seed", "key", "lq_path", "gt_path"} (+ L/H)."""
    url, key = raw["__url__"], raw["__key__"]
    try:
        lq = decode_png(raw["lr.png"], torch.float32)  # (3, h, w)
        gt = decode_png(raw["hr.png"], torch.float32)  # (3, h*s, w*s)
        seed = int(raw["seed.txt"])
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error... for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ShardError(f"{url}: {key}: cannot decode ({first}); the shard is corrupt, re-export it.") from None
    out = {
        "lq": lq,
        "gt": gt,
        "seed": seed,
        "key": key,
        "lq_path": f"{url}/{key}.lr.png",
        "gt_path": f"{url}/{key}.hr.png",
    }
    if kair_keys:
        out.update(L=lq, H=gt, L_path=out["lq_path"], H_path=out["gt_path"])
    return out


def paired_augment(
    sample: dict[str, Any], rng: random.Random, gt_size: int | None, flip: bool, rot: bool
) -> dict[str, Any]:
    """Random aligned crop (`gt_size` HR pixels) and flips / transposition of lq and gt, in place."""
    lq, gt = sample["lq"], sample["gt"]
    scale = gt.shape[-1] // lq.shape[-1]
    if gt_size is not None:
        lq_size = gt_size // scale
        h, w = lq.shape[-2:]
        if gt_size % scale or lq_size > min(h, w):
            raise UserError(f"gt_size {gt_size} must be a multiple of {scale} and fit the {h * scale} px samples.")
        top, left = rng.randrange(h - lq_size + 1), rng.randrange(w - lq_size + 1)  # on the LR grid, so aligned
        lq = lq[:, top : top + lq_size, left : left + lq_size]
        gt = gt[:, top * scale : (top + lq_size) * scale, left * scale : (left + lq_size) * scale]
    if flip and rng.random() < 0.5:
        lq, gt = lq.flip(-1), gt.flip(-1)
    if flip and rng.random() < 0.5:
        lq, gt = lq.flip(-2), gt.flip(-2)
    if rot and rng.random() < 0.5:
        lq, gt = lq.transpose(-1, -2), gt.transpose(-1, -2)
    sample["lq"], sample["gt"] = lq.contiguous(), gt.contiguous()
    if "L" in sample:
        sample["L"], sample["H"] = sample["lq"], sample["gt"]
    return sample
