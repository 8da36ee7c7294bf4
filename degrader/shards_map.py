"""Random access to paired shards (a map-style dataset for BasicSR-style trainers) and `verify_shards`.

The format itself (members, keys, seeds, the writer and the streaming reader) is defined in `degrader.shards`.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from degrader.errors import UserError
from degrader.files import sha256_file
from degrader.shards import (
    MANIFEST,
    MEMBERS,
    ShardError,
    decode_sample,
    iter_raw_samples,
    paired_augment,
    read_manifest,
    shard_urls,
)
from degrader.shards_tar import index_shard


class Entry(NamedTuple):
    shard: int  # index into the dataset's shard list
    key: str
    members: dict[str, tuple[int, int]]  # extension -> (byte offset, size) in the shard


class ShardMapDataset(Dataset):
    """Random access by index to every sample of local shards, for trainers that need `len()` and samplers.

    The index is built once from the tar headers; items are read with `os.pread`, so DataLoader workers share
    nothing but the index. Items are the dicts `ShardDataset` yields. Crops and flips draw from torch's
    global generator, which DataLoader seeds per worker.

    Args:
        source: shard directory, manifest, glob, brace pattern or list of local shard paths.
        gt_size, flip, rot, kair_keys: as for `ShardDataset`.
    """

    def __init__(
        self,
        source: str | Path | list[str | Path],
        *,
        gt_size: int | None = None,
        flip: bool = False,
        rot: bool = False,
        kair_keys: bool = False,
    ):
        self.urls = shard_urls(source)
        remote = [u for u in self.urls if u.startswith("pipe:") or "://" in u]
        if remote:
            raise UserError(f"{remote[0]}: random access needs local shards; use ShardDataset for streamed URLs.")
        counts = None
        if isinstance(source, (str, Path)) and (Path(source) / MANIFEST).is_file():
            counts = [s["samples"] for s in read_manifest(source)["shards"]]
        self.entries: list[Entry] = []
        for i, url in enumerate(self.urls):
            samples = index_shard(url)
            for key, members in samples:
                missing = [ext for ext in MEMBERS if ext not in members]
                if missing:
                    raise ShardError(f"{url}: {key}: missing {', '.join(missing)}; re-export the shard.")
            if counts is not None and len(samples) != counts[i]:
                raise ShardError(f"{url}: holds {len(samples)} samples, the manifest says {counts[i]}; re-export it.")
            self.entries.extend(Entry(i, key, members) for key, members in samples)
        self.gt_size, self.flip, self.rot, self.kair_keys = gt_size, flip, rot, kair_keys
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.entries)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked into a worker: open our own descriptors
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.urls[shard], os.O_RDONLY)
        return self._fds[shard]

    def raw(self, index: int) -> dict[str, Any]:
        """The undecoded sample: {"__key__", "__url__", extension: bytes}."""
        entry = self.entries[index]
        fd = self._fd(entry.shard)
        raw: dict[str, Any] = {"__key__": entry.key, "__url__": self.urls[entry.shard]}
        for ext, (offset, size) in entry.members.items():
            raw[ext] = os.pread(fd, size, offset)
        return raw

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = decode_sample(self.raw(index), self.kair_keys)
        if self.gt_size is None and not self.flip and not self.rot:
            return sample
        rng = random.Random(int(torch.randint(0, 2**62, (1,))))
        return paired_augment(sample, rng, self.gt_size, self.flip, self.rot)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, -1  # descriptors do not travel to spawned workers
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def verify_shards(source: str | Path) -> list[str]:
    """Check paired shards: every checksum and count against the manifest, and every sample decoded.

    Returns a list of faults, each naming the shard (and the key where there is one); empty when all is well.
    A source without a manifest (a glob, a list) is checked by decoding alone.
    """
    faults: list[str] = []
    directory = Path(source) if Path(source).is_dir() else None
    expected: dict[str, dict[str, Any]] = {}
    if directory is not None and (directory / MANIFEST).is_file():
        manifest = read_manifest(directory)
        expected = {str(directory / s["name"]): s for s in manifest["shards"]}
        listed = {s["name"] for s in manifest["shards"]}
        faults += [
            f"{p.name}: not listed in the manifest" for p in sorted(directory.glob("*.tar")) if p.name not in listed
        ]
        urls = list(expected)
    else:
        urls = shard_urls(source)
    seen: set[str] = set()
    for url in urls:
        name = Path(url).name if directory is not None else url
        if url in expected:
            if not Path(url).is_file():
                faults.append(f"{name}: missing")
                continue
            if sha256_file(url) != expected[url]["sha256"]:
                faults.append(f"{name}: sha256 does not match the manifest (the file changed)")
        count = 0
        try:
            for raw in iter_raw_samples(url, on_error="raise"):
                count += 1
                problem = check_sample(raw)
                if raw["__key__"] in seen:
                    problem = problem or "duplicate key"
                seen.add(raw["__key__"])
                if problem:
                    faults.append(f"{name}: {raw['__key__']}: {problem}")
        except ShardError as e:
            faults.append(f"{name}: {str(e).removeprefix(url + ': ')}")
            continue
        if url in expected and count != expected[url]["samples"]:
            faults.append(f"{name}: holds {count} samples, the manifest says {expected[url]['samples']}")
    return faults


def check_sample(raw: dict[str, Any]) -> str | None:
    """Decode one raw sample and check its parts agree; return the problem, or None."""
    try:
        sample = decode_sample(raw)
        meta = json.loads(raw["json"])
    except ShardError as e:
        return str(e).split(": ", 2)[-1]
    except ValueError as e:
        return f"bad json metadata ({e})"
    lq, gt = sample["lq"], sample["gt"]
    scale = meta.get("scale")
    if scale and (gt.shape[-1] != lq.shape[-1] * scale or gt.shape[-2] != lq.shape[-2] * scale):
        return f"HR {tuple(gt.shape[-2:])} is not {scale}x LR {tuple(lq.shape[-2:])}"
    if meta.get("seed") != sample["seed"]:
        return f"seed.txt {sample['seed']} differs from the json seed {meta.get('seed')}"
    return None


def summarize_shards(source: str | Path, examples: int = 0) -> dict[str, Any]:
    """Count and describe paired shards by reading every sample's metadata (what `degrade inspect` shows).

    Returns a dict with shards, samples, degrader, seed range, HR and LR sizes, scales, sources, the manifest
    (or None) and the first `examples` decoded samples (for a contact sheet).
    """
    manifest = read_manifest(source) if Path(source).is_dir() and (Path(source) / MANIFEST).is_file() else None
    urls = shard_urls(source)
    seeds: list[int] = []
    hr_sizes, lr_sizes, degraders, sources = set(), set(), set(), set()
    decoded: list[dict[str, Any]] = []
    for url in urls:
        for raw in iter_raw_samples(url):
            meta = json.loads(raw["json"])
            seeds.append(int(raw["seed.txt"]))
            hr_sizes.add(tuple(meta.get("hr_size", ())))
            lr_sizes.add(tuple(meta.get("lr_size", ())))
            degraders.add((meta.get("degrader"), meta.get("degrader_sha256")))
            sources.add(meta.get("source"))
            if len(decoded) < examples:
                decoded.append(decode_sample(raw))
    return {
        "shards": len(urls),
        "samples": len(seeds),
        "seed_min": min(seeds, default=None),
        "seed_max": max(seeds, default=None),
        "unique_seeds": len(set(seeds)),
        "hr_sizes": sorted(hr_sizes),
        "lr_sizes": sorted(lr_sizes),
        "degraders": sorted(degraders, key=str),
        "sources": len(sources),
        "manifest": manifest,
        "examples": decoded,
    }
