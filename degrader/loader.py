"""The infinite, resumable loader: `InfiniteSampler` and the DataLoaders built on it (images: `images.py`).

Every sample is a pure function of `(index, sample_seed)`, so a run gives the same data whatever the number
of workers, and a resumed run continues the exact stream (`InfiniteSampler(start=...)`).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from pathlib import Path

import torch

from degrader.dist import BatchPart
from degrader.errors import UserError
from degrader.images import ImageFolder, hash_int


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields `(index, sample_seed)` forever, reproducibly and resumably.

    Position p belongs to epoch p // n, whose order is a permutation seeded by (seed, epoch); the sample
    seed is a hash of (seed, p). `start` jumps to position `start` directly: with a DataLoader of batch size
    B, a run resumed after `k` batches passes `start=k * B`.
    """

    def __init__(self, n: int, seed: int, start: int = 0):
        if n <= 0:
            raise UserError("cannot sample from an empty image list.")
        self.n, self.seed, self.start = n, seed, start

    def _perm(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        random.Random(hash_int("perm", self.seed, epoch)).shuffle(order)  # stable across Python versions
        return order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        while True:
            epoch, offset = divmod(p, self.n)
            order = self._perm(epoch)
            for i in range(offset, self.n):
                yield order[i], hash_int("sample", self.seed, p)
                p += 1


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader worker init: leave Ctrl-C to the main process.

    `degrader.run.deferred_interrupt` turns Ctrl-C into a flag checked between steps; the terminal sends it
    to the workers too, and a worker killed by it would take away the batches the current step still needs.
    Module-level so that it pickles for spawned workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    paths: list[Path],
    size: int,
    prep: str,
    augment: str,
    *,
    batch_size: int,
    seed: int,
    start: int = 0,
    workers: int = 0,
    cache_mb: float = 0,
    rank: int = 0,
    world: int = 1,
    failed_log: tuple[Path, str] | None = None,
    frame: float = 1.0,
) -> Iterator[torch.Tensor]:
    """An infinite iterator of (batch_size, 3, size, size) batches in [0, 1].

    The batches depend on (paths, size, prep, augment, batch_size, seed, start) only, not on `workers` or
    `cache_mb` (the decoded-image cache of each worker, see `ImageFolder`).
    `start` is a sample position (batches consumed x batch_size), for resuming. With `world` > 1 processes,
    this one gets the `rank`-th slice of each batch (batch_size // world images). `failed_log`, `frame`: see
    `ImageFolder`.
    """
    dataset = ImageFolder(paths, size, prep, augment, cache_mb, failed_log, frame)
    return infinite_loader(
        dataset, batch_size=batch_size, seed=seed, start=start, workers=workers, rank=rank, world=world
    )


def infinite_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    seed: int,
    start: int = 0,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Iterator:
    """Endless batches of `dataset` in `InfiniteSampler` order from sample position `start`; workers ignore Ctrl-C.

    With `world` > 1 (DDP), each batch is this rank's contiguous slice of the global batch of `batch_size`
    (`degrader.dist.BatchPart`): the ranks' batches, concatenated in rank order, are the single-process batch.
    """
    sampler = InfiniteSampler(len(dataset), seed, start)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size // world,
        sampler=sampler if world == 1 else BatchPart(sampler, batch_size, rank, world),
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_ignore_sigint if workers > 0 else None,
        pin_memory=False,
    )
    return iter(loader)
