"""One raw sample to training tensors: decoding and the aligned crop and flips both readers share."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import torch

from degrader.errors import ShardError, UserError
from degrader.shards.format import decode_png, png_header

INT, TEXT, SIZE = "an integer", "a string", "[height, width]"
META_FIELDS = {"seed": INT, "k": INT, "crop": INT, "scale": INT, "hr_size": SIZE, "lr_size": SIZE,
               "degrader": TEXT, "degrader_sha256": TEXT, "source": TEXT, "version": TEXT}  # fmt: skip


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def parse_seed(data: bytes) -> int:
    """The decimal noise seed of a `seed.txt` member, in [0, 2**63).

    Raises:
        ValueError: anything else (text, a sign, 5,000 digits).
    """
    text = data.strip()
    if not re.fullmatch(rb"[0-9]{1,19}", text) or int(text) >= 2**63:
        raise ValueError(f"seed.txt is not a decimal seed below 2**63: {text[:24]!r}")
    return int(text)


def parse_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """The `json` member of a raw sample: an object whose known fields have their types.

    Raises:
        ShardError: not JSON, not an object, or a field of the wrong type; names shard and key.
    """
    where = f"{raw['__url__']}: {raw['__key__']}"
    try:
        meta = json.loads(raw["json"])
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ShardError(f"{where}: the json member is not JSON ({_first_line(e)}); re-export the shard.") from None
    if not isinstance(meta, dict):
        raise ShardError(f"{where}: the json member is not a JSON object; re-export the shard.")
    for name, kind in META_FIELDS.items():
        value = meta.get(name)
        if kind == INT:
            ok = type(value) is int
        elif kind == TEXT:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)
        if name in meta and not ok:
            raise ShardError(f"{where}: json field {name!r} is not {kind}; re-export the shard.")
    return meta


def _size(value: Any) -> tuple[int, int] | None:
    ok = isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)
    return tuple(value) if ok else None


def _scale(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def promise_problem(
    hr: tuple[int, int], lr: tuple[int, int], seed: int, meta: dict[str, Any], promised: dict[str, Any] | None
) -> str | None:
    """What a sample of HR and LR (height, width) and `seed` breaks of what its json `meta` and the manifest's
    config (`promised`: its hr_size and scale) say of it, or None. Fields that are absent or of another type
    are not compared here (`parse_meta` reports those)."""
    show = lambda size: f"{size[0]}x{size[1]}"  # noqa: E731
    for name, what, actual in (("hr_size", "HR", hr), ("lr_size", "LR", lr)):
        if _size(meta.get(name)) not in (None, actual):
            return f"{what} {show(actual)}, but its json {name} says {show(meta[name])}"
    promised = promised or {}
    for scale, whose in ((_scale(meta.get("scale")), "its json"), (_scale(promised.get("scale")), "the manifest")):
        if scale is not None and hr != (lr[0] * scale, lr[1] * scale):
            return f"HR {show(hr)} is not {scale}x LR {show(lr)} (the scale {whose} says)"
    side = _scale(promised.get("hr_size"))
    if side is not None and hr != (side, side):
        return f"HR {show(hr)}, but the manifest's hr_size is {side}"
    if type(meta.get("seed")) is int and meta["seed"] != seed:
        return f"seed.txt {seed} differs from the json seed {meta['seed']}"
    return None


def _loose_meta(data: bytes) -> dict[str, Any]:
    """The json member as an object, or {} when it is not one (training reads pixels and seed.txt first)."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def decode_sample(
    raw: dict[str, Any], kair_keys: bool = False, promised: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Decode a raw sample to {"lq", "gt" (float CHW in [0, 1]), "seed", "key", "lq_path", "gt_path"} (+ L/H).

    Cheap checks first: both images are PNGs whose chunks pass their CRCs, and the decoded sizes and seed agree
    with the sample's json and with `promised`, the manifest's config (its `hr_size` and `scale`).

    Raises:
        ShardError: naming the shard and key.
    """
    url, key = raw["__url__"], raw["__key__"]
    for ext in ("hr.png", "lr.png"):
        try:
            png_header(raw[ext])
        except ValueError as e:
            raise ShardError(f"{url}: {key}: cannot decode ({ext}: {e}); the shard is corrupt, re-export it.") from None
    try:
        lq = decode_png(raw["lr.png"], torch.float32)  # (3, h, w)
        gt = decode_png(raw["hr.png"], torch.float32)  # (3, h*s, w*s)
        seed = parse_seed(raw["seed.txt"])
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error... for damaged files
        problem = _first_line(e)
        raise ShardError(f"{url}: {key}: cannot decode ({problem}); the shard is corrupt, re-export it.") from None
    (h, w), (hh, ww) = lq.shape[-2:], gt.shape[-2:]
    if hh % h or ww % w or hh // h != ww // w:  # also catches an LR larger than its HR (scale 0)
        raise ShardError(f"{url}: {key}: HR {hh}x{ww} is not a whole multiple of LR {h}x{w}; re-export the shard.")
    problem = promise_problem((hh, ww), (h, w), seed, _loose_meta(raw["json"]), promised)
    if problem:
        raise ShardError(f"{url}: {key}: {problem}; re-export the shard.")
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
            where = sample.get("lq_path", "a sample")
            raise UserError(f"{where}: gt_size {gt_size} must be a multiple of {scale} and fit its {h * scale} px HR.")
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
