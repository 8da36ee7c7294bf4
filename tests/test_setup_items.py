"""A new user's first minutes: the thread policy for library users, progress in piped output, the best step's
samples in report.html, `sr eval`'s line on bicubic, and the out-folder message worded for library callers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from degrader import threads
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.train import FitConfig, fit, plan_fit


def tiny_fit(hr: Path, lr: Path, out: Path, **kw) -> FitConfig:
    kw = {"hr_size": 32, "steps": 5, "batch_size": 2, "workers": 0, "device": "cpu", "val_split": 0, **kw}
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), loss=LossConfig(d_steps=1), **kw)


# --- 1. the thread policy reaches library users ---


def spin_count(code: str, **env: str) -> str:
    """GOMP_SPINCOUNT as libgomp reports it when torch loads it in a fresh process running `code`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean |= {"OMP_DISPLAY_ENV": "VERBOSE", **env}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", out.stdout + out.stderr)
    if found is None:
        pytest.skip("torch's OpenMP is not libgomp (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV)")
    return found.group(1)


def test_import_degrader_before_torch_makes_openmp_sleep_unless_the_user_chose():
    code = "import degrader; import torch; torch.ones(9).sum()"
    assert spin_count(code) == "0"  # passive: waiting threads sleep
    assert spin_count(code, OMP_WAIT_POLICY="ACTIVE") != "0"  # the user's own setting is kept


