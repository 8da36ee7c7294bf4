"""The paired-shard format, defined once: member names, keys, seeds, the writer and the iterable reader.

A shard is a plain POSIX tar (`shard-000000.tar`, ...) that stock WebDataset and `tar -tf` read. Each sample
is four consecutive members sharing a key (no dots in it):

    {key}.hr.png    the HR crop, lossless RGB PNG
    {key}.lr.png    its degraded LR version, lossless RGB PNG
    {key}.seed.txt  the noise seed that made the LR image (decimal)
    {key}.json      metadata: seed, source, image_id, crop, k, scale, hr_size, lr_size, degrader,
                    degrader_sha256, version

`manifest.json` next to the shards lists them with sample counts and sha256 (see `degrader.export`). The map-style
reader and `verify_shards` live in `degrader.shards_map`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from degrader.errors import UserError
from degrader.files import atomic_path, sha256_file
from degrader.shards_tar import ShardError, iter_tar, open_url, split_name

MEMBERS = ("hr.png", "lr.png", "seed.txt", "json")  # in the order they are written, per sample
MANIFEST = "manifest.json"
FORMAT = "degrader-shards"
FORMAT_VERSION = 1
PNG_LEVEL = 3  # zlib level: 4x faster than the default 6 for about 15% larger files; fixed, so output is stable


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


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


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG of a (H, W, 3) uint8 array, byte-identical for the same pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """PNG bytes to a contiguous (3, H, W) tensor: uint8, or float in [0, 1] for a float `dtype`.

    PIL, not torchvision's decoder, which crashes the process on some corrupt files.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        rgb = np.array(im if im.mode == "RGB" else im.convert("RGB"))  # (H, W, 3)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    if not dtype.is_floating_point:
        return chw.contiguous()
    return chw.to(dtype, memory_format=torch.contiguous_format).div_(255)  # one pass: transpose + convert


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] to (B, H, W, 3) uint8, rounding to nearest."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class ShardWriter:
    """Write samples into `shard-NNNNNN.tar` files of `samples_per_shard` samples each, byte-reproducibly.

    Every header field that could vary between runs (mtime, owner, mode) is fixed. A shard is written under a
    temporary name and renamed when complete, so a final shard name always holds a complete shard.
    """

    def __init__(self, out_dir: str | Path, samples_per_shard: int, *, first_shard: int = 0):
        self.out_dir = Path(out_dir)
        self.samples_per_shard = samples_per_shard
        self.index = first_shard  # number of the shard being written
        self.count = 0  # samples in it so far
        self._stack: ExitStack | None = None
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None

    def write(self, key: str, members: dict[str, bytes]) -> dict[str, Any] | None:
        """Append one sample (`members` maps each of MEMBERS to bytes). Returns the shard entry when one completes."""
        if self._tar is None:
            self._stack = ExitStack()
            self._tmp = self._stack.enter_context(atomic_path(self.out_dir / shard_name(self.index)))
            f = self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115 (closed in finish_shard)
            self._tar = tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        for ext in MEMBERS:
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        return self.finish_shard() if self.count >= self.samples_per_shard else None

    def finish_shard(self) -> dict[str, Any] | None:
        """Close the current shard, give it its final name, and return {"name", "samples", "sha256"}."""
        if self._tar is None or self._stack is None or self._tmp is None:
            return None
        self._tar.close()  # writes the end-of-archive blocks
        self._tar.fileobj.flush()
        os.fsync(self._tar.fileobj.fileno())
        entry = {"name": shard_name(self.index), "samples": self.count, "sha256": sha256_file(self._tmp)}
        self._stack.close()  # closes the file, then renames it into place
        self._tar, self._stack, self._tmp = None, None, None
        self.index, self.count = self.index + 1, 0
        return entry

    def abort(self) -> None:
        """Drop the shard being written (its temporary file is removed)."""
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._tar, self._stack, self._tmp = None, None, None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read `manifest.json` from a shard directory.

    Raises:
        UserError: missing or not a degrader shard manifest.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no manifest; is {directory} a finished `degrade export-shards` output?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); re-export the shards.") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path} is not a degrader shard manifest.")
    return manifest


