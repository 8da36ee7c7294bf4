"""The examples run end to end on tiny shards made by the real export pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from degrader.export import ExportConfig, export_shards, plan_export
from tests.conftest import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """10 bicubic pairs (64 px HR, 16 px LR) in 3 shards, with a manifest."""
    root = tmp_path_factory.mktemp("examples")
    hr = root / "hr"
    hr.mkdir()
    rs = np.random.RandomState(0)
    for i in range(10):
        small = Image.fromarray(rs.randint(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
        small.resize((64, 64), Image.Resampling.BICUBIC).save(hr / f"{i:02d}.png")
    config = ExportConfig(degrader="bicubic", hr=str(hr), out=str(root / "shards"), samples_per_shard=4, workers=0)
    export_shards(plan_export(config))
    return root / "shards"


def test_train_third_party(shards, capsys):
    pytest.importorskip("spandrel")
    example = load_example("train_third_party")
    args = ["--shards", str(shards), "--batch-size", "4", "--filters", "8", "--blocks", "1", "--workers", "0"]
    untrained = example.main([*args, "--steps", "0", "--eval-samples", "4"])
    result = example.main([*args, "--steps", "30", "--eval-samples", "4"])
    assert result["bicubic_psnr_y"] == untrained["bicubic_psnr_y"] > 20  # the same samples; smooth, so bicubic is good
    # 30 steps on the shards move RRDBNet from its random start towards bicubic, still far below it
    assert untrained["psnr_y"] + 2 < result["psnr_y"] < result["bicubic_psnr_y"] - 10
    out = capsys.readouterr().out
    assert "step 30/30" in out and "PSNR-Y over 4 samples" in out


def test_basicsr_dict(shards, capsys):
    example = load_example("basicsr_dict")
    result = example.main(["--shards", str(shards), "--steps", "40", "--batch-size", "4", "--gt-size", "32"])
    assert {"lq", "gt", "lq_path", "gt_path"} <= set(result["keys"])
    assert result["samples"] == 10 and math.isfinite(result["psnr_y"])
    out = capsys.readouterr().out
    assert "lq (4, 3, 8, 8)  gt (4, 3, 32, 32)" in out and ".hr.png" in out
    # the dataset is what BasicSR's PairedImageDataset gives: augmented crops in training, whole pairs otherwise
    train = example.ShardPairedDataset({"phase": "train", "dataroot": str(shards), "gt_size": 32, "use_hflip": True})
    val = example.ShardPairedDataset({"phase": "val", "dataroot": str(shards), "gt_size": 32})
    assert train[0]["gt"].shape == (3, 32, 32) and val[0]["gt"].shape == (3, 64, 64)
    assert val[0]["lq_path"].endswith(".lr.png")
