"""degrader.realism and degrader.features: each metric on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degrader.classical import Bicubic
from degrader.errors import UserError
from degrader.features import FeatureExtractor, fid, frechet_distance, kid
from degrader.realism import (
    RealismProbe,
    SWDReference,
    classifier_two_sample_test,
    fidelity,
    image_statistics,
    laplacian_pyramid,
    pyramid_levels,
    relative,
    statistics_distances,
    swd,
    wasserstein_1d,
    wilson_interval,
)


def scenes(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour images with some edges: (n, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    steps = (torch.rand(n, 3, 3, 3, generator=g) - 0.5) * 0.4
    x = x + F.interpolate(steps, size=(size, size), mode="nearest")  # hard edges every size/3 px
    return x.clamp(0, 1)


def camera(hr: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed 'real' process: optical blur, area sampling, half the colour, sensor noise. (N, 3, H/4, W/4)."""
    x = torch.arange(7, dtype=torch.float32) - 3
    k = torch.exp(-(x**2) / (2 * 1.6**2))
    k = (torch.outer(k, k) / k.sum() ** 2).expand(3, 1, 7, 7)
    lr = F.avg_pool2d(F.conv2d(F.pad(hr, (3, 3, 3, 3), mode="reflect"), k, groups=3), 4)
    gray = lr.mean(1, keepdim=True)
    lr = gray + 0.5 * (lr - gray)
    return (lr + 0.03 * torch.randn(lr.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return camera(scenes(400, 64, seed=1), seed=2)  # halves: [:200] is A, [200:] is B


def blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def noisier(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)


def cast(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor([1.2, 1.0, 0.8])[:, None, None]).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- SWD


def test_pyramid_levels_fit_the_patch_and_band_pass_levels_ignore_constants():
    assert pyramid_levels(16) == 2 and pyramid_levels(64) == 4 and pyramid_levels(7) == 1
    levels = laplacian_pyramid(torch.full((2, 3, 16, 16), 0.3), 2)
    assert [tuple(t.shape[-2:]) for t in levels] == [(16, 16), (8, 8)]
    assert levels[0].abs().max() < 1e-6  # no detail in a flat image
    assert torch.allclose(levels[1], torch.full_like(levels[1], 0.3))  # the low-pass keeps its level


def test_swd_is_near_its_floor_for_two_samples_of_one_set_and_ranks_distortions(real):
    a, b = real[:200], real[200:]
    ref = SWDReference(a, seed=0)
    mean = lambda d: sum(d) / len(d)  # noqa: E731
    floor = mean(ref.distance(b))
    assert floor == pytest.approx(swd(b, a, seed=0)["swd"])
    levels = ref.distance(b)
    for name, distorted in [("blur", blur(b)), ("noise", noisier(b, 0.05)), ("colour", cast(b))]:
        assert mean(ref.distance(distorted)) > 1.2 * floor, name
    # blur and noise live in the 16x16 detail band, a colour cast in the 8x8 low-pass
    assert ref.distance(blur(b))[0] > 5 * levels[0] and ref.distance(noisier(b, 0.05))[0] > 3 * levels[0]
    assert ref.distance(cast(b))[1] > 3 * levels[1]
    # more of a distortion is further away
    assert mean(ref.distance(noisier(b, 0.1))) > mean(ref.distance(noisier(b, 0.05)))


def test_swd_is_seeded():
    a, b = scenes(50, 16, 1), scenes(50, 16, 2)
    assert swd(a, b, seed=3) == swd(a, b, seed=3)
    assert swd(a, b, seed=3)["swd"] != swd(a, b, seed=4)["swd"]


# ---------------------------------------------------------------------------------------------- C2ST


def test_wilson_interval_matches_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)


def test_classifier_two_sample_test_is_chance_on_one_set_and_high_on_a_different_one(real):
    a, b = real[:200], real[200:]
    same = classifier_two_sample_test(b, a, seed=0)
    assert same["c2st_low"] < 0.5 < same["c2st_high"]
    shifted = classifier_two_sample_test(cast(b), a, seed=0)
    assert shifted["c2st_low"] > 0.6
    small = classifier_two_sample_test(cast(b[:40]), a[:40], seed=1)
    assert classifier_two_sample_test(cast(b[:40]), a[:40], seed=1) == small  # seeded


# ---------------------------------------------------------------------------------------------- statistics


def test_wasserstein_1d_known_values():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert wasserstein_1d(a, a + 0.5) == pytest.approx(0.5)
    assert wasserstein_1d(a, a) == 0
    # unequal sizes: {0, 1} against {0, 0, 1}: the CDFs differ by 1/6 over [0, 1]
    assert wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])) == pytest.approx(1 / 6)


