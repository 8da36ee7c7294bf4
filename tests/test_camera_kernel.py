"""benchmarks/camera_kernel.py: the least-squares camera fit finds a known blur + sharpening chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "camera_kernel.py"


@pytest.fixture(scope="module")
def ck():
    return load_script(SCRIPT, "camera_kernel")


def test_the_fit_finds_the_chain_that_made_the_pairs(ck, tmp_path):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir(), lr_dir.mkdir()
    deg = ck.lsq_degrader(1.2, 0.5, 1.0, 4)  # blur 1.2 HR px, unsharp mask 0.5 of width 1 LR px
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        coarse = torch.rand(1, 3, 24, 32, generator=gen)
        hr = (0.6 * torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear") + 0.2)[0]
        hr = (hr + 0.15 * torch.rand(hr.shape, generator=gen)).clamp(0, 1)  # fine detail for the kernel to act on
        lr = deg.degrade(hr[None], [i])[0]
        for img, folder in ((hr, hr_dir), (lr, lr_dir)):
            Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    r = ck.fit(hr_dir, lr_dir, 4)
    best = r["blur+sharpen"]
    assert (best["sigma"], best["amount"], best["mask_sigma"]) == (1.2, 0.5, 1.0)
    assert best["rms"] < 0.5 < min(r["blur"]["rms"], r["area"], r["bicubic"])  # only the chain explains them
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--hr", str(hr_dir), "--lr", str(lr_dir), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "amount 0.5" in out.stdout and (tmp_path / "run" / "degrader.safetensors").is_file()


def test_a_chain_at_the_ends_of_its_ranges_is_written(ck):
    p = ck.lsq_degrader(2.2, 1.5, 1.5, 2).net_g.params(torch.zeros(1, 64))  # mask width 1.5: the range's top
    assert p["sharpen"].item() == pytest.approx(1.5, rel=1e-3) and p["sharpen_sigma"].item() == pytest.approx(
        1.5, rel=1e-3
    )


def test_without_pairs_it_says_so_and_exits_0(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--hr", str(tmp_path), "--lr", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("skipped: --hr")
