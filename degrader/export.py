"""`export_shards`: a degrader x a folder of HR images -> paired WebDataset shards plus `manifest.json`.

The pipeline streams: DataLoader workers decode and crop the HR images and PNG-encode the HR crops; the main
process runs the degrader on batches and hands the samples to writer processes, one shard to each at a time,
which PNG-encode the LR images and write, fsync and hash the tars (`degrader.export_workers`).
Sample `k` of crop `c` of image `i` always gets the same seed, key and bytes, so the output does not depend on
worker count or batch size, and a resumed run rewrites exactly what is missing.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from degrader import __version__, dist
from degrader.checkpoint import DegraderLike
from degrader.crops import HRCrops, grid_boxes
from degrader.errors import UserError
from degrader.export_plan import CROPS, ExportConfig, ExportPlan, plan_export
from degrader.export_workers import Chunk, Groups, ShardWriters, die_with_parent, frozen_heap, identity, in_flight_limit
from degrader.files import list_digest, prepare_out_dir, read_json, sha256_file, write_json
from degrader.progress import Progress
from degrader.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MEMBERS,
    is_shard_name,
    manifest_problem,
    shard_name,
    to_uint8,
)
from degrader.threads import threads_in_use

STATE = ".export-state.json"  # progress of an unfinished export; removed once the manifest is written


def _hr_images(plan: ExportPlan) -> str:
    """The digest of the HR image list (names and sizes) that the progress file records."""
    return list_digest(plan.scan.root, plan.scan.paths)


def _describe(degrader: DegraderLike) -> dict[str, Any]:
    return {"name": degrader.name, "sha256": degrader.sha256, "scale": degrader.scale, "hr_size": degrader.hr_size}


def block_size(config: ExportConfig) -> int:
    """Images per batch block. Batches form within blocks of this many images (see `_samples`), so a resumed
    run and each rank of a torchrun export form exactly the batches of an uninterrupted single-process run."""
    return max(1, config.batch_size // config.per_image)


def rank_images(n: int, block: int, rank: int, world: int) -> tuple[int, int]:
    """The images [lo, hi) rank `rank` of `world` exports: contiguous whole blocks, in rank order."""
    blocks = -(-n // block)
    return min(n, blocks * rank // world * block), min(n, blocks * (rank + 1) // world * block)


def _rank_state(rank: int, world: int) -> str:
    """A rank's progress file; a single process keeps its progress in STATE itself."""
    return STATE if world == 1 else f".export-state-r{rank:04d}.json"


def _check_resume(out: Path, plan: ExportPlan, resume: bool, images: str) -> dict[str, Any] | None:
    """Rank 0: a finished export's manifest, or None after checking that an unfinished one in `out` is this one.

    Under torchrun, STATE records the number of processes: each rank resumes its own part, so an export is
    resumed by as many processes as started it.
    """
    described = {"config": plan.recorded, "degrader": _describe(plan.degrader), "hr_images": images}
    state_path, manifest_path, world = out / STATE, out / MANIFEST, dist.world()
    saved = None
    if resume and manifest_path.exists():
        saved = read_json(manifest_path, "export's manifest", "export into a new --out")
    elif resume and state_path.exists():
        saved = read_json(state_path, "export's progress file", "export into a new --out")
    elif resume and any(p.name != STATE for p in out.iterdir()):
        raise UserError(f"--out {out} holds no export to resume; pass --overwrite to replace its contents.")
    if saved is not None:
        if not isinstance(saved, dict):
            raise UserError(f"--out {out}: its progress file or manifest is not a JSON object; use a new --out.")
        if saved.get("config") != described["config"] or saved.get("degrader") != described["degrader"]:
            raise UserError(f"--out {out} was exported with other options or degrader; rerun those or --overwrite.")
        if "format" in saved:
            problem = manifest_problem(saved)
            if problem:
                raise UserError(f"{manifest_path}: {problem}; export into a new --out, or --overwrite.")
            return saved  # finished already
        if saved.get("hr_images", described["hr_images"]) != described["hr_images"]:  # older exports lack it
            raise UserError(
                f"--resume: --hr {plan.config.hr} changed since this export began (images added, removed or "
                "changed); restore it, or start again with --overwrite."
            )
        if saved.get("processes", 1) != world:
            n = saved.get("processes", 1)
            raise UserError(
                f"--resume: {out} was being exported by {n} process{'es' * (n > 1)}, this run has {world}; resume "
                f"with {n} (torchrun --nproc_per_node), or start again with --overwrite."
            )
    if world > 1:  # marks `out` as an unfinished export of ours; the ranks keep their progress beside it
        write_json(state_path, {**described, "processes": world, "shards": [], "failed": []})
    return None