def test_statistics_respond_to_what_they_measure(real):
    b = real[200:]
    s, gray = image_statistics(b), image_statistics(b.mean(1, keepdim=True).expand(-1, 3, -1, -1))
    assert gray["colourfulness"].abs().max() < 1e-6 and s["colourfulness"].min() > 0
    assert (image_statistics(blur(b))["sharpness"] < s["sharpness"]).float().mean() > 0.95
    flat = torch.full((4, 3, 16, 16), 0.5)
    est = image_statistics(noisier(flat, 0.05))["noise"]
    luma_std = 0.05 * math.sqrt(0.299**2 + 0.587**2 + 0.114**2)  # independent noise per channel, mixed into luma
    assert est.mean() == pytest.approx(luma_std, rel=0.1)  # Immerkaer's estimate of the noise std
    assert torch.allclose(image_statistics(flat)["blockiness"], torch.ones(4))
    blocks = torch.zeros(4, 3, 16, 16)
    blocks[..., 8:] = 0.5  # a step exactly at the 8x8 block boundary
    assert (image_statistics(blocks)["blockiness"] > 10).all()
    brightness = image_statistics(cast(b))["brightness"].mean().item()
    assert brightness != pytest.approx(s["brightness"].mean().item(), abs=1e-3)


def test_statistics_distances_rank_distortions_against_the_floor(real):
    a, b = real[:200], real[200:]
    sa = image_statistics(a)
    floor = statistics_distances(image_statistics(b), sa)
    assert statistics_distances(image_statistics(blur(b)), sa)["sharpness"] > 3 * floor["sharpness"]
    assert statistics_distances(image_statistics(noisier(b, 0.05)), sa)["noise"] > 3 * floor["noise"]
    assert statistics_distances(image_statistics(cast(b)), sa)["colourfulness"] > 2 * floor["colourfulness"]


# ---------------------------------------------------------------------------------------------- relative, probe


def test_fidelity_is_psnr_y_of_the_luma():
    a = scenes(8, 16, seed=1)
    noise = 0.02 * torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    # grey noise of std 0.02 in every channel: a luma error of 0.02 * 219 / 255 (studio range)
    assert fidelity(a + noise, a) == pytest.approx(-20 * math.log10(0.02 * 219 / 255), abs=0.3)
    assert fidelity(a + noise.expand(-1, 3, -1, -1) * torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1), a) > fidelity(
        a + noise, a
    )  # opposite red and green errors partly cancel in the luma


def test_relative_figure():
    assert relative(10.0, 2.0, 10.0) == 1 and relative(2.0, 2.0, 10.0) == 0 and relative(6.0, 2.0, 10.0) == 0.5
    assert relative(5.0, 2.0, 2.0) is None  # bicubic at the floor: no scale to measure against


def test_probe_the_real_process_beats_bicubic():
    hr = scenes(128, 64, seed=3)  # other images than the real LR set's
    real_lr = camera(scenes(256, 64, seed=4), seed=6)
    probe = RealismProbe(hr, real_lr, scale=4, seed=0)
    assert probe.bicubic > 2 * probe.floor
    as_real = probe.score(lambda x, seeds: camera(x, seed=seeds[0]))
    bicubic = probe.score(Bicubic(4).degrade)
    assert bicubic["val_swd_rel"] == pytest.approx(1.0)
    assert as_real["val_swd_rel"] < 0.3
    # per pyramid level, finest first: bicubic is 1 on each, the real process below it on each
    assert bicubic["val_swd_rel_levels"] == pytest.approx([1.0] * probe.reference.levels)
    assert all(r < 0.5 for r in as_real["val_swd_rel_levels"])
    assert probe.score(lambda x, seeds: blur(Bicubic(4).degrade(x, seeds)))["val_swd_rel"] > 0.3
    # val_mix adds the statistics on which bicubic is at least twice the floor
    assert probe.stat_scales and all(ref >= 2 * floor for floor, ref in probe.stat_scales.values())
    assert {k for k in bicubic if k.endswith("_rel")} == {"val_swd_rel"} | {
        f"val_{name}_rel" for name in probe.stat_scales
    }
    assert bicubic["val_mix"] == pytest.approx(1.0) and as_real["val_mix"] < 0.3
    noisy = probe.score(
        lambda x, seeds: (camera(x, seed=seeds[0]) + 0.1 * torch.randn(x.shape[0], 3, 16, 16)).clamp(0, 1)
    )
    assert noisy["val_mix"] > as_real["val_mix"] + 0.3
    # fidelity: bicubic against itself is exact; the camera keeps the content; heavy noise loses it
    assert bicubic["val_fidelity"] > 90 and 20 < as_real["val_fidelity"] < 60
    assert noisy["val_fidelity"] < as_real["val_fidelity"] - 3
    # a grey real set: colourfulness has a floor of exactly 0 and is the plainest tell of bicubic's colour
    grey = camera(scenes(256, 64, seed=4), seed=6).mean(1, keepdim=True).expand(-1, 3, -1, -1)
    probe = RealismProbe(hr, grey, scale=4, seed=0)
    assert probe.stat_scales["colourfulness"][0] == 0 and probe.stat_scales["colourfulness"][1] > 0
    assert probe.score(lambda x, seeds: Bicubic(4).degrade(x, seeds).mean(1, keepdim=True).expand(-1, 3, -1, -1))[
        "val_colourfulness_rel"
    ] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- FID / KID


