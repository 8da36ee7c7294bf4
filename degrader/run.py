"""What every training run shares: the run directory, exact resume, data, the log and Ctrl-C.

The trainers (`degrader.train.fit`, `sr.train.train`, `sr.finetune.finetune`) keep their loop in one plain
function and call these helpers for the bookkeeping around it, so a run directory looks the same whichever
model it trains:

    RUN_DIR/config.json         the run's config (checked on --resume)
    RUN_DIR/state.safetensors   networks, optimizers and RNG states, for exact resume
    RUN_DIR/<model>.safetensors the trained network alone, for inference
    RUN_DIR/log.jsonl           one JSON line of losses every `log_every` steps
    RUN_DIR/samples/step-*.png  sample grids
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from degrader import dist
from degrader.checkpoint import load_checkpoint, pack_state, save_checkpoint, unpack_state
from degrader.errors import UserError
from degrader.files import atomic_path, prepare_out_dir, read_json, write_error, write_json
from degrader.images import Scan, first_readable
from degrader.loader import make_loader
from degrader.progress import Progress
from degrader.threads import threads_in_use

CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
LOG_FILE = "log.jsonl"
INPUTS_FILE = "inputs.json"  # the training image lists' digests, so a resume can name a changed folder
SKIPPED_FILE = "skipped.txt"  # every input file the scan left out, with the reason
TRAINED = ("degrader.safetensors", "sr.safetensors", LOG_FILE)  # written only once training has begun
STATE_KIND = "train-state"

# Config fields that may change between a run and its resume without changing the result.
RESUMABLE = {
    *("steps", "resume", "overwrite", "device", "workers", "checkpoint_every", "sample_every", "log_every"),
    *("cache_mb", "channels_last", "compile", "threads", "verify"),  # how the run executes, not what it computes
}

GRID_SAMPLES = 8  # images in each sample grid


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON data (tuples become lists, as they would after a round trip)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def open_run(out: Path, config: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
    """Prepare the run directory (rank 0 only, once every rank has checked it). Returns True when there is a
    saved state to resume from; under torchrun every rank gets rank 0's answer, or its error."""
    dist.barrier()  # every rank's plan has checked `out` before rank 0 writes there
    config = {**config, "threads": threads_in_use(config.get("threads"))}  # bytes depend on it: recorded
    return dist.on_main(lambda: _open_run(out, config, resume=resume, overwrite=overwrite))


