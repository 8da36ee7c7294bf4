"""The structured generator: each step of the chain on known inputs, then the whole generator."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from degrader.checkpoint import noise_from_seeds
from degrader.jpeg import jpeg, quant_tables
from degrader.structured import (
    NOISE_CHANNELS,
    Colour,
    SensorNoise,
    StructuredConfig,
    StructuredGenerator,
    blur,
    gaussian_kernels,
    noise_images,
)
from tests.conftest import smooth_image

SMALL = dict(z_dim=16, hidden=16, residual_width=8)


def faces(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth colour images in [0, 1], on the 8-bit grid as decoded images are."""
    a = np.stack([np.asarray(smooth_image(size, seed * 100 + i)) for i in range(n)])
    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / F.mse_loss(a, b).item())


def set_head(module: torch.nn.Module, raw: list[float]) -> None:
    """Make a step's parameters the same for every z: zero weights, `raw` as the bias."""
    with torch.no_grad():
        module.head.weight.zero_()
        module.head.bias.copy_(torch.tensor(raw) / module.head.lr_mult)


# ------------------------------------------------------------------------------------------------ blur


def test_delta_kernel_is_the_identity():
    x = torch.rand(2, 3, 20, 17, generator=torch.Generator().manual_seed(0))
    delta = torch.zeros(2, 7, 7)
    delta[:, 3, 3] = 1
    assert torch.equal(blur(x, delta), x)
    # the narrowest Gaussian the config allows is a delta to within 1e-4
    k = gaussian_kernels(torch.full((1, 2), StructuredConfig().sigma_min), torch.zeros(1), 13)
    assert k[0, 6, 6] > 1 - 1e-4


def test_gaussian_kernel_has_its_sigmas_along_its_angle():
    sigma = torch.tensor([[2.0, 1.0], [2.0, 1.0]])
    k = gaussian_kernels(sigma, torch.tensor([0.0, math.pi / 2]), 21)  # (2, 21, 21)
    assert torch.allclose(k.sum((-2, -1)), torch.ones(2))
    r = torch.arange(21.0) - 10
    var_cols = (k.sum(-2) * r**2).sum(-1)  # spread along x (columns)
    var_rows = (k.sum(-1) * r**2).sum(-1)
    assert var_cols[0] == pytest.approx(4.0, rel=0.01) and var_rows[0] == pytest.approx(1.0, rel=0.01)
    assert var_cols[1] == pytest.approx(1.0, rel=0.01) and var_rows[1] == pytest.approx(4.0, rel=0.01)


def test_blur_uses_each_images_own_kernel():
    x = torch.zeros(2, 3, 15, 15)
    x[:, :, 7, 7] = 1  # an impulse: the output is the kernel itself
    k = gaussian_kernels(torch.tensor([[2.0, 0.5], [0.5, 0.5]]), torch.tensor([0.3, 0.0]), 9)
    out = blur(x, k)
    for i in range(2):
        for c in range(3):
            assert torch.allclose(out[i, c, 3:12, 3:12], k[i], atol=1e-6)


def test_blur_with_scale_is_blur_then_area_downsampling():
    x = torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = gaussian_kernels(torch.tensor([[2.0, 0.7], [0.3, 1.1], [1.0, 1.0]]), torch.tensor([0.5, 1.0, 0.0]), 13)
    for scale in (2, 4):
        assert torch.allclose(blur(x, k, scale), F.avg_pool2d(blur(x, k), scale), atol=1e-12)


# ------------------------------------------------------------------------------------------------ colour


def test_colour_gains_offset_and_saturation():
    cfg = StructuredConfig(**SMALL)
    colour = Colour(cfg.hidden, cfg)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    h = torch.randn(2, cfg.hidden)
    set_head(colour, [0.0] * 6 + [1.0])  # gains 1, offset 0, saturation 1
    assert torch.allclose(colour(x, h), x, atol=1e-6)
    set_head(colour, [0.0] * 6 + [-0.5])  # saturation clamps to 0: exact grey
    grey = colour(x, h)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    set_head(colour, [math.atanh(0.5), 0, 0, 0, 0, math.atanh(0.5), 1.0])
    p = colour.params(h)
    assert p["gains"][0].tolist() == pytest.approx([math.exp(0.5 * cfg.max_log_gain), 1, 1])
    out = colour(x, h)
    assert torch.allclose(out[:, 0], x[:, 0] * p["gains"][0, 0], atol=1e-6)
    assert torch.allclose(out[:, 2], x[:, 2] + 0.5 * cfg.max_offset, atol=1e-6)


