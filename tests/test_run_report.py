"""The run report (report.html of a fit run) and `degrade report RUN`: local files only, every section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.degrade import degrade
from degrader.eval_report import write_eval_report
from degrader.evaluate import EvalConfig, evaluate_degraders, plan_evaluation
from degrader.gan import LossConfig
from degrader.run_report import EVAL_DIR, LOSS_PLOT, REALISM_PLOT, write_run_report
from degrader.train import FitConfig, fit, plan_fit


def referenced(page: str) -> list[str]:
    return re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)


def assert_local_only(page: str, run: Path) -> None:
    """Every src/href names an existing file inside `run` by a relative path; nothing else is loaded."""
    refs = referenced(page)
    assert refs
    for ref in refs:
        assert "://" not in ref and not ref.startswith(("/", "//", "data:")) and ".." not in ref.split("/"), ref
        assert (run / ref).is_file(), ref
    assert "http" not in page.lower() and "@import" not in page and "url(" not in page


@pytest.fixture
def run(tmp_path, make_images) -> Path:
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    make_images(hr, 12, 64, seed=1)
    make_images(lr, 40, 16, seed=2)
    config = FitConfig(
        hr=str(hr), lr=str(lr), out=str(tmp_path / "run"), hr_size=32, steps=4, batch_size=2, workers=0,
        log_every=1, sample_every=2, device="cpu", loss=LossConfig(d_steps=1), val_split=0.5, eval_every=2,
    )  # fmt: skip
    return fit(plan_fit(config)).out


def test_fit_report_refers_only_to_files_beside_it(run, tmp_path):
    page = write_run_report(run).read_text()
    assert_local_only(page, run)
    refs = referenced(page)
    assert {LOSS_PLOT, REALISM_PLOT, "samples/step-000002.png", "samples/step-000004.png"} <= set(refs)
    assert "beat bicubic" in page  # the verdict line, either way
    assert "No evaluation yet" in page
    # With `degrade eval --out RUN/eval`, the report shows its table and links its files.
    plan = plan_evaluation(
        EvalConfig(degraders=[str(run)], hr=str(tmp_path / "hr"), lr=str(tmp_path / "lr"), out=str(run / EVAL_DIR), n=8)
    )
    write_eval_report(run / EVAL_DIR, evaluate_degraders(plan))
    page = write_run_report(run).read_text()
    assert_local_only(page, run)
    assert f"{EVAL_DIR}/report.html" in referenced(page) and "bicubic" in page and "C2ST" in page


def test_report_command(run, tmp_path):
    (run / "report.html").unlink(missing_ok=True)
    result = CliRunner().invoke(degrade, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file() and (run / REALISM_PLOT).is_file()
    # A run without validation still gets a report; a folder that is no run gets one line.
    (run / "log.jsonl").write_text('{"step": 1, "g_pixel": 0.5, "hr_per_s": 3}\n{"step": 2, "g_pi')  # cut short
    (run / REALISM_PLOT).unlink()
    result = CliRunner().invoke(degrade, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "logged no validation" in page and REALISM_PLOT not in page
    assert_local_only(page, run)
    result = CliRunner().invoke(degrade, ["report", str(tmp_path / "hr")])
    assert result.exit_code == 1 and "holds no config.json" in result.output and "Traceback" not in result.output


def test_report_shows_what_a_structured_degrader_learned(run):
    """The fingerprint: per-seed parameter distributions and kernels, read from the checkpoint the run keeps."""
    from degrader.checkpoint import Degrader
    from degrader.run_report import FINGERPRINT_PLOT, KERNELS_IMAGE, fingerprint

    assert hasattr(Degrader.load(run).net_g, "params")  # the small preset's structured generator
    page = write_run_report(run).read_text()
    assert_local_only(page, run)
    assert {FINGERPRINT_PLOT, KERNELS_IMAGE} <= set(referenced(page))
    assert "JPEG quality" in page and "saturation" in page
    values = fingerprint(Degrader.load(run).net_g, n=16)
    kernel = values.pop("kernel")
    assert kernel.shape[0] == 16 and torch.allclose(kernel.sum(dim=(1, 2)), torch.ones(16), atol=1e-5)
    assert all(v.shape == (16,) for v in values.values())
    assert 10 <= float(values["JPEG quality"].min()) <= float(values["JPEG quality"].max()) <= 100
