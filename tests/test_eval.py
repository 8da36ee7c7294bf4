"""`degrade eval` end to end on tiny generated folders: figures, report files, errors, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from cli.degrade import degrade
from degrader.classical import BlurBilinear
from degrader.errors import UserError
from degrader.evaluate import EvalConfig, evaluate_degraders, plan_evaluation

N = 96


def scenes(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    return (x + F.interpolate((torch.rand(n, 3, 3, 3, generator=g) - 0.5) * 0.4, size=(size, size))).clamp(0, 1)


def save(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        a = img.mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(a, "RGB").save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """HR images, and 'real' LR images made from other HR images by blur-bilinear (the real process)."""
    root = tmp_path_factory.mktemp("eval")
    hr = save(scenes(N, 64, seed=1), root / "hr")
    other = scenes(2 * N, 64, seed=2)
    real = BlurBilinear(4).degrade(other, seeds=[1000 + i for i in range(2 * N)])
    lr = save(real, root / "lr")
    features = root / "features.pt"
    with pytest.warns(FutureWarning):  # torch 2.14 deprecates TorchScript; FID files still use it
        torch.jit.save(torch.jit.script(MeanStd()), str(features))
    return hr, lr, features


class MeanStd(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_eval_cli_writes_a_self_contained_report_and_the_real_process_beats_bicubic(folders, tmp_path):
    hr, lr, features = folders
    out = tmp_path / "report"
    args = ["eval", "--degrader", "blur-bilinear", "--degrader", "bilinear", "--hr", str(hr), "--lr", str(lr)]
    args += ["--out", str(out), "--n", str(N), "--features", str(features)]
    result = CliRunner().invoke(degrade, args)
    assert result.exit_code == 0, result.output
    assert "realism" in result.output and "floor" in result.output and "blur-bilinear" in result.output

    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["degraders"]}
    assert list(rows) == ["bicubic", "blur-bilinear", "bilinear"]  # bicubic always, first
    assert report["n"] == N and report["lr_size"] == 16
    assert rows["bicubic"]["relative"]["swd"] == pytest.approx(1.0)
    assert rows["blur-bilinear"]["relative"]["swd"] < 0.75  # the process that made the real LR beats bicubic
    assert report["floor"]["swd_16"] < rows["bicubic"]["metrics"]["swd_16"]
    for name in ("fid", "kid", "c2st", "c2st_low", "tex_swd", "tex_c2st", "sharpness", "noise", "swd_16", "swd_8"):
        assert name in report["floor"] and name in rows["bilinear"]["metrics"], name
    assert rows["blur-bilinear"]["metrics"]["fid"] < rows["bicubic"]["metrics"]["fid"]

    page = (out / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and {"samples.png", "statistics.png", "report.json"} <= set(refs)
    for ref in refs:  # only files beside the page: nothing absolute, nothing online, nothing above it
        assert "/" not in ref and ":" not in ref and (out / ref).is_file(), ref
    assert "http" not in page.replace("http-equiv", "")
    for png in ("samples.png", "statistics.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind

    again = CliRunner().invoke(degrade, args)  # a non-empty --out is refused without --overwrite
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output


def test_eval_is_seeded_and_bad_input_gets_one_line(folders, tmp_path):
    hr, lr, _ = folders
    config = EvalConfig(degraders=["bilinear"], hr=str(hr), lr=str(lr), out=str(tmp_path / "a"), n=16, seed=3)
    first, second = evaluate_degraders(plan_evaluation(config)), evaluate_degraders(plan_evaluation(config))
    assert first.rows == second.rows and first.floor == second.floor
    assert [r["name"] for r in first.rows] == ["bicubic", "bilinear"]

    runner = CliRunner()
    base = ["eval", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "b")]
    bad = runner.invoke(degrade, [*base, "--degrader", "lanczos"])
    assert bad.exit_code == 1 and "--degrader lanczos" in bad.output and "Traceback" not in bad.output
    few = tmp_path / "few"
    save(scenes(5, 16, seed=4), few)
    short = runner.invoke(degrade, ["eval", "--degrader", "bicubic", "--hr", str(hr), "--lr", str(few), "--out", "x"])
    assert short.exit_code == 1 and "at least 16 real LR images" in short.output
    dry = runner.invoke(degrade, [*base, "--degrader", "bilinear", "--dry-run", "--n", "2000"])
    assert dry.exit_code == 0 and f"reduced to {N}" in dry.output and not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="not empty"):
        plan_evaluation(EvalConfig(degraders=[], hr=str(hr), lr=str(lr), out=str(tmp_path)))


def test_table_marks_the_best_degrader_per_column_and_no_tie():
    from degrader.eval_report import statistics_columns, summary_columns, table

    def row(name: str, swd: float, c2st: float, tex: float) -> dict:
        metrics = {"swd": swd, "c2st": c2st, "c2st_low": c2st - 0.05, "c2st_high": c2st + 0.05, "tex_swd": tex}
        return {"name": name, "metrics": metrics, "relative": {"swd": swd / 100, "c2st": c2st, "tex_swd": tex / 40}}

    rows = [row("bicubic", 100, 0.9, 40), row("run", 50, 0.9, 60)]
    report = {"floor": row("floor", 10, 0.5, 5)["metrics"], "degraders": rows}
    header, rows, best = table(report, summary_columns(has_features=False))
    assert header[1].endswith("↓") and rows[0][0].endswith("(floor)") and [r[0] for r in rows[1:]] == ["bicubic", "run"]
    assert header[2].startswith("texture (SWD rel.)")
    assert best[1] == {2} and best[3] == {2}  # SWD relative and SWD: the run (row 2) is best
    assert best[2] == {1}  # on texture alone bicubic is closer: the headline pair can disagree, and shows it
    assert 4 not in best  # C2ST: a tie, nothing highlighted
    assert rows[1][6] == "–"  # a report without the texture C2ST (written before it existed) still renders
    assert len(statistics_columns()) == 6
