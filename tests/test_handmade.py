"""The hand-made baselines (Real-ESRGAN's and BSRGAN's pipelines): each piece against its definition, per-seed
determinism, shapes, and the CLI names."""

import io
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.degrade import degrade
from degrader.classical import CLASSICAL, make_classical
from degrader.color import psnr_from_mse
from degrader.errors import UserError
from degrader.handmade import BSRGANConfig, RealESRGANConfig, plan_bsrgan, plan_realesrgan
from degrader.images import to_tensor
from degrader.kernels import (
    covariance,
    filter2d,
    gaussian_noise,
    jpeg_8bit,
    poisson_noise,
    shaped_kernel,
    sinc_kernel,
)
from degrader.shards import ShardDataset, to_uint8
from degrader.synthetic import make_faces

HANDMADE = ["realesrgan", "bsrgan"]


def second_moments(k: torch.Tensor) -> torch.Tensor:
    """The kernel's covariance: sum of k(x, y) [x y]^T [x y] over its grid (its mean is the centre)."""
    n = k.shape[-1]
    ax = torch.arange(n, dtype=torch.float64) - n // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    k = k.double()
    assert abs(float((k * x).sum())) < 1e-6 and abs(float((k * y).sum())) < 1e-6  # centred
    return torch.tensor([[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]])


@pytest.mark.parametrize(("sx", "sy", "theta"), [(3.0, 1.5, 0.6), (1.2, 2.5, -1.1), (2.0, 2.0, 0.0)])
def test_gaussian_kernel_covariance_is_the_requested_one(sx, sy, theta):
    k = shaped_kernel(41, covariance(sx, sy, theta))
    assert float(k.sum()) == pytest.approx(1, abs=1e-6)
    cov = second_moments(k)
    assert torch.allclose(cov, covariance(sx, sy, theta), atol=2e-3)
    # the long axis points along theta: its eigenvector, up to sign
    vals, vecs = torch.linalg.eigh(cov)
    if sx != sy:
        major = vecs[:, 1] if sx > sy else vecs[:, 0]
        assert abs(float(major @ torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64))) > 0.999


def test_generalized_and_plateau_kernels_change_the_tails_as_beta_says():
    cov = covariance(2.0, 2.0, 0.0)
    gauss = shaped_kernel(21, cov)
    assert torch.allclose(shaped_kernel(21, cov, "generalized", 1.0), gauss)  # beta 1 is the Gaussian
    heavy, light = shaped_kernel(21, cov, "generalized", 0.5), shaped_kernel(21, cov, "generalized", 4.0)
    # beta < 1: heavier tails and a sharper peak; beta > 1: a flat top that falls off fast
    assert heavy[10, 0] > gauss[10, 0] > light[10, 0]
    assert light[10, 11] / light[10, 10] > gauss[10, 11] / gauss[10, 10] > heavy[10, 11] / heavy[10, 10]
    plateau = shaped_kernel(21, cov, "plateau", 2.0)
    q = torch.tensor(4.0 / 4.0)  # at (2, 0): Q = x^2 / sigma^2 = 1
    assert float(plateau[10, 12] / plateau[10, 10]) == pytest.approx(float(1 / (1 + q**2)), rel=1e-5)
    for k in (heavy, light, plateau):
        assert float(k.sum()) == pytest.approx(1, abs=1e-6) and (k >= 0).all()


def response(kernel: torch.Tensor, n: int = 128) -> torch.Tensor:
    """|frequency response| on an n x n grid of frequencies (fft of the zero-padded kernel)."""
    padded = torch.zeros(n, n, dtype=torch.float64)
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel.double()
    return torch.fft.fft2(padded).abs()


@pytest.mark.parametrize("cutoff", [math.pi / 2, math.pi / 3])
def test_sinc_kernel_passes_below_its_cutoff_and_stops_above(cutoff):
    k = sinc_kernel(21, cutoff)
    assert float(k.sum()) == pytest.approx(1, abs=1e-6)
    r = response(k)
    w = 2 * math.pi * torch.arange(128) / 128  # radians per pixel along one axis
    w = torch.minimum(w, 2 * math.pi - w)
    radius = torch.sqrt(w[:, None] ** 2 + w[None, :] ** 2)
    passed, stopped = r[radius < 0.7 * cutoff], r[(radius > 1.3 * cutoff) & (radius <= math.pi)]
    assert float(passed.min()) > 0.8 and float(passed.mean()) > 0.9  # pass band (a truncated kernel ripples)
    assert float(stopped.max()) < 0.15 and float(stopped.mean()) < 0.03  # stop band
    # and the sinc rings: negative lobes, unlike any Gaussian
    assert float(k.min()) < 0


def test_filter2d_applies_each_images_own_kernel():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1  # an impulse: the output is the kernel itself
    k = torch.stack([shaped_kernel(7, covariance(1.0, 0.5, 0.3)), shaped_kernel(7, covariance(0.8, 0.8, 0.0))])
    out = filter2d(x, k)
    assert torch.allclose(out[0, 1, 4:11, 4:11], k[0].flip(0, 1), atol=1e-7)
    assert torch.allclose(out[1, 2, 4:11, 4:11], k[1].flip(0, 1), atol=1e-7)


