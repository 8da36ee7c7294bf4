"""The benchmark scripts still run (tiny sizes, one timed call); their numbers are not checked here."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_bench_blur_runs_and_the_two_forms_agree():
    args = ["--batch", "2", "--size", "32", "--iters", "1"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_blur.py"), *args],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    assert float(re.search(r"max difference ([0-9.e+-]+)", out).group(1)) < 1e-5
    assert len(re.findall(r"fused \(stride\)\s+[0-9.]+ ms\s+x[0-9.]+", out)) == 2  # blur alone and the whole step


def test_bench_library_threads_runs_and_prints_the_ratio():
    args = ["--steps", "1", "--rows", "cli", "library"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_library_threads.py"), *args],
        capture_output=True, text=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    assert re.search(r"^cli\s+[0-9.]+\s+1\.00x$", out, re.M)
    assert re.search(r"^library\s+[0-9.]+\s+[0-9.]+x$", out, re.M)


def _script(name: str):
    return load_script(ROOT / "benchmarks" / f"{name}.py", name)


def _uint8(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return (torch.rand(*shape, generator=gen) * 255).to(torch.uint8)


def test_bench_quality_handmade_rows_score_realism_and_sr_reproducibly(tmp_path):
    bq = _script("bench_quality")
    g = torch.Generator().manual_seed(0)
    splits = {"hr": _uint8(g, 8, 3, 64, 64), "test_hr": _uint8(g, 8, 3, 64, 64)}
    splits |= {"test_lr": _uint8(g, 8, 3, 16, 16), "web_test": _uint8(g, 8, 3, 16, 16)}
    save_file(splits, tmp_path / "splits.safetensors")
    argv = dict(threads=1, splits=str(tmp_path / "splits.safetensors"), device="cpu", sr_device=None)
    argv |= dict(targets="synthetic,web", sr_steps=2, batch=2)
    rows = [bq._run_job(name, 0, {}, argv) for name in ("realesrgan", "realesrgan", "bsrgan")]
    for row in rows:
        for key in ("syn_c2st", "syn_tex_c2st", "web_c2st", "web_tex_c2st"):
            assert 0 <= row[key] <= 1
        assert math.isfinite(row["psnr"]) and math.isfinite(row["syn_rel"])
    same = [{k: v for k, v in r.items() if k != "job_s"} for r in rows]
    assert same[0] == same[1]  # the same seed: the same LR, classifier and SR model
    assert same[0]["syn_rel"] != same[2]["syn_rel"]  # the other pipeline
    bicubic = bq._run_job("bicubic", 0, {}, argv | {"sr_steps": 0})  # its camera realism, no SR
    assert bicubic["syn_rel"] == pytest.approx(1) and 0 <= bicubic["syn_tex_c2st"] <= 1 and "psnr" not in bicubic
    assert "closure" not in bq.summarise([bicubic, rows[0]])[0][-1]  # a bicubic row without SR: no gap to close
    refs = [{"variant": "bicubic", "seed": 0, "psnr": rows[0]["psnr"] - 1}]
    refs += [{"variant": "oracle", "seed": 0, "psnr": rows[0]["psnr"] + 1}]
    table, md = bq.summarise([*refs, rows[0]])
    assert table[-1]["closure"] == pytest.approx(0.5)  # a hand-made row gets a gap closed
    assert "| realesrgan | 1 |" in md


def test_bench_web_handmade_rows_score_texture_at_every_framing(tmp_path):
    bw = _script("bench_web")
    g = torch.Generator().manual_seed(0)
    splits = {"hr": _uint8(g, 8, 3, 64, 64), "web1": _uint8(g, 16, 3, 16, 16), "web0.7": _uint8(g, 16, 3, 16, 16)}
    save_file(splits, tmp_path / "splits.safetensors")
    argv = dict(splits=str(tmp_path / "splits.safetensors"), frame_list=[1.0, 0.7], out=str(tmp_path))
    row = bw.run(("bsrgan", 1.0, 0, argv))
    for f in ("1", "0.7"):
        assert 0 <= row[f"c2st@{f}"] <= 1 and 0 <= row[f"tex_c2st@{f}"] <= 1
        assert all(math.isfinite(row[f"{k}@{f}"]) for k in ("tex_swd", "w1_noise", "w1_blockiness", "w1_sharpness"))
    assert json.loads((tmp_path / "rows.jsonl").read_text())["variant"] == "bsrgan"
