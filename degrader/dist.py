"""Several processes, one run: PyTorch's own stack (torchrun, DistributedDataParallel, torch.distributed).

Every long command runs unchanged under `torchrun --nproc_per_node N` (and multi-node torchrun). torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; `init()` joins that process group (NCCL for CUDA tensors,
gloo for CPU ones) and is a no-op in a single process, so single-process runs do exactly what they did before.

How the trainers use it, and why:
- Data: the global batch (`--batch-size`) is split into `world` equal, contiguous parts (`BatchPart`, `part`),
  drawn from the single-process (seed, position) stream, so the ranks together see exactly the batches, crops
  and noise of a single-process run, and `--resume` may continue on another number of ranks.
- Gradients: `wrap` is DDP, which averages gradients over ranks: with equal parts, the average of the ranks'
  batch means is the global batch mean.
- Batch norm: on CUDA the generators' BN layers become `SyncBatchNorm` (`sync_batchnorm`), so statistics come
  from the global batch as in a single process, whatever the rank count (16 images over 8 GPUs would otherwise
  normalise by 2). PyTorch's SyncBatchNorm runs on GPUs only, so CPU (gloo) runs keep per-rank statistics
  (and per-rank running averages, which only eval uses: rank 0's are saved).
- Spectral norm: its power iteration updates the buffers `u`, `v` in every training forward, from the weight
  alone (no data), and DDP keeps the weights identical, so every rank computes the same `u` with no
  communication. DDP's default broadcast of rank 0's buffers before each forward is therefore switched off
  (`forward_sync_buffers=False`, formerly `broadcast_buffers`; buffers are still synced once, at wrapping): it
  would only repeat that work for each of D's calls per step (real, fake).
- Several forwards, one backward: D is called on real and on fake images, then `loss.backward()` once; autograd
  sums both uses of a weight before DDP's hook fires, so one all-reduce per step suffices (no `no_sync`).
  Where a network only passes gradients through (D, frozen, in the G step), the plain module is called, not
  its DDP wrapper, which would wait for gradients its parameters never get (under `no_grad` either is fine).
- Files: only rank 0 (`is_main`) writes checkpoints, logs and sample grids; `on_main` runs a step there and
  hands its result, or its error, to every rank.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from degrader.errors import UserError

T = TypeVar("T")


def init() -> None:
    """Join torchrun's process group (from its environment variables); a no-op without torchrun or when joined."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())  # "cuda" now means this process's GPU everywhere
        dist.init_process_group("cuda:nccl,cpu:gloo")
    else:
        dist.init_process_group("gloo")
    # Leave the group before the interpreter tears down: exiting with gloo's threads alive aborts the process
    # now and then ("terminate called without an active exception"), which fails a finished run.
    atexit.register(_leave)


def _quiet_barrier() -> None:
    with contextlib.suppress(Exception):  # a broken group: leave anyway
        barrier()  # on the CPU group, whichever backend carries the model


def _leave(wait: float = 30.0) -> None:
    """No rank closes its connections while another still uses them: meet at a barrier, then leave the group.

    A rank that exits alone (an error on that rank only) waits at most `wait` seconds, then exits without it.
    """
    if not dist.is_initialized():
        return
    met = threading.Thread(target=_quiet_barrier, daemon=True)
    met.start()
    met.join(wait)
    if not met.is_alive():
        # DDP wrappers left in reference cycles keep the process group (and gloo's threads) alive past
        # destroy_process_group, until the interpreter's teardown destroys them: collect them first.
        gc.collect()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a CPU all-reduce, so it works whichever backend carries the model)."""
    if world() > 1:
        dist.all_reduce(torch.zeros(1))


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (e.g. Ctrl-C seen by one process: all stop at one step)."""
    if world() == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(logs: dict[str, float]) -> dict[str, float]:
    """Each number averaged over the ranks (their parts are equal, so this is the global batch's value)."""
    if world() == 1 or not logs:
        return logs
    t = torch.tensor([float(v) for v in logs.values()], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / world() for k, v in zip(logs, t.tolist(), strict=True)}


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and return its result on every rank; a `UserError` there is raised on every rank.

    The result must pickle (it crosses the process group, between our own processes only).
    """
    if world() == 1:
        return fn()
    message: list[Any] = [None]
    if is_main():
        try:
            message = [("ok", fn())]
        except UserError as e:
            message = [("error", str(e))]
        except BaseException as e:
            message = [("crash", f"rank 0 failed: {type(e).__name__}: {e}")]
            dist.broadcast_object_list(message, src=0)
            raise
    dist.broadcast_object_list(message, src=0)
    kind, value = message[0]
    if kind == "ok":
        return value
    raise UserError(value)


def gather_to_main(value: T) -> list[T] | None:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere). Values must pickle."""
    if world() == 1:
        return [value]
    values: list[Any] = [None] * world() if is_main() else None
    dist.gather_object(value, values, dst=0)
    return values


def check_batch(batch_size: int, option: str = "--batch-size") -> None:
    """Every rank must get an equal part of the global batch."""
    if batch_size % world():
        raise UserError(
            f"{option} {batch_size} is the global batch; it must divide evenly over the {world()} processes "
            f"(e.g. {option} {-(-batch_size // world()) * world()})."
        )


def part(x: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of the rows of `x`, a tensor drawn for the global batch."""
    n = x.shape[0] // world()
    return x[rank() * n : (rank() + 1) * n]


class BatchPart(torch.utils.data.Sampler):
    """This rank's share of a sampler's stream: the `rank`-th of `world` contiguous slices of each global batch.

    `sampler` must start at a global batch boundary (its position a multiple of `batch_size`), as every
    resumable loader here does (positions = batches consumed x batch size).
    """

    def __init__(self, sampler: Iterable[T], batch_size: int, rank: int, world: int):
        if batch_size % world:
            raise UserError(f"a global batch of {batch_size} does not split evenly over {world} processes.")
        self.sampler, self.batch_size, self.rank, self.world = sampler, batch_size, rank, world

    def __iter__(self) -> Iterator[T]:
        b = self.batch_size // self.world
        lo = self.rank * b
        for i, item in enumerate(self.sampler):
            if lo <= i % self.batch_size < lo + b:
                yield item


def sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """BN layers as SyncBatchNorm when several CUDA processes train (global-batch statistics); else `net`."""
    if world() > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return net


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` in DistributedDataParallel when several processes train; `net` itself otherwise.

    Call the wrapper only where gradients flow into `net`'s parameters; see the module docstring.
    """
    if world() == 1:
        return net
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.14 renamed the switch (buffers are still synced once, at wrapping); older releases know the old name
    new = "forward_sync_buffers" in inspect.signature(ddp).parameters
    return ddp(net, device_ids=ids, **{"forward_sync_buffers" if new else "broadcast_buffers": False})
