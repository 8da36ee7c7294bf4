"""PSNR / SSIM against an independent numpy reference (explicit loops) and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sr.metrics import psnr, rgb_to_y, ssim


def ref_to_uint8_range(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) [0, 1] tensor -> (H, W, 3) float64 array of whole numbers 0..255, as BasicSR's tensor2img."""
    a = img.permute(1, 2, 0).numpy().astype(np.float64)
    return np.round(np.clip(a, 0, 1) * 255.0)


def ref_y(a: np.ndarray) -> np.ndarray:
    """(H, W, 3) in 0..255 -> (H, W, 1) luma, pixel by pixel as MATLAB's rgb2ycbcr documents it."""
    out = np.empty(a.shape[:2] + (1,))
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            r, g, b = a[i, j] / 255.0
            out[i, j, 0] = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    return out


def ref_prepare(img: torch.Tensor, crop: int, y: bool) -> np.ndarray:
    a = ref_to_uint8_range(img)
    if y:
        a = ref_y(a)
    if crop:
        a = a[crop:-crop, crop:-crop]
    return a


def ref_psnr(a: torch.Tensor, b: torch.Tensor, crop: int = 0, y: bool = False) -> float:
    x, z = ref_prepare(a, crop, y), ref_prepare(b, crop, y)
    mse = np.mean((x - z) ** 2)
    return 20 * math.log10(255.0 / math.sqrt(mse))


def ref_ssim(a: torch.Tensor, b: torch.Tensor, crop: int = 0, y: bool = False) -> float:
    """SSIM with an explicit sliding 11x11 window over every 'valid' position, one channel at a time."""
    x, z = ref_prepare(a, crop, y), ref_prepare(b, crop, y)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = np.array([math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)])
    w = np.outer(g, g)
    w /= w.sum()
    per_channel = []
    for c in range(x.shape[2]):
        values = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                p, q = x[i : i + 11, j : j + 11, c], z[i : i + 11, j : j + 11, c]
                mp, mq = (w * p).sum(), (w * q).sum()
                vp = (w * (p - mp) ** 2).sum()  # centred form, unlike the E[x^2] - E[x]^2 of the library
                vq = (w * (q - mq) ** 2).sum()
                cv = (w * (p - mp) * (q - mq)).sum()
                values.append(((2 * mp * mq + c1) * (2 * cv + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 24, 28, generator=g)
    # a smoothed, noisy, slightly shifted copy: a realistic, non-trivial distortion
    sr = (0.7 * hr + 0.3 * hr.roll(1, dims=-1) + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    return hr, sr


@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("y", [False, True])
def test_psnr_and_ssim_match_reference(pair, crop, y):
    hr, sr = pair
    p = psnr(sr, hr, crop_border=crop, y_channel=y)
    s = ssim(sr, hr, crop_border=crop, y_channel=y)
    assert p.shape == (2,) and s.shape == (2,) and p.dtype == torch.float64
    for i in range(2):
        assert p[i].item() == pytest.approx(ref_psnr(sr[i], hr[i], crop, y), abs=1e-9)
        assert s[i].item() == pytest.approx(ref_ssim(sr[i], hr[i], crop, y), abs=1e-9)
    # single images give scalars with the same values
    assert psnr(sr[1], hr[1], crop_border=crop, y_channel=y).item() == pytest.approx(p[1].item(), abs=1e-12)
    assert ssim(sr[1], hr[1], crop_border=crop, y_channel=y).ndim == 0


def test_identical_images():
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert psnr(x, x).item() == math.inf
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, x, y_channel=True).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [1, 5, 40])
def test_constant_offset(d):
    base = torch.randint(0, 200, (3, 20, 20), generator=torch.Generator().manual_seed(2)).double()
    a, b = base / 255, (base + d) / 255
    assert psnr(a, b).item() == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
    # luma moves by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255
    assert psnr(a, b, y_channel=True).item() == pytest.approx(20 * math.log10(255 / (d * 219 / 255)), abs=1e-9)


def test_ssim_of_flat_images_is_analytic():
    c1 = (0.01 * 255) ** 2
    a, b = torch.full((3, 16, 16), 100 / 255), torch.full((3, 16, 16), 140 / 255)
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-12)


def test_quantisation_and_range():
    x = torch.randint(0, 256, (3, 16, 16), generator=torch.Generator().manual_seed(3)) / 255
    # sub-quantum differences vanish as they would in a saved PNG; values outside [0, 1] are clipped
    assert psnr(x, x + 0.1 / 255).item() == math.inf
    assert psnr(x.clamp(0.5, 1), x.clamp(0.5, 1) + 2).item() == psnr(x.clamp(0.5, 1), torch.ones_like(x)).item()


def test_rgb_to_y():
    white, black = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    assert torch.allclose(rgb_to_y(white) * 255, torch.full((1, 2, 2), 235.0), atol=1e-4)
    assert torch.allclose(rgb_to_y(black) * 255, torch.full((1, 2, 2), 16.0))
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(4, 2, 2))


def test_bad_inputs():
    a = torch.zeros(3, 16, 16)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, torch.zeros(3, 16, 17))
    with pytest.raises(ValueError, match="RGB"):
        psnr(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="SSIM needs"):
        ssim(a, a, crop_border=4)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(a, a, crop_border=8)
