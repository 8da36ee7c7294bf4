"""`fit`: learning, run directory, exact resume, Ctrl-C, determinism and bad input (through the library)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import degrader.run
from degrader.checkpoint import DEGRADER_FILE, Degrader
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.run import STATE_FILE
from degrader.train import FitConfig, fit, plan_fit


def tiny(hr: Path, lr: Path, out: Path, **kw) -> FitConfig:
    """A fit that takes well under a second per step on one CPU thread."""
    kw = {"hr_size": 32, "steps": 6, "batch_size": 2, "workers": 0, "log_every": 1, "device": "cpu", **kw}
    kw.setdefault("loss", LossConfig(d_steps=2))
    kw.setdefault("generator", "paper")  # the paper network; tests/test_structured.py fits the structured one
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), **kw)


def image_columns(grid: Image.Image, rows: int = 7, cell: int = 32, pad: int = 2) -> int:
    """Cells in the first (HR) row of a sample grid: runs of `cell` non-white pixel columns (captions are narrower)."""
    y = grid.height - rows * (cell + pad)
    inked = (np.asarray(grid)[y : y + cell] < 250).any(axis=(0, 2))
    runs = "".join("x" if v else " " for v in inked).split()
    return sum(len(run) == cell for run in runs)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert different == []


def losses(run: Path) -> list[dict]:
    """The logged losses per step, without the timing field."""
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "hr_per_s"} for line in lines]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ learning


def test_short_fit_lowers_the_pixel_loss(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    # Plain tanh output starts far from avg-pooled HR; the smooth images make the target learnable.
    config = tiny(hr, lr, tmp_path / "run", steps=30, batch_size=4, residual=False, log_every=5)
    config.loss = LossConfig(d_steps=1)
    result = fit(plan_fit(config))
    pixel = [line["g_pixel"] for line in losses(result.out)]
    assert len(pixel) == 6
    assert pixel[-1] < 0.7 * pixel[0], pixel
    assert result.logs["g_pixel"] == pytest.approx(pixel[-1])


def test_run_directory_contents(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    calls = []
    result = fit(
        plan_fit(tiny(hr, lr, tmp_path / "run", steps=4, sample_every=2)), on_progress=lambda *a: calls.append(a)
    )
    out = tmp_path / "run"
    assert (result.out, result.step, result.interrupted) == (out, 4, False)
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all({"g_pixel", "g_adv", "d_loss"} <= c[2].keys() for c in calls)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert names == [
        "config.json", DEGRADER_FILE, "inputs.json", "log.jsonl", "samples", "samples/step-000002.png",
        "samples/step-000004.png", STATE_FILE,
    ]  # fmt: skip
    saved = json.loads((out / "config.json").read_text())
    assert saved["hr"] == str(hr) and saved["hr_size"] == 32 and saved["loss"]["d_steps"] == 2
    log = losses(out)
    assert [line["step"] for line in log] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(list(line.values()), dtype=torch.float64)).all() for line in log)
    # Grid rows: HR, bicubic, 4 x G(HR, z), real LR; 6 images per row; cells 32 px high with 2 px padding.
    with Image.open(out / "samples" / "step-000004.png") as grid:
        assert grid.mode == "RGB" and image_columns(grid) == 6
        left, top = grid.width - (2 + 6 * 34), grid.height - (2 + 7 * 34)
        assert left > 0 and top > 0  # bands for the row and column captions
    deg = Degrader.load(out)
    assert (deg.step, deg.hr_size, deg.scale, deg.config.residual) == (4, 32, 4, True)  # small preset: residual
    assert deg.degrade(torch.rand(2, 3, 32, 32), seeds=[0, 1]).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("residual, lr_decay", [(True, 0.0), (False, 0.0), (True, 0.5)])
def test_resume_equals_an_uninterrupted_run(tiny_folders, tmp_path, residual, lr_decay):
    hr, lr = tiny_folders
    loss = LossConfig(d_steps=2, lr_decay=lr_decay)
    straight = fit(plan_fit(tiny(hr, lr, tmp_path / "straight", residual=residual, loss=loss))).out
    if lr_decay:  # the schedule reaches the training loop: other weights than at a constant lr
        constant = fit(plan_fit(tiny(hr, lr, tmp_path / "constant", residual=residual))).out
        decayed, plain = tensors(straight / DEGRADER_FILE), tensors(constant / DEGRADER_FILE)
        assert any(not torch.equal(decayed[k], plain[k]) for k in decayed)
    first = fit(plan_fit(tiny(hr, lr, tmp_path / "split", residual=residual, steps=2, loss=loss)))
    assert first.step == 2
    second = fit(plan_fit(tiny(hr, lr, tmp_path / "split", residual=residual, resume=True, loss=loss)))
    assert second.step == 6 and not second.interrupted
    assert_same_tensors(straight / DEGRADER_FILE, second.out / DEGRADER_FILE)
    assert_same_tensors(straight / STATE_FILE, second.out / STATE_FILE)
    assert losses(straight) == losses(second.out)  # step by step, and no duplicated log lines


def test_ctrl_c_saves_and_resume_finishes_the_same_run(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    straight = fit(plan_fit(tiny(hr, lr, tmp_path / "straight"))).out

    def press_ctrl_c(step, total, logs):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    stopped = fit(plan_fit(tiny(hr, lr, tmp_path / "run")), on_progress=press_ctrl_c)
    assert (stopped.step, stopped.interrupted) == (3, True)
    assert Degrader.load(stopped.out).step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed = fit(plan_fit(tiny(hr, lr, tmp_path / "run", resume=True)))
    assert (resumed.step, resumed.interrupted) == (6, False)
    assert_same_tensors(straight / STATE_FILE, resumed.out / STATE_FILE)
    assert_same_tensors(straight / DEGRADER_FILE, resumed.out / DEGRADER_FILE)


def test_ctrl_c_mid_step_with_loader_workers(tiny_folders, tmp_path, monkeypatch):
    """The terminal sends Ctrl-C to the loader workers too; they must live on so the step can finish."""
    hr, lr = tiny_folders
    make_loader = degrader.run.make_loader

    def press_ctrl_c_at(batches, at: int):
        for i, batch in enumerate(batches):
            if i == at:
                for worker in multiprocessing.active_children():  # the loaders' worker processes
                    os.kill(worker.pid, signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            yield batch

    def loader_that_presses_ctrl_c(paths, size, prep, augment, **kwargs):
        batches = make_loader(paths, size, prep, augment, **kwargs)
        # HR batch 15 is the first D batch of step 3 (7 HR batches per step): 5 more are needed after it.
        return press_ctrl_c_at(batches, at=15) if augment == "paper" else batches

    monkeypatch.setattr(degrader.run, "make_loader", loader_that_presses_ctrl_c)
    config = tiny(hr, lr, tmp_path / "run", workers=1, batch_size=1, loss=LossConfig(d_steps=6))
    result = fit(plan_fit(config))
    assert (result.step, result.interrupted) == (3, True)
    assert Degrader.load(result.out).step == 3


def test_same_seed_gives_byte_identical_weights(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    a = fit(plan_fit(tiny(hr, lr, tmp_path / "a", steps=3))).out
    b = fit(plan_fit(tiny(hr, lr, tmp_path / "b", steps=3))).out
    c = fit(plan_fit(tiny(hr, lr, tmp_path / "c", steps=3, seed=1))).out
    assert (a / DEGRADER_FILE).read_bytes() == (b / DEGRADER_FILE).read_bytes()
    assert (a / STATE_FILE).read_bytes() == (b / STATE_FILE).read_bytes()
    assert (a / DEGRADER_FILE).read_bytes() != (c / DEGRADER_FILE).read_bytes()


@pytest.mark.parametrize("field", ["hr_size", "lr", "residual", "seed", "loss"])
def test_resume_with_other_settings_is_refused(tiny_folders, tmp_path, field, make_images):
    hr, lr = tiny_folders
    fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=1)))
    before = snapshot(tmp_path / "run")
    other_lr = tmp_path / "other"
    make_images(other_lr, 3, 16, seed=5)
    change = {
        "hr_size": {"hr_size": 64},
        "lr": {"lr": str(other_lr)},
        "residual": {"residual": False},
        "seed": {"seed": 1},
        "loss": {"loss": LossConfig(beta=0.1, d_steps=2)},
    }[field]
    config = tiny(hr, lr, tmp_path / "run", resume=True)
    for key, value in change.items():
        setattr(config, key, value)
    match = f"--resume: {tmp_path / 'run'} was run with other settings \\({field}\\); it had {field}="
    with pytest.raises(UserError, match=match):
        fit(plan_fit(config))
    assert snapshot(tmp_path / "run") == before


def test_resume_may_extend_steps_and_change_the_device_choice(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=1)))
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=2, resume=True, device="auto", log_every=5, workers=0)))
    assert result.step == 2


# ------------------------------------------------------------------------------------------------ bad input


def corrupt_files(folder: Path, make_images) -> list[Path]:
    """A text file named .png, random bytes named .jpg and a truncated PNG: each caught by the folder scan."""
    good = make_images(folder.parent / "scratch", 1, 64, seed=9)[0].read_bytes()  # outside `folder`
    (folder / "notes.png").write_text("not an image")
    (folder / "noise.jpg").write_bytes(os.urandom(500))
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    return sorted(folder / name for name in ("cut.png", "noise.jpg", "notes.png"))


def damaged_png(path: Path, make_images) -> Path:
    """A PNG whose header and end are intact but whose pixel data is damaged (the chunk CRC no longer matches)."""
    data = bytearray(make_images(path.parent.parent / "scratch", 1, 64, seed=9)[0].read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(40)
    path.write_bytes(bytes(data))
    return path


def test_missing_and_empty_folders(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    with pytest.raises(UserError, match=f"--hr {tmp_path / 'nope'} does not exist"):
        plan_fit(tiny(tmp_path / "nope", lr, tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"--lr {tmp_path / 'empty'} holds no image files"):
        plan_fit(tiny(hr, tmp_path / "empty", tmp_path / "run"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match="--hr .* holds no image files"):
        plan_fit(tiny(tmp_path / "text", lr, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_folder_of_only_unreadable_images(tiny_folders, tmp_path, make_images):
    hr, lr = tiny_folders
    bad = tmp_path / "bad"
    bad.mkdir()
    corrupt_files(bad, make_images)
    with pytest.raises(UserError, match=f"--lr {bad} holds 3 files but none is a readable image"):
        plan_fit(tiny(hr, bad, tmp_path / "run"))


def test_corrupt_files_are_skipped_and_training_runs(tiny_folders, tmp_path, make_images):
    hr, lr = tiny_folders
    bad = corrupt_files(hr, make_images)
    plan = plan_fit(tiny(hr, lr, tmp_path / "run", steps=2))
    assert len(plan.hr.paths) == 6 and plan.lr.skipped == []
    assert sorted(p for p, _ in plan.hr.skipped) == bad
    assert sorted(why for _, why in plan.hr.skipped) == ["not an image", "not an image", "truncated"]
    result = fit(plan)
    assert result.step == 2


def test_an_image_that_fails_to_decode_late_does_not_abort_training(tiny_folders, tmp_path, make_images):
    # The scan fully decodes only files that look truncated; this one passes it, then fails in the sample grid
    # (which takes the first images) and in the loader (which goes on with the next file).
    hr, lr = tiny_folders
    damaged_png(hr / "000-damaged.png", make_images)
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=2, sample_every=1)))
    assert result.step == 2
    with Image.open(tmp_path / "run" / "samples" / "step-000002.png") as grid:
        assert image_columns(grid) == 6  # the six readable images


def test_images_smaller_than_the_target(tiny_folders, tmp_path, make_images):
    hr, lr = tiny_folders
    small = tmp_path / "small"
    make_images(small, 3, 24)
    with pytest.raises(UserError, match=f"--hr {small} .*none is a readable image of at least 32x32 pixels"):
        plan_fit(tiny(small, lr, tmp_path / "run"))
    make_images(hr, 2, 16, seed=7)  # overwrite two of the six HR images with too small ones
    plan = plan_fit(tiny(hr, lr, tmp_path / "run"))
    assert len(plan.hr.paths) == 4 and all("too small" in why for _, why in plan.hr.skipped)


def test_unwritable_output(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    with pytest.raises(UserError, match=f"--out {blocker} is a file"):
        fit(plan_fit(tiny(hr, lr, blocker)))
    with pytest.raises(UserError, match=f"--out {blocker / 'run'} is not writable"):
        fit(plan_fit(tiny(hr, lr, blocker / "run")))  # a path under a file can never be created, even as root
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_read_only_parent_directory(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            plan_fit(tiny(hr, lr, parent / "run"))
    finally:
        parent.chmod(0o700)


def test_output_holding_another_run(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    stale = plan_fit(tiny(hr, lr, out, steps=2))  # planned while `out` is still empty
    fit(plan_fit(tiny(hr, lr, out, steps=1)))
    before = snapshot(out)
    with pytest.raises(UserError, match=f"--out {out} is not empty; pass --resume .* or --overwrite"):
        plan_fit(tiny(hr, lr, out, steps=2))
    with pytest.raises(UserError, match=f"--out {out} is not empty; pass --resume .* or --overwrite"):
        fit(stale)  # `out` filled up after the plan was made: fit checks again before writing
    assert snapshot(out) == before
    (out / "stale.txt").write_text("old")
    result = fit(plan_fit(tiny(hr, lr, out, steps=2, overwrite=True)))
    assert result.step == 2 and (out / "stale.txt").read_text() == "old"  # a user's file: --overwrite keeps it
    assert Degrader.load(out).step == 2
    assert [line["step"] for line in losses(out)] == [1, 2]  # the old log is gone, not appended to


def test_bad_options(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    with pytest.raises(UserError, match="--preset 'huge'"):
        plan_fit(tiny(hr, lr, tmp_path / "run", preset="huge"))
    with pytest.raises(UserError, match="hr_size/--scale: .*power of two"):
        plan_fit(tiny(hr, lr, tmp_path / "run", hr_size=48))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            plan_fit(tiny(hr, lr, tmp_path / "run", device="cuda"))
