"""Validation during `fit`: the held-out split, the logged realism figure, best.safetensors and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.degrade import degrade
from degrader.checkpoint import BEST_FILE, DEGRADER_FILE, Degrader
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.run import STATE_FILE
from degrader.run_report import write_run_report
from degrader.train import FitConfig, fit, plan_fit
from degrader.validation import read_validation_log, summarize, verdict


def tiny(hr: Path, lr: Path, out: Path, **kw) -> FitConfig:
    kw = {"hr_size": 32, "steps": 5, "batch_size": 2, "workers": 0, "log_every": 1, "device": "cpu", **kw}
    kw = {"loss": LossConfig(d_steps=1), "val_split": 0.5, "eval_every": 2, **kw}
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), **kw)


def without_timing(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "hr_per_s"} for line in lines]


def test_the_held_out_images_leave_training(folders, tmp_path, make_images):
    hr, lr = folders
    plan = plan_fit(tiny(hr, lr, tmp_path / "run"))
    val = plan.validation
    assert len(val.lr) == 20 and len(plan.lr.paths) == 20  # half of the 40 LR images held out
    assert not set(val.lr) & set(plan.lr.paths)
    assert len(val.hr) == 10 and not val.hr_held_out and len(plan.hr.paths) == 12  # too few HR to spare 10
    assert "validation every 2 steps" in plan.validation_note
    make_images(tmp_path / "many-hr", 40, 64, seed=3)
    plan = plan_fit(tiny(tmp_path / "many-hr", lr, tmp_path / "run"))
    assert plan.validation.hr_held_out and len(plan.hr.paths) == 30  # 4 x 10 HR images: 10 leave training
    assert not set(plan.validation.hr) & set(plan.hr.paths)
    # The default share of a small folder is too few images: validation is off, with the reason.
    plan = plan_fit(tiny(hr, lr, tmp_path / "run", val_split=0.1))
    assert plan.validation is None and len(plan.lr.paths) == 40 and "fewer than 16" in plan.validation_note
    plan = plan_fit(tiny(hr, lr, tmp_path / "run", val_split=0.0))
    assert plan.validation is None and "off" in plan.validation_note


def test_a_separate_validation_folder(folders, tmp_path, make_images):
    hr, lr = folders
    make_images(tmp_path / "val", 24, 16, seed=4)
    plan = plan_fit(tiny(hr, lr, tmp_path / "run", val_lr=str(tmp_path / "val")))
    assert len(plan.lr.paths) == 40 and len(plan.validation.lr) == 24  # the training LR set is untouched
    with pytest.raises(UserError, match="--val-lr .* is the --lr folder"):
        plan_fit(tiny(hr, lr, tmp_path / "run", val_lr=str(lr)))
    make_images(tmp_path / "few", 6, 16, seed=5)
    with pytest.raises(UserError, match="--val-lr .*: 6 usable images; validation needs at least 16"):
        plan_fit(tiny(hr, lr, tmp_path / "run", val_lr=str(tmp_path / "few")))
    with pytest.raises(UserError, match="val_split"):
        plan_fit(tiny(hr, lr, tmp_path / "run", val_split=1.0))


def test_validation_logs_realism_and_keeps_the_best(folders, tmp_path):
    hr, lr = folders
    calls = []
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run")), on_progress=lambda *a: calls.append(a))
    run = result.out
    records = read_validation_log(run)
    assert [r["step"] for r in records] == [2, 4, 5]  # every eval_every steps, and the last
    for r in records:
        assert r["val_swd"] > 0 and r["val_bicubic"] > 0 and r["val_floor"] > 0
        assert r["val_swd_rel"] == pytest.approx((r["val_swd"] - r["val_floor"]) / (r["val_bicubic"] - r["val_floor"]))
    # The progress line shows the latest figure first, from the first validation on.
    assert "val_rel" not in calls[0][2] and list(calls[1][2])[0] == "val_rel"
    assert calls[-1][2]["val_rel"] == records[-1]["val_swd_rel"]
    # best.safetensors holds the best-scoring step; Degrader.load prefers it over the last weights.
    best = min(records, key=lambda r: r["val_swd"])
    assert result.validation["best_step"] == best["step"] == records[-1]["val_best_step"]
    assert result.validation["beat_bicubic"] == (best["val_swd"] < best["val_bicubic"])
    deg = Degrader.load(run)
    assert (deg.step, deg.file) == (best["step"], run / BEST_FILE)
    assert Degrader.load(run / DEGRADER_FILE).step == 5
    x = torch.rand(3, 3, 32, 32)
    again = Degrader.load(run / BEST_FILE).degrade(x, [0, 1, 2])
    assert torch.equal(deg.degrade(x, [0, 1, 2]), again)


def test_best_weights_are_the_weights_of_the_best_step(folders, tmp_path):
    hr, lr = folders
    # A run that stops at the best step leaves its last weights equal to the best ones.
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run")))
    best_step = result.validation["best_step"]
    short = fit(plan_fit(tiny(hr, lr, tmp_path / "short", steps=best_step)))
    x = torch.rand(2, 3, 32, 32)
    expected = Degrader.load(short.out / DEGRADER_FILE).degrade(x, [5, 6])
    assert torch.equal(Degrader.load(result.out).degrade(x, [5, 6]), expected)


def test_resume_keeps_the_best(folders, tmp_path):
    hr, lr = folders
    straight = fit(plan_fit(tiny(hr, lr, tmp_path / "straight", steps=6)))
    split = tmp_path / "split"
    fit(plan_fit(tiny(hr, lr, split, steps=2)))
    early_state = (split / STATE_FILE).read_bytes()
    fit(plan_fit(tiny(hr, lr, split, steps=4, resume=True)))
    # As if killed after step 4's validation but before its checkpoint: the state is step 2's again, while
    # best.safetensors and the log may already be step 4's.
    (split / STATE_FILE).write_bytes(early_state)
    resumed = fit(plan_fit(tiny(hr, lr, split, steps=6, resume=True)))
    assert resumed.validation == straight.validation
    assert without_timing(split) == without_timing(straight.out)
    assert (split / BEST_FILE).read_bytes() == (straight.out / BEST_FILE).read_bytes()
    assert (split / DEGRADER_FILE).read_bytes() == (straight.out / DEGRADER_FILE).read_bytes()


def test_resume_from_before_any_validation_drops_a_later_best(folders, tmp_path):
    hr, lr = folders
    run, saved = tmp_path / "run", {}

    def grab(step: int, total: int, logs: dict) -> None:
        if step == 2:  # step 2 is validated, step 1 checkpointed: the state on disk is still step 1's
            saved["state"] = (run / STATE_FILE).read_bytes()

    fit(plan_fit(tiny(hr, lr, run, steps=4, checkpoint_every=1)), on_progress=grab)
    assert (run / BEST_FILE).exists()
    (run / STATE_FILE).write_bytes(saved["state"])  # as if killed after step 2's validation
    result = fit(plan_fit(tiny(hr, lr, run, steps=1, checkpoint_every=1, resume=True)))
    assert result.step == 1 and result.validation is None and read_validation_log(run) == []
    assert not (run / BEST_FILE).exists()  # weights from a step this run has not reached
    assert Degrader.load(run).file == run / DEGRADER_FILE


def test_select_mix_ranks_steps_by_swd_and_statistics(folders, tmp_path):
    hr, lr = folders
    with pytest.raises(UserError, match="select is"):
        plan_fit(tiny(hr, lr, tmp_path / "bad", select="psnr"))
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=6, eval_every=1, select="mix")))
    records = read_validation_log(result.out)
    for r in records:  # the mean of the SWD's and each statistic's relative figure
        parts = [v for k, v in r.items() if k.startswith("val_") and k.endswith("_rel") and k != "val_swd_rel"]
        assert r["val_mix"] == pytest.approx((r["val_swd_rel"] + sum(parts)) / (1 + len(parts)))
    best = min(records, key=lambda r: r["val_mix"])
    assert result.validation["best_step"] == best["step"] == Degrader.load(result.out).step
    assert result.validation["val_swd"] == best["val_swd"]  # the verdict stays the SWD's
    assert result.validation["val_fidelity"] == best["val_fidelity"]
    # the run report's verdict speaks of the step fit kept, not of the step with the lowest SWD
    page = write_run_report(result.out).read_text()
    assert f"best at step {best['step']}," in page and f"fidelity {best['val_fidelity']:.1f} dB" in page


def test_min_fidelity_ranks_the_steps_that_keep_the_content_first(folders, tmp_path):
    hr, lr = folders
    with pytest.raises(UserError, match="min_fidelity"):
        plan_fit(tiny(hr, lr, tmp_path / "bad", min_fidelity=-1.0))
    run = lambda name, floor: fit(  # noqa: E731  (the same seed: the same steps and figures every time)
        plan_fit(tiny(hr, lr, tmp_path / name, steps=6, eval_every=1, select="swd", min_fidelity=floor))
    )
    records = read_validation_log(run("free", 0.0).out)
    fidelities = sorted(r["val_fidelity"] for r in records)
    floor = fidelities[-3]  # three steps reach it
    result = run("floor", floor)
    figures = lambda rs: [{k: v for k, v in r.items() if k != "val_best_step"} for r in rs]  # noqa: E731
    assert figures(read_validation_log(result.out)) == figures(records)
    kept = min((r for r in records if r["val_fidelity"] >= floor), key=lambda r: r["val_swd"])
    assert result.validation["best_step"] == kept["step"] == Degrader.load(result.out).step
    # no step reaches the floor: the best by SWD is kept, and the verdict says the content may be lost
    result = run("none", fidelities[-1] + 1)
    assert result.validation["best_step"] == min(records, key=lambda r: r["val_swd"])["step"]
    beat, line = verdict(result.validation)
    assert beat is False and f"kept no step above min_fidelity {fidelities[-1] + 1:g} dB" in line


def test_verdict_lines():
    won = summarize(300, swd=20.0, floor=10.0, bicubic=30.0, n=128)
    assert won["val_swd_rel"] == pytest.approx(0.5) and won["beat_bicubic"]
    beat, line = verdict(won)
    assert beat and "beat bicubic" in line and "0.50" in line and "step 300" in line
    lost = summarize(100, swd=40.0, floor=10.0, bicubic=30.0, n=128)
    beat, line = verdict(lost)
    assert beat is False and "did NOT beat bicubic" in line and "1.50" in line
    assert verdict(None)[0] is None


def test_fit_command_ends_with_the_verdict_and_a_report(folders, tmp_path):
    hr, lr = folders
    out = tmp_path / "run"
    args = ["fit", "--hr", hr, "--lr", lr, "--out", out, "--preset", "paper", "--set", "hr_size=32", "--steps", "4"]
    args += ["--batch-size", "2", "--set", "loss.d_steps=1", "--set", "workers=0", "--device", "cpu"]
    args += ["--set", "val_split=0.5", "--set", "select=swd", "--set", "min_fidelity=0"]  # the best by SWD alone
    result = CliRunner().invoke(degrade, [str(a) for a in [*args, "--set", "eval_every=2"]])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "validation every 2 steps: 10 HR images (also trained on) against 2 x 10 real LR images" in text
    best = min(read_validation_log(out), key=lambda r: r["val_swd"])
    figure = f"bicubic on the held-out set: realism {best['val_swd_rel']:.2f}"
    if best["val_swd"] < best["val_bicubic"]:
        assert f"validation: the degrader beat {figure}" in text
    else:
        assert f"warning: the degrader did NOT beat {figure}" in text
    assert f"best at step {best['step']}" in text and (out / "report.html").is_file()
