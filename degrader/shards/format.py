"""The paired-shard format, defined once: member names, keys, seeds, the PNG codec, the manifest and sources.

A shard is a plain POSIX tar (`shard-000000.tar`, ...) that stock WebDataset and `tar -tf` read. Each sample
is four consecutive members sharing a key (no dots in it):

    {key}.hr.png    the HR crop, lossless RGB PNG
    {key}.lr.png    its degraded LR version, lossless RGB PNG
    {key}.seed.txt  the noise seed that made the LR image (decimal)
    {key}.json      metadata: seed, source, image_id, crop, k, scale, hr_size, lr_size, degrader,
                    degrader_sha256, version

`manifest.json` next to the shards lists them with sample counts and sha256 (see `degrader.export`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from webdataset.shardlists import expand_urls
from webdataset.utils import glob_with_braces

from degrader.errors import ShardError, UserError

MEMBERS = ("hr.png", "lr.png", "seed.txt", "json")  # in the order they are written, per sample
MANIFEST = "manifest.json"
FORMAT = "degrader-shards"
FORMAT_VERSION = 1
PNG_LEVEL = 3  # zlib level: 4x faster than the default 6 for about 15% larger files; fixed, so output is stable


def shard_name(index: int, rank: int | None = None) -> str:
    """`shard-000012.tar`; rank 3 of an export under torchrun writes `shard-r0003-000012.tar`, so that the names
    sort in rank order, which is the order of the samples in a single-process export."""
    return f"shard-{index:06d}.tar" if rank is None else f"shard-r{rank:04d}-{index:06d}.tar"


SHARD_NAME = re.compile(r"shard-(?:r(?P<rank>[0-9]{4})-)?(?P<index>[0-9]{6,})\.tar")  # what `shard_name` writes


def is_shard_name(name: str, rank: int | None = None) -> bool:
    """Whether `name` is exactly a name `shard_name(i, rank)` writes for some i (so a user's `shard-notes.txt`
    or `shard-000000-backup.tar` is not)."""
    match = SHARD_NAME.fullmatch(name)
    if match is None:
        return False
    return match["rank"] is None if rank is None else match["rank"] == f"{rank:04d}"


def sample_seed(seed: int, image_id: str, k: int) -> int:
    """The noise seed of variant `k` of the crop `image_id`: a stable hash of all three, in [0, 2**63)."""
    digest = hashlib.sha256(f"{int(seed)}\0{image_id}\0{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def sample_key(image_id: str, crop: int, k: int) -> str:
    """A stable, unique, tar- and WebDataset-safe key: readable stem, hash of the id, crop index and variant.

    Example: `faces/0001.png`, crop 0, k 2 -> `faces_0001-3f2a9c81d0e4-c0000-k002`.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", image_id.rsplit(".", 1)[0]).strip("_-")[-40:] or "img"
    digest = hashlib.sha256(image_id.encode()).hexdigest()[:12]  # keeps "a.b.png" and "a_b.png" apart
    return f"{stem}-{digest}-c{crop:04d}-k{k:03d}"


def check_complete(url: str, key: str, extensions: Any) -> None:
    """Raise a `ShardError` naming the shard and key unless `extensions` holds every one of MEMBERS."""
    missing = [ext for ext in MEMBERS if ext not in extensions]
    if missing:
        raise ShardError(f"{url}: {key}: missing {', '.join(missing)}; re-export the shard.")