def test_filter2d_by_fft_on_large_images_equals_the_convolution_and_ignores_the_batch():
    x = torch.rand(2, 3, 128, 136)
    k = torch.stack([sinc_kernel(21, 1.0), shaped_kernel(21, covariance(3.0, 1.0, 0.5))])
    by_fft = filter2d(x, k)  # 21 taps on 128 x 136: the FFT path
    small = filter2d(x[:, :, :64, :64], k)  # 64 x 64: the direct convolution
    assert torch.allclose(by_fft[..., 20:44, 20:44], small[..., 20:44, 20:44], atol=1e-5)  # away from the border
    assert torch.equal(by_fft[1:], filter2d(x[1:2], k[1:2]))
    impulse = torch.zeros(1, 3, 128, 128)
    impulse[..., 64, 64] = 1
    k15 = sinc_kernel(15, 2.0)
    assert torch.allclose(filter2d(impulse, k15[None])[0, 0, 57:72, 57:72], k15.flip(0, 1), atol=1e-6)


def test_gaussian_noise_has_the_requested_sigma_and_grey_noise_is_equal_in_channels():
    flat = torch.full((2, 3, 128, 128), 0.5)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = gaussian_noise(flat, [10 / 255, 25 / 255], [False, True], gens)
    noise = out - flat
    assert float(noise[0].std()) == pytest.approx(10 / 255, rel=0.03)
    assert float(noise[1].std()) == pytest.approx(25 / 255, rel=0.03)
    assert torch.equal(noise[1, 0], noise[1, 2]) and not torch.equal(noise[0, 0], noise[0, 2])


def test_poisson_noise_variance_grows_with_the_signal():
    levels = torch.tensor([0.1, 0.3, 0.6, 0.9])
    img = levels.repeat_interleave(64).view(1, 1, 256, 1).expand(1, 3, 256, 256).contiguous()  # 4 flat bands
    out = poisson_noise(img, [1.0], [False], [torch.Generator().manual_seed(0)])
    noise = (out - img)[0].reshape(3, 4, 64, 256)
    var = noise.var(dim=(0, 2, 3))
    # variance = scale^2 x / v with v = 4 (the power of two at or above the 4 distinct levels)... for the 8-bit x
    expected = torch.round(levels * 255) / 255 / 4
    assert torch.allclose(var, expected, rtol=0.1)
    scaled = poisson_noise(img, [0.5], [False], [torch.Generator().manual_seed(0)]) - img
    assert float(scaled.var()) == pytest.approx(0.25 * float((out - img).var()), rel=1e-4)


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_jpeg_matches_pil_at_the_same_quality(quality):
    face = make_faces(1, 64, seed=3)[0]
    buf = io.BytesIO()
    face.save(buf, format="JPEG", quality=quality)  # PIL: libjpeg, 4:2:0 at these qualities
    pil = to_tensor(Image.open(buf).convert("RGB"))[None]
    src = to_tensor(face)[None]
    ours = jpeg_8bit(src, [quality])
    psnr = float(psnr_from_mse(((ours - pil) ** 2).mean()))
    assert psnr > 40, psnr
    # and the compression is there: both differ from the source far more than from each other at low quality
    if quality == 30:
        assert psnr > float(psnr_from_mse(((src - pil) ** 2).mean())) + 5


def test_plans_follow_the_published_pipelines():
    re_plans = [plan_realesrgan(RealESRGANConfig(), torch.Generator().manual_seed(s), (64, 64), 4) for s in range(200)]
    ops = [[step[0] for step in p] for p in re_plans]
    assert all(o[:4] == ["blur", "resize", o[2], "jpeg"] and o[2] in ("gauss", "poisson") for o in ops)
    assert all(p[-1][0] == "jpeg" or p[-1][0] in ("resize", "blur") for p in re_plans)
    assert {o[-1] for o in ops} == {"jpeg", "blur", "resize"}  # both final orders, with and without the sinc
    assert 0.7 < sum(o[4] == "blur" for o in ops) / 200 < 0.9  # second_blur_prob 0.8
    bs_plans = [plan_bsrgan(BSRGANConfig(), torch.Generator().manual_seed(s), (64, 64), 4) for s in range(200)]
    for plan in bs_plans:
        o = [step[0] for step in plan]
        assert o[-1] == "jpeg" and o.count("blur") >= 2 and ("cnoise" in o or "gauss" in o)
        sizes = [step[1][0] for step in plan if step[0] == "resize"]
        assert sizes[-1] == (16, 16)  # the last resize lands on HR / scale
    assert len({tuple(s[0] for s in p) for p in bs_plans}) > 50  # shuffled orders