def _open_run(out: Path, config: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
    """Prepare the run directory. Returns True when there is a saved state to resume from.

    On resume the saved config must match the new one, except fields in RESUMABLE; a different dataset,
    model or loss would silently make a different run, so it is refused. A field the saved config lacks (a
    setting added to the code after the run was written) takes its value from the new config.
    """
    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    saved = out / CONFIG_FILE
    if resume and not (out / STATE_FILE).exists() and any((out / name).exists() for name in TRAINED):
        raise UserError(
            f"--resume: {out / STATE_FILE} is missing, so the run cannot continue where it stopped; restore it, "
            "or start again with a new --out (or --overwrite)."
        )
    if resume and (out / STATE_FILE).exists():
        old = read_json(saved, "run's config", "restore it, or start again with a new --out")
        changed = sorted(k for k in old if k not in RESUMABLE and _differs(old[k], config.get(k)))
        if changed:
            had = ", ".join(f"{k}={json.dumps(old[k])[:40]}" for k in changed)
            raise UserError(
                f"--resume: {out} was run with other settings ({', '.join(changed)}); it had {had}: give them "
                "again as they were, or use a new --out."
            )
        write_json(saved, config)
        return True
    (out / LOG_FILE).unlink(missing_ok=True)  # --resume of a run that never saved a state starts afresh
    write_json(saved, config)
    return False


def check_inputs(out: Path, images: dict[str, dict[str, str]], resume: bool) -> None:
    """On resume, refuse input folders (the same paths) that now hold other images than INPUTS_FILE recorded:
    the data and a measured tone map would differ, and the message names the folder, not the settings that
    follow from it. `images` maps an option ("hr") to {"folder", "images": `files.list_digest`}."""
    path = out / INPUTS_FILE
    if not resume or not path.is_file():
        return  # a new run, or one written before the lists were recorded
    saved = read_json(path, "run's image lists", "restore it, or start again with a new --out")
    saved = saved if isinstance(saved, dict) else {}
    moved = []
    for k, now in images.items():
        then = saved.get(k)
        if isinstance(then, dict) and then.get("folder") == now["folder"] and then.get("images") != now["images"]:
            moved.append(k)
    if moved:
        folders = " and ".join(f"--{k} {images[k]['folder']}" for k in moved)
        raise UserError(
            f"--resume: {folders} changed since the run began (images added, removed or changed); restore "
            f"{'them' if len(moved) > 1 else 'it'}, or start a new run with a new --out."
        )


def _differs(old: Any, new: Any) -> bool:
    """Whether a saved setting differs from the new one. A key the saved one lacks, at any depth (`loss` is a
    dict), is a setting added to the code since the run was written: it takes its value from here on."""
    if isinstance(old, dict) and isinstance(new, dict):
        return any(k not in new or _differs(v, new[k]) for k, v in old.items())
    return old != new


def write_skipped(out: Path, skipped: dict[str, list[tuple[Path, str]]]) -> Path | None:
    """List every input file left out, one `option<TAB>path<TAB>reason` line each, in RUN_DIR/skipped.txt.

    Returns its path, or None when nothing was skipped (an earlier list is then removed).
    """
    path = out / SKIPPED_FILE
    lines = [f"{option}\t{file}\t{why}\n" for option, files in skipped.items() for file, why in files]
    if dist.is_main():
        if lines:
            with atomic_path(path) as tmp:
                tmp.write_text("".join(lines))
        else:
            path.unlink(missing_ok=True)
    return path if lines else None


def save_state(
    out: Path,
    step: int,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> None:
    """Everything needed to continue the run exactly, in one atomically written file."""
    tensors, meta = pack_state(modules, optimizers, generators)
    save_checkpoint(out / STATE_FILE, tensors, {"kind": STATE_KIND, "step": step, **meta})


def load_state(
    out: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> int:
    """Restore a state written by `save_state` in place; returns its step. Drops log lines written after it."""
    path = out / STATE_FILE
    tensors, meta = load_checkpoint(path, STATE_KIND, option="--resume")
    device = next(iter(modules.values())).parameters().__next__().device
    tensors = {k: v if k.startswith("rng.") else v.to(device) for k, v in tensors.items()}
    unpack_state(tensors, meta, modules, optimizers, generators, path)
    step = int(meta["step"])
    log = out / LOG_FILE
    if log.exists() and dist.is_main():
        kept = [line for line in log.read_text().splitlines() if _logged_step(line) <= step]
        log.write_text("".join(line + "\n" for line in kept))
    return step


def _logged_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill (or otherwise unreadable) counts as after every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, TypeError, KeyError):
        return float("inf")


def append_log(out: Path, record: dict[str, Any]) -> None:
    try:
        with open(out / LOG_FILE, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError as e:  # a full disk: one line naming the file (the last checkpoint stays intact)
        raise write_error(out / LOG_FILE, e) from None


def mean_logs(records: list[dict[str, float]]) -> dict[str, float]:
    """Average each loss over the steps since the last log line."""
    keys = records[0].keys() if records else []
    return {k: sum(r[k] for r in records) / len(records) for k in keys}


class LossLog:
    """Averages the losses of the steps between log lines and appends them to log.jsonl with a throughput.

    `rate` names the throughput field, e.g. "hr_per_s": the images (`items`) the steps consumed per second.
    """

    def __init__(self, out: Path, every: int, total: int, rate: str):
        self.out, self.every, self.total, self.rate = out, every, total, rate
        self.records: list[dict[str, float]] = []
        self.items = 0
        self.tick = time.perf_counter()
        self.last: dict[str, float] = {}  # the latest logged line

    def add(self, step: int, logs: dict[str, float], items: int) -> None:
        self.records.append(logs)
        self.items += items
        if due(step, self.every, self.total):
            now = time.perf_counter()
            self.last = {**mean_logs(self.records), self.rate: self.items / (now - self.tick)}
            append_log(self.out, {"step": step, **self.last})
            self.records, self.items, self.tick = [], 0, now


def due(step: int, every: int, total: int) -> bool:
    """Whether a periodic action (log, samples) falls on this step; the last step always gets one."""
    return step % every == 0 or step == total


@dataclasses.dataclass
class RunResult:
    out: Path  # the run directory
    step: int  # generator updates done in total
    interrupted: bool  # stopped early by Ctrl-C (the state is saved; continue with resume)
    logs: dict[str, float]  # the last logged losses


class Bookkeeping:
    """The end of every training step, for every trainer: log line, progress, sample grid and checkpoint.

    `config` is the run's config (`steps`, `log_every`, `sample_every`, `checkpoint_every`); `write_samples(path)`
    draws a grid and `checkpoint(step)` saves the models and the state.
    """

    def __init__(
        self,
        out: Path,
        config: Any,
        rate: str,
        on_progress: Progress | None,
        write_samples: Callable[[Path], None],
        checkpoint: Callable[[int], None],
    ):
        self.out, self.config, self.on_progress = out, config, on_progress
        self.write_samples, self.checkpoint = write_samples, checkpoint
        self.log = LossLog(out, config.log_every, config.steps, rate)

    def step(self, step: int, logs: dict[str, float], items: int) -> None:
        """After step `step` (counted from 1), which consumed `items` images and ended with `logs`."""
        c = self.config
        logs = dist.mean_over_ranks(logs)  # `items` counts the global batch already
        if not dist.is_main():  # under torchrun, only rank 0 writes and reports
            return
        self.log.add(step, logs, items)
        if self.on_progress:
            self.on_progress(step, c.steps, logs)
        if due(step, c.sample_every, c.steps):
            self.write_samples(self.out / "samples" / f"step-{step:06d}.png")
        if step % c.checkpoint_every == 0:
            self.checkpoint(step)

    def finish(self, step: int, interrupted: bool) -> RunResult:
        """The last step's checkpoint (unless just written) and the run's result."""
        if dist.is_main() and (step % self.config.checkpoint_every != 0 or step == 0):
            self.checkpoint(step)
        dist.barrier()  # every rank returns once the run's files are complete
        return RunResult(self.out, step, interrupted, self.log.last)


def unpaired_batches(
    config: Any, hr: Scan, lr: Scan, hr_size: int, lr_size: int, step: int
) -> tuple[Iterator[torch.Tensor], Iterator[torch.Tensor]]:
    """The HR and real LR batches of an unpaired GAN, from step `step` on (for resume).

    Each step takes d_steps + 1 HR batches and d_steps LR batches; `config` has `batch_size`, `loss.d_steps`,
    `hr_prep`, `lr_prep`, `lr_frame`, `seed`, `workers` and `cache_mb` (decoded-image cache per worker and folder).
    """
    b, k, c = config.batch_size, config.loss.d_steps, config
    kw = dict(batch_size=b, workers=c.workers, cache_mb=c.cache_mb)
    kw.update(rank=dist.rank(), world=dist.world())  # under DDP, each rank loads its part of every global batch
    listed = Path(c.out) / SKIPPED_FILE  # files that pass the scan but fail to decode join the run's list
    hr_batches = make_loader(
        hr.paths, hr_size, c.hr_prep, "paper", seed=c.seed, start=step * (k + 1) * b, failed_log=(listed, "--hr"), **kw
    )
    lr_batches = make_loader(
        lr.paths,
        lr_size,
        c.lr_prep,
        "flip",
        seed=c.seed + 1,
        start=step * k * b,
        failed_log=(listed, "--lr"),
        **kw,
        frame=c.lr_frame,
    )
    return hr_batches, lr_batches


def grid_images(
    config: Any, hr: Scan, lr: Scan, hr_size: int, lr_size: int, n: int = GRID_SAMPLES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` readable HR and LR images, prepared without augmentation: the same faces in every grid."""
    rng = torch.Generator().manual_seed(0)
    grid_hr = first_readable(hr, n, hr_size, config.hr_prep, rng)
    grid_lr = first_readable(lr, n, lr_size, config.lr_prep, rng, config.lr_frame)
    return torch.stack(grid_hr), torch.stack(grid_lr)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag the loop checks between steps, so it can save a consistent state.

    Yields a function that tells whether Ctrl-C was pressed. A second Ctrl-C interrupts at once.
    Outside the main thread (where signals cannot be handled) it never reports an interrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed = []

    def handler(signum, frame):
        pressed.append(True)
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: dist.any_rank(bool(pressed))  # under torchrun: all ranks stop after the same step
    finally:
        signal.signal(signal.SIGINT, previous)
