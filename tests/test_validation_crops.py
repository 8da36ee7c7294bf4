"""Validation on a few large photos ("crop" prep): whole LR files held out, the set counted in fixed crops; and x2."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.degrade import degrade
from degrader.checkpoint import BEST_FILE
from degrader.gan import LossConfig
from degrader.train import FitConfig, fit, plan_fit
from degrader.validation import draw_crops, verdict


@pytest.fixture
def photos(tmp_path, make_images) -> tuple[Path, Path]:
    """10 HR and 10 real LR "photos" of 96 px, far larger than the 32 px HR / 8 px LR crops."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    make_images(hr, 10, 96, seed=1)
    make_images(lr, 10, 96, seed=2)
    return hr, lr


def photo_fit(hr: Path, lr: Path, out: Path, **kw) -> FitConfig:
    kw = {"hr_size": 32, "steps": 4, "batch_size": 2, "workers": 0, "log_every": 1, "device": "cpu", **kw}
    kw = {"loss": LossConfig(d_steps=1), "generator": "paper", "val_n": 8, "eval_every": 2, **kw}
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), hr_prep="crop", lr_prep="crop", **kw)


def test_whole_lr_files_are_held_out_and_counted_in_crops(photos, tmp_path):
    hr, lr = photos
    plan = plan_fit(photo_fit(hr, lr, tmp_path / "run", val_split=0.2))
    val = plan.validation
    held = set(val.lr)
    assert len(held) == 2 and len(plan.lr.paths) == 8  # 0.2 x 10 files leave training, whole
    assert not held & set(plan.lr.paths)
    assert len(val.lr) == 16 and val.n == 8  # 2 x val_n crops from 2 files: 8 crops each, interleaved
    assert set(val.lr[:8]) == held and set(val.lr[8:]) == held  # both halves see every held-out file
    assert len(val.hr) == 8 and len(set(val.hr)) == 2 and val.hr_held_out
    assert not set(val.hr) & set(plan.hr.paths) and len(plan.hr.paths) == 8
    assert "8 HR crops of 2 files (held out) against 2 x 8 real LR crops of 2 files" in plan.validation_note
    # The default share of 10 files rounds to 1 file: still on, with 16 crops of it.
    plan = plan_fit(photo_fit(hr, lr, tmp_path / "run"))
    assert len(set(plan.validation.lr)) == 1 and len(plan.validation.lr) == 16 and len(plan.lr.paths) == 9


def test_fewer_than_8_lr_files_turn_validation_off_with_the_reason(tmp_path, make_images):
    make_images(tmp_path / "hr", 10, 96, seed=1)
    make_images(tmp_path / "lr", 7, 96, seed=2)
    plan = plan_fit(photo_fit(tmp_path / "hr", tmp_path / "lr", tmp_path / "run"))
    assert plan.validation is None and len(plan.lr.paths) == 7
    assert (
        "validation off: --lr holds 7 files, fewer than 8" in plan.validation_note
        and "--val-lr" in plan.validation_note
    )


def test_val_lr_of_a_few_photos_gives_crops_of_them(photos, tmp_path, make_images):
    hr, lr = photos
    make_images(tmp_path / "val", 3, 96, seed=5)  # far fewer than the 16 images resize validation needs
    plan = plan_fit(photo_fit(hr, lr, tmp_path / "run", val_lr=str(tmp_path / "val")))
    assert len(plan.lr.paths) == 10 and len(plan.validation.lr) == 16
    assert {p.parent.name for p in plan.validation.lr} == {"val"} and len(set(plan.validation.lr)) == 3


def test_the_crops_are_fixed_by_seed_file_and_index(photos):
    _, lr = photos
    a, b = sorted(lr.iterdir())[:2]
    crops = draw_crops([a, b, a, a], 8, seed=0, tag="val-lr")
    assert crops.shape == (4, 3, 8, 8)
    assert torch.equal(crops, draw_crops([a, b, a, a], 8, seed=0, tag="val-lr"))
    assert torch.equal(crops[[0, 2, 3]], draw_crops([a, a, a], 8, seed=0, tag="val-lr"))  # b changes nothing
    assert not torch.equal(crops[0], crops[2])  # crop k of a file moves with k
    assert not torch.equal(crops, draw_crops([a, b, a, a], 8, seed=1, tag="val-lr"))


def test_a_fit_on_photos_validates_and_keeps_the_best(photos, tmp_path):
    hr, lr = photos
    result = fit(plan_fit(photo_fit(hr, lr, tmp_path / "run")))
    assert (tmp_path / "run" / BEST_FILE).exists()
    assert result.validation["n"] == 8 and result.validation["best_step"] in (2, 4)
    beat, line = verdict(result.validation)
    assert beat is not None and "held-out" in line


def test_dry_run_says_how_many_files_and_crops_are_held_out(photos, tmp_path):
    hr, lr = photos
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "run"), "--hr-prep", "crop"]
    res = CliRunner().invoke(degrade, [*args, "--lr-prep", "crop", "--scale", "2", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "128 real LR crops of 1 file" in " ".join(res.output.split())


def test_x2_from_the_same_photos_fits_exports_and_trains_sr(photos, tmp_path):
    from degrader.export import ExportConfig, export_shards, plan_export
    from sr.train import SRTrainConfig, plan_train, train

    hr, lr = photos
    fit(plan_fit(photo_fit(hr, lr, tmp_path / "run", scale=2, generator="structured", steps=2)))
    assert (tmp_path / "run" / BEST_FILE).exists()
    shards = tmp_path / "shards"
    config = ExportConfig(str(tmp_path / "run"), str(hr), str(shards), samples_per_shard=5, crop="random", workers=0)
    export_shards(plan_export(config))
    tars = sorted(shards.glob("*.tar"))
    assert len(tars) == 2
    with tarfile.open(tars[0]) as tar:
        sizes = {
            m.name.split(".")[-2]: Image.open(io.BytesIO(tar.extractfile(m).read())).size
            for m in tar
            if "png" in m.name
        }
    assert sizes == {"hr": (32, 32), "lr": (16, 16)}  # the LR is half the HR
    sr = SRTrainConfig(str(tmp_path / "sr"), shards=str(shards), steps=2, batch_size=2, loss=LossConfig(d_steps=1))
    plan = plan_train(dataclasses.replace(sr, device="cpu", workers=0))
    assert plan.model.scale == 2 and plan.model.lr_size == 16
    assert train(plan).step == 2
