"""The colour conversions every module shares (degrader/color.py)."""

import math

import pytest
import torch

from degrader.color import LUMA, luma, psnr_from_mse, rgb_to_y, y_difference


def test_luma_weighs_the_channels_and_keeps_grey():
    primaries = torch.eye(3).view(3, 3, 1, 1)  # red, green, blue images of one pixel
    assert luma(primaries).flatten().tolist() == pytest.approx(list(LUMA))
    grey = torch.full((2, 3, 4, 4), -0.25)  # networks work in [-1, 1]: the weights sum to 1
    assert torch.allclose(luma(grey), torch.full((2, 1, 4, 4), -0.25))


def test_y_difference_is_the_difference_of_studio_range_y():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 5, 5, generator=g), torch.rand(2, 3, 5, 5, generator=g)
    assert torch.allclose(y_difference(a, b), (rgb_to_y(a) - rgb_to_y(b))[:, 0], atol=1e-6)
    assert rgb_to_y(torch.ones(3, 1, 1)).item() * 255 == pytest.approx(235.0)


def test_psnr_from_mse():
    assert psnr_from_mse(torch.tensor(0.01)).item() == pytest.approx(20.0)
    assert psnr_from_mse(torch.tensor(65.025, dtype=torch.float64), 255.0).item() == pytest.approx(30.0)
    assert math.isinf(psnr_from_mse(torch.tensor(0.0)).item())
