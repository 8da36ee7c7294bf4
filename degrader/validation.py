"""Validation during `fit`: a held-out realism figure every few steps, and the best checkpoint by it.

A GAN's losses cannot say whether its LR images look real (a degrader can get *less* real with training while
its discriminator wins), so `fit` measures it: before training, part of the real LR set is held out (or a
separate `--val-lr` folder is used) with a fixed set of HR images, and every `eval_every` steps a
`RealismProbe` scores the generator on them: SWD over Laplacian-pyramid patches and image statistics, each
relative to bicubic downscaling (1 = as good as bicubic, 0 = as real as the real set's own halves), and the
fidelity of the LR to the HR content. The best weights (by `select`, a step at or above `min_fidelity` first:
realism can be won by destroying the images) are kept as `best.safetensors` beside the last ones;
`Degrader.load(run)` prefers them.

Large photos ("crop" prep of `--lr`): validation counts crops, not files. Whole LR files are held out (training
never sees them) and each gives several fixed crops, crop k of a file placed by (seed, file name, k); the HR
side likewise gives fixed crops of a few HR files. So a few dozen photos still make a validation set of `val_n`.

Exact resume: the best weights travel in the training state (as the module "best_g"), and the best score is
read back from the log, whose lines after the saved step are dropped on resume, so a resumed run keeps the
same best as an uninterrupted one, file for file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from degrader import dist
from degrader.checkpoint import BEST_FILE, Degrader
from degrader.errors import UserError
from degrader.images import ImageFolder, draw_images, hash_int, shuffled
from degrader.model import HighToLowConfig
from degrader.progress import Progress
from degrader.realism import RealismProbe, relative
from degrader.run import LOG_FILE, append_log, due
from degrader.scan import Scan, scan_images

MIN_LR = 16  # held-out real LR images below which validation is off: two halves of 8 images
HR_SHARE = 4  # the validation HR images leave training only when the HR folder holds this many times as many
MIN_FILES = 8  # "crop" prep: LR files below which validation is off (whole files are held out)
MIN_TRAIN_FILES = 4  # "crop" prep: files a validation leaves to training, at least
CROP_CACHE_MB = 512  # decoded photo kept while its fixed crops are cut (one at a time)


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """The images validation scores on, fixed before training (part of the `FitPlan`)."""

    hr: list[Path]  # HR images degraded at every validation ("crop" prep: one entry per crop, files repeat)
    lr: list[Path]  # held-out real LR images: halves A (the reference) and B (the floor); per crop likewise
    hr_held_out: bool  # the HR images were removed from training too
    source: str  # where the LR images come from, for the plan summary

    @property
    def n(self) -> int:
        """Images per compared set."""
        return min(len(self.hr), len(self.lr) // 2)


def _without(scan: Scan, removed: list[Path]) -> Scan:
    gone = set(removed)
    return dataclasses.replace(scan, paths=[p for p in scan.paths if p not in gone])  # training order unchanged


def held_files(n: int, val_split: float, cap: int) -> int:
    """Files a "crop" validation takes from `n`: the `val_split` share, at least 1, at most `cap`, leaving
    `MIN_TRAIN_FILES` to training (callers check `n >= MIN_FILES` first)."""
    return min(max(1, round(val_split * n)), n - MIN_TRAIN_FILES, cap)


def crop_list(files: list[Path], count: int) -> list[Path]:
    """`count` crop entries over `files`, interleaved (entry j is a crop of file j % len(files)), so that each
    half of the list, and any prefix of it, covers the files evenly."""
    return [files[j % len(files)] for j in range(count)]


def split_validation(config: Any, hr: Scan, lr: Scan, lr_size: int) -> tuple[Scan, Scan, ValidationSet | None, str]:
    """Choose the validation images and take them out of training where feasible.

    `config` is a `FitConfig` (`val_lr`, `val_split`, `val_n`, `seed`, `hr_prep`, `lr_prep`). The real LR images
    come from `val_lr` when set, else a seeded random `val_split` share of `lr` (at most 2 x `val_n` images: no
    more than the probe uses) leaves training. `val_n` HR images are drawn from `hr`; they leave training only
    when `hr` holds at least `HR_SHARE` times as many, so a small HR folder keeps all its images for training.

    With `lr_prep` "crop" the unit is the crop: `held_files` whole LR files leave training (validation needs
    `MIN_FILES`; with `val_lr`, all its files up to 2 x `val_n` serve) and give 2 x `val_n` fixed crops between
    them. With `hr_prep` "crop", `val_n` fixed crops come from `held_files` HR files, which leave training
    when at least `MIN_FILES` HR files exist.

    Returns:
        The training HR and LR scans, the validation set (None: no validation) and a one-line note on it.

    Raises:
        UserError: `val_lr` holds too few usable images, or is the `lr` folder itself.
    """
    lr_crops, hr_crops = config.lr_prep == "crop", config.hr_prep == "crop"
    if config.val_lr:
        val = scan_images(config.val_lr, min_size=lr_size, option="--val-lr")
        if Path(config.val_lr).resolve() == Path(config.lr).resolve():
            raise UserError(f"--val-lr {config.val_lr} is the --lr folder; use val_split to hold out part of it.")
        if len(val.paths) < MIN_LR and not lr_crops:  # crops: even one photo gives 2 x val_n of them
            raise UserError(
                f"--val-lr {config.val_lr}: {len(val.paths)} usable images; validation needs at least {MIN_LR}."
            )
        held = shuffled(val.paths, config.seed, "val-lr")[: 2 * config.val_n]
        source = f"--val-lr {config.val_lr}"
    elif config.val_split > 0 and lr_crops:
        n = len(lr.paths)
        if n < MIN_FILES:
            note = (
                f"validation off: --lr holds {n} files, fewer than {MIN_FILES}; with lr_prep crop whole files are "
                f"held out and {MIN_TRAIN_FILES} must stay for training: give more LR photos or --val-lr DIR"
            )
            return hr, lr, None, note
        k = held_files(n, config.val_split, 2 * config.val_n)
        held = shuffled(lr.paths, config.seed, "val-lr")[:k]
        lr = _without(lr, held)
        source = f"{k} of {n} --lr files held out (val_split {config.val_split})"
    elif config.val_split > 0:
        k = min(round(config.val_split * len(lr.paths)), 2 * config.val_n)
        if k < MIN_LR:
            note = (
                f"validation off: val_split {config.val_split} of {len(lr.paths)} real LR images is {k}, fewer than "
                f"{MIN_LR}; give more LR images, a larger val_split or --val-lr DIR"
            )
            return hr, lr, None, note
        held = shuffled(lr.paths, config.seed, "val-lr")[:k]
        lr = _without(lr, held)
        source = f"{k} of --lr held out (val_split {config.val_split})"
    else:
        return hr, lr, None, "validation off (val_split 0)"
    m = config.val_n  # crops are as many as asked for; images as many as there are
    m = m if lr_crops else min(m, len(held) // 2)
    m = m if hr_crops else min(m, len(hr.paths))
    lr_part = f"2 x {m} real LR images"
    if lr_crops:
        lr_part = f"2 x {m} real LR crops of {_files(len(held))}"
        held = crop_list(held, 2 * m)
    if hr_crops:
        n = len(hr.paths)
        k = min(max(1, round(config.val_split * n)), m)
        held_out = n >= MIN_FILES and n - k >= MIN_TRAIN_FILES
        val_hr = crop_list(shuffled(hr.paths, config.seed, "val-hr")[:k], m)
        hr_part = f"{m} HR crops of {_files(k)}"
    else:
        val_hr = shuffled(hr.paths, config.seed, "val-hr")[:m]
        held_out = len(hr.paths) >= HR_SHARE * m
        hr_part = f"{m} HR images"
    if held_out:
        hr = _without(hr, val_hr)
    vset = ValidationSet(val_hr, held[: 2 * m], held_out, source)
    note = (
        f"validation every {config.eval_every} steps: {hr_part} ({'held out' if held_out else 'also trained on'})"
        f" against {lr_part} ({source})"
    )
    return hr, lr, vset, note


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def draw_crops(paths: list[Path], size: int, seed: int, tag: str) -> torch.Tensor:
    """One fixed size x size crop per entry of `paths` (a file may repeat). (len(paths), 3, size, size).

    Crop k of a file is placed by (tag, seed, file name, k), whatever the other entries; each file is decoded
    once. A file that fails to decode is replaced by the next one, as in `draw_images`.
    """
    files = list(dict.fromkeys(paths))
    index = {p: i for i, p in enumerate(files)}
    folder = ImageFolder(files, size, "crop", "none", cache_mb=CROP_CACHE_MB)
    seeds, seen = [], Counter()
    for p in paths:
        seeds.append(hash_int(tag, seed, Path(p).name, seen[p]))
        seen[p] += 1
    crops: list[torch.Tensor | None] = [None] * len(paths)
    for j in sorted(range(len(paths)), key=lambda j: index[paths[j]]):  # file by file: one decode each
        crops[j] = folder[index[paths[j]], seeds[j]]
    return torch.stack(crops)


class Validation:
    """Scores the generator on the validation set, keeps the best weights and logs every figure.

    Call it after each training step with the network that is exported (the EMA copy when there is one);
    it acts on the steps `due(step, eval_every, steps)` selects, on rank 0 only. `best_net` belongs in the
    training state (module "best_g") so that resume restores it.
    """

    def __init__(self, out: Path, vset: ValidationSet, model: HighToLowConfig, config: Any, best_net: nn.Module):
        self.out, self.every, self.total = out, config.eval_every, config.steps
        self.best_net = best_net.eval().requires_grad_(False)  # a fresh generator like the trained one
        self.best_step, self.best_rank, self.best_record = 0, (True, math.inf), {}  # the record of the best step
        self.key = "val_mix" if config.select == "mix" else "val_swd"  # what ranks the steps
        self.min_fidelity = config.min_fidelity
        self.latest: dict[str, float] = {}  # shown in the progress line
        self.probe = None
        if dist.is_main():
            m = vset.n
            hr = _draw(vset.hr, m, model.hr_size, config.hr_prep, config.seed, "val-hr")  # (m, 3, H, H)
            lr = _draw(vset.lr, 2 * m, model.lr_size, config.lr_prep, config.seed, "val-lr", config.lr_frame)
            self.probe = RealismProbe(hr, lr, model.scale, seed=config.seed, tone=config.loss.tone_map)

    def __call__(self, step: int, net_g: nn.Module) -> None:
        """Validate after step `step` when it is due: log the figure, and save the weights when they are the best."""
        if self.probe is None or not due(step, self.every, self.total):
            return
        training = net_g.training
        scores = self.probe.score(Degrader(net_g).degrade)  # Degrader puts net_g in eval mode
        net_g.train(training)
        rank = self._rank(scores)
        if rank < self.best_rank:
            self.best_step, self.best_rank, self.best_record = step, rank, scores
            self.best_net.load_state_dict(net_g.state_dict())
            self._save_best()
        record = {"step": step, **scores, "val_floor": self.probe.floor, "val_bicubic": self.probe.bicubic}
        append_log(self.out, {**record, "val_n": len(self.probe.hr), "val_best_step": self.best_step})
        self.latest = {"val_rel": scores["val_swd_rel"], "val_fid": scores["val_fidelity"]}

    def _rank(self, record: dict[str, Any]) -> tuple[bool, float]:
        """What steps are ranked by: first whether the fidelity falls below the floor (a step that keeps the content
        beats any that does not), then the figure; `val_mix` is nan without any relative figure (and absent from
        old logs, as is `val_fidelity`)."""
        value = record.get(self.key, math.nan)
        below = record.get("val_fidelity", math.inf) < self.min_fidelity
        return below, record["val_swd"] if math.isnan(value) else value

    def _save_best(self) -> None:
        Degrader(self.best_net, name=self.out.name, step=self.best_step).save(self.out / BEST_FILE)

    def restore(self) -> None:
        """After `load_state` (which restored `best_net` and cut the log at the saved step): the best score from
        the log, and `best.safetensors` rewritten from the restored weights (a kill after a later best was
        written would otherwise leave weights the resumed run has not reached)."""
        if self.probe is None:
            return
        for record in read_validation_log(self.out):
            rank = self._rank(record)
            if rank < self.best_rank:
                self.best_step, self.best_rank, self.best_record = record["step"], rank, record
            self.latest = {"val_rel": record["val_swd_rel"], "val_fid": record.get("val_fidelity", math.nan)}
        if self.best_step:
            self._save_best()
        else:
            (self.out / BEST_FILE).unlink(missing_ok=True)

    def progress(self, on_progress: Progress | None) -> Progress | None:
        """`on_progress` with the latest realism figure first among the logs (the progress bar shows the first few)."""
        if on_progress is None:
            return None
        return lambda step, total, logs: on_progress(step, total, {**self.latest, **logs})

    def summary(self) -> dict[str, Any] | None:
        """The best validation result, or None on other ranks and when no validation has run yet."""
        if self.probe is None or not self.best_step:
            return None
        best, n = self.best_record, self.probe.hr.shape[0]
        fidelity = best.get("val_fidelity", math.nan), self.min_fidelity  # absent from older logs
        return summarize(self.best_step, best["val_swd"], self.probe.floor, self.probe.bicubic, n, *fidelity)


def _draw(paths: list[Path], count: int, size: int, prep: str, seed: int, tag: str, frame: float = 1.0) -> torch.Tensor:
    """The validation images of one side: fixed crops of the listed entries ("crop"), else a seeded draw."""
    if prep == "crop":
        return draw_crops(paths[:count], size, seed, tag)
    return draw_images(paths, count, size, prep, seed, tag, frame=frame)


def summarize(
    step: int,
    swd: float,
    floor: float,
    bicubic: float,
    n: int,
    fidelity: float = math.nan,
    min_fidelity: float = 0.0,
) -> dict[str, Any]:
    """What `fit` returns about validation: the best step, its SWD beside bicubic's and the floor, the verdict,
    and its fidelity (PSNR-Y against bicubic LR of the same HR images, dB; nan when not logged) beside the
    floor `min_fidelity` that validation ranked with."""
    rel = relative(swd, floor, bicubic)
    return {
        "best_step": step,
        "val_swd": swd,
        "val_swd_rel": rel,
        "bicubic_swd": bicubic,
        "floor_swd": floor,
        "n": n,
        "beat_bicubic": swd < bicubic,
        "val_fidelity": fidelity,
        "min_fidelity": min_fidelity,
    }


def read_validation_log(run: Path) -> list[dict[str, Any]]:
    """The validation lines of a run's log.jsonl, in order; unreadable lines (a kill mid-write) are skipped."""
    path = Path(run) / LOG_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "val_swd" in record:
            records.append(record)
    return records


