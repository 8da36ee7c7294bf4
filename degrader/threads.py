"""How many CPU threads torch uses: a default that stays fast on a shared machine.

Torch's default is one intra-op thread per core, and its OpenMP (libgomp) spins while a thread waits for
the others. On a 2-core machine where another CPU-bound job runs, each parallel region then waits for a
thread the kernel has parked behind that job while the waiting thread burns the other core: `fit` ran 5-10x
slower than with one thread. The fix measured best (`benchmarks/bench_threads.py`) is OpenMP's passive wait
policy: waiting threads sleep, and one thread per core this process may use is then the fastest count both
on a quiet and on a busy machine. So the default policy:

- asks OpenMP to sleep rather than spin while it waits (`OMP_WAIT_POLICY=PASSIVE`). OpenMP reads that
  variable once, when torch loads it, so `prepare_openmp()` must run before `import torch`: `import degrader`
  and the CLI call it (a user's own `OMP_WAIT_POLICY` is kept);
- uses one thread per core this process may run on (`os.sched_getaffinity`, so taskset, cgroup cpusets and
  Slurm/Kubernetes CPU pinning are respected), not per core of the machine;
- only where the passive policy is not in effect (torch was imported first, as in a notebook) does it
  protect the spinning threads: it subtracts the cores other processes keep busy right now (sampled from
  `/proc/stat` for a quarter of a second; `os.getloadavg` where that file is missing) and one thread per
  two DataLoader worker processes.

An explicit count (`--threads N`, a config's `threads=N`, `configure(N)`) or `OMP_NUM_THREADS` in the
environment always wins. The library's long runs (`fit`, `train`, `finetune`, `export_shards`) apply the
policy as the CLI does unless the count was already set through this module; a library user who imported
torch before degrader calls `configure()` (or passes `threads=`) to choose. The thread count changes the
order of floating-point sums in training, so a seed gives byte-identical results only with the same count:
record it with the run.
"""

from __future__ import annotations

import math
import os
import sys
import time

from degrader.errors import UserError

WAIT_POLICY = "PASSIVE"  # OpenMP threads sleep while they wait instead of spinning (libgomp default: spin a while)
_passive = False  # set by prepare_openmp() when torch will load OpenMP with the passive policy
_chosen = False  # set by set_threads(): the count is chosen, and the library's runs keep it
SAMPLE_SECONDS = 0.25  # how long `busy_cores` watches the CPUs
WORKERS_PER_THREAD = 2  # DataLoader worker processes that cost one intra-op thread


def prepare_openmp() -> bool:
    """Set OpenMP's passive wait policy unless the user chose one. Call before torch is imported.

    Returns:
        True if the setting can still take effect (torch not imported yet), False if it is too late.
    """
    global _passive
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    in_time = "torch" not in sys.modules
    _passive = _passive or (in_time and os.environ["OMP_WAIT_POLICY"].strip().upper() == WAIT_POLICY)
    return in_time


def passive_wait() -> bool:
    """Whether `prepare_openmp()` set the passive wait policy before torch loaded OpenMP in this process."""
    return _passive


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


def default_threads(cores: int, passive: bool = True, busy: float = 0.0, loader_workers: int = 0) -> int:
    """The policy as a pure function: intra-op threads for `cores` usable cores.

    Args:
        cores: cores this process may use.
        passive: whether OpenMP threads sleep while they wait; then every usable core gets a thread.
        busy: cores other processes keep busy (a fraction counts from one half); only used when spinning.
        loader_workers: DataLoader worker processes that share the cores; only used when spinning.
    """
    if passive:
        return cores
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
        loader_workers: DataLoader worker processes the run starts (all loaders together); they count only
            where the passive wait policy is not in effect.

    Raises:
        UserError: `n` is not a positive integer.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UserError(f"--threads {n!r}: give a whole number of threads, 1 or more.")
    if loader_workers < 0:
        raise UserError(f"--workers {loader_workers!r}: give 0 or more DataLoader workers.")
    if n is None:
        n = env_threads()
    if n is None:
        passive = passive_wait()
        n = default_threads(usable_cores(), passive, 0.0 if passive else busy_cores(), loader_workers)
    import torch

    global _chosen
    torch.set_num_threads(n)
    _chosen = True
    return n


def configure(threads: int | None = None) -> int:
    """Apply the thread policy now, as the CLI does.

    Rarely needed: `import degrader` before `import torch` sets the wait policy, and `fit`, `train`, `finetune`
    and `export_shards` set the count. Call it when torch was imported first (a notebook; the count then leaves
    room for cores other processes keep busy) before other torch work, or to choose a count for every later run.

    Args:
        threads: CPU threads for torch; None applies the policy (or `OMP_NUM_THREADS` when set).

    Returns:
        The thread count in use.

    Raises:
        UserError: `threads` is not a positive integer.
    """
    prepare_openmp()
    return set_threads(threads)


def threads_in_use(n: int | None) -> int:
    """Apply an explicit count (a run config's `threads`), else the policy unless a count was already chosen
    through this module (the CLI's `--threads`, `configure()`, an earlier run); return the count in use.

    Training loops record the result in `config.json`: a seed gives byte-identical results only with it.
    """
    if n is not None or not _chosen:
        return set_threads(n)
    import torch

    return torch.get_num_threads()
