"""`ShardMapDataset`: random access to paired shards through an index of their tar headers.

It serves trainers that need `len()` and samplers (BasicSR's loop) and `sr train`, whose exact resume draws
items as `(index, seed)` so that a crop depends on the sample's position in the stream, not on a worker's RNG.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from degrader.errors import ShardError, UserError
from degrader.files import sha256_file
from degrader.shards.format import check_complete, shard_urls, source_manifest
from degrader.shards.sample import decode_sample, paired_augment
from degrader.shards.tar import index_shard


class Entry(NamedTuple):
    shard: int  # index into the dataset's shard list
    key: str
    members: dict[str, tuple[int, int]]  # extension -> (byte offset, size) in the shard


class ShardMapDataset(Dataset):
    """Random access by index to every sample of local shards, for trainers that need `len()` and samplers.

    The index is built once from the tar headers; items are read with `os.pread`, so DataLoader workers share
    nothing but the index. Items are the dicts `ShardDataset` yields, or (lq, gt) with `pairs=True`.

    An item is `dataset[index]`, whose crop and flips draw from torch's global generator (which DataLoader
    seeds per worker), or `dataset[(index, seed)]`, whose crop and flips draw from `seed` alone, as `sr train`'s
    resumable sampler gives them: the same stream whatever the number of workers.

    Args:
        source: shard directory, manifest, glob, brace pattern or list of local shard paths.
        gt_size, flip, rot, kair_keys: as for `ShardDataset`.
        pairs: items are the tuple (lq, gt) instead of the dict.
        check_sha256: compare every shard's sha256 with the manifest's once, here (a source with a manifest);
            a changed shard raises a `ShardError` instead of training on altered data. Reads every byte once.
            Without it the cheap checks still run: keys unique across shards, and per item the PNG CRCs and the
            sizes and seed against the sample's json and the manifest's hr_size and scale.
    """

    def __init__(
        self,
        source: str | Path | list[str | Path],
        *,
        gt_size: int | None = None,
        flip: bool = False,
        rot: bool = False,
        kair_keys: bool = False,
        pairs: bool = False,
        check_sha256: bool = False,
    ):
        self.urls = shard_urls(source)
        remote = [u for u in self.urls if u.startswith("pipe:") or "://" in u]
        if remote:
            raise UserError(f"{remote[0]}: random access needs local shards; use ShardDataset for streamed URLs.")
        manifest = source_manifest(source)
        entries = None if manifest is None else manifest["shards"]
        self.promised = None if manifest is None else manifest["config"]  # its hr_size and scale, where recorded
        self.entries: list[Entry] = []
        first_shard: dict[str, str] = {}  # key -> the shard that holds it
        for i, url in enumerate(self.urls):
            samples = index_shard(url)
            for key, members in samples:
                check_complete(url, key, members)
                if first_shard.setdefault(key, url) != url:
                    raise ShardError(f"{url}: {key}: also in {first_shard[key]}; a shard is listed twice or copied.")
            if entries is not None and len(samples) != entries[i]["samples"]:
                expected = entries[i]["samples"]
                raise ShardError(f"{url}: holds {len(samples)} samples, the manifest says {expected}; re-export it.")
            if check_sha256 and entries is not None and sha256_file(url) != entries[i]["sha256"]:
                raise ShardError(f"{url}: sha256 does not match the manifest (the file changed); re-export it.")
            self.entries.extend(Entry(i, key, members) for key, members in samples)
        self.gt_size, self.flip, self.rot, self.kair_keys, self.pairs = gt_size, flip, rot, kair_keys, pairs
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def view(self, **options: Any) -> ShardMapDataset:
        """The same index with other item options (`gt_size`, `flip`, `rot`, `kair_keys`, `pairs`); no re-read."""
        unknown = set(options) - {"gt_size", "flip", "rot", "kair_keys", "pairs"}
        if unknown:
            raise TypeError(f"view() got unexpected options {sorted(unknown)}")
        other = copy.copy(self)
        other.__dict__.update(options, _fds={}, _pid=os.getpid())  # its own descriptors, closed by its own __del__
        return other

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

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = decode_sample(self.raw(index), self.kair_keys, self.promised)
        if self.gt_size is not None or self.flip or self.rot:
            rng = random.Random(int(torch.randint(0, 2**62, (1,))) if seed is None else seed)
            sample = paired_augment(sample, rng, self.gt_size, self.flip, self.rot)
        return (sample["lq"], sample["gt"]) if self.pairs else sample

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, -1  # descriptors do not travel to spawned workers
        return state

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
