"""`sr compare` end to end on tiny data: exports, SR runs, the table, the report, kills and --resume."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.compare import compare_cmd
from degrader.checkpoint import DEGRADER_FILE, Degrader
from degrader.errors import UserError
from degrader.gan import LossConfig
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.synthetic import make_faces
from sr.compare import GRID, RESULT, SETTINGS, CompareConfig, compare, plan_compare, score
from sr.compare_report import FLOOR, summary_columns, table
from sr.evaluate import evaluate_pairs
from sr.model import PRESETS
from sr.upscale import SuperResolver

TINY = dict(width=8, blocks=(1, 1, 1), residual=True, d_width=8)


@pytest.fixture(scope="module", autouse=True)
def tiny_preset():
    with pytest.MonkeyPatch.context() as mp:  # module scope: the module's comparison fixture uses it too
        mp.setitem(PRESETS, "tiny", TINY)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """20 HR faces (64 px), 12 unpaired real LR faces (16 px), 3 x4 pairs, and a tiny learned degrader run."""
    root = tmp_path_factory.mktemp("data")
    for name in ("hr", "lr", "pairs", "deg"):
        (root / name).mkdir()
    for i, img in enumerate(make_faces(20, 64, seed=0)):
        img.save(root / "hr" / f"{i:03d}.png")
    for i, img in enumerate(make_faces(12, 16, seed=1)):
        img.save(root / "lr" / f"{i:03d}.png")
    for i, img in enumerate(make_faces(3, 64, seed=2)):
        img.save(root / "pairs" / f"p{i}_HR.png")
        img.resize((16, 16), Image.Resampling.BICUBIC).save(root / "pairs" / f"p{i}_LR.png")
    torch.manual_seed(0)
    net = HighToLowGenerator(HighToLowConfig(z_dim=8, width=8, blocks_per_group=1, residual=True, d_width=8))
    torch.nn.init.normal_(net.tail.conv.weight, std=0.05)  # some noise-dependent output, not plain avg pooling
    Degrader(net, name="deg").save(root / "deg" / DEGRADER_FILE)
    return root


def config(data: Path, out: Path, **kw) -> CompareConfig:
    base = dict(
        hr=str(data / "hr"), degraders=["bicubic", str(data / "deg")], out=str(out), lr=str(data / "lr"),
        pairs=str(data / "pairs"), steps=4, preset="tiny", loss=LossConfig(d_steps=1), batch_size=2, n=8,
        workers=0, device="cpu", checkpoint_every=2, grid_images=3, baselines=[],
    )  # fmt: skip
    return CompareConfig(**{**base, **kw})


class Kill(KeyboardInterrupt):
    """What a Ctrl-C outside the SR loop (or a kill) does: the call ends mid-stage."""


def killer(stage: str, at: int):
    """(on_progress, on_stage) that raise once `stage` has reported progress `at`."""
    current = [""]

    def on_stage(name: str) -> None:
        current[0] = name

    def on_progress(done: int, total: int, logs: dict) -> None:
        if current[0] == stage and done >= at:
            raise Kill

    return on_progress, on_stage


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "cmp"
    stages = []
    result = compare(plan_compare(config(data, out)), on_stage=stages.append)
    assert not result.interrupted and result.report == json.loads((out / RESULT).read_text())
    assert stages == ["export bicubic", "export deg", "sr train on bicubic", "sr train on deg", "score"]
    return out


def test_the_table_holds_bicubic_upscaling_and_one_model_per_degrader(data, uninterrupted):
    report = json.loads((uninterrupted / RESULT).read_text())
    rows = report["rows"]
    assert [r["name"] for r in rows] == ["bicubic upscaling", "SR on bicubic", "SR on deg"]
    assert [r["step"] for r in rows[1:]] == [4, 4]
    assert rows[1]["sha256"] != rows[2]["sha256"]  # trained on different shards
    # The same numbers `sr eval` gives for each model, and the bicubic row is its baseline.
    model = SuperResolver.load(uninterrupted / "sr" / "2-deg")
    direct = evaluate_pairs(model, data / "pairs")
    assert rows[2]["pairs"] == pytest.approx(direct.mean["model"]) and rows[0]["pairs"] == direct.mean["bicubic"]
    # Realism: every row against the same HR half, relative to bicubic upscaling (1 by definition) and the floor.
    assert report["n"] == 8 and report["floor"]["swd"] > 0
    assert rows[0]["relative"]["swd"] == pytest.approx(1.0)
    for r in rows[1:]:
        expected = (r["realism"]["swd"] - report["floor"]["swd"]) / (rows[0]["realism"]["swd"] - report["floor"]["swd"])
        assert r["relative"]["swd"] == pytest.approx(expected)
    header, cells, best, has_floor = table(report, summary_columns(report))
    assert has_floor and cells[0][0] == FLOOR and header[1] == "PSNR-Y dB ↑"
    psnr = [r["pairs"]["psnr_y"] for r in rows]
    assert best[1] == {1 + psnr.index(max(psnr))}  # highest PSNR highlighted; +1: the floor row comes first
    swd = [r["realism"]["swd"] for r in rows]
    assert best[header.index("SWD x1e3 ↓")] == {1 + swd.index(min(swd))}


def test_report_files_stand_alone_and_the_grid_has_captions(uninterrupted):
    page = (uninterrupted / "report.html").read_text()
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    assert refs == {GRID, RESULT} and all((uninterrupted / r).is_file() for r in refs)
    assert "SR on deg" in page and FLOOR in page
    grid = np.asarray(Image.open(uninterrupted / GRID))
    # 3 real LR rows of 64 px; 4 columns (LR, bicubic, 2 models) of 64 px; caption bands above and on the left.
    pad = 2
    top, left = grid.shape[0] - (pad + 3 * (64 + pad)), grid.shape[1] - (pad + 4 * (64 + pad))
    assert top > 0 and left > 0
    assert (grid[:top, left:] < 128).any() and (grid[top:, :left] < 128).any()  # caption text in both bands
    settings = json.loads((uninterrupted / SETTINGS).read_text())
    assert "out" not in settings and settings["steps"] == 4


def test_kill_and_resume_end_with_the_same_table(data, uninterrupted, tmp_path):
    out = tmp_path / "cmp"
    # Killed while exporting the second degrader's shards.
    with pytest.raises(Kill):
        compare(plan_compare(config(data, out)), *killer("export deg", 1))
    assert (out / "shards" / "1-bicubic" / "manifest.json").exists()
    assert not (out / "shards" / "2-deg" / "manifest.json").exists() and not (out / "sr").exists()
    # Killed again in the second SR run, after its checkpoint at step 2.
    with pytest.raises(Kill):
        compare(plan_compare(config(data, out, resume=True)), *killer("sr train on deg", 3))
    assert (out / "sr" / "1-bicubic" / "sr.safetensors").exists() and not (out / RESULT).exists()
    assert SuperResolver.load(out / "sr" / "2-deg").step == 2
    # A resume continues from there and ends where the uninterrupted comparison did, byte for byte.
    stages = []
    result = compare(plan_compare(config(data, out, resume=True)), on_stage=stages.append)
    assert not result.interrupted
    assert (out / RESULT).read_bytes() == (uninterrupted / RESULT).read_bytes()
    for run in ("1-bicubic", "2-deg"):
        model = Path("sr", run, "sr.safetensors")
        assert (out / model).read_bytes() == (uninterrupted / model).read_bytes()
    # Everything is complete now: another resume reuses it all (the table is not recomputed).
    mtime = (out / RESULT).stat().st_mtime_ns
    compare(plan_compare(config(data, out, resume=True)))
    assert (out / RESULT).stat().st_mtime_ns == mtime


def test_a_damaged_shard_is_not_reused(data, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "cmp"
    shutil.copytree(uninterrupted, out)
    shard = next((out / "shards" / "1-bicubic").glob("shard-*.tar"))
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError, match="missing or damaged"):
        compare(plan_compare(config(data, out, resume=True)))


def test_bad_settings_are_refused_before_anything_is_written(data, uninterrupted, tmp_path):
    with pytest.raises(UserError, match="--lr .* --pairs"):
        plan_compare(config(data, tmp_path / "a", lr=None, pairs=None))
    with pytest.raises(UserError, match="not empty; pass --resume"):
        plan_compare(config(data, uninterrupted))
    with pytest.raises(UserError, match=r"other settings \(seed, steps\)"):
        plan_compare(config(data, uninterrupted, resume=True, steps=5, seed=1))
    with pytest.raises(UserError, match="holds no comparison"):
        plan_compare(config(data, tmp_path / "new", resume=True))
    with pytest.raises(UserError, match="no-such-run"):
        plan_compare(config(data, tmp_path / "b", degraders=["bicubic", "no-such-run"]))
    bad_pairs = tmp_path / "pairs"
    bad_pairs.mkdir()
    make_faces(1, 64, seed=3)[0].save(bad_pairs / "x_HR.png")
    make_faces(1, 32, seed=3)[0].save(bad_pairs / "x_LR.png")  # x2, not x4
    with pytest.raises(UserError, match="x_LR|x: HR is 64x64"):
        plan_compare(config(data, tmp_path / "c", pairs=str(bad_pairs)))
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c"))


def test_cli_pairs_only_prints_the_table(data, tmp_path):
    out = tmp_path / "cli"
    args = [
        "--hr", str(data / "hr"), "--degrader", "bicubic", "--pairs", str(data / "pairs"), "--out", str(out),
        "--steps", "2", "--batch-size", "2", "--set", "loss.d_steps=1", "--set", "workers=0", "--device", "cpu",
        "--set", "baselines=[]",
    ]  # fmt: skip
    dry = CliRunner().invoke(compare_cmd, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "1 degraders (bicubic)" in dry.output and "3 pairs" in dry.output and not out.exists()
    result = CliRunner().invoke(compare_cmd, args)
    assert result.exit_code == 0, result.output
    assert "PSNR-Y dB" in result.output and "SR on bicubic" in result.output and "realism" not in result.output
    report = json.loads((out / RESULT).read_text())
    assert report["floor"] is None and "realism" not in report["rows"][1]
    # Without real LR images the grid shows the pairs: centre crops of LR, bicubic, the model and HR.
    with Image.open(out / GRID) as grid:
        assert grid.height > 3 * (64 + 2) and grid.width > 4 * (64 + 2)
    again = CliRunner().invoke(compare_cmd, args)
    assert again.exit_code == 1 and "--resume" in again.output


class MeanStd(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)  # (B, 6): a tiny stand-in for Inception features


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.14, still what FID files use
def test_fid_and_kid_columns_with_user_features(data, uninterrupted, tmp_path):
    features = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(MeanStd()), str(features))
    plan = plan_compare(config(data, tmp_path / "f", features=str(features), pairs=None))
    models = [SuperResolver.load(uninterrupted / "sr" / run) for run in ("1-bicubic", "2-deg")]
    report = score(plan, models)
    assert report["pairs"] == 0 and all("pairs" not in r for r in report["rows"])
    bicubic = report["rows"][0]
    assert bicubic["realism"]["fid"] > report["floor"]["fid"] >= 0 and bicubic["relative"]["fid"] == pytest.approx(1)
    header = table(report, summary_columns(report))[0]
    assert {"FID ↓", "FID rel. ↓", "KID x1e3 ↓"} <= set(header) and "PSNR-Y dB ↑" not in header