def shard_urls(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Expand a shard source into a list of URLs.

    `source` may be a directory (its manifest's shards, else its `*.tar`), a manifest file, a glob
    (`data/*.tar`), a brace pattern (`shard-{000000..000099}.tar`), any URL WebDataset opens (`pipe:...`,
    `https://...`), several of these joined by `::`, or a list of them.

    Raises:
        UserError: a local pattern matches nothing.
    """
    from webdataset.shardlists import expand_urls
    from webdataset.utils import glob_with_braces

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
    urls = sorted(glob_with_braces(text)) if any(c in text for c in "*?[") else expand_urls(text)
    urls = [u for u in urls if Path(u).exists()]
    if not urls:
        raise UserError(f"no shards match {text}; give a shard directory, a glob or a brace pattern.")
    return urls


def iter_raw_samples(url: str, on_error: str = "raise") -> Iterator[dict[str, Any]]:
    """Yield the samples of one shard as {"__key__", "__url__", ext: bytes, ...}, checking each is complete.

    With on_error="warn", an incomplete sample is skipped and a corrupt shard warns and ends early.
    """
    sample: dict[str, Any] = {}
    try:
        with open_url(url) as stream:
            for name, data in iter_tar(stream, url):
                key, ext = split_name(name)
                if sample and sample["__key__"] != key:
                    yield from _if_complete(sample, on_error)
                    sample = {}
                sample.setdefault("__key__", key)
                sample["__url__"] = url
                sample[ext] = data
    except (ShardError, OSError) as e:
        error = e if isinstance(e, ShardError) else ShardError(f"{url}: cannot read ({e}); check the path or URL.")
        if on_error == "raise":
            raise error from None
        warnings.warn(f"skipping the rest of a shard: {error}", stacklevel=2)
        if sample and all(ext in sample for ext in MEMBERS):  # the last sample read whole is still good
            yield sample
        return
    if sample:
        yield from _if_complete(sample, on_error)


def _if_complete(sample: dict[str, Any], on_error: str) -> Iterator[dict[str, Any]]:
    missing = [ext for ext in MEMBERS if ext not in sample]
    if not missing:
        yield sample
        return
    error = ShardError(f"{sample['__url__']}: {sample['__key__']}: missing {', '.join(missing)}; re-export the shard.")
    if on_error == "raise":
        raise error
    warnings.warn(f"skipping a sample: {error}", stacklevel=3)


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


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else from RANK / WORLD_SIZE, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardDataset(IterableDataset):
    """Iterate paired shards as dicts {"lq", "gt", "seed", "key", "lq_path", "gt_path"} (+ "L", "H" for KAIR).

    Work is split over DDP ranks and DataLoader workers: by shard when there are at least as many shards as
    ranks x workers, otherwise by sample, so each sample is read by exactly one of them per epoch. Ranks may
    then get unequal counts; with DDP, set `epoch_length` so every rank yields the same number of samples.

    Args:
        source: shard directory, manifest, glob, brace pattern, URL or list (see `shard_urls`).
        shuffle: shuffle the shard order and the samples through a buffer, from `seed` and the epoch.
        buffer_size: samples held in the shuffle buffer (per worker).
        seed: base seed for shuffling, crops and flips; the same seed gives the same stream.
        epoch_length: if set, every epoch yields exactly this many samples in total over all ranks (each rank
            `epoch_length // world_size`), cycling through the shards as needed, whatever the worker count.
        gt_size: if set, a random aligned crop of this many HR pixels (and gt_size / scale LR pixels).
        flip: random horizontal and vertical flips; rot: random transposition (with flips: all 8 rotations).
        kair_keys: also yield "L", "H", "L_path", "H_path" (KAIR's names).
        on_error: "raise" a `ShardError` naming shard and key, or "warn" and skip the broken part.

    Example:
        >>> ds = ShardDataset("shards/", shuffle=True, epoch_length=10_000, gt_size=64)
        >>> loader = DataLoader(ds, batch_size=16, num_workers=4)
        >>> for epoch in range(10):
        ...     ds.set_epoch(epoch)
        ...     for batch in loader: ...
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        *,
        shuffle: bool = False,
        buffer_size: int = 256,
        seed: int = 0,
        epoch_length: int | None = None,
        gt_size: int | None = None,
        flip: bool = False,
        rot: bool = False,
        kair_keys: bool = False,
        on_error: str = "raise",
    ):
        super().__init__()
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', not {on_error!r}")
        self.urls = shard_urls(source)
        self.counts: list[int] | None = None
        if isinstance(source, (str, Path)) and (Path(source) / MANIFEST).is_file():
            self.counts = [s["samples"] for s in read_manifest(source)["shards"]]
        self.shuffle, self.buffer_size, self.seed, self.epoch = shuffle, buffer_size, seed, 0
        self.epoch_length, self.gt_size, self.flip, self.rot = epoch_length, gt_size, flip, rot
        self.kair_keys, self.on_error = kair_keys, on_error

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch; shuffling differs per epoch. Call before iterating (not seen by persistent workers)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples per rank in one epoch: exact with `epoch_length`, else from the manifest counts."""
        rank, world = dist_info()
        if self.epoch_length is not None:
            return self.epoch_length // world
        if self.counts is None:
            raise TypeError("length unknown: read shards through their directory (with manifest) or set epoch_length")
        return sum(self.counts) // world

    def _quota(self) -> tuple[int, int, int | None]:
        rank, world = dist_info()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        quota = None
        if self.epoch_length is not None:
            per_rank = self.epoch_length // world
            quota = per_rank // workers + (worker < per_rank % workers)
        return rank * workers + worker, world * workers, quota

    def _raw_stream(self, slot: int, slots: int, cycle: int) -> Iterator[dict[str, Any]]:
        order = list(range(len(self.urls)))
        if self.shuffle:  # the same order in every rank and worker, so the split below is a partition
            random.Random(f"{self.seed}:{self.epoch}:{cycle}").shuffle(order)
        if len(order) >= slots:
            for i in order[slot::slots]:
                yield from iter_raw_samples(self.urls[i], self.on_error)
        else:
            j = 0
            for i in order:
                for raw in iter_raw_samples(self.urls[i], self.on_error):
                    if j % slots == slot:
                        yield raw
                    j += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, slots, quota = self._quota()
        rng = random.Random(f"{self.seed}:{self.epoch}:{slot}")
        yielded, cycle = 0, 0
        while quota is None or yielded < quota:
            got = 0
            for raw in self._shuffled(self._raw_stream(slot, slots, cycle), rng):
                got += 1
                try:
                    sample = decode_sample(raw, self.kair_keys)
                except ShardError as e:
                    if self.on_error == "raise":
                        raise
                    warnings.warn(f"skipping a sample: {e}", stacklevel=2)
                    continue
                yield paired_augment(sample, rng, self.gt_size, self.flip, self.rot)
                yielded += 1
                if quota is not None and yielded >= quota:
                    return
            if quota is None or got == 0:  # one pass for a natural epoch; stop if this worker has nothing
                return
            cycle += 1

    def _shuffled(self, stream: Iterator[dict[str, Any]], rng: random.Random) -> Iterator[dict[str, Any]]:
        if not self.shuffle or self.buffer_size <= 1:
            yield from stream
            return
        buffer: list[dict[str, Any]] = []
        for raw in stream:
            if len(buffer) < self.buffer_size:
                buffer.append(raw)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], raw = raw, buffer[i]
            yield raw
        rng.shuffle(buffer)
        yield from buffer


def __getattr__(name: str) -> Any:
    """The map-style reader and the checks live in `degrader.shards_map`; importable from here too."""
    if name in ("ShardMapDataset", "verify_shards", "summarize_shards"):
        from degrader import shards_map

        return getattr(shards_map, name)
    raise AttributeError(f"module 'degrader.shards' has no attribute {name!r}")
