"""The export's worker processes: the loader's groups of images, and the shard writers, processes that PNG-encode
the LR images, build each sample's members, and write, fsync and hash the tar, one shard at a time each, so that
different shards are written at once.

The main process only degrades and dispatches. It hands the samples of shard `s` to writer `s % n` in chunks
(`Chunk`: the LR images as one uint8 array, the HR PNG bytes its loader workers made, keys and metadata) and
takes the results back in the order it sent them, so shards are recorded complete in order. With no writer
processes the same code runs in the main process; the bytes are the same either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset

from degrader.crops import HRCrops, crop_id
from degrader.shards import ShardWriter, encode_png, sample_key, sample_seed

MEMORY = 1 << 30  # bytes of pairs that may wait for the writers; past it, fewer shards are written at once


class Chunk(NamedTuple):
    """Consecutive samples of one shard, as the main process hands them to its writer."""

    shard: int  # the shard's number (`shard_name`)
    keys: list[str]
    metas: list[dict[str, Any]]  # each sample's json member, but for `ChunkWriter.common` and lr_size
    hr_pngs: list[bytes]
    lr: np.ndarray  # (n, h, w, 3) uint8


class ChunkWriter:
    """Writes chunks into their shards, a `ShardWriter` per shard begun; lives in a writer process or in main."""

    def __init__(self, out: Path, samples_per_shard: int, rank: int | None, common: dict[str, Any], level: int):
        self.out, self.samples_per_shard, self.rank, self.common = out, samples_per_shard, rank, common
        self.level = level  # the LR PNG's zlib level
        self.open: dict[int, ShardWriter] = {}

    def write(self, chunk: Chunk) -> dict[str, Any] | None:
        """Append a chunk's samples to its shard; the shard's entry when they complete it."""
        writer = self.open.get(chunk.shard)
        if writer is None:
            writer = ShardWriter(self.out, self.samples_per_shard, first_shard=chunk.shard, rank=self.rank)
            self.open[chunk.shard] = writer
        entry = None
        for key, meta, hr_png, lr in zip(chunk.keys, chunk.metas, chunk.hr_pngs, chunk.lr, strict=True):
            meta = {**meta, **self.common, "lr_size": list(lr.shape[:2])}
            members = {"hr.png": hr_png, "lr.png": encode_png(lr, self.level), "seed.txt": str(meta["seed"]).encode()}
            members["json"] = json.dumps(meta, sort_keys=True).encode()
            entry = writer.write(key, members)
        if entry is not None:
            del self.open[chunk.shard]
        return entry

    def finish(self, shard: int) -> dict[str, Any] | None:
        """Close a shard that holds fewer than `samples_per_shard` samples (the last one); its entry."""
        writer = self.open.pop(shard, None)
        return None if writer is None else writer.finish_shard()

    def abort(self) -> None:
        """Drop every shard begun (their temporary files are removed)."""
        for writer in self.open.values():
            writer.abort()
        self.open.clear()


def identity(x: Any) -> Any:
    return x


def die_with_parent(*_: Any) -> None:
    """Workers end at once when the exporting process is killed, instead of lingering as orphans (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Groups(Dataset):
    """`size` consecutive images of `crops` as one loader item, each with the (key, seed) of its samples: the
    loader's own cost per item (a queue round trip, pickling) is paid once per group, and the hashing that keys
    and seeds cost is done in the loader's workers, not in the main process."""

    def __init__(self, crops: HRCrops, size: int, per_image: int):
        self.crops, self.size, self.per_image = crops, size, per_image

    def __len__(self) -> int:
        return -(-len(self.crops) // self.size)

    def __getitem__(self, j: int) -> list:
        items = []
        for i in range(j * self.size, min(len(self.crops), (j + 1) * self.size)):
            i, image_id, crops, reason = self.crops[i]
            seed, mode, ks = self.crops.seed, self.crops.mode, range(self.per_image)
            names = [[(sample_key(image_id, c, k), sample_seed(seed, crop_id(image_id, c, mode), k)) for k in ks]
                     for c in range(len(crops))]  # fmt: skip
            items.append((i, image_id, crops, reason, names))
        return items


_WRITER: ChunkWriter | None = None  # a writer process's own


def _start(*args: Any) -> None:
    """A writer process: it ends with the exporting process, and leaves Ctrl-C to it, which aborts it."""
    global _WRITER
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WRITER = ChunkWriter(*args)


def _write(chunk: Chunk) -> dict[str, Any] | None:
    assert _WRITER is not None
    return _WRITER.write(chunk)


def _finish(shard: int) -> dict[str, Any] | None:
    assert _WRITER is not None
    return _WRITER.finish(shard)


def _abort() -> None:
    if _WRITER is not None:
        _WRITER.abort()


def _done(fn: Any, *args: Any) -> Future:
    """`fn(*args)` run here, as a finished future."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as e:
        future.set_exception(e)
    return future


class ShardWriters:
    """`processes` writer processes (none: the main process writes), shard `s` to writer `s % processes`."""

    def __init__(
        self, out: Path, samples_per_shard: int, rank: int | None, common: dict[str, Any], level: int, processes: int
    ):
        args = (out, samples_per_shard, rank, common, level)
        self.local = ChunkWriter(*args) if processes == 0 else None
        self.pools = [ProcessPoolExecutor(1, initializer=_start, initargs=args) for _ in range(processes)]
        for pool in self.pools:  # started now, before the loader's workers: each fork copies a small process
            pool.submit(int).result()

    def write(self, chunk: Chunk) -> Future:
        """Hand a chunk to its shard's writer; the future's result is the shard's entry when the chunk ends it."""
        if self.local is not None:
            return _done(self.local.write, chunk)
        return self.pools[chunk.shard % len(self.pools)].submit(_write, chunk)

    def finish(self, shard: int) -> dict[str, Any] | None:
        """Close the last shard when it holds fewer than `samples_per_shard` samples; its entry (waits for it)."""
        if self.local is not None:
            return self.local.finish(shard)
        return self.pools[shard % len(self.pools)].submit(_finish, shard).result()

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()

    def abort(self, pending: list[Future]) -> None:
        """After a failure: cancel the chunks not begun, drop every shard begun, and stop the writers."""
        if self.local is not None:
            self.local.abort()
        for future in pending:
            future.cancel()
        for pool in self.pools:
            with contextlib.suppress(Exception):  # a writer that died (BrokenProcessPool) has nothing to drop
                pool.submit(_abort).result()
            pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Leave the objects alive now out of garbage collection for the block (`gc.freeze`). With torch loaded they
    number hundreds of thousands, and each full collection, set off by the export's own allocations, walked them
    all in the main process (a quarter of its time with the bicubic degrader); forked workers copy fewer pages."""
    if gc.get_freeze_count():  # frozen by the caller already: theirs to undo
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def in_flight_limit(processes: int, samples_per_shard: int, batch_size: int, hr_size: int) -> int:
    """Samples that may wait for the writers: a whole shard per writer, so that all of them work at once, within
    `MEMORY` (each pair held as its HR PNG, at most about the HR pixels, and its LR pixels)."""
    per_pair = hr_size * hr_size * 3 * 17 // 16 + 1024
    return max(2 * batch_size, min(processes * samples_per_shard + batch_size, MEMORY // per_pair))