@pytest.fixture
def nothing_chosen(monkeypatch):
    """A library user's process: one usable core, no OMP_NUM_THREADS, and no count chosen through degrader."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    monkeypatch.setattr(threads, "_chosen", False)
    torch.set_num_threads(2)  # torch's own default on a 2-core machine
    yield
    torch.set_num_threads(before)


def test_library_fit_applies_the_policy_as_the_cli_does(folders, tmp_path, nothing_chosen):
    hr, lr = folders
    fit(plan_fit(tiny_fit(hr, lr, tmp_path / "run", steps=1)))
    assert torch.get_num_threads() == 1  # one thread per usable core, not torch's 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == 1
    # Once chosen (configure, --threads, a run), later runs keep the count.
    assert threads.configure(2) == 2
    fit(plan_fit(tiny_fit(hr, lr, tmp_path / "again", steps=1)))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["threads"] == 2


def test_library_export_applies_the_policy(folders, tmp_path, nothing_chosen):
    from degrader.export import ExportConfig, export_shards, plan_export

    hr, _ = folders
    export_shards(plan_export(ExportConfig(hr=str(hr), out=str(tmp_path / "shards"), hr_size=32, workers=0)))
    assert torch.get_num_threads() == 1


def test_configure_applies_a_count_or_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.configure() == 1 == torch.get_num_threads()
        assert threads.configure(2) == 2 == torch.get_num_threads()  # an explicit count wins over the environment
        with pytest.raises(UserError, match="--threads"):
            threads.configure(0)
    finally:
        torch.set_num_threads(before)


# --- 2. piped output shows progress ---


def test_plain_progress_prints_every_five_percent_or_thirty_seconds(monkeypatch):
    from cli import progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines = []
    monkeypatch.setattr(progress.console, "print", lambda text, **kw: lines.append(text))
    plain = progress.PlainProgress("fit")
    for step in range(1, 201):  # 2 s a step
        now[0] = 2.0 * step
        plain(step, 200, {"loss_g": 0.5, "loss_d": 1.25, "lr": 1e-4, "hidden": 2.0})
    plain.finish()  # nothing left to print
    assert len(lines) == 20 and lines[-1] == "fit 200/200 (100%)  0.5 step/s  loss_g 0.5  loss_d 1.25  lr 0.0001"
    assert lines[0] == "fit 11/200 (6%)  0.5 step/s  eta 6:18  loss_g 0.5  loss_d 1.25  lr 0.0001"  # rate from step 1
    lines.clear()
    slow = progress.PlainProgress("export", unit="pair")
    for step in range(1, 60):  # 10,000 pairs at 2 s a pair: 5% would take 1000 s, so a line every 30 s
        now[0] = 2.0 * step
        slow(step, 10_000, {})
    assert [line.split()[1] for line in lines] == ["16/10000", "31/10000", "46/10000"]
    assert lines[-1] == "export 46/10000 (0%)  0.5 pair/s  eta 5:31:48"
    slow.finish()  # a run that stopped early: its last call
    assert lines[-1].startswith("export 59/10000")


def test_fit_through_a_pipe_prints_progress_lines(folders, tmp_path):
    from cli.degrade import degrade

    hr, lr = folders
    args = ["fit", "--hr", hr, "--lr", lr, "--out", tmp_path / "run", "--set", "hr_size=32", "--steps", "20"]
    args += ["--batch-size", "2", "--set", "loss.d_steps=1", "--set", "workers=0", "--device", "cpu"]
    args += ["--set", "val_split=0"]
    result = CliRunner().invoke(degrade, [str(a) for a in args])  # CliRunner's streams are no terminal
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if re.match(r"fit \d+/20 \(\d+%\)", line)]
    assert len(lines) >= 5 and lines[-1].startswith("fit 20/20 (100%)")
    assert all(" step/s" in line and "g_pixel" in line for line in lines)  # the rate and the first losses
    assert any(" eta " in line for line in lines)


# --- 3. report.html shows the weights that are used ---


def test_report_shows_the_best_steps_samples(folders, tmp_path, monkeypatch):
    from degrader.checkpoint import Degrader
    from degrader.run_report import write_run_report
    from degrader.validation import Validation

    hr, lr = folders
    ranks = iter([(False, 0.0)])  # the first validation (step 2) stays the best: its grid is not a due one
    monkeypatch.setattr(Validation, "_rank", lambda self, record: next(ranks, (False, 1.0)))
    config = tiny_fit(hr, lr, tmp_path / "run", val_split=0.5, eval_every=2)
    result = fit(plan_fit(config))
    assert result.validation["best_step"] == 2 and Degrader.load(result.out).step == 2
    run = result.out
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000002.png", "step-000005.png"]
    page = write_run_report(run).read_text()
    assert re.search(r'<figure class="best"><img src="samples/step-000002.png"[^<]*><figcaption>[^<]*<b>best</b>', page)
    assert 'class="best"><img src="samples/step-000005.png"' not in page
    # The grid is what the best weights draw: the same bytes as a run that drew step 2's grid while training.
    drawn = fit(plan_fit(tiny_fit(hr, lr, tmp_path / "drawn", val_split=0.5, eval_every=2, sample_every=2)))
    assert (drawn.out / "samples" / "step-000002.png").read_bytes() == (run / "samples/step-000002.png").read_bytes()


def test_realism_plot_labels_lie_inside_the_figure(tmp_path, monkeypatch):
    from degrader import run_report

    figures = []
    monkeypatch.setattr(run_report, "save_figure", lambda fig, path: figures.append(fig))
    records = [
        {"step": s, "val_swd": 10 - s / 100, "val_swd_rel": 0.9 - s / 1000, "val_fidelity": 25 + s / 100}
        for s in range(0, 301, 50)
    ]
    run_report.plot_realism(records, tmp_path / "realism.png", best_step=300)
    fig = figures[0]
    fig.canvas.draw()
    box = fig.bbox
    labels = [ax.yaxis.label for ax in fig.axes] + [fig.axes[0].xaxis.label]
    assert len(labels) == 3 and all(label.get_text() for label in labels)
    for label in labels:
        extent = label.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, label


# --- 4. sr eval says where SR stands against bicubic upscaling ---


def test_sr_eval_warns_when_sr_scores_below_bicubic(tmp_path, make_images):
    from cli.sr import sr
    from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, save_sr_generator

    torch.manual_seed(0)
    save_sr_generator(tmp_path / SR_FILE, LowToHighGenerator(LowToHighConfig(width=8, blocks=(1, 1, 1))), step=1)
    pairs = tmp_path / "pairs"
    for i, path in enumerate(make_images(pairs, 2, 64, seed=3)):
        path.rename(pairs / f"{i}_HR.png")
    for i, path in enumerate(make_images(tmp_path / "small", 2, 16, seed=3)):
        path.rename(pairs / f"{i}_LR.png")
    args = ["eval", "--checkpoint", tmp_path, "--pairs", pairs, "--device", "cpu", "--json", tmp_path / "s.json"]
    result = CliRunner().invoke(sr, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    mean = json.loads((tmp_path / "s.json").read_text())["mean"]
    sr_y, bic_y = mean["model"]["psnr_y"], mean["bicubic"]["psnr_y"]
    assert sr_y < bic_y  # an untrained model
    text = " ".join(result.output.split())
    assert f"warning: SR scores BELOW bicubic upscaling: PSNR-Y {sr_y:.2f} vs {bic_y:.2f} dB" in text


def test_sr_eval_line_when_sr_beats_bicubic():
    from cli.sr_use import bicubic_verdict

    report = SimpleNamespace(mean={"model": {"psnr_y": 30.5}, "bicubic": {"psnr_y": 28.43}}, rows=[1, 2, 3, 4, 5])
    assert bicubic_verdict(report) == (
        True,
        "SR beats bicubic upscaling: PSNR-Y 30.50 vs 28.43 dB (+2.07) over 5 images.",
    )
    report.mean["model"]["psnr_y"] = 24.74
    beat, line = bicubic_verdict(report)
    assert beat is False and line.startswith("SR scores BELOW bicubic upscaling: PSNR-Y 24.74 vs 28.43 dB (-3.69)")


# --- 5. an existing out, worded for library callers and the CLI alike ---


def test_plan_fit_on_a_run_names_the_config_fields_and_the_flags(folders, tmp_path):
    hr, lr = folders
    out = tmp_path / "run"
    fit(plan_fit(tiny_fit(hr, lr, out, steps=1)))
    with pytest.raises(UserError) as error:
        plan_fit(tiny_fit(hr, lr, out, steps=1))
    message = str(error.value)
    assert f"--out {out} is not empty" in message
    assert "--resume (resume=True)" in message and "--overwrite (overwrite=True)" in message and "(out=)" in message