def _start_or_resume(out: Path, plan: ExportPlan, resume: bool, images: tuple[int, int], digest: str) -> dict[str, Any]:
    """This rank's saved progress (its intact shards, in order), or a fresh state for `images` [lo, hi);
    `digest` is `_hr_images(plan)`."""
    rank, world = dist.rank(), dist.world()
    fresh = {"config": plan.recorded, "degrader": _describe(plan.degrader), "hr_images": digest}
    fresh.update(shards=[], failed=[])
    if world > 1:
        fresh.update(rank=rank, processes=world, images=list(images))
    state_path = out / _rank_state(rank, world)
    if resume and state_path.exists():
        saved = read_json(state_path, "export's progress file", "export into a new --out")
        _check_state(state_path, saved, None if world == 1 else rank)
        # Keep the shards that are intact, in order; everything after the first damaged one is redone.
        good = []
        for entry in saved["shards"] if saved.get("images", list(images)) == list(images) else []:
            path = out / entry["name"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                break
            good.append(entry)
        fresh["shards"] = good
        next_image = good[-1]["next"][0] if good else 0
        fresh["failed"] = [f for f in saved["failed"] if f[0] < next_image]
    keep = {e["name"] for e in fresh["shards"]}
    for path in out.iterdir():  # half-written temporaries and shards past the resume point, and nothing else
        temporary = TEMPORARY.fullmatch(path.name)
        name = temporary["name"] if temporary else path.name
        if is_shard_name(name, None if world == 1 else rank) and path.name not in keep and path.is_file():
            path.unlink()
    write_json(state_path, fresh)
    return fresh


TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")  # `atomic_path`'s: .NAME.XXXXXXXX.tmp


def _position(value: Any) -> bool:
    """Whether `value` is a resume position [image, crop, variant]."""
    return isinstance(value, list) and len(value) == 3 and all(type(v) is int and v >= 0 for v in value)


def _check_state(path: Path, saved: Any, rank: int | None) -> None:
    """Refuse a progress file whose entries this export would not have written: a shard entry must name the
    shard of its position (`shard_name`), so no name read from it reaches a path or the manifest unchecked."""
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a JSON object; the export's progress file is damaged, export into a new --out.")
    shards, failed = saved.get("shards"), saved.get("failed")
    problem = None if isinstance(shards, list) and isinstance(failed, list) else '"shards" or "failed" is not a list'
    for i, entry in enumerate(shards if problem is None else []):
        name = entry.get("name") if isinstance(entry, dict) else None
        if name != shard_name(i, rank):
            problem = f"shard entry {i} ({str(name)[:60]!r}) is not this export's shard {shard_name(i, rank)}"
        elif type(entry.get("samples")) is not int or not isinstance(entry.get("sha256"), str):
            problem = f"shard entry {i} ({name}) needs a sample count and a sha256"
        elif not _position(entry.get("next")):
            problem = f"shard entry {i} ({name}) has no resume position"
        if problem:
            break
    for f in failed if problem is None else []:
        if not (isinstance(f, list) and len(f) == 3 and type(f[0]) is int and all(isinstance(x, str) for x in f[1:])):
            problem = f"failed image entry {str(f)[:60]} is not [index, name, reason]"
            break
    if problem:
        raise UserError(f"{path}: {problem}; the export's progress file is damaged, export into a new --out.")


def _samples(
    loader: Iterator, first: int, start: tuple[int, int, int], failed: list, config: ExportConfig
) -> Iterator[tuple[tuple[int, int, int], str, dict[str, Any], np.ndarray, bytes, tuple[int, int]]]:
    """The export's samples in their fixed order from image `first` on: (position, key, meta, HR, HR PNG, batch).

    `batch` numbers the degrader batch a sample belongs to: every `batch_size` samples within a block of
    `block_size` images. It depends only on the images of that block, so a run that starts at a block's first
    image (a resumed run, a rank) forms the same batches as any other, and the learned degrader's float
    rounding, which can depend on the batch, is the same. Failures before `start` are recorded already.
    """
    block = block_size(config)
    current, n = -1, 0  # the block being read, samples in it so far
    for i, image_id, crops, reason, names in loader:  # names: (key, seed) of each crop's variants (`Groups`)
        i += first
        if i // block != current:
            current, n = i // block, 0
        if reason is not None:
            if i >= start[0]:
                failed.append([i, image_id, reason])
            continue
        for c, (box, hr, hr_png) in enumerate(crops):
            for k, (key, s) in enumerate(names[c]):
                meta = {"seed": s, "source": image_id, "crop": c, "box": list(box) if box else None, "k": k}
                yield (i, c, k), key, meta, hr, hr_png, (current, n // config.batch_size)
                n += 1


def export_shards(plan: ExportPlan, on_progress: Progress | None = None) -> dict[str, Any]:
    """Degrade every HR crop `per_image` times and write the pairs as shards; returns the manifest.

    Rerunning with `resume=True` after a crash or kill continues where it stopped and ends with the same bytes
    as an uninterrupted run (with the same batch size: a learned degrader's float rounding may depend on it).

    Under torchrun, each rank exports a contiguous part of the images (`rank_images`) into its own shards
    (`shard-r0003-000000.tar`, ...; `shard_name`), and rank 0 writes the manifest, listing the shards in rank
    order, once every rank is done. Read in that order, the samples are those of a single-process export, byte
    for byte; only the shard boundaries differ. Resume with the same number of processes.

    Args:
        plan: the result of `plan_export(config)`.
        on_progress: called after every batch as `on_progress(pairs_written, pairs_planned, logs)` (rank 0's part).

    Raises:
        UserError: `out` changed since the plan, or holds an export with other options.
    """
    config, degrader, scan, recorded = plan.config, plan.degrader, plan.scan, plan.recorded
    rank, world = dist.rank(), dist.world()
    dist.barrier()  # every rank's plan has checked `out` before rank 0 writes there
    threads_in_use(None)  # the thread policy, as the CLI applies it (a count chosen before is kept)

    digest = _hr_images(plan)  # a stat of every image: once

    def check() -> tuple[Path, dict[str, Any] | None]:
        out = prepare_out_dir(config.out, resume=config.resume, overwrite=config.overwrite, option="--out")
        return out, _check_resume(out, plan, config.resume, digest)

    out, finished = dist.on_main(check)
    if finished is not None:
        if dist.is_main():
            (out / STATE).unlink(missing_ok=True)
        return finished
    lo, hi = rank_images(len(scan.paths), block_size(config), rank, world)
    state = _start_or_resume(out, plan, config.resume, (lo, hi), digest)
    start = tuple(state["shards"][-1]["next"]) if state["shards"] else (lo, 0, 0)
    first = start[0] // block_size(config) * block_size(config)  # the block's first image: the same batches
    done = sum(e["samples"] for e in state["shards"])
    planned = plan.samples if world == 1 else round(plan.samples * (hi - lo) / max(1, len(scan.paths)))
    report = on_progress if dist.is_main() else None
    common = {"scale": degrader.scale, "degrader": degrader.name, "degrader_sha256": degrader.sha256}
    common["version"] = __version__

    crops = HRCrops(
        scan.paths[first:hi] if start[0] < hi else [],
        scan.root,
        recorded["hr_size"],
        config.crop,
        config.seed,
        config.crops_per_image,
        config.png_level,
    )
    workers = config.workers
    group = 1 if config.crop == "grid" else max(1, 8 // config.crops_per_image)  # grid: an image may give 1000s
    loader = DataLoader(
        Groups(crops, group, config.per_image),
        batch_size=None,
        collate_fn=identity,
        num_workers=workers,
        worker_init_fn=die_with_parent,
    )
    with frozen_heap():  # the heap as it is now is left out of garbage collection while exporting
        writers = ShardWriters(
            out, config.samples_per_shard, None if world == 1 else rank, common, config.png_level, workers
        )
        per_chunk = config.batch_size if workers else 1  # in this process: sample by sample, as reported
        limit = in_flight_limit(workers, config.samples_per_shard, config.batch_size, recorded["hr_size"])
        in_flight: deque[tuple[Future, int, list[int]]] = deque()  # (a chunk's shard entry, samples, next position)
        waiting = 0  # samples in `in_flight`
        shard, count = len(state["shards"]), 0  # the shard being handed out and its samples so far
        batch: list = []
        failed: list = list(state["failed"])
        state_path = out / _rank_state(rank, world)

        def collect(most: int) -> None:
            """Take the writers' results in the order sent, those done and until at most `most` samples wait (so shards
            are recorded in order, and a writer's error surfaces at once)."""
            nonlocal done, waiting
            while in_flight and (waiting > most or in_flight[0][0].done()):
                job, n, after = in_flight.popleft()
                entry, waiting = job.result(), waiting - n
                for i in range(n):
                    done += 1
                    if i == n - 1 and entry is not None:  # a shard is complete: record where the next one starts
                        state["shards"].append({**entry, "next": after})
                        state["failed"] = [f for f in failed if f[0] < after[0]]
                        write_json(state_path, state)
                    if report is not None:  # per sample: a batch may end a shard and start the next
                        report(done, planned, {"shards": float(len(state["shards"])), "skipped": float(len(failed))})

        def send(samples: list, lr: np.ndarray) -> None:
            """Hand samples (all of this run's, in order) to the writers, in chunks that end where shards end."""
            nonlocal shard, count, waiting
            at = 0
            while at < len(samples):
                n = min(len(samples) - at, config.samples_per_shard - count, per_chunk)
                part = samples[at : at + n]
                metas = [{**s[2], "hr_size": list(s[3].shape[:2])} for s in part]
                chunk = Chunk(shard, [s[1] for s in part], metas, [s[4] for s in part], lr[at : at + n])
                pos = part[-1][0]
                in_flight.append((writers.write(chunk), n, [pos[0], pos[1], pos[2] + 1]))
                waiting, at, count = waiting + n, at + n, count + n
                if count == config.samples_per_shard:
                    shard, count = shard + 1, 0
                collect(limit)  # bounded: memory stays flat

        def flush() -> None:
            hr = torch.from_numpy(np.stack([s[3] for s in batch])).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8, a view
            hr = hr.contiguous().float().div_(255)
            with torch.inference_mode():
                lr = to_uint8(degrader.degrade(hr, [s[2]["seed"] for s in batch]))  # (B, H/s, W/s, 3)
            skip = sum(s[0] < start for s in batch)  # written before the resume; degraded again only to form the batch
            send(batch[skip:], lr[skip:])
            batch.clear()

        try:
            for sample in _samples((image for items in loader for image in items), first, start, failed, config):
                if batch and sample[5] != batch[-1][5]:
                    flush()
                batch.append(sample)
            if batch:
                flush()
            collect(0)
            entry = writers.finish(shard) if count else None
            if entry is not None:
                state["shards"].append({**entry, "next": [hi, 0, 0]})
            if world > 1:  # this rank is done: a resume skips its part
                state["failed"] = failed
                write_json(state_path, state)
        except BaseException:
            writers.abort([job for job, _, _ in in_flight])
            raise
        finally:
            writers.close()

    parts = dist.gather_to_main((state["shards"], failed))  # every rank's shards and failures, in rank order
    manifest = dist.on_main(lambda: _write_manifest(out, plan, parts))
    if report is not None:
        totals = manifest["totals"]
        report(
            totals["samples"],
            totals["samples"],
            {"shards": float(totals["shards"]), "skipped": float(totals["skipped"])},
        )
    return manifest


def _write_manifest(out: Path, plan: ExportPlan, parts: list[tuple[list, list]]) -> dict[str, Any]:
    """Rank 0, once every rank is done: the manifest of all shards in rank order; progress files removed."""
    config, scan = plan.config, plan.scan
    shards = [e for rank_shards, _ in parts for e in rank_shards]
    failed_paths = {scan.paths[f[0]]: f[2] for _, failed in parts for f in failed}
    skipped = sorted([*scan.skipped, *failed_paths.items()], key=lambda s: s[0].relative_to(scan.root).as_posix())
    total = sum(e["samples"] for e in shards)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "members": list(MEMBERS),
        "degrader": _describe(plan.degrader),
        "config": plan.recorded,
        "shards": [{k: e[k] for k in ("name", "samples", "sha256")} for e in shards],
        "skipped": [{"path": p.relative_to(scan.root).as_posix(), "reason": r} for p, r in skipped],
        "totals": {
            "images": len(scan.paths) - len(failed_paths),
            "crops": total // config.per_image,
            "samples": total,
            "shards": len(shards),
            "skipped": len(skipped),
        },
    }
    write_json(out / MANIFEST, manifest)
    for rank in range(len(parts)):
        (out / _rank_state(rank, len(parts))).unlink(missing_ok=True)
    (out / STATE).unlink(missing_ok=True)
    return manifest


__all__ = ["CROPS", "ExportConfig", "ExportPlan", "export_shards", "grid_boxes", "plan_export", "shard_name"]
