"""The iterable reader in webdataset's shape: small generator steps, chained by `ShardDataset`.

    shard list -> split by node -> split by worker -> samples (strict tar) -> shuffle -> decode -> augment

Each step is a plain generator function that works on its own. Errors go to a handler function, as in
webdataset: `reraise_exception` (the default) stops the stream with a `ShardError` naming shard and key;
`warn_and_continue` warns and skips the broken part. A handler of your own either raises (stop) or returns
(skip and go on).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, islice
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from degrader.errors import ShardError
from degrader.shards.format import MEMBERS, check_complete, shard_urls, source_manifest
from degrader.shards.sample import decode_sample, paired_augment
from degrader.shards.tar import iter_tar, member_fault, open_url, split_name

T = TypeVar("T")
Handler = Callable[[Exception], Any]  # raises to stop the stream; returns to skip the broken part


def reraise_exception(exn: Exception) -> bool:
    """Stop at the first broken shard or sample: raise the error (the default)."""
    raise exn


def warn_and_continue(exn: Exception) -> bool:
    """Warn, naming the shard and key, and skip the broken sample (or the rest of a broken shard)."""
    warnings.warn(f"skipping: {exn}", stacklevel=2)
    return True


def error_handler(on_error: str | Handler) -> Handler:
    """The handler for `on_error`: "raise", "warn", or a handler function itself."""
    if callable(on_error):
        return on_error
    if on_error == "raise":
        return reraise_exception
    if on_error == "warn":
        return warn_and_continue
    raise ValueError(f"on_error must be 'raise', 'warn' or a function, not {on_error!r}")


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torch.distributed when initialised, else from RANK / WORLD_SIZE, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int]:
    """(worker id, workers) of the DataLoader worker running this, or (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def shard_list(urls: Sequence[str], shuffle_seed: str | None = None) -> list[str]:
    """The shards in order, or shuffled from `shuffle_seed`: the same order in every rank and worker, so the
    splits after it partition the shards."""
    order = list(urls)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    return order


def split_by_node(items: Iterable[T], rank: int, world: int, workers: int = 1) -> Iterator[T]:
    """This rank's items: blocks of `workers` consecutive items dealt to the ranks in turn, so that after
    `split_by_worker` the worker in slot rank * workers + worker holds every (world * workers)-th item."""
    for i, item in enumerate(items):
        if (i // workers) % world == rank:
            yield item


def split_by_worker(items: Iterable[T], worker: int, workers: int) -> Iterator[T]:
    """Every `workers`-th item, from the `worker`-th on."""
    for i, item in enumerate(items):
        if i % workers == worker:
            yield item


def tar_samples(
    urls: Iterable[str],
    handler: Handler = reraise_exception,
    counts: dict[str, int] | None = None,
    *,
    seen: dict[str, str] | None = None,
    sha256: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of each shard as {"__key__", "__url__", ext: bytes, ...}, each checked complete.

    A shard that cannot be opened or is corrupt goes to `handler`; if it returns, the rest of that shard is
    skipped (a last sample read whole is kept). An incomplete sample, one with a member twice, a key seen
    before in the shard, a shard whose first key is another shard's first key (`seen`, first key -> shard,
    kept across the shards: a shard listed twice or copied, found in memory per shard, not per sample), and a
    shard holding another number of samples than `counts` (url -> samples, from the manifest) go to `handler`.
    With `sha256` (url -> hex digest), a local shard whose bytes differ goes to `handler` before any of its
    samples is read.
    """
    for url in urls:
        sample: dict[str, Any] = {}
        keys: set[str] = set()
        fault: str | None = None  # what is wrong with `sample`, found while reading its members
        try:
            with open_url(url) as stream:
                if sha256 is not None and url in sha256 and _digest(stream) != sha256[url]:
                    raise ShardError(f"{url}: sha256 does not match the manifest (the file changed); re-export it.")
                for name, data in iter_tar(stream, url):
                    key, ext = split_name(name)
                    if sample and sample["__key__"] != key:
                        yield from _if_whole(sample, fault, handler)
                        sample, fault = {}, None
                    if not keys and seen is not None and seen.setdefault(key, url) != url:  # the whole shard again
                        raise ShardError(f"{url}: {key}: also in {seen[key]}; a shard is listed twice or copied.")
                    fault = fault or member_fault(key, ext, sample, keys)
                    keys.add(key)
                    sample.setdefault("__key__", key)
                    sample["__url__"] = url
                    if fault is None:
                        sample[ext] = data
        except (ShardError, OSError) as e:
            handler(e if isinstance(e, ShardError) else ShardError(f"{url}: cannot read ({e}); check the path or URL."))
            if sample and fault is None and all(ext in sample for ext in MEMBERS):
                yield sample
            continue
        if sample:
            yield from _if_whole(sample, fault, handler)
        if counts is not None and url in counts and len(keys) != counts[url]:
            handler(ShardError(f"{url}: holds {len(keys)} samples, the manifest says {counts[url]}; re-export it."))


def _digest(stream: Any) -> str:
    """The sha256 of a local shard's bytes, read through its open stream, which is then rewound."""
    digest = hashlib.sha256()
    while block := stream.read(1 << 20):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def ring_samples(
    urls: Sequence[str],
    counts: Sequence[int],
    start: int,
    handler: Handler = reraise_exception,
    expected: dict[str, int] | None = None,
    sha256: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of `urls` (holding `counts` samples) from global position `start` round to `start` - 1.

    Only the shards that hold these positions are opened; the samples before `start` in its shard are read
    (not decoded) and dropped. A shard met twice in the round goes to `handler` (see `tar_samples`).
    """
    seen: dict[str, str] = {}
    offsets = list(accumulate(counts, initial=0))
    first = bisect.bisect_right(offsets, start) - 1
    skip = start - offsets[first]
    order = [*range(first, len(urls)), *range(first)] + ([first] if skip else [])
    for n, j in enumerate(order):
        samples = tar_samples(
            [urls[j]], handler, expected, seen=None if skip and n == len(order) - 1 else seen, sha256=sha256
        )
        if n == 0 and skip:
            samples = islice(samples, skip, None)
        elif n == len(order) - 1 and skip:
            samples = islice(samples, skip)  # the start of the first shard, at the end of the round
        yield from samples


def _if_whole(sample: dict[str, Any], fault: str | None, handler: Handler) -> Iterator[dict[str, Any]]:
    try:
        if fault is not None:
            raise ShardError(f"{sample['__url__']}: {sample['__key__']}: {fault}; re-export the shard.")
        check_complete(sample["__url__"], sample["__key__"], sample)
    except ShardError as e:
        handler(e)
        return
    yield sample


def shuffle(samples: Iterable[T], buffer_size: int, rng: random.Random) -> Iterator[T]:
    """Shuffle through a buffer of `buffer_size` items drawn with `rng` (no shuffling for a size of 0 or 1)."""
    if buffer_size <= 1:
        yield from samples
        return
    buffer: list[T] = []
    for item in samples:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def decode(
    samples: Iterable[dict[str, Any]],
    kair_keys: bool = False,
    handler: Handler = reraise_exception,
    promised: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Raw samples to tensors (see `decode_sample`, `promised` the manifest's config); a sample that does not
    decode, or breaks what its json or the manifest promise of it, goes to `handler`."""
    for raw in samples:
        try:
            sample = decode_sample(raw, kair_keys, promised)
        except ShardError as e:
            handler(e)
            continue
        yield sample


def augment(
    samples: Iterable[dict[str, Any]], rng: random.Random, gt_size: int | None, flip: bool, rot: bool
) -> Iterator[dict[str, Any]]:
    """The aligned random crop and flips of `paired_augment`, drawn with `rng`."""
    for sample in samples:
        yield paired_augment(sample, rng, gt_size, flip, rot)


def passes(make_pass: Callable[[int], Iterable[T]], repeat: bool) -> Iterator[T]:
    """One pass (`make_pass(0)`), or pass after pass (`make_pass(1)`, ...) while they yield anything."""
    cycle = 0
    while True:
        got = 0
        for item in make_pass(cycle):
            got += 1
            yield item
        if not repeat or got == 0:
            return
        cycle += 1


class ShardDataset(IterableDataset):
    """Iterate paired shards as dicts {"lq", "gt", "seed", "key", "lq_path", "gt_path"} (+ "L", "H" for KAIR).

    Work is split over DDP ranks and DataLoader workers so each sample is read by exactly one of them per epoch.
    In one process, workers split by shard when there are at least as many shards as workers, else by sample.
    Under DDP (world > 1) every rank must yield the same number of samples, or training hangs at the end of
    an epoch: the manifest's counts place the epoch's samples (in shard order) on a ring, and each rank, then
    each worker, reads a contiguous stretch of ceil(N / world) of them, opening only the shards it needs. So
    every sample is read once per epoch, and when N is not a multiple of the world size, fewer than `world`
    samples are read twice (as DistributedSampler pads). Without a manifest (bare URLs), set `epoch_length`.

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
        check_sha256: compare each shard's sha256 with the manifest's before reading its samples (a source
            with a manifest), so a changed shard never yields a sample. Reads every byte once more. Without it
            the cheap checks still run: PNG CRCs, sizes and seeds against the json and manifest, no shard twice.
        on_error: "raise" a `ShardError` naming shard and key, "warn" and skip the broken part, or a handler
            function (`reraise_exception`, `warn_and_continue` or your own: raise to stop, return to skip).

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
        check_sha256: bool = False,
        on_error: str | Handler = "raise",
    ):
        super().__init__()
        self.handler = error_handler(on_error)
        self.urls = shard_urls(source)
        manifest = source_manifest(source)
        entries = None if manifest is None else manifest["shards"]
        self.counts = None if entries is None else [e["samples"] for e in entries]
        self.expected = None if self.counts is None else dict(zip(self.urls, self.counts, strict=True))
        self.promised = None if manifest is None else manifest["config"]  # its hr_size and scale, where recorded
        self.sha256 = None
        if check_sha256 and entries is not None:
            self.sha256 = {url: e["sha256"] for url, e in zip(self.urls, entries, strict=True)}
        self.shuffle, self.buffer_size, self.seed, self.epoch = shuffle, buffer_size, seed, 0
        self.epoch_length, self.gt_size, self.flip, self.rot = epoch_length, gt_size, flip, rot
        self.kair_keys = kair_keys

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
        return -(-sum(self.counts) // world)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world = dist_info()
        worker, workers = worker_info()
        quota = None  # this worker's share of a fixed epoch length
        if self.epoch_length is not None:
            per_rank = self.epoch_length // world
            quota = per_rank // workers + (worker < per_rank % workers)
        rng = random.Random(f"{self.seed}:{self.epoch}:{rank * workers + worker}")  # buffer, crops and flips
        by_shard = len(self.urls) >= world * workers  # else every worker reads every shard and keeps its samples

        def split(items: Iterable[T]) -> Iterator[T]:
            return split_by_worker(split_by_node(items, rank, world, workers), worker, workers)

        def one_pass(cycle: int) -> Iterator[dict[str, Any]]:
            urls = shard_list(self.urls, f"{self.seed}:{self.epoch}:{cycle}" if self.shuffle else None)
            samples = tar_samples(
                split(urls) if by_shard else urls, self.handler, self.expected, seen={}, sha256=self.sha256
            )
            return shuffle(samples if by_shard else split(samples), self.buffer_size if self.shuffle else 0, rng)

        if self.epoch_length is None and world > 1:
            stream = self._rank_stretch(rank, world, worker, workers, rng)
        else:
            stream = passes(one_pass, repeat=quota is not None)
        stream = decode(stream, self.kair_keys, self.handler, self.promised)
        stream = augment(stream, rng, self.gt_size, self.flip, self.rot)
        return islice(stream, quota) if quota is not None else stream

    def _rank_stretch(self, rank: int, world: int, worker: int, workers: int, rng: random.Random) -> Iterator:
        """Under DDP without `epoch_length`: this worker's contiguous stretch of the epoch's ring of samples.

        Ranks get ceil(N / world) samples each, split over their workers as evenly as can be; samples a
        handler skipped are made up from the ring's next positions, so every rank still yields its count.
        """
        if self.counts is None:
            raise ValueError(
                f"under DDP ({world} ranks) every rank must read as many samples: read the shards through their "
                "directory or manifest (sample counts), or set epoch_length"
            )
        order = shard_list(range(len(self.urls)), f"{self.seed}:{self.epoch}:0" if self.shuffle else None)
        urls, counts = [self.urls[j] for j in order], [self.counts[j] for j in order]
        total, per_rank = sum(counts), -(-sum(counts) // world)
        quota = per_rank // workers + (worker < per_rank % workers)
        start = (rank * per_rank + worker * (per_rank // workers) + min(worker, per_rank % workers)) % max(total, 1)
        raw = passes(lambda _: ring_samples(urls, counts, start, self.handler, self.expected, self.sha256), repeat=True)
        return shuffle(islice(raw, quota), self.buffer_size if self.shuffle else 0, rng)
