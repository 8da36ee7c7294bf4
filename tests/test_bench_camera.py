"""benchmarks/bench_camera.py: the skip without data, and the City100 split on a stand-in of 12 generated scenes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from degrader.crops import grid_boxes
from degrader.images import to_tensor
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_camera.py"


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def camera():
    return load_script(SCRIPT, "bench_camera")


@pytest.fixture
def city(tmp_path) -> Path:
    """12 scenes named as City100's: NNNH.PNG and an aligned NNNL.PNG (blurred, red at 0.8) at HR size, 128x96."""
    folder = tmp_path / "City100_iPhoneX"
    folder.mkdir()
    rs = np.random.RandomState(0)
    for n in range(1, 13):
        hr = Image.fromarray(rs.randint(60, 200, (6, 8, 3), dtype=np.uint8)).resize((128, 96), Image.Resampling.BICUBIC)
        lr = np.asarray(hr.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64) * [0.8, 1.0, 1.0]
        hr.save(folder / f"{n:03d}H.PNG")
        Image.fromarray(lr.round().astype(np.uint8)).save(folder / f"{n:03d}L.PNG")
    return folder


def test_without_the_data_it_says_so_and_exits_0(tmp_path):
    res = bench()
    assert res.returncode == 0 and res.stdout.strip().startswith("skipped: no --city100 given")
    res = bench("--city100", str(tmp_path / "absent"))
    assert res.returncode == 0 and res.stdout.count("\n") == 1 and "is not a folder" in res.stdout


def test_the_split_is_by_scene(city, tmp_path):
    cache = tmp_path / "cache"
    res = bench("--city100", str(city), "--cache", str(cache), "--split", "4", "8", "--split-only")
    assert res.returncode == 0, res.stderr
    x4 = cache / "x4"
    names = {d: sorted(p.name for p in (x4 / d).iterdir()) for d in ("hr", "lr", "test-hr", "test-lr", "true-lr")}
    assert names["hr"] == names["true-lr"] == ["001.png", "002.png", "003.png", "004.png"]
    assert names["lr"] == ["005.png", "006.png", "007.png", "008.png"]  # other scenes: unpaired with hr/
    assert names["test-hr"] == names["test-lr"] == ["009.png", "010.png", "011.png", "012.png"]
    assert Image.open(x4 / "hr" / "001.png").size == Image.open(x4 / "true-lr" / "001.png").size == (128, 96)
    assert Image.open(x4 / "lr" / "005.png").size == Image.open(x4 / "test-lr" / "009.png").size == (32, 24)
    lr = np.asarray(Image.open(x4 / "test-lr" / "009.png"), dtype=np.float64)
    aligned = np.asarray(Image.open(city / "009L.PNG"), dtype=np.float64)
    assert np.abs(lr - aligned.reshape(24, 4, 32, 4, 3).mean((1, 3))).max() <= 0.5  # area average, rounded
    gains = json.loads((x4 / "split.json").read_text())["gains"]
    assert len(gains) == 4 and all(abs(r / g - 0.8) < 0.01 and abs(b / g - 1) < 0.01 for r, g, b in gains)
    again = bench("--city100", str(city), "--cache", str(cache), "--split", "4", "8", "--split-only", "--scale", "2")
    assert again.returncode == 0 and Image.open(cache / "x2" / "lr" / "005.png").size == (64, 48)


def test_the_true_degrader_exports_each_crops_own_real_lr(camera, city, tmp_path):
    from degrader.export import ExportConfig, export_shards, plan_export

    cache = tmp_path / "cache"
    camera.build_split(city, cache, 4, (4, 8))
    true = camera.TrueDegrader(cache / "hr", cache / "true-lr", 32, 4)
    assert len(true.table) == 4 * len(grid_boxes(128, 96, 32))
    config = ExportConfig("bicubic", str(cache / "hr"), str(tmp_path / "shards"), crop="grid", hr_size=32, workers=0)
    plan = plan_export(config)
    export_shards(replace(plan, degrader=true, recorded={**plan.recorded, "degrader": true.name}))
    aligned = Image.open(cache / "true-lr" / "001.png")
    top, left = grid_boxes(128, 96, 32)[0]
    expected = to_tensor(aligned.crop((left, top, left + 32, top + 32)).reduce(4))
    with tarfile.open(sorted((tmp_path / "shards").glob("*.tar"))[0]) as tar:
        first = next(m for m in tar if m.name.endswith(".lr.png"))
        lr = to_tensor(Image.open(io.BytesIO(tar.extractfile(first).read())).convert("RGB"))
    assert lr.shape == (3, 8, 8) and torch.allclose(lr, expected, atol=1 / 255 + 1e-6)


def test_white_balance_reports_ratios_to_green(camera):
    wb = camera.white_balance([[0.8, 1.0, 1.2]] * 3 + [[1.0, 2.0, 2.0]])
    assert wb["R/G"][1] == pytest.approx(0.8) and wb["B/G"][1] == pytest.approx(1.2) and wb["R/G"][0] < 0.8
