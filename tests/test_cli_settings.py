"""`--config FILE`, `--set key=value` and `--show-config`: the settings that left the command lines, unchanged."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import click
import pytest
import torch
from click.testing import CliRunner

import degrader.train
import sr.compare
import sr.train
from cli.degrade import degrade
from cli.options import run_planned
from cli.sr import sr as sr_group
from degrader.config_io import build, merge, parse_sets, read_config_file
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.presets import PRESETS
from degrader.run import config_dict
from degrader.train import FitConfig
from sr.compare import CompareConfig
from sr.train import SRTrainConfig
from tests.test_cli_degrade import assert_clean_error

SMALL = PRESETS["small"].loss


class Planned(Exception):
    """Raised by the patched plan function, with the config the command built."""


@pytest.fixture
def planned(monkeypatch):
    """Patch every plan function to stop with the config its command built; returns `run(group, args) -> dict`."""
    for module, name in ((degrader.train, "plan_fit"), (sr.train, "plan_train"), (sr.compare, "plan_compare")):
        monkeypatch.setattr(module, name, lambda config: (_ for _ in ()).throw(Planned(config)))

    def run(group: click.Group, args: list) -> dict:
        result = CliRunner().invoke(group, [str(a) for a in args])
        assert isinstance(result.exception, Planned), result.output
        return config_dict(result.exception.args[0])

    return run


def fit_config(hr, lr, out, **kw) -> dict:
    """The config a FitConfig made directly has; cache_mb a float, as the old --cache-mb gave it."""
    kw = {"cache_mb": 256.0, "threads": torch.get_num_threads(), **kw}
    return config_dict(FitConfig(hr=str(hr), lr=str(lr), out=str(out), **kw))


# Old command lines, their new forms, and the config the old command line built (checked against the CLI before
# the options moved: the same JSON text, floats and key order included).
FIT_CASES = {
    "--exposure 5 --d-highpass 0.5 --generator paper": (
        ["--set", "loss.exposure=5", "--set", "loss.d_highpass=0.5", "--set", "generator=paper"],
        dict(generator="paper", loss=dataclasses.replace(SMALL, exposure=5.0, d_highpass=0.5)),
    ),
    "--preset paper --residual --d-patch 2 --select swd --min-fidelity 0 --bf16 --alpha 2 --augment translation": (
        ["--preset", "paper", "--set", "residual=true", "--set", "d_patch=2", "--set", "select=swd"]
        + ["--set", "min_fidelity=0", "--set", "bf16=true", "--set", "loss.alpha=2", "--set=loss.augment=translation"],
        dict(
            preset="paper",
            residual=True,
            d_patch=2,
            select="swd",
            min_fidelity=0.0,
            bf16=True,
            loss=LossConfig(alpha=2.0, augment="translation"),
        ),
    ),  # fmt: skip
    "--scale 2 --steps 7 --hr-size 32 --workers 0 --cache-mb 0 --no-residual --ema 0 --lr-d 1e-3 --pixel luma": (
        ["--scale", "2", "--steps", "7", "--config", "CONFIG"],
        dict(
            scale=2,
            steps=7,
            hr_size=32,
            workers=0,
            cache_mb=0.0,
            residual=False,
            loss=dataclasses.replace(SMALL, ema=0.0, lr_d=1e-3, pixel="luma"),
        ),
    ),  # fmt: skip
}


@pytest.mark.parametrize("old", FIT_CASES)
def test_set_and_config_build_what_the_old_fit_options_did(planned, tmp_path, old):
    new, expected = FIT_CASES[old]
    config = tmp_path / "c.toml"
    config.write_text('hr_size = 32\nworkers = 0\ncache_mb = 0\nresidual = false\n[loss]\nema = 0\nlr_d = 1e-3\n'
                      'pixel = "luma"\n')  # fmt: skip
    args = ["fit", "--hr", tmp_path, "--lr", tmp_path, "--out", tmp_path / "run", "--threads", torch.get_num_threads()]
    got = planned(degrade, [*args, *[str(config) if a == "CONFIG" else a for a in new]])
    assert json.dumps(got) == json.dumps(fit_config(tmp_path, tmp_path, tmp_path / "run", **expected))


def test_a_fit_through_config_and_set_writes_the_config_json_of_the_old_options(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    # what `fit --hr-size 32 --workers 0 --val-split 0 --d-steps 1 --exposure 5 --d-highpass 0.5 --generator paper`
    # wrote: plan_fit's config (with the measured tone map), as open_run writes it
    loss = dataclasses.replace(SMALL, d_steps=1, exposure=5.0, d_highpass=0.5)
    old = FitConfig(str(hr), str(lr), str(tmp_path / "run"), hr_size=32, steps=1, batch_size=2, generator="paper",
                    loss=loss, device="cpu", workers=0, val_split=0.0, cache_mb=256.0)  # fmt: skip
    expected = config_dict(degrader.train.plan_fit(old).config) | {"threads": torch.get_num_threads()}
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"hr_size": 32, "workers": 0, "val_split": 0, "loss": {"d_steps": 1}}))
    args = ["fit", "--hr", hr, "--lr", lr, "--out", tmp_path / "run", "--steps", "1", "--batch-size", "2"]
    args += ["--device", "cpu", "--config", settings, "--set", "loss.exposure=5", "--set", "loss.d_highpass=0.5"]
    result = CliRunner().invoke(degrade, [str(a) for a in [*args, "--set", "generator=paper"]])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "run" / "config.json").read_text()
    assert written == json.dumps(expected, indent=2, sort_keys=True) + "\n"  # the same text, as write_json writes it
    assert expected["loss"]["tone"] == "auto"  # measured by plan_fit, as on the old command line

    # the run's own config.json is a valid --config: the same run again, elsewhere
    again = CliRunner().invoke(degrade, ["fit", "--config", str(tmp_path / "run" / "config.json"), "--out",
                                         str(tmp_path / "again")])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == expected | {"out": str(tmp_path / "again")}


def test_precedence_preset_config_set_then_options(planned, tmp_path):
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"steps": 5, "val_n": 16, "loss": {"beta": 0.3, "r1": 2}, "resume": True}))
    args = ["fit", "--hr", tmp_path, "--lr", tmp_path, "--out", tmp_path / "o", "--config", settings]
    got = planned(degrade, [*args, "--set", "loss.beta=0.4", "--set", "steps=6", "--steps", "7"])
    assert (got["steps"], got["val_n"], got["loss"]["beta"], got["loss"]["r1"]) == (7, 16, 0.4, 2.0)
    assert got["loss"]["exposure"] == SMALL.exposure and got["generator"] == "structured"  # the preset's
    assert got["resume"] is False  # what one invocation does never comes from a file
    paper = planned(degrade, [*args, "--preset", "paper"])
    assert paper["loss"]["exposure"] == 0.0 and paper["loss"]["beta"] == 0.3  # the file over the paper preset


def test_sr_train_and_compare_take_their_settings_the_same_way(planned, tmp_path):
    base = ["train", "--shards", tmp_path, "--out", tmp_path / "o", "--threads", torch.get_num_threads()]
    got = planned(sr_group, [*base, "--set", "loss.beta=0.1", "--set", "warmup_steps=3", "--set", "verify=false"])
    old = SRTrainConfig(out=str(tmp_path / "o"), shards=str(tmp_path), threads=torch.get_num_threads(), cache_mb=256.0,
                        loss=LossConfig(beta=0.1), warmup_steps=3, verify=False)  # fmt: skip  # --beta, --no-verify
    assert json.dumps(got) == json.dumps(config_dict(old))
    base = ["compare", "--hr", tmp_path, "--degrader", "bicubic", "--degrader", "bilinear", "--out", tmp_path / "c"]
    got = planned(sr_group, [*base, "--set", "hr_size=32", "--set", "n=9", "--set", "pixel_only=true"])
    old = CompareConfig(hr=str(tmp_path), degraders=["bicubic", "bilinear"], out=str(tmp_path / "c"), hr_size=32,
                        n=9, pixel_only=True)  # fmt: skip
    assert json.dumps(got) == json.dumps(config_dict(old))


def test_show_config_lists_every_setting_with_the_presets_values(tmp_path):
    def show(*args: str) -> dict[str, list[str]]:
        result = CliRunner().invoke(degrade, ["fit", "--show-config", *args])
        assert result.exit_code == 0, result.output
        return {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}

    small, paper = show(), show("--preset", "paper", "--set", "loss.exposure=7")
    assert set(small) == {f.name for f in dataclasses.fields(FitConfig) if f.name != "loss"} | {
        f"loss.{f.name}" for f in dataclasses.fields(LossConfig)
    }
    assert small["loss.exposure"][:5] == ["loss.exposure", "float", "0.0", "100.0", "*"]  # type, default, value
    assert "weight of the squared difference" in " ".join(small["loss.exposure"])  # the field's own comment
    assert paper["loss.exposure"][3] == "7.0" and paper["generator"][3] == '"paper"'
    assert not list(tmp_path.iterdir())
    for group, command in ((sr_group, "train"), (sr_group, "finetune"), (sr_group, "compare")):
        result = CliRunner().invoke(group, [command, "--show-config"])
        assert result.exit_code == 0 and "loss.beta" in result.output, result.output


@pytest.mark.parametrize(
    "args,words",
    [
        (["--set", "loss.exposur=1"], ["--config/--set: loss.exposur is no setting", "loss.exposure"]),
        (["--set", "d_patches=1"], ["d_patches", "d_patch"]),
        (["--set", "loss.exposure=bright"], ['loss.exposure is "bright", not float']),
        (["--set", "workers=-1"], ["workers is -1", "at least 0"]),
        (["--set", "bf16=1"], ["bf16 is 1, not bool"]),
        (["--set", "loss.tone=sometimes"], ["loss", "tone 'sometimes' is not one of"]),
        (["--set", "exposure"], ["--set 'exposure'", "key=value"]),
        (["--config", "BAD"], ["--config", "not valid"]),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tiny_folders, tmp_path, args, words):
    hr, lr = tiny_folders
    (tmp_path / "bad.json").write_text("{steps: 2")
    args = [str(tmp_path / "bad.json") if a == "BAD" else a for a in args]
    result = CliRunner().invoke(degrade, ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "o"), *args])
    assert_clean_error(result, *words)
    assert not (tmp_path / "o").exists()


def test_config_io_parses_merges_and_checks(tmp_path):
    sets = parse_sets(["loss.exposure=100", "loss.augment=translation,colour", "val_lr=null", 'select="mix"'])
    assert sets == {"loss": {"exposure": 100, "augment": "translation,colour"}, "val_lr": None, "select": "mix"}
    assert merge({"a": 1, "loss": {"x": 1, "y": 2}}, {"loss": {"y": 3}}) == {"a": 1, "loss": {"x": 1, "y": 3}}
    loss = build(LossConfig, {"betas": [0, 0.99], "lr_d": 1, "exposure": 3})
    assert loss.betas == (0.0, 0.99) and isinstance(loss.betas[0], float) and loss.lr_d == 1.0
    assert json.dumps(dataclasses.asdict(loss)).count("3.0") == 1  # an int given where a float is due: a float
    with pytest.raises(UserError, match=r"loss\.betas is \[0\], not tuple\[float,float\]"):
        build(FitConfig, {"hr": "a", "lr": "b", "out": "c", "loss": {"betas": [0]}})
    (tmp_path / "c.toml").write_text("steps = 3\n[loss]\nbeta = 0.5\n")
    assert read_config_file(tmp_path / "c.toml") == {"steps": 3, "loss": {"beta": 0.5}}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(UserError, match="not a table of settings"):
        read_config_file(tmp_path / "list.json")


def test_resume_of_a_run_written_before_the_options_moved(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    args = ["fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", "--batch-size", "2", "--device", "cpu"]
    first = CliRunner().invoke(degrade, [str(a) for a in [*args, "--set", "hr_size=32", "--set", "workers=0"]])
    assert first.exit_code == 0, first.output
    config = json.loads((out / "config.json").read_text())
    # as the old CLI (`--hr-size 32 --workers 0`) wrote it: the same keys; a version before `tone` lacked these
    del config["loss"]["tone"], config["loss"]["tone_map"]
    (out / "config.json").write_text(json.dumps(config))
    resumed = CliRunner().invoke(degrade, ["fit", "--out", str(out), "--resume", "--steps", "2"])
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert (config["hr_size"], config["workers"], config["steps"], config["loss"]["tone"]) == (32, 0, 2, "off")
    assert_clean_error(CliRunner().invoke(degrade, ["fit", "--out", str(out), "--resume", "--set", "hr_size=64"]),
                       "--resume", "hr_size")  # fmt: skip


def test_run_planned_stops_after_a_dry_run_and_exits_130_on_ctrl_c():
    printed, ran = [], []

    def interrupt(plan, on_progress):
        ran.append(plan)
        raise KeyboardInterrupt

    @click.command()
    @click.option("--dry-run", is_flag=True)
    def command(dry_run: bool) -> None:
        run_planned(lambda c: c + 1, interrupt, 1, dry_run, describe=printed.append,
                    progress=lambda plan: contextlib.nullcontext(), interrupted="resume it.")  # fmt: skip

    dry = CliRunner().invoke(command, ["--dry-run"])
    assert dry.exit_code == 0 and "dry run: nothing trained or written." in dry.output and printed == [2] and not ran
    real = CliRunner().invoke(command, [])
    assert real.exit_code == 130 and "interrupted; resume it." in real.output and ran == [2]


def test_the_training_commands_take_at_most_20_options_with_help():
    from cli.compare import compare_cmd

    for command in (degrade.commands["fit"], sr_group.commands["train"], sr_group.commands["finetune"], compare_cmd):
        options = [p for p in command.params if isinstance(p, click.Option)]
        assert len(options) + 1 <= 20, (command.name, len(options))  # + 1: --help


def test_presets_are_one_table():
    small = FitConfig("h", "l", "o")
    assert (small.generator, small.loss, small.model().d_width) == ("structured", SMALL, PRESETS["small"].d_width)
    paper = FitConfig("h", "l", "o", preset="paper").model()
    assert dataclasses.asdict(paper) | PRESETS["paper"].network() == dataclasses.asdict(paper)