def verdict(summary: dict[str, Any] | None) -> tuple[bool | None, str]:
    """One line on whether the degrader beat bicubic on the held-out set (None: no validation ran)."""
    if summary is None:
        return None, "no validation ran (see val_split / --val-lr / eval_every)"
    rel = summary["val_swd_rel"]
    figure = f"realism {rel:.2f} (SWD relative to bicubic; 1 = bicubic, 0 = real)" if rel is not None else ""
    figure = figure or f"SWD {summary['val_swd']:.1f} vs bicubic {summary['bicubic_swd']:.1f}"
    where = f"best at step {summary['best_step']}, {summary['n']} held-out images"
    if not math.isnan(summary.get("val_fidelity", math.nan)):
        where += f", fidelity {summary['val_fidelity']:.1f} dB"
    if summary.get("val_fidelity", math.inf) < summary.get("min_fidelity", 0.0):
        return False, (
            f"kept no step above min_fidelity {summary['min_fidelity']:g} dB: {figure}, {where}; its LR images "
            "may have lost the content of the HR images (look at the samples): train differently, or lower "
            "min_fidelity if the real LR images are that degraded"
        )
    if summary["beat_bicubic"]:
        return True, f"beat bicubic on the held-out set: {figure}, {where} (kept as {BEST_FILE})"
    return False, (
        f"did NOT beat bicubic on the held-out set: {figure}, {where}; its LR images are less like the real ones "
        "than plain bicubic downscaling: use bicubic, or train longer or differently"
    )
