"""degrader.texture: the texture-only distances, and the real LR's texture as a training target."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from degrader.config_io import _check
from degrader.gan import LossConfig, generator_loss
from degrader.images import prepare, to_tensor
from degrader.nets import Discriminator, DiscriminatorConfig
from degrader.texture import measure_texture, texture, texture_loss, texture_swd, texture_two_sample_test


def smooth(n: int, seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic", align_corners=False)
    return x.clamp(0.05, 0.95)


def noisy(x: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_texture_ignores_tone_and_colour_but_not_detail():
    x = noisy(smooth(8, 0), 0.05, 1)
    assert torch.allclose(texture(x + 0.1), texture(x), atol=1e-6)  # a brightness shift is no texture
    assert texture(x).shape == (8, 1, 16, 16)
    assert texture(smooth(8, 0)).abs().mean() < 0.5 * texture(x).abs().mean()


def test_texture_swd_sees_noise_not_tone():
    real = noisy(smooth(200, 0), 0.04, 1)
    same = noisy(smooth(200, 2), 0.04, 3)
    clean = smooth(200, 4)
    assert texture_swd(same, real) < 0.5 * texture_swd(clean, real)
    # each set normalised by its own statistics: a tone change of the fake set leaves the distance
    toned = (0.8 * same + 0.1).clamp(0, 1)
    assert texture_swd(toned, real) == pytest.approx(texture_swd(same, real), rel=0.05)


def test_texture_two_sample_test_tells_noise_apart_and_is_seeded():
    real = noisy(smooth(200, 0), 0.08, 1)
    clean = smooth(200, 4)
    result = texture_two_sample_test(clean, real, seed=0)
    assert set(result) == {"tex_c2st", "tex_c2st_low", "tex_c2st_high", "tex_c2st_n"}
    assert result["tex_c2st"] > 0.8
    assert texture_two_sample_test(clean, real, seed=0) == result


def test_texture_loss_is_small_on_real_images_and_pulls_the_noise_towards_the_real_level():
    real = noisy(smooth(400, 0), 0.05, 1)
    target = measure_texture(real)
    assert len(target) == 3 and all(len(q) == 32 for q in target)
    assert measure_texture(real) == target  # deterministic
    clean = smooth(16, 7)
    assert texture_loss(noisy(smooth(16, 5), 0.05, 6), target) < 0.3 * texture_loss(clean, target)
    std = torch.tensor(0.005, requires_grad=True)  # a degrader's noise level, far below the real set's
    opt = torch.optim.Adam([std], lr=3e-3)
    unit = torch.randn(clean.shape, generator=torch.Generator().manual_seed(8))
    for _ in range(60):
        opt.zero_grad()
        texture_loss(clean + std * unit, target).backward()
        opt.step()
    assert 0.03 < std.item() < 0.08


def test_generator_loss_adds_the_texture_term_only_when_asked():
    net_d = Discriminator(DiscriminatorConfig(in_size=16, width=8))
    fake = smooth(4, 0) * 2 - 1
    target = measure_texture(noisy(smooth(64, 1), 0.05, 2))
    base, logs = generator_loss(fake, fake, net_d, LossConfig(beta=0.0))
    with_tex, logs_tex = generator_loss(fake, fake, net_d, LossConfig(beta=0.0, texture=2.0, texture_target=target))
    assert "g_texture" not in logs and logs_tex["g_texture"] > 0
    assert float(with_tex - base) == pytest.approx(2.0 * logs_tex["g_texture"], rel=1e-5)
    with pytest.raises(ValueError, match="texture_target"):
        generator_loss(fake, fake, net_d, LossConfig(beta=0.0, texture=1.0))
    with pytest.raises(ValueError, match="texture"):
        LossConfig(texture=-1.0)


def test_the_target_survives_a_json_round_trip_through_the_settings_check():
    target = ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0))
    checked = _check("loss.texture_target", [list(q) for q in target], tuple[tuple[float, ...], ...], "x")
    assert checked == target and LossConfig(texture_target=[list(q) for q in target]).texture_target == target


def test_prepare_frame_keeps_the_centre_fraction():
    img = Image.new("RGB", (40, 40), (0, 0, 0))
    img.paste((255, 255, 255), (10, 10, 30, 30))  # a white centre square, half the side
    full = to_tensor(prepare(img, 16, "resize", random.Random(0)))
    zoomed = to_tensor(prepare(img, 16, "resize", random.Random(0), frame=0.5))
    assert full.mean() == pytest.approx(0.25, abs=0.02)
    assert zoomed.mean() > 0.95 and zoomed.min() > 0.9  # the centre half is all white (black only at the filter edge)


def test_fit_measures_the_texture_target_records_it_and_resumes_with_it(tmp_path):
    import json

    from click.testing import CliRunner

    from cli.degrade import degrade
    from tests.conftest import write_images

    hr, lr, run = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_images(hr, 12, 64, seed=0)
    write_images(lr, 12, 16, seed=1)
    tiny = ["--set=hr_size=32", "--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0"]
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny, "--set", "loss.texture=1"]
    result = CliRunner().invoke(degrade, [*args, "--steps", "1"])
    assert result.exit_code == 0, result.output
    loss = json.loads((run / "config.json").read_text())["loss"]
    assert loss["texture"] == 1.0 and [len(q) for q in loss["texture_target"]] == [32, 32, 32]
    assert '"g_texture"' in (run / "log.jsonl").read_text()
    resumed = CliRunner().invoke(degrade, ["fit", "--out", str(run), "--resume", "--steps", "2", "--set", "workers=0"])
    assert resumed.exit_code == 0, resumed.output  # measured again, to the same quantiles
    assert json.loads((run / "config.json").read_text())["loss"]["texture_target"] == loss["texture_target"]


def test_fit_takes_the_lr_frame_into_training_validation_and_its_measurements(tmp_path):
    import json

    from click.testing import CliRunner

    from cli.degrade import degrade
    from degrader.run import unpaired_batches
    from degrader.scan import scan_images
    from degrader.train import FitConfig, plan_fit
    from tests.conftest import write_images

    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 12, 64, seed=0)
    lr.mkdir()
    for i in range(12):  # wide framing: a white face in the centre half, black around it
        img = Image.new("RGB", (40, 40), (0, 0, 0))
        img.paste((235 + i,) * 3, (10, 10, 30, 30))  # distinct images, so that the tone is measured
        img.save(lr / f"{i:03d}.png")
    config = FitConfig(hr=str(hr), lr=str(lr), out=str(tmp_path / "unused"), lr_frame=0.5, batch_size=4)
    _, lr_batches = unpaired_batches(config, scan_images(hr), scan_images(lr), 64, 16, 0)
    assert next(lr_batches).mean() > 0.9  # zoomed to the white centre
    config.lr_frame = 1.0
    _, lr_batches = unpaired_batches(config, scan_images(hr), scan_images(lr), 64, 16, 0)
    assert next(lr_batches).mean() < 0.35
    with pytest.raises(Exception, match="lr_frame"):
        plan_fit(FitConfig(hr=str(hr), lr=str(lr), out=str(tmp_path / "bad"), lr_frame=0.1))
    run = tmp_path / "run"
    tiny = ["--set=hr_size=32", "--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0"]
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny, "--set", "lr_frame=0.5", "--steps", "1"]
    result = CliRunner().invoke(degrade, args)
    assert result.exit_code == 0, result.output
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["lr_frame"] == 0.5 and config_json["loss"]["tone_map"][1] > 0.3  # LR measured all white
