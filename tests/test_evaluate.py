"""sr.evaluate and `sr eval`: both folder layouts, shards, the bicubic baseline, JSON, grid and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.sr_use import eval_cmd
from degrader.errors import UserError
from degrader.images import load_rgb, to_tensor
from degrader.shards import ShardWriter, encode_png, sample_key
from sr.evaluate import bicubic_upscale, evaluate_pairs, evaluate_shards, find_pairs
from sr.metrics import psnr
from sr.model import SR_FILE, LowToHighConfig, LowToHighGenerator, save_sr_generator
from sr.upscale import SuperResolver

SET5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sr-bench-x4" / "Set5"


def smooth(h: int, w: int, seed: int) -> Image.Image:
    """A smooth random colour image: a random 5x5 grid enlarged bicubically, plus a little noise."""
    rs = np.random.RandomState(seed)
    small = Image.fromarray(rs.randint(0, 256, (5, 5, 3), dtype=np.uint8), "RGB").resize(
        (w, h), Image.Resampling.BICUBIC
    )
    noisy = np.asarray(small).astype(int) + rs.randint(-8, 9, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def make_pair(i: int, hr_w: int = 70, hr_h: int = 66, scale: int = 4) -> tuple[Image.Image, Image.Image]:
    """HR of a size that does not divide by the scale, and LR from its mod-crop, as benchmark sets are made."""
    hr = smooth(hr_h, hr_w, i)
    lr_w, lr_h = hr_w // scale, hr_h // scale
    lr = hr.crop((0, 0, lr_w * scale, lr_h * scale)).resize((lr_w, lr_h), Image.Resampling.BICUBIC, reducing_gap=None)
    return hr, lr


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    net = LowToHighGenerator(LowToHighConfig(width=8, blocks=(1, 1, 1), d_width=8))
    path = tmp_path / "run"
    path.mkdir()
    save_sr_generator(path / SR_FILE, net, step=3)
    return path


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i in range(3):
        hr, lr = make_pair(i)
        hr.save(folder / f"img{i}_HR.png")
        lr.save(folder / f"img{i}_LR.png")
    smooth(20, 20, 9).save(folder / "lonely_HR.png")  # no partner
    (folder / "broken_LR.png").write_bytes(b"not a png")
    return folder


@pytest.fixture
def two_folders(tmp_path) -> tuple[Path, Path]:
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    for i in range(3):
        hr, lr = make_pair(i)
        hr.save(hr_dir / f"img{i}.png")
        lr.save(lr_dir / f"img{i}.png")
    return hr_dir, lr_dir


def write_shards(out: Path, n: int, per_shard: int = 2, hr_size: int = 64, scale: int = 4) -> Path:
    """Tiny paired shards written with the project's writer (no manifest: read by globbing *.tar)."""
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, per_shard)
    for i in range(n):
        hr = smooth(hr_size, hr_size, 100 + i)
        lr = hr.resize((hr_size // scale, hr_size // scale), Image.Resampling.BICUBIC)
        meta = {"seed": i, "scale": scale, "hr_size": [hr_size] * 2, "lr_size": [hr_size // scale] * 2}
        writer.write(
            sample_key(f"img{i}.png", 0, 0),
            {
                "hr.png": encode_png(np.asarray(hr)),
                "lr.png": encode_png(np.asarray(lr)),
                "seed.txt": str(i).encode(),
                "json": json.dumps(meta).encode(),
            },
        )
    writer.finish_shard()
    return out


def direct_bicubic_psnr_y(hr: Image.Image, lr: Image.Image, scale: int = 4) -> float:
    """Bicubic PSNR on Y with a `scale` border, computed without the library: PIL and numpy only."""
    up = np.asarray(lr.resize((lr.width * scale, lr.height * scale), Image.Resampling.BICUBIC), dtype=np.float64)
    ref = np.asarray(hr, dtype=np.float64)[: up.shape[0], : up.shape[1]]

    def y(a: np.ndarray) -> np.ndarray:
        return 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255

    diff = (y(up) - y(ref))[scale:-scale, scale:-scale]
    return 10 * math.log10(255**2 / np.mean(diff**2))


def test_pairs_layout(checkpoint, pairs_dir):
    report = evaluate_pairs(checkpoint, pairs_dir, examples=2)
    assert [r.name for r in report.rows] == ["img0", "img1", "img2"]
    assert (report.scale, report.crop_border) == (4, 4)
    assert report.rows[0].lr_size == (16, 17) and report.rows[0].hr_size == (64, 68)  # HR mod-cropped
    for row in report.rows:
        for method in ("model", "bicubic"):
            assert set(row.scores[method]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
            assert all(math.isfinite(v) for v in row.scores[method].values())
    skipped = {Path(p).name: why for p, why in report.skipped}
    assert skipped["lonely_HR.png"] == "no LR partner" and "broken_LR.png" in skipped
    # the baseline equals a direct computation, and the model's score equals scoring its own output
    for i, row in enumerate(report.rows):
        hr, lr = make_pair(i)
        assert row.scores["bicubic"]["psnr_y"] == pytest.approx(direct_bicubic_psnr_y(hr, lr), abs=1e-9)
        sr = SuperResolver.load(checkpoint).upscale(to_tensor(lr)[None])[0]
        expected = psnr(sr, to_tensor(hr)[:, :64, :68], crop_border=4).item()
        assert row.scores["model"]["psnr"] == pytest.approx(expected, abs=1e-9)
    mean = sum(r.scores["model"]["ssim_y"] for r in report.rows) / 3
    assert report.mean["model"]["ssim_y"] == pytest.approx(mean)
    assert len(report.examples) == 2 and report.examples[0]["sr"].shape == (3, 64, 68)


def test_two_folder_layout_gives_the_same_scores(checkpoint, pairs_dir, two_folders):
    hr_dir, lr_dir = two_folders
    a = evaluate_pairs(checkpoint, pairs_dir)
    b = evaluate_pairs(checkpoint, hr_dir=hr_dir, lr_dir=lr_dir)
    assert [r.scores for r in a.rows] == [r.scores for r in b.rows]
    assert b.skipped == []


def test_shards(checkpoint, tmp_path):
    shards = write_shards(tmp_path / "shards", 5)
    report = evaluate_shards(checkpoint, shards)
    assert len(report.rows) == 5 and report.rows[0].hr_size == (64, 64)
    hr = to_tensor(smooth(64, 64, 100))
    lr = to_tensor(smooth(64, 64, 100).resize((16, 16), Image.Resampling.BICUBIC))
    expected = psnr(bicubic_upscale(lr, 4), hr, crop_border=4, y_channel=True).item()
    assert report.rows[0].scores["bicubic"]["psnr_y"] == pytest.approx(expected, abs=1e-9)
    assert len(evaluate_shards(checkpoint, str(shards / "*.tar"), limit=3).rows) == 3


def test_json_is_standard_and_complete(checkpoint, pairs_dir, tmp_path):
    report = evaluate_pairs(checkpoint, pairs_dir)
    report.rows[0].scores["model"]["psnr"] = math.inf  # identical images
    report.write_json(tmp_path / "scores.json")
    text = (tmp_path / "scores.json").read_text()
    assert "Infinity" not in text
    data = json.loads(text)
    assert data["rows"][0]["scores"]["model"]["psnr"] is None
    assert data["mean"]["bicubic"]["psnr_y"] == pytest.approx(report.mean["bicubic"]["psnr_y"])
    assert "examples" not in data and len(data["skipped"]) == 2


def test_bad_inputs(checkpoint, pairs_dir, two_folders, tmp_path):
    hr_dir, _ = two_folders
    with pytest.raises(UserError, match="either --pairs"):
        find_pairs(pairs_dir, hr_dir=hr_dir, lr_dir=hr_dir)
    with pytest.raises(UserError, match="either --pairs"):
        find_pairs(hr_dir=hr_dir)
    with pytest.raises(UserError, match="no HR/LR image pairs"):
        find_pairs(hr_dir)  # names without _HR / _LR
    # a x2 pair given to a x4 model
    wrong = tmp_path / "x2"
    wrong.mkdir()
    hr, _ = make_pair(0)
    hr.save(wrong / "a_HR.png")
    hr.resize((35, 33)).save(wrong / "a_LR.png")
    with pytest.raises(UserError, match="times the model's scale 4"):
        evaluate_pairs(checkpoint, wrong)
    with pytest.raises(UserError, match="no such checkpoint"):
        evaluate_pairs(tmp_path / "nothing", pairs_dir)
    with pytest.raises(UserError, match="no shards match"):
        evaluate_shards(checkpoint, str(tmp_path / "none-*.tar"))


def test_cli_eval(checkpoint, pairs_dir, tmp_path):
    out = tmp_path / "out"
    args = ["--checkpoint", str(checkpoint), "--pairs", str(pairs_dir), "--device", "cpu"]
    result = CliRunner().invoke(eval_cmd, [*args, "--json", str(out / "s.json"), "--grid", str(out / "g.png")])
    assert result.exit_code == 0, result.output
    assert "mean of 3" in result.output and "bicubic" in result.output and "skipped 2 files" in result.output
    assert json.loads((out / "s.json").read_text())["scale"] == 4
    assert Image.open(out / "g.png").size[0] > 4 * 64
    # shards
    shards = write_shards(tmp_path / "shards", 3)
    result = CliRunner().invoke(eval_cmd, ["--checkpoint", str(checkpoint), "--shards", str(shards), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "mean of 2" in result.output


def test_cli_eval_errors(checkpoint, pairs_dir, tmp_path):
    base = ["--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(eval_cmd, base)
    assert result.exit_code == 2 and "exactly one source" in result.output
    result = CliRunner().invoke(eval_cmd, [*base, "--pairs", str(pairs_dir), "--shards", "x"])
    assert result.exit_code == 2 and "exactly one source" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"junk")
    result = CliRunner().invoke(eval_cmd, [*base, "--pairs", str(empty)])
    assert result.exit_code == 1 and "none is a readable image" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(not SET5.is_dir(), reason="../shared/data is absent")
def test_set5_bicubic_baseline_matches_the_literature():
    pairs, _ = find_pairs(SET5)
    values = []
    for _, hr_path, lr_path in pairs:
        lr, hr = to_tensor(load_rgb(lr_path)), to_tensor(load_rgb(hr_path))
        values.append(
            psnr(bicubic_upscale(lr, 4), hr[:, : lr.shape[1] * 4, : lr.shape[2] * 4], crop_border=4, y_channel=True)
        )
    assert sum(values).item() / len(values) == pytest.approx(28.42, abs=0.05)  # MATLAB bicubic, Set5 x4