@pytest.mark.parametrize("name", HANDMADE)
@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_levels_and_interface(name, scale):
    deg = make_classical(name, scale)
    assert (deg.name, deg.sha256, deg.scale, deg.hr_size) == (name, "", scale, None)
    hr = torch.rand(3, 3, 32, 48)
    lr = deg.degrade(hr, [1, 2, 3])
    assert lr.shape == (3, 3, 32 // scale, 48 // scale) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1 and torch.equal(lr, (lr * 255).round() / 255)  # 8-bit levels


@pytest.mark.parametrize("name", HANDMADE)
def test_same_seed_same_lr_whatever_the_batch(name):
    deg = make_classical(name, 4)
    hr = torch.stack([to_tensor(f) for f in make_faces(6, 64, seed=0)])
    seeds = [5, 6, 7, 8, 9, 10]
    out = deg.degrade(hr, seeds)
    assert torch.equal(out, deg.degrade(hr, seeds))
    assert torch.equal(out[3:4], deg.degrade(hr[3:4], [8]))
    assert torch.equal(out[1:4], deg.degrade(torch.cat([hr[1:3], hr[3:4]]), [6, 7, 8]))
    assert torch.equal(out[2], deg.degrade(torch.stack([hr[0], hr[2], hr[0]]), [99, 7, 98])[1])  # other neighbours
    same = hr[:1].expand(6, -1, -1, -1)
    variants = deg.degrade(same, list(range(6)))
    assert len({v.sum().item() for v in variants}) == 6  # different seeds, different LR


def test_only_scale_2_and_4():
    with pytest.raises(UserError, match="--scale 3"):
        make_classical("realesrgan", 3)
    assert set(HANDMADE) <= set(CLASSICAL)


def write_faces(root, n, size, seed):
    root.mkdir(parents=True)
    for i, img in enumerate(make_faces(n, size, seed=seed)):
        img.save(root / f"{i:03d}.png")


def test_cli_export_verify_and_eval_accept_the_names(tmp_path):
    write_faces(tmp_path / "hr", 16, 64, 0)
    write_faces(tmp_path / "lr", 16, 16, 1)
    runner = CliRunner()
    out = tmp_path / "shards"
    args = ["export-shards", "--degrader", "realesrgan", "--hr", str(tmp_path / "hr"), "--out", str(out)]
    result = runner.invoke(degrade, [*args, "--hr-size", "64", "--workers", "0", "--per-image", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["degrader"]["name"] == "realesrgan" and manifest["totals"]["samples"] == 32
    result = runner.invoke(degrade, ["verify", str(out)])
    assert result.exit_code == 0, result.output
    # the shards record each sample's seed: the LR regenerates from its HR and seed, bit for bit
    samples = list(ShardDataset(out))
    assert len({sample["seed"] for sample in samples}) == 32
    regenerated = make_classical("realesrgan", 4).degrade(
        torch.stack([x["gt"] for x in samples]), [x["seed"] for x in samples]
    )
    assert np.array_equal(to_uint8(regenerated), to_uint8(torch.stack([x["lq"] for x in samples])))
    args = ["eval", "--degrader", "bsrgan", "--hr", str(tmp_path / "hr"), "--lr", str(tmp_path / "lr")]
    result = runner.invoke(degrade, [*args, "--out", str(tmp_path / "eval"), "--n", "8"])
    assert result.exit_code == 0, result.output
    assert "bsrgan" in result.output


def test_sr_compare_adds_both_pipelines_beside_the_named_degraders(tmp_path):
    from sr.compare import CompareConfig, plan_compare

    write_faces(tmp_path / "hr", 16, 64, 0)
    write_faces(tmp_path / "lr", 8, 24, 1)
    base = dict(hr=str(tmp_path / "hr"), lr=str(tmp_path / "lr"), workers=0, device="cpu", n=8)
    plan = plan_compare(CompareConfig(degraders=["bicubic"], out=str(tmp_path / "a"), **base))
    assert [a.name for a in plan.arms] == ["bicubic", "realesrgan", "bsrgan"]
    plan = plan_compare(CompareConfig(degraders=["bsrgan"], out=str(tmp_path / "b"), baselines=[], **base))
    assert [a.name for a in plan.arms] == ["bsrgan"]
    with pytest.raises(UserError, match=r"scale 3: .*--set baselines=\[\]"):
        plan_compare(CompareConfig(degraders=["bicubic"], out=str(tmp_path / "c"), scale=3, hr_size=63, **base))
    plan = plan_compare(
        CompareConfig(degraders=["bicubic"], out=str(tmp_path / "d"), scale=3, hr_size=63, baselines=[], **base)
    )
    assert [a.name for a in plan.arms] == ["bicubic"]


def test_degrade_apply_takes_a_pipeline_name_and_any_image_size(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    make_faces(1, 70, seed=4)[0].crop((0, 0, 70, 50)).save(photos / "a.png")
    runner = CliRunner()
    for out in ("one", "two"):
        args = ["apply", "--degrader", "bsrgan", str(photos), "--out", str(tmp_path / out), "--device", "cpu"]
        result = runner.invoke(degrade, args)
        assert result.exit_code == 0, result.output
    one, two = (np.asarray(Image.open(tmp_path / out / "a.png")) for out in ("one", "two"))
    assert one.shape == (12, 17, 3) and np.array_equal(one, two)  # cropped to x4, the same from the same seed
    result = runner.invoke(degrade, ["apply", "--degrader", "nope", str(photos), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "--degrader nope" in result.output