# ------------------------------------------------------------------------------------------------ noise


def raw_for(value: float, lo: float, hi: float) -> float:
    """The raw head output that `_log_range` maps to `value`."""
    frac = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return math.log(frac / (1 - frac))


@pytest.mark.parametrize("grey_angle", [0.0, math.pi / 2])
def test_noise_variance_is_a_x_plus_b(grey_angle):
    cfg = StructuredConfig(**SMALL)
    noise = SensorNoise(cfg.hidden, cfg)
    a, b = 4e-3, 1e-3
    set_head(noise, [raw_for(a, *cfg.shot_range), raw_for(b, *cfg.read_range), grey_angle])
    x = torch.tensor([0.2, 0.7]).view(2, 1, 1, 1).expand(2, 3, 128, 128)
    n = noise_images(torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(0)), 128, 128)
    out = noise(x, torch.zeros(2, cfg.hidden), n) - x  # (2, 3, 128, 128)
    for i, level in enumerate((0.2, 0.7)):
        assert out[i].var().item() == pytest.approx(a * level + b, rel=0.05)
        assert abs(out[i].mean().item()) < 0.05 * math.sqrt(a * level + b)
    corr = torch.corrcoef(out[0].reshape(3, -1))[0, 1].item()
    if grey_angle == 0.0:  # all variance shared: grey noise, the same in every channel
        assert torch.allclose(out[0, 0], out[0, 1]) and noise.params(torch.zeros(1, cfg.hidden))["grey_noise"] == 1
    else:  # independent per channel
        assert abs(corr) < 0.03


def test_noise_images_are_a_function_of_each_z_alone():
    z = noise_from_seeds([3, 4, 5], 16)
    n = noise_images(z, 6, 9)
    assert n.shape == (3, NOISE_CHANNELS, 6, 9)
    assert torch.equal(noise_images(z[1:2], 6, 9)[0], n[1])  # batch position does not matter
    assert not torch.equal(n[0], n[1])


# ------------------------------------------------------------------------------------------------ JPEG


def pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """libjpeg through PIL, 4:2:0, for (B, 3, H, W) in [0, 1] on the 8-bit grid."""
    out = []
    for img in x:
        buf = io.BytesIO()
        a = (img.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=2)
        buf.seek(0)
        out.append(torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def blockiness(x: torch.Tensor) -> float:
    """Mean jump across 8-px block boundaries over the mean jump inside blocks (1: no block structure)."""
    d = (x[..., 1:] - x[..., :-1]).abs().mean((0, 1, 2))  # per column gap
    at_edges = torch.zeros_like(d, dtype=torch.bool)
    at_edges[7::8] = True
    return (d[at_edges].mean() / d[~at_edges].mean()).item()


def test_jpeg_at_quality_100_is_close_to_the_identity():
    x = faces(4, 32)
    out = jpeg(x, torch.full((4,), 100.0), subsample=False)
    assert out.shape == x.shape and psnr(out, x) > 50
    assert quant_tables(torch.tensor([100.0]))[0].max() == 1


def test_jpeg_at_low_quality_is_lossy_blocky_and_matches_libjpeg():
    x = faces(4, 32, seed=1) * 0.8 + torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.2
    x = (x * 255).round() / 255
    low = jpeg(x, torch.full((4,), 10.0))
    assert psnr(low, x) < 30 and blockiness(low) > 1.5 > blockiness(x)
    for q in (10, 50, 90):
        ours, ref = jpeg(x, torch.full((4,), float(q))).clamp(0, 1), pil_jpeg(x, q)
        assert psnr(ours, ref) > psnr(ref, x) + 10  # far closer to libjpeg than libjpeg is to its input


def test_jpeg_any_size_and_gradients_reach_input_and_quality():
    x = faces(2, 40)[..., :37, :21].clone().requires_grad_(True)
    q = torch.tensor([30.0, 70.0], requires_grad=True)
    out = jpeg(x, q)
    assert out.shape == (2, 3, 37, 21)
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0 and (q.grad != 0).all()


# ------------------------------------------------------------------------------------------------ generator


def tiny(seed: int = 0, **kw) -> StructuredGenerator:
    torch.manual_seed(seed)
    return StructuredGenerator(StructuredConfig(**{**SMALL, **kw}))


@pytest.mark.parametrize("size", [(64, 64), (100, 60)])
def test_generator_takes_any_size_and_starts_near_area_downscaling(size):
    net = tiny()
    hr = F.interpolate(faces(3, 64), size=size, mode="bilinear") * 2 - 1
    lr = net(hr, noise_from_seeds([0, 1, 2], 16))
    assert lr.shape == (3, 3, size[0] // 4, size[1] // 4)
    assert lr.min() >= -1 and lr.max() <= 1
    levels = (lr + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the 8-bit grid, as real images
    assert psnr((lr + 1) / 2, (F.avg_pool2d(hr, 4) + 1) / 2) > 30


def test_generator_refuses_a_size_not_divisible_by_the_scale():
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny()(torch.zeros(1, 3, 30, 32), torch.zeros(1, 16))


def test_gradients_reach_every_parameter():
    net = tiny()
    hr, z = faces(4, 32) * 2 - 1, torch.randn(4, 16)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(2):  # the residual's inner layers see a gradient once its zero-initialised output layer moved
        opt.zero_grad()
        net(hr, z).sub(-0.5).square().mean().backward()
        opt.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_seeds_reproduce_samples_byte_identically():
    hr = faces(3, 32) * 2 - 1
    net = tiny()
    with torch.no_grad():
        set_head(net.jpeg, [0.0, 0.0])  # mid quality and stronger noise, so the noise shows in the output
        set_head(net.noise, [1.0, 1.0, 0.5])
        a = net(hr, noise_from_seeds([7, 8, 9], 16))
        b = tiny_with(net)(hr[[2, 0]], noise_from_seeds([9, 7], 16))  # another instance, another batch
        c = net(hr, noise_from_seeds([7, 8, 10], 16))
    assert torch.equal(a[[2, 0]], b)
    assert torch.equal(a[:2], c[:2]) and not torch.equal(a[2], c[2])


def tiny_with(net: StructuredGenerator) -> StructuredGenerator:
    """A fresh instance holding `net`'s weights (as after loading a checkpoint)."""
    other = StructuredGenerator(net.config)
    other.load_state_dict(net.state_dict())
    return other.eval()


def test_a_crop_aligned_to_jpeg_blocks_degrades_as_the_same_part_of_the_whole():
    net = tiny()
    with torch.no_grad():
        net.residual.out.weight.normal_(0, 0.1)  # a non-trivial residual, whose reach the margin must cover
        hr = F.interpolate(faces(1, 64), size=(64, 192), mode="bilinear") * 2 - 1
        z = noise_from_seeds([1], 16)
        noise = noise_images(z, 16, 48)
        whole = net(hr, z, noise)  # (1, 3, 16, 48)
        part = net(hr[..., 64:], z, noise[..., 16:])  # starts at a 16-px LR block boundary
    # the crop's first block row differs (its left edge is reflected); the next block, past the residual's
    # 3-px reach and the chroma upsampling's 1 px, is the same
    assert torch.allclose(part[..., 20:], whole[..., 36:], atol=1e-6)
    assert not torch.allclose(part[..., :4], whole[..., 16:20], atol=1e-3)


def test_the_residual_is_bounded():
    net = tiny(residual_max=0.05)
    hr, z = faces(2, 32) * 2 - 1, noise_from_seeds([0, 1], 16)
    with torch.no_grad():
        net.residual.out.weight.normal_(0, 10.0)  # a residual gone wild
        free = net(hr, z)
        net.residual = None
        chain = net(hr, z)
    diff = (free - chain).abs() / 2  # in [0, 1] units
    assert 0.04 < diff.max() <= 0.05 + 1 / 255


def test_params_are_readable_and_start_near_plain_downscaling():
    net = tiny()
    p = net.params(noise_from_seeds(range(5), 16))
    assert p["kernel"].shape == (5, 13, 13) and torch.allclose(p["kernel"].sum((-2, -1)), torch.ones(5))
    assert p["sigma"].shape == (5, 2, 2) and (p["sigma"] - 0.7).abs().max() < 0.1
    assert (p["quality"] - 95).abs().max() < 2 and (p["saturation"] - 1).abs().max() < 0.05
    assert (p["shot"] < 1e-5).all() and (p["read"] < 1e-5).all()
    assert p["quality"].std() > 0  # z already moves every image a little


def test_config_survives_json_and_refuses_bad_values():
    cfg = StructuredConfig(**SMALL)
    assert StructuredConfig(**json.loads(json.dumps(vars(cfg)))) == cfg  # as a checkpoint header stores it
    assert cfg.lr_size == 16 and cfg.discriminator().in_size == 16
    with pytest.raises(ValueError, match="odd"):
        StructuredConfig(kernel_size=12)
    with pytest.raises(ValueError, match="rounding"):
        StructuredConfig(rounding="floor")


# ------------------------------------------------------------------------------------------------ fit, load


def test_config_round_trips_and_bad_fields_are_refused():
    from degrader.errors import UserError

    cfg = StructuredConfig(hr_size=32, shot_range=(1e-5, 1e-2), rounding="cubic")
    assert StructuredConfig.from_dict(json.loads(json.dumps(vars(cfg))), "f") == cfg
    for bad in ({"kernel_size": 4}, {"residual_width": 2**20}, {"shot_range": [0.1, 0.01]}, {"rounding": "exact"}):
        with pytest.raises(UserError, match="^f: "):
            StructuredConfig.from_dict({**vars(cfg), **bad}, "f")
    with pytest.raises(UserError, match="unknown"):
        StructuredConfig.from_dict({"width": 3}, "f")


def _fit(tiny_folders, out, **kw):
    from degrader.gan import LossConfig
    from degrader.train import FitConfig, fit, plan_fit

    hr, lr = tiny_folders
    loss = LossConfig(d_steps=1, augment="translation,cutout,colour", r1=1.0, ema=0.9, pixel="luma-lowpass")
    kw = {"hr_size": 32, "steps": 3, "batch_size": 2, "workers": 0, "device": "cpu", "val_split": 0.0, **kw}
    return fit(plan_fit(FitConfig(hr=str(hr), lr=str(lr), out=str(out), generator="structured", loss=loss, **kw)))


def test_fit_exports_the_ema_generator_and_seeds_reproduce_through_load(tiny_folders, tmp_path):
    from safetensors.torch import load_file

    from degrader.checkpoint import DEGRADER_FILE, Degrader
    from degrader.run import STATE_FILE

    a = _fit(tiny_folders, tmp_path / "a")
    b = _fit(tiny_folders, tmp_path / "b")
    ckpt_a, ckpt_b = load_file(a.out / DEGRADER_FILE), load_file(b.out / DEGRADER_FILE)
    assert ckpt_a.keys() == ckpt_b.keys() and all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_a)  # seeded
    state = load_file(a.out / STATE_FILE)
    ema = {k.removeprefix("ema_g."): v for k, v in state.items() if k.startswith("ema_g.")}
    raw = {k.removeprefix("net_g."): v for k, v in state.items() if k.startswith("net_g.")}
    exported = {k.removeprefix("net_g."): v for k, v in ckpt_a.items()}
    assert all(torch.equal(exported[k], ema[k]) for k in ema)  # the checkpoint holds the EMA weights ...
    assert any(not torch.equal(exported[k], raw[k]) for k in raw)  # ... which are not the raw ones

    deg = Degrader.load(a.out)
    assert isinstance(deg.net_g, StructuredGenerator) and deg.step == 3
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    one, two = deg.degrade(hr, [7, 8]), Degrader.load(b.out).degrade(hr, [7, 8])
    assert torch.equal(one, two) and torch.equal(one[:1], deg.degrade(hr[:1], [7]))
    assert deg.degrade(torch.rand(1, 3, 48, 80), [1]).shape == (1, 3, 12, 20)  # any size divisible by the scale


def test_presets_pick_their_generator_and_losses(tiny_folders, tmp_path):
    from degrader.presets import PRESETS
    from degrader.train import FitConfig

    hr, lr = tiny_folders
    small = FitConfig(hr=str(hr), lr=str(lr), out=str(tmp_path))
    paper = FitConfig(hr=str(hr), lr=str(lr), out=str(tmp_path), preset="paper")
    assert (small.generator, small.loss) == (PRESETS["small"].generator, PRESETS["small"].loss)
    patch = FitConfig(hr=str(hr), lr=str(lr), out=str(tmp_path), d_patch=1)
    assert small.model().discriminator().patch_blocks == 0 and patch.model().discriminator().patch_blocks == 1
    assert isinstance(small.model(), StructuredConfig)
    assert (paper.generator, paper.loss.beta, paper.loss.d_steps, paper.loss.ema) == ("paper", 0.05, 5, 0.0)
