"""How many CPU threads torch uses: a default that stays fast on a shared machine.

Torch's default is one intra-op thread per core. On a 2-core machine where another CPU-bound job runs, each
parallel region then waits for a thread the kernel has parked behind that job, and with OpenMP's default
wait policy the waiting threads spin and take the core away from the one they wait for: a `fit` ran 5-10x
slower than with one thread. The default policy here:

- counts the cores this process may run on (`os.sched_getaffinity`, so taskset, cgroup cpusets and
  Slurm/Kubernetes CPU pinning are respected), not the machine's cores;
- subtracts the cores that other processes keep busy right now (sampled from `/proc/stat` for a fraction
  of a second; `os.getloadavg` where that file is missing);
- subtracts one thread for every two DataLoader worker processes that share those cores;
- and asks OpenMP to sleep rather than spin while it waits (`OMP_WAIT_POLICY=PASSIVE`). OpenMP reads that
  variable once, when torch loads it, so `prepare_openmp()` must run before `import torch`.

An explicit count (`--threads N`) or `OMP_NUM_THREADS` in the environment always wins. The thread count
changes floating-point reduction order, so results are byte-identical only for the same count: record it
with the run.
"""

from __future__ import annotations

import math
import os
import sys
import time

from degrader.errors import UserError

WAIT_POLICY = "PASSIVE"  # OpenMP threads sleep while they wait instead of spinning (libgomp default: spin a while)
SAMPLE_SECONDS = 0.25  # how long `busy_cores` watches the CPUs
WORKERS_PER_THREAD = 2  # DataLoader worker processes that cost one intra-op thread


def prepare_openmp() -> bool:
    """Set OpenMP's passive wait policy unless the user chose one. Call before torch is imported.

    Returns:
        True if the setting can still take effect (torch not imported yet), False if it is too late.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def cpu_jiffies(cpus: set[int] | None, stat: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) jiffies summed over `cpus` (all if None) from Linux's /proc/stat."""
    busy = total = 0
    with open(stat) as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
                continue
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return busy, total


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many of this process's cores other processes keep busy now (0.0 on a quiet machine).

    Watches the CPUs for `seconds` and subtracts this process's own CPU time. Uses the 1-minute load
    average where /proc/stat is missing; it lags a new job by a minute and counts this process's own past work.
    """
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = None
    try:
        busy0, total0 = cpu_jiffies(cpus)
        own0, wall0 = sum(os.times()[:2]), time.monotonic()
        time.sleep(seconds)
        busy1, total1 = cpu_jiffies(cpus)
        own1, wall1 = sum(os.times()[:2]), time.monotonic()
    except (OSError, ValueError):
        try:
            return max(0.0, os.getloadavg()[0])
        except (AttributeError, OSError):
            return 0.0
    if total1 <= total0:
        return 0.0
    cores = len(cpus) if cpus is not None else usable_cores()
    others = (busy1 - busy0) / (total1 - total0) * cores - (own1 - own0) / max(wall1 - wall0, 1e-6)
    return max(0.0, others)


def default_threads(cores: int, busy: float = 0.0, loader_workers: int = 0) -> int:
    """The policy as a pure function: intra-op threads for `cores` usable cores.

    Args:
        cores: cores this process may use.
        busy: cores other processes keep busy (a fraction counts from one half).
        loader_workers: DataLoader worker processes that will share the cores.
    """
    free = cores - math.floor(busy + 0.5)
    return max(1, free - loader_workers // WORKERS_PER_THREAD)


def env_threads() -> int | None:
    """`OMP_NUM_THREADS` as a positive count, or None when unset or not a single positive integer."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def set_threads(n: int | None = None, loader_workers: int = 0) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        n: threads to use (`--threads`); None applies the default policy (see the module docstring), or
            `OMP_NUM_THREADS` when the environment sets it.
        loader_workers: DataLoader worker processes the run starts (all loaders together).

    Raises:
        UserError: `n` is not a positive integer.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UserError(f"--threads {n!r}: give a whole number of threads, 1 or more.")
    if loader_workers < 0:
        raise UserError(f"--workers {loader_workers!r}: give 0 or more DataLoader workers.")
    if n is None:
        n = env_threads() or default_threads(usable_cores(), busy_cores(), loader_workers)
    import torch

    torch.set_num_threads(n)
    return n
