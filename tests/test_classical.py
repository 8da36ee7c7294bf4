"""The classical baselines: shapes, ranges, per-seed determinism, and the same interface as a learned degrader."""

import pytest
import torch
import torch.nn.functional as F

from degrader.classical import CLASSICAL, HANDMADE, blur_kernel, make_classical
from degrader.errors import UserError


@pytest.mark.parametrize("name", list(CLASSICAL))
@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_range_and_interface(name, scale):
    deg = make_classical(name, scale)
    assert (deg.name, deg.sha256, deg.scale, deg.hr_size) == (name, "", scale, None)
    hr = torch.rand(3, 3, 32, 48)
    lr = deg.degrade(hr, [1, 2, 3])
    assert lr.shape == (3, 3, 32 // scale, 48 // scale)
    assert lr.dtype == torch.float32 and lr.min() >= 0 and lr.max() <= 1


def test_bicubic_is_antialiased_interpolate():
    hr = torch.rand(2, 3, 32, 32)
    expected = F.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(make_classical("bicubic", 4).degrade(hr, [0, 0]), expected)


def test_bilinear_aliases_more_than_bicubic():
    # A one-pixel checkerboard: an antialiased filter averages it to grey, plain bilinear keeps sampling it.
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    hr = board.float().expand(1, 3, 32, 32)
    assert make_classical("bicubic", 4).degrade(hr, [0]).std() < 0.01
    lr = make_classical("bilinear", 3).degrade(hr[..., :30, :30], [0])  # samples land on pixel centres
    assert lr.std() > 0.1


@pytest.mark.parametrize("name", [n for n in CLASSICAL if n not in HANDMADE])  # the hand-made ones add noise
def test_constant_image_stays_constant(name):
    hr = torch.full((2, 3, 24, 24), 0.3)
    assert torch.allclose(make_classical(name, 4).degrade(hr, [5, 6]), torch.full((2, 3, 6, 6), 0.3), atol=1e-5)


def test_blur_bilinear_seed_fixes_randomness_per_sample():
    deg = make_classical("blur-bilinear", 4)
    hr = torch.rand(4, 3, 32, 32)
    seeds = [11, 12, 13, 14]
    out = deg.degrade(hr, seeds)
    assert torch.equal(out, deg.degrade(hr, seeds))
    # A sample's output depends on its own image and seed only, not on the batch it is in.
    assert torch.equal(out[2:3], deg.degrade(hr[2:3], [13]))
    assert torch.equal(out[1:3], deg.degrade(hr[1:3], [12, 13]))
    # Different seeds give different blurs for the same image, for most seeds.
    same = hr[:1].expand(8, -1, -1, -1)
    variants = deg.degrade(same, list(range(8)))
    assert len({v.sum().item() for v in variants}) > 1


def test_blur_kernels_span_2_to_6_pixels_and_sum_to_one():
    sizes = set()
    for seed in range(200):
        k = blur_kernel(seed)
        assert k.shape[0] == k.shape[1] and 2 <= k.shape[0] <= 6
        assert torch.isclose(k.sum(), torch.tensor(1.0)) and (k > 0).all()
        sizes.add(k.shape[0])
    assert sizes == {2, 3, 4, 5, 6}
    assert torch.equal(blur_kernel(7), blur_kernel(7))


def test_bad_names_scales_and_inputs():
    with pytest.raises(UserError, match="blur-bilinear"):
        make_classical("lanczos", 4)
    with pytest.raises(UserError, match="scale"):
        make_classical("bicubic", 1)
    deg = make_classical("bicubic", 4)
    with pytest.raises(ValueError, match="divisible"):
        deg.degrade(torch.rand(1, 3, 30, 32), [0])
    with pytest.raises(ValueError, match="seeds"):
        deg.degrade(torch.rand(2, 3, 32, 32), [0])