def gaussian(n: int, mean: list[float], std: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(mean), generator=g, dtype=torch.float64) * torch.tensor(std) + torch.tensor(mean)


def test_fid_matches_the_closed_form_for_gaussians():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (s1 - s2)^2, independent of any matrix square root
    mu1, mu2, s1, s2 = [0.0, 1.0, 0.0, 2.0], [1.0, 1.0, -1.0, 2.0], [1.0, 2.0, 0.5, 1.0], [2.0, 1.0, 0.5, 3.0]
    expected = sum((a - b) ** 2 for a, b in zip(mu1, mu2, strict=True)) + sum(
        (a - b) ** 2 for a, b in zip(s1, s2, strict=True)
    )
    assert fid(gaussian(40000, mu1, s1, 0), gaussian(40000, mu2, s2, 1)) == pytest.approx(expected, rel=0.03)
    # full, non-commuting covariances against numpy's general eigenvalues of S1 S2 (real, >= 0 for SPD)
    rs = np.random.RandomState(0)
    a, b = rs.randn(6, 6), rs.randn(6, 6)
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    m1, m2 = rs.randn(6), rs.randn(6)
    reference = (
        ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(np.linalg.eigvals(c1 @ c2).real).sum()
    )
    got = frechet_distance(*(torch.from_numpy(t) for t in (m1, c1, m2, c2)))
    assert got == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(*(torch.from_numpy(t) for t in (m1, c1, m1, c1))) == pytest.approx(0, abs=1e-8)


def _poly_moments(mean: float, std: float) -> tuple[float, float, float]:
    """E[x], E[x^2], E[x^3] of N(mean, std^2)."""
    return mean, mean**2 + std**2, mean**3 + 3 * mean * std**2


def _expected_kernel(p: tuple[float, float], q: tuple[float, float]) -> float:
    """E (x y + 1)^3 for independent 1-D Gaussians x ~ p, y ~ q: E[x^k y^k] = E[x^k] E[y^k]."""
    (x1, x2, x3), (y1, y2, y3) = _poly_moments(*p), _poly_moments(*q)
    return x3 * y3 + 3 * x2 * y2 + 3 * x1 * y1 + 1


def test_kid_matches_the_closed_form_mmd_for_1d_gaussians():
    p, q = (0.0, 1.0), (0.5, 1.5)
    expected = _expected_kernel(p, p) + _expected_kernel(q, q) - 2 * _expected_kernel(p, q)
    mean, _ = kid(gaussian(3000, [p[0]], [p[1]], 0), gaussian(3000, [q[0]], [q[1]], 1), subsets=10, subset_size=1000)
    assert mean == pytest.approx(expected, rel=0.15)
    same, _ = kid(gaussian(3000, [0.0], [1.0], 2), gaussian(3000, [0.0], [1.0], 3), subsets=10, subset_size=1000)
    assert abs(same) < 0.05 * expected  # unbiased: about 0 for one distribution


def test_kid_equals_a_plain_loop_reference():
    x, y = gaussian(12, [0.0, 1.0, 2.0], [1.0] * 3, 0), gaussian(12, [1.0, 0.0, 2.0], [1.0] * 3, 1)
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kid(x, y, subsets=3, subset_size=m)  # every subset is the whole set
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == pytest.approx(0, abs=1e-9)


class MeanStd(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)[:, :, None, None]  # (B, 6, 1, 1), as Inception's pool


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated in torch 2.14, still what FID files use
def test_feature_extractor_runs_a_torchscript_file(tmp_path, real):
    path = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(MeanStd()), str(path))
    extractor = FeatureExtractor(path, batch_size=64)
    f = extractor(real[:100])
    assert f.shape == (100, 6) and f.dtype == torch.float64
    assert torch.allclose(f[:, :3].float(), real[:100].mean((2, 3)), atol=1e-6)
    assert FeatureExtractor(path, size=32)(real[:3]).shape == (3, 6)
    a, b = real[:200], real[200:]
    assert fid(extractor(cast(b)), extractor(a)) > 5 * fid(extractor(b), extractor(a))
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="junk.pt is not a TorchScript file"):
        FeatureExtractor(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="no such file"):
        FeatureExtractor(tmp_path / "missing.pt")
    assert math.isfinite(fid(f, f))
