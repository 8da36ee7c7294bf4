"""Issue 10 through click: --help texts, Ctrl-C, --resume from config.json, sr eval's outputs and pairs."""

from __future__ import annotations

import errno
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

import cli.degrade
from cli.degrade import degrade
from cli.sr import sr
from degrader.train import FitConfig
from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, save_sr_generator
from tests.test_hardening import assert_clean_error

TINY = ["--set=hr_size=32", "--batch-size", "2", "--set=loss.d_steps=1", "--set=workers=0", "--device", "cpu"]


def invoke(group: click.Group, *args) -> Result:
    return CliRunner().invoke(group, [str(a) for a in args])


# -------------------------------------------------------------------------------------------------- --help


def commands(group: click.Group, path: str):
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


@pytest.mark.parametrize("group,name", [(degrade, "degrade"), (sr, "sr")])
def test_every_option_has_help_and_every_command_an_example(group, name):
    found = dict(commands(group, name))
    assert len(found) >= 5
    for path, command in found.items():
        assert "Example" in (command.help or ""), f"{path}: no example in its help"
        example = (command.help or "").split("Example", 1)[-1]
        assert name in example, f"{path}: the example does not show a command line"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{path} {param.opts[0]}: no help text"
        shown = invoke(group, *path.split()[1:], "--help")
        assert shown.exit_code == 0 and "Example:" in shown.output, shown.output


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_exits_130_and_names_only_files_that_exist(tiny_folders, tmp_path, monkeypatch):
    hr, lr = tiny_folders

    @contextmanager
    def ctrl_c_at_step_1(*args, **kwargs):
        def on_progress(step, total, logs):
            if step == 1:
                os.kill(os.getpid(), signal.SIGINT)  # the loop finishes the step, saves and stops

        yield on_progress

    monkeypatch.setattr(cli.degrade, "progress_bar", ctrl_c_at_step_1)
    out = tmp_path / "run"
    result = invoke(degrade, "fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "3", *TINY)
    assert result.exit_code == 130, result.output
    assert "interrupted at step 1" in result.output and "--resume" in result.output
    assert not (out / "samples").exists() and "samples" not in result.output
    assert f"degrader.safetensors: {out / 'degrader.safetensors'}" in result.output.replace("\n", "")


def test_ctrl_c_while_planning_exits_130(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("degrader.train.plan_fit", interrupted)
    (tmp_path / "hr").mkdir()
    result = invoke(degrade, "fit", "--hr", tmp_path / "hr", "--lr", tmp_path / "hr", "--out", tmp_path / "run")
    assert result.exit_code == 130 and "interrupted" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------- --resume


def test_resume_takes_the_options_from_the_runs_config(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    first = invoke(degrade, "fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", "--preset", "paper", *TINY)
    assert first.exit_code == 0, first.output
    # No --hr, --lr, --preset or hr_size: they come from config.json, and the run continues.
    resumed = invoke(degrade, "fit", "--out", out, "--resume", "--steps", "2", "--set", "workers=0")
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert (config["hr"], config["preset"], config["hr_size"], config["steps"]) == (str(hr), "paper", 32, 2)
    log = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1] == 2
    # An option given again must agree with the run.
    assert_clean_error(invoke(degrade, "fit", "--out", out, "--resume", "--seed", "5"), "--resume", "seed")
    assert_clean_error(invoke(degrade, "fit", "--out", out, "--resume", "--lr", hr), "--resume", "lr")


def test_resume_of_a_run_from_before_a_setting_was_added(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    first = invoke(degrade, "fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", "--preset", "paper", *TINY)
    assert first.exit_code == 0, first.output
    config = json.loads((out / "config.json").read_text())
    del config["min_fidelity"]  # as an older version wrote it
    (out / "config.json").write_text(json.dumps(config))
    resumed = invoke(degrade, "fit", "--out", out, "--resume", "--steps", "2", "--set", "workers=0")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "config.json").read_text())["min_fidelity"] == FitConfig.min_fidelity  # the default
    # a setting the run had and that differs is still refused
    assert_clean_error(
        invoke(degrade, "fit", "--out", out, "--resume", "--set=min_fidelity=30"), "--resume", "fidelity"
    )


def test_resume_of_a_run_from_before_a_loss_setting_was_added(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    first = invoke(degrade, "fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", *TINY)
    assert first.exit_code == 0, first.output
    config = json.loads((out / "config.json").read_text())
    loss = config["loss"]
    assert (loss["d_highpass"], loss["lr_decay"], loss["exposure"]) == (1.0, 0.5, 100.0)  # the small preset's
    for name in ("d_highpass", "lr_decay", "exposure"):
        del config["loss"][name]  # as a version before the option wrote it: the run trained without it
    (out / "config.json").write_text(json.dumps(config))
    resumed = invoke(degrade, "fit", "--out", out, "--resume", "--steps", "2", "--set", "workers=0")
    assert resumed.exit_code == 0, resumed.output
    loss = json.loads((out / "config.json").read_text())["loss"]
    assert (loss["d_highpass"], loss["lr_decay"], loss["exposure"]) == (0.0, 0.0, 0.0)  # not the preset's
    assert_clean_error(
        invoke(degrade, "fit", "--out", out, "--resume", "--set", "loss.d_highpass=1"), "--resume", "loss"
    )


def test_fit_without_hr_and_without_resume(tiny_folders, tmp_path):
    hr, _ = tiny_folders
    assert_clean_error(invoke(degrade, "fit", "--hr", hr, "--out", tmp_path / "run"), "--lr", "--resume")
    assert_clean_error(
        invoke(degrade, "fit", "--out", tmp_path / "new", "--resume"), "--resume", "holds no run to continue"
    )
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------------------------- sr eval


def save_png(path: Path, size: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(a, "RGB").save(path)


@pytest.fixture
def sr_run(tmp_path) -> Path:
    torch.manual_seed(0)
    save_sr_generator(tmp_path / SR_FILE, LowToHighGenerator(LowToHighConfig(width=8, blocks=(1, 1, 1))), step=1)
    return tmp_path


@pytest.fixture
def pairs(tmp_path) -> Path:
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        save_png(folder / f"{name}_HR.png", 64, i)
        save_png(folder / f"{name}_LR.png", 16, 10 + i)
    return folder


def eval_args(sr_run: Path, pairs: Path, *extra) -> list:
    return ["eval", "--checkpoint", sr_run, "--pairs", pairs, "--device", "cpu", *extra]


def test_eval_json_never_replaces_a_file_without_overwrite(sr_run, pairs, tmp_path):
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"my contact sheet")
    for option in ("--json", "--grid"):
        result = invoke(sr, *eval_args(sr_run, pairs, option, sheet))
        assert_clean_error(result, option, str(sheet), "exists", "--overwrite")
        assert sheet.read_bytes() == b"my contact sheet"
    result = invoke(sr, *eval_args(sr_run, pairs, "--json", sheet, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert len(json.loads(sheet.read_text())["rows"]) == 3


def test_eval_and_upscale_on_a_read_only_disk(sr_run, pairs, tmp_path, monkeypatch):
    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    target = tmp_path / "scores.json"
    result = invoke(sr, *eval_args(sr_run, pairs, "--json", target))
    assert_clean_error(result, f"cannot write {target} (Read-only file system)")
    assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
    out = tmp_path / "up"
    result = invoke(sr, "upscale", "--checkpoint", sr_run, pairs / "a_LR.png", "--out", out, "--device", "cpu")
    assert_clean_error(result, "1 of 1 inputs failed")
    assert f"cannot write {out / 'a_LR.png'} (Read-only file system)" in result.output.replace("\n", "")


def test_eval_names_an_ambiguous_pair_and_scores_the_rest(sr_run, pairs):
    save_png(pairs / "a_HR.webp", 64, 99)  # unrelated image under the same name
    result = invoke(sr, *eval_args(sr_run, pairs, "--json", pairs.parent / "s.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((pairs.parent / "s.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["b", "c"]
    reasons = {Path(p).name: why for p, why in report["skipped"]}
    assert "ambiguous HR of a: a_HR.png and a_HR.webp" in reasons["a_HR.webp"]
    assert "a_HR.png" in reasons and "a_LR.png" in reasons  # no HR partner left for it
    assert "a_HR.webp" in result.output and "ambiguous" in result.output


def test_eval_skips_a_bad_pair_and_scores_the_rest(sr_run, pairs):
    (pairs / "b_LR.png").write_bytes((pairs / "b_LR.png").read_bytes()[:60])  # truncated after the scan's check
    save_png(pairs / "c_LR.png", 12, 3)  # 12 x 4 = 48, HR is 64: not a pair at this scale
    result = invoke(sr, *eval_args(sr_run, pairs, "--json", pairs.parent / "s.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((pairs.parent / "s.json").read_text())
    assert [r["name"] for r in report["rows"]] == ["a"]
    skipped = dict(report["skipped"])
    assert "HR is 64x64 but LR 12x12" in skipped["c"]
    assert any("b_LR.png" in p for p in skipped)
    assert "mean of 1" in result.output


def test_eval_with_no_pair_left_is_one_line(sr_run, pairs):
    for name in ("a", "b", "c"):
        save_png(pairs / f"{name}_LR.png", 12, 3)
    assert_clean_error(invoke(sr, *eval_args(sr_run, pairs)), "no image pairs to evaluate", "3 skipped")


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from degrader.errors import UserError

        if i == 2:
            raise UserError("shard-000001.tar: k2: cannot decode (broken data stream); re-export it.")
        return torch.zeros(1)


def test_a_user_error_in_a_loader_worker_is_one_line():
    from cli.progress import user_errors

    loader = torch.utils.data.DataLoader(_Broken(), batch_size=1, num_workers=1)
    with pytest.raises(click.ClickException) as caught, user_errors():
        list(loader)
    assert caught.value.message == "shard-000001.tar: k2: cannot decode (broken data stream); re-export it."
