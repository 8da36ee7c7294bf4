"""The LR set's tone map (`degrader.tone`) and what the losses and `degrade fit` do with it."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from degrader.gan import LossConfig, generator_loss
from degrader.nets import Discriminator, DiscriminatorConfig
from degrader.tone import measure_tone


def faces(n: int, seed: int) -> torch.Tensor:
    """Smooth random 64x64 images in [0.25, 0.75]: room to brighten or add contrast without clipping."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=gen)
    return 0.25 + 0.5 * F.interpolate(small, size=64, mode="bilinear", align_corners=False)


def test_two_samples_of_one_distribution_get_exactly_the_identity():
    hr, other = faces(300, 0), faces(300, 1)
    tone = measure_tone(hr, F.avg_pool2d(other, 4), 4)
    assert (tone.gain, tone.offset) == (1.0, 0.0)
    assert abs(tone.shift_z) < 3 and abs(tone.gain_z) < 3
    assert "HR's own" in tone.describe()


def test_a_brighter_more_contrasted_set_is_measured_as_such():
    hr, other = faces(300, 0), faces(300, 1)
    lr = 1.2 * F.avg_pool2d(other, 4) - 0.05  # (N, 3, 16, 16), still inside [0, 1]
    tone = measure_tone(hr, lr, 4)
    assert tone.gain == pytest.approx(1.2, abs=0.05)
    assert tone.offset == pytest.approx(-0.05, abs=0.03)
    assert tone.shift_z > 3 and tone.gain_z > 3
    assert "1.2" in tone.describe()


def test_only_the_part_the_data_shows_is_kept():
    hr, other = faces(300, 0), faces(300, 1)
    tone = measure_tone(hr, F.avg_pool2d(other, 4) + 0.1, 4)  # brighter, same contrast
    assert tone.gain == 1.0 and tone.offset == pytest.approx(0.1, abs=0.02)
    seeded = [measure_tone(hr, F.avg_pool2d(other, 4) + 0.1, 4, seed=s) for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] != seeded[2]  # the bootstrap is seeded; the map itself barely moves
    assert seeded[2].offset == pytest.approx(seeded[0].offset, abs=1e-9)


def test_the_losses_hold_each_image_to_the_mapped_target():
    net_d = Discriminator(DiscriminatorConfig(in_size=8, width=8)).eval()  # eval: no power iteration per call
    target = faces(2, 3)[:, :, :8, :8] * 2 - 1  # [-1, 1], as the networks see it
    mapped = 2 * (1.2 * (target + 1) / 2 - 0.05) - 1
    loss = LossConfig(pixel="rgb", exposure=10.0, tone="auto", tone_map=(1.2, -0.05))
    _, logs = generator_loss(mapped, target, net_d, loss)
    assert logs["g_pixel"] < 1e-12 and logs["g_exposure"] < 1e-12
    _, unmapped = generator_loss(mapped, target, net_d, LossConfig(pixel="rgb", exposure=10.0))
    assert unmapped["g_pixel"] > 1e-4 and unmapped["g_exposure"] > 1e-4
    # the identity map is no map: the same loss, bit for bit
    plain, _ = generator_loss(mapped, target, net_d, LossConfig(exposure=10.0))
    same, _ = generator_loss(mapped, target, net_d, LossConfig(exposure=10.0, tone="auto", tone_map=(1.0, 0.0)))
    assert torch.equal(plain, same)
    # a target the map takes past white is white: no output can be brighter
    white = torch.ones_like(target)
    _, clipped = generator_loss(white, 0.9 * white, net_d, LossConfig(pixel="rgb", tone="auto", tone_map=(1.2, 0.0)))
    assert clipped["g_pixel"] == 0
    with pytest.raises(ValueError, match="tone"):
        LossConfig(tone="on")


def write_set(folder, n, size, seed, tone=lambda x: x):
    folder.mkdir()
    for i, image in enumerate(faces(n, seed)):
        image = F.interpolate(image[None], size=size, mode="area")[0] if size != 64 else image
        pixels = (tone(image).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def test_fit_measures_the_tone_records_it_and_resumes_with_it(tmp_path):
    from cli.degrade import degrade

    hr, lr, run = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_set(hr, 40, 64, seed=0)
    write_set(lr, 40, 16, seed=1, tone=lambda x: 0.5 * x + 0.4)  # brighter, less contrast
    tiny = ["--set=hr_size=32", "--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0"]
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny]
    dry = CliRunner().invoke(degrade, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "LR luma = 0.5" in dry.output
    result = CliRunner().invoke(degrade, [*args, "--steps", "1"])
    assert result.exit_code == 0, result.output
    loss = json.loads((run / "config.json").read_text())["loss"]
    assert loss["tone"] == "auto" and loss["tone_map"][0] == pytest.approx(0.5, abs=0.05)
    assert f"LR luma = {loss['tone_map'][0]:.3f} x HR luma" in (run / "report.html").read_text()
    resumed = CliRunner().invoke(degrade, ["fit", "--out", str(run), "--resume", "--steps", "2", "--set", "workers=0"])
    assert resumed.exit_code == 0, resumed.output  # measured again, to the same map
    assert json.loads((run / "config.json").read_text())["loss"]["tone_map"] == loss["tone_map"]
    off = CliRunner().invoke(degrade, [*args, "--steps", "1", "--set", "loss.tone=off", "--out", str(tmp_path / "off")])
    assert off.exit_code == 0, off.output
    assert json.loads((tmp_path / "off" / "config.json").read_text())["loss"]["tone_map"] == [1.0, 0.0]


def test_validation_fidelity_is_to_the_content_in_the_trained_tone():
    from degrader.realism import RealismProbe

    hr, real = faces(8, 0), F.avg_pool2d(faces(16, 1), 4)
    mapped = lambda x, _: 1.2 * F.interpolate(x, size=16, mode="bicubic", antialias=True).clamp(0, 1) - 0.05  # noqa: E731
    plain = RealismProbe(hr, real, 4).score(mapped)["val_fidelity"]
    toned = RealismProbe(hr, real, 4, tone=(1.2, -0.05)).score(mapped)["val_fidelity"]
    assert plain < 30 < 60 < toned  # the map alone costs fidelity only against the untoned reference
