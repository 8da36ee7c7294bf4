"""Issue 26, tracebacks and a hang: hostile feature files, a damaged config.json, a full disk, a changed folder."""

from __future__ import annotations

import re
import resource
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.degrade import degrade
from degrader.errors import UserError
from degrader.features import FeatureExtractor
from tests.conftest import write_images
from tests.test_hardening import assert_clean_error, pair_shards, snapshot
from tests.test_hardening_cli import TINY

# ------------------------------------------------------------------------------------------ --features files


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((2, 3)), x.mean((2, 3))


class Listed(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.mean((2, 3))]


class Scalar(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean()


class NotFinite(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) / 0.0


class OneRow(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))[:1]


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("my own error")  # torch.jit.Error when scripted: not a RuntimeError


class Slow(torch.nn.Module):
    """About a second of work on a CPU: past a 0.1 s time box, yet it ends, so no thread is left spinning."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.zeros(1)
        for _ in range(100_000):
            y = y + 1.0
        return x.mean((2, 3)) + y


def script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # newer torch deprecates TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (Pair(), "returned a tuple, not a tensor; it must return \\(B, D\\) features"),
        (Listed(), "returned a list, not a tensor"),
        (Scalar(), "returned shape \\(\\) for 4 images; it must return \\(B, D\\)"),
        (NotFinite(), "returned NaN or infinite features for \\(4, 3, 8, 8\\) images"),
        (OneRow(), "returned shape \\(1, 3\\) for 4 images"),
        (Raises(), "failed on \\(4, 3, 8, 8\\) images in \\[0, 1\\]: .*my own error"),
    ],
    ids=["tuple", "list", "scalar", "nan", "batch", "raises"],
)
def test_a_feature_file_that_misbehaves_is_one_line(tmp_path, module, match):
    path = script(module, tmp_path / "f.pt")
    for timeout in (120.0, None):  # the first call in its thread, and later calls in this one
        with pytest.raises(UserError, match=f"^--features {path} {match}") as e:
            FeatureExtractor(path, timeout=timeout)(torch.rand(4, 3, 8, 8))
        assert "\n" not in str(e.value)


def test_a_feature_file_that_does_not_return_is_time_boxed(tmp_path):
    path = script(Slow(), tmp_path / "slow.pt")
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"^--features {path}: its first call did not return within 0.1 s"):
        FeatureExtractor(path, timeout=0.1)(torch.rand(2, 3, 8, 8))
    assert time.perf_counter() - start < 0.9  # it did not wait for the forward
    assert FeatureExtractor(path, timeout=60)(torch.rand(2, 3, 8, 8)).shape == (2, 3)  # given time, it answers


def test_eval_with_a_feature_file_returning_a_tuple_is_one_line(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 16, 64)
    write_images(lr, 16, 16, seed=1)
    features = script(Pair(), tmp_path / "pair.pt")
    args = ["eval", "--degrader", "bicubic", "--hr", hr, "--lr", lr, "--out", tmp_path / "eval", "--n", "8"]
    result = CliRunner().invoke(degrade, [str(a) for a in [*args, "--features", features]])
    assert_clean_error(result, f"--features {features} returned a tuple, not a tensor")
    help_text = " ".join(CliRunner().invoke(degrade, ["eval", "--help"]).output.split())
    assert "A features file is code" in help_text and "--features-timeout" in help_text


# ----------------------------------------------------------------------------------------- degrade report


@pytest.mark.parametrize("text", ["[1, 2]", '"run"', "7"])
def test_report_of_a_run_whose_config_is_not_an_object(tmp_path, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(text)
    result = CliRunner().invoke(degrade, ["report", str(run)])
    assert_clean_error(result, f"{run / 'config.json'} is not a JSON object")


# ------------------------------------------------------------------------------- a full disk (file-size limit)


@contextmanager
def file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG, as on a full file system (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def checkpoints(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(out).items() if k.endswith(".safetensors")}


def test_fit_resume_past_a_file_size_limit_names_the_file_and_keeps_the_checkpoint(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    tiny = TINY
    first = CliRunner().invoke(
        degrade, [str(a) for a in ["fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "2", *tiny]]
    )
    assert first.exit_code == 0, first.output
    before = checkpoints(out)
    with file_size_limit(min(map(len, before.values())) // 2):
        resumed = CliRunner().invoke(degrade, ["fit", "--out", str(out), "--resume", "--steps", "4", "--set=workers=0"])
    line = assert_clean_error(resumed, "file too large writing", str(out))
    assert re.search(r"writing \S+/(state|degrader)\.safetensors \(a file-size limit", line), line
    assert checkpoints(out) == before and not [k for k in snapshot(out) if k.endswith(".tmp")]


def test_sr_train_past_a_file_size_limit_names_the_file_and_keeps_the_checkpoint(tmp_path):
    from sr.train import SRTrainConfig, plan_train, train

    shards = str(pair_shards(tmp_path / "shards", {}))
    kw = dict(shards=shards, device="cpu", workers=0, batch_size=2, pixel_only=True, preset="small", log_every=1)
    out = tmp_path / "run"
    train(plan_train(SRTrainConfig(out=str(out), steps=1, **kw)))
    before = checkpoints(out)
    with file_size_limit(min(map(len, before.values())) // 2), pytest.raises(UserError) as e:
        train(plan_train(SRTrainConfig(out=str(out), steps=2, resume=True, **kw)))
    assert re.match(f"file too large writing {re.escape(str(out))}/(state|sr)\\.safetensors", str(e.value)), e.value
    assert checkpoints(out) == before and not [k for k in snapshot(out) if k.endswith(".tmp")]


def test_export_past_a_file_size_limit_names_the_shard(tiny_folders, tmp_path):
    from degrader.export import ExportConfig, export_shards, plan_export

    hr, _ = tiny_folders
    out = tmp_path / "shards"
    plan = plan_export(ExportConfig(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=2))
    with file_size_limit(8000), pytest.raises(UserError, match=f"^file too large writing {out / 'shard-000000.tar'}"):
        export_shards(plan)
    assert sorted(snapshot(out)) == [".export-state.json"]  # no half-written shard under any name


# ------------------------------------------------------------------------------- fit --resume, a changed folder


@pytest.mark.parametrize("changed", ["--lr", "--hr"])
def test_fit_resume_on_a_changed_folder_names_the_folder(tmp_path, changed):
    hr, lr, out = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_images(hr, 12, 64)
    write_images(lr, 12, 16, seed=1)
    tiny = TINY
    first = CliRunner().invoke(
        degrade, [str(a) for a in ["fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", *tiny]]
    )
    assert first.exit_code == 0, first.output
    folder = {"--hr": hr, "--lr": lr}[changed]
    (folder / "000.png").unlink()
    write_images(tmp_path / "new", 1, 64 if changed == "--hr" else 16, seed=7)[0].rename(folder / "new.png")
    before = snapshot(out)
    resumed = CliRunner().invoke(degrade, ["fit", "--out", str(out), "--resume", "--steps", "2", "--set=workers=0"])
    line = assert_clean_error(resumed, f"--resume: {changed} {folder} changed since the run began")
    assert "other settings" not in line
    assert snapshot(out) == before