def encode_png(image: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """Lossless PNG of a (H, W, 3) uint8 array at zlib `level` (0-9), byte-identical for the same pixels."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SNIFF = {b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"RIFF": "WebP", b"BM": "BMP", b"II*\0": "TIFF", b"MM\0*": "TIFF"}


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) of PNG bytes, after checking the signature and every chunk's CRC
    (a flipped bit that still decodes fails its CRC). Costs a CRC pass over the bytes, far less than decoding.

    Raises:
        ValueError: not a PNG (names what it is where it can), a chunk that fails its CRC or is cut short.
    """
    if data[:8] != PNG_SIGNATURE:
        kind = next((name for magic, name in SNIFF.items() if data.startswith(magic)), None)
        raise ValueError(f"{kind} data, not a PNG" if kind else "not a PNG (no PNG signature)")
    view, pos, header = memoryview(data), 8, None
    while pos + 12 <= len(data):
        length, kind = int.from_bytes(view[pos : pos + 4], "big"), bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        name = kind.decode("latin-1") if kind.isalpha() else "with a damaged header"
        if end > len(data):
            raise ValueError(f"PNG chunk {name} is cut short")
        if zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            raise ValueError(f"PNG chunk {name} fails its CRC (the bytes changed)")
        if kind == b"IHDR" and length == 13:
            w, h = int.from_bytes(view[pos + 8 : pos + 12], "big"), int.from_bytes(view[pos + 12 : pos + 16], "big")
            header = (w, h, view[pos + 16], view[pos + 17])
        if kind == b"IEND":
            if header is None:
                raise ValueError("PNG without an IHDR chunk")
            return header
        pos = end
    raise ValueError("PNG without its IEND chunk (cut short)")


def decode_png(data: bytes, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """PNG bytes to a contiguous (3, H, W) tensor: uint8, or float in [0, 1] for a float `dtype`.

    PIL, not torchvision's decoder, which crashes the process on some corrupt files.
    """
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit gray: 0..65535 to 0..255 as images.py does
            gray = np.clip(np.rint(np.asarray(im, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
            rgb = np.repeat(gray[..., None], 3, axis=-1)  # (H, W, 3); PIL's convert("RGB") would clip
        else:
            rgb = np.array(im if im.mode == "RGB" else im.convert("RGB"))  # (H, W, 3)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    if not dtype.is_floating_point:
        return chw.contiguous()
    return chw.to(dtype, memory_format=torch.contiguous_format).div_(255)  # one pass: transpose + convert


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] to (B, H, W, 3) uint8, rounding to nearest."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read `manifest.json` from a shard directory, checking every field the readers and `inspect` use.

    Raises:
        UserError: missing; ShardError: not a degrader shard manifest, or damaged.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: no manifest; is {directory} a finished `degrade export-shards` output?") from None
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ShardError(f"{path} is not readable JSON ({str(e)[:200]}); re-export the shards.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"{path} is not a degrader shard manifest.")
    problem = manifest_problem(manifest)
    if problem:
        raise ShardError(f"{path}: {problem}; re-export the shards.")
    return manifest


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's fields, or None."""
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return '"shards" is missing or not a list'
    for i, entry in enumerate(shards):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            return f"shard entry {i} has no plain file name"
        samples = entry.get("samples")
        if type(samples) is not int or samples < 0 or not isinstance(entry.get("sha256"), str):
            return f"shard entry {i} ({name}) needs a sample count and a sha256"
    names, digests = [e["name"] for e in shards], [e["sha256"] for e in shards]
    for i, entry in enumerate(shards):
        if names.index(entry["name"]) != i:
            return f"shard entry {i} ({entry['name']}) is listed twice"
        if digests.index(entry["sha256"]) != i:
            first = names[digests.index(entry["sha256"])]
            return f"shard entry {i} ({entry['name']}) has the sha256 of {first} (a copy of it)"
    config = manifest.get("config")
    if not isinstance(config, dict) or not all(k in config for k in ("crop", "per_image", "seed")):
        return '"config" is missing or incomplete'
    if not isinstance(manifest.get("version"), str) or not isinstance(manifest.get("skipped"), list):
        return '"version" or "skipped" is missing'
    return None


def source_manifest(source: Any) -> dict[str, Any] | None:
    """The manifest when `source` is a shard directory with one, else None."""
    if isinstance(source, (str, Path)) and (Path(source) / MANIFEST).is_file():
        return read_manifest(source)
    return None


def manifest_shards(source: Any) -> list[dict[str, Any]] | None:
    """The manifest's shard entries ({"name", "samples", "sha256"}) when `source` is a shard directory with a
    manifest, else None."""
    manifest = source_manifest(source)
    return None if manifest is None else manifest["shards"]


def manifest_counts(source: Any) -> list[int] | None:
    """The manifest's sample count per shard when `source` is a shard directory with a manifest, else None."""
    entries = manifest_shards(source)
    return None if entries is None else [s["samples"] for s in entries]


def shard_urls(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Expand a shard source into a list of URLs.

    `source` may be a directory (its manifest's shards, else its `*.tar`), a manifest file, a glob
    (`data/*.tar`), a brace pattern (`shard-{000000..000099}.tar`), any URL WebDataset opens (`pipe:...`,
    `https://...`), several of these joined by `::`, or a list of them.

    Raises:
        UserError: a local pattern matches nothing.
    """
    if not isinstance(source, (str, Path)):
        return [url for item in source for url in shard_urls(item)]
    text = str(source)
    if text.startswith("pipe:") or "://" in text:
        return expand_urls(text)
    if "::" in text:
        return [url for part in text.split("::") for url in shard_urls(part)]
    path = Path(text)
    if path.is_dir():
        if (path / MANIFEST).exists():
            return [str(path / s["name"]) for s in read_manifest(path)["shards"]]
        urls = sorted(str(p) for p in path.glob("*.tar"))
        if not urls:
            raise UserError(f"{path} holds no manifest.json and no .tar shards; give a shard directory or pattern.")
        return urls
    if path.name == MANIFEST and path.is_file():
        return shard_urls(path.parent)
    if path.is_file():
        return [text]
    if any(c in text for c in "*?["):
        urls = [u for u in sorted(glob_with_braces(text)) if Path(u).is_file()]
        if not urls:
            raise UserError(f"no shards match {text}; give a shard directory, a glob or a brace pattern.")
        return urls
    urls = expand_urls(text)  # a brace pattern names every shard: each must be there
    missing = [u for u in urls if not Path(u).is_file()]
    if len(missing) == len(urls):
        raise UserError(f"no shards match {text}; give a shard directory, a glob or a brace pattern.")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{missing[0]}{more}, named by {text}, is not a shard file; fix the pattern or the files.")
    return urls
