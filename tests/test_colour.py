"""The LR set's colour map (`degrader.tone.measure_colour`) and the colour loss that holds each image to it."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from degrader.color import luma
from degrader.gan import LossConfig, colour_loss, generator_loss, mapped_target, saturation_range
from degrader.nets import Discriminator, DiscriminatorConfig
from degrader.tone import measure_colour
from tests.test_tone import faces, write_set


def test_two_samples_of_one_distribution_get_exactly_the_identity():
    colour = measure_colour(faces(300, 0), F.avg_pool2d(faces(300, 1), 4), 4)
    assert colour.parts == (1.0, 0.0, 0.0, 0.0)
    assert abs(colour.saturation_z) < 3 and max(map(abs, colour.cast_z)) < 3
    assert "HR's own" in colour.describe()


def test_a_greyscale_set_is_saturation_zero_and_a_cast_is_measured():
    hr, lr = faces(300, 0), F.avg_pool2d(faces(300, 1), 4)  # (N, 3, 16, 16)
    grey = measure_colour(hr, luma(lr).expand(-1, 3, -1, -1), 4)
    assert grey.saturation == 0.0 and grey.cast == (0.0, 0.0, 0.0) and grey.saturation_z < -3
    warm = lr + torch.tensor([0.06, 0.0, -0.06]).view(1, 3, 1, 1)  # redder, less blue: a warm white balance
    cast = measure_colour(hr, warm, 4)
    assert cast.saturation == 1.0  # the spread of the colours is unchanged: only the part the data shows is kept
    shift = warm - luma(warm) - (lr - luma(lr))  # the cast in chroma terms (the luma weights move it a little)
    assert cast.cast == pytest.approx(shift.mean((0, 2, 3)).tolist(), abs=0.01)
    assert cast.cast[0] > 0.04 and cast.cast[2] < -0.04 and "cast R G B +" in cast.describe()


def test_the_colour_loss_sees_a_cast_and_not_a_change_of_luma():
    target = faces(4, 3)[:, :, :16, :16] * 2 - 1
    assert colour_loss(target, target) == 0
    assert colour_loss(target + 0.05, target) < 1e-10  # brighter by the same amount in R, G and B: no colour change
    assert colour_loss(target + torch.tensor([0.1, 0.0, 0.0]).view(1, 3, 1, 1), target) > 1e-3


def test_a_set_that_loses_colour_lets_each_image_lose_any_amount_and_gain_none():
    target = faces(4, 3)[:, :, :16, :16] * 2 - 1
    grey = luma(target)
    scaled = lambda t: grey + t * (target - grey)  # noqa: E731  the image at saturation t
    assert saturation_range(0.4) == (0.0, 1.0) and saturation_range(1.0) == (1.0, 1.0)
    mixed = (0.4, 0.0, 0.0, 0.0)  # measured on a set of grey and colour images
    assert colour_loss(scaled(0.0), target, mixed) < 1e-12 and colour_loss(scaled(0.7), target, mixed) < 1e-12
    assert colour_loss(scaled(1.5), target, mixed) > 1e-4  # more colourful than its HR: a colour it never had
    cast = torch.tensor([0.0, 0.1, -0.1]).view(1, 3, 1, 1)
    assert colour_loss(scaled(0.7) + cast, target, mixed) > 1e-3
    assert colour_loss(scaled(0.7), target) > 1e-4  # a set of unchanged colour: each image keeps its own
    vivid = (1.3, 0.0, 0.0, 0.0)
    assert colour_loss(scaled(1.2), target, vivid) < 1e-12 and colour_loss(scaled(0.8), target, vivid) > 1e-4
    v = torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)
    shift = v - luma(v)  # a chroma shift: no change of luma
    shifted = (1.0, *(shift.flatten() / 2).tolist())  # the measured cast is allowed, in [0, 1] units
    assert colour_loss(target + shift, target, shifted) < 1e-12 < 1e-4 < colour_loss(target + shift, target)


def test_the_mapped_target_takes_the_colour_and_keeps_the_tone():
    target = faces(4, 3)[:, :, :16, :16] * 2 - 1
    plain = LossConfig(pixel="rgb", tone="auto", tone_map=(1.2, -0.05))
    grey = LossConfig(pixel="rgb", tone="auto", tone_map=(1.2, -0.05), colour=1.0, colour_map=(0.0, 0.0, 0.0, 0.0))
    toned, greyed = mapped_target(target, plain), mapped_target(target, grey)
    assert torch.allclose(luma(greyed), luma(toned), atol=1e-6)  # the same tone
    assert (greyed - luma(greyed)).abs().max() < 1e-6  # and no colour
    cast = mapped_target(target, LossConfig(colour=1.0, colour_map=(1.0, 0.05, 0.0, -0.05)))
    assert torch.allclose(cast - target, torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1).expand_as(target), atol=1e-6)
    net_d = Discriminator(DiscriminatorConfig(in_size=16, width=8)).eval()
    _, logs = generator_loss(greyed, target, net_d, LossConfig(colour=10.0, colour_map=(0.0, 0.0, 0.0, 0.0)))
    assert logs["g_colour"] < 1e-12
    _, logs = generator_loss(target, target, net_d, LossConfig(colour=10.0, colour_map=(0.0, 0.0, 0.0, 0.0)))
    assert logs["g_colour"] > 1e-3  # the HR's colours held against a grey map
    with pytest.raises(ValueError, match="colour_map"):
        LossConfig(colour_map=(1.0, 0.0))


def test_fit_measures_the_colour_of_a_grey_set_and_records_it(tmp_path):
    from cli.degrade import degrade

    hr, lr, run = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_set(hr, 40, 64, seed=0)
    write_set(lr, 40, 16, seed=1, tone=lambda x: luma(x[None])[0].expand(3, -1, -1))  # greyscale LR
    tiny = ["--set=hr_size=32", "--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0"]
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny]
    result = CliRunner().invoke(degrade, [*args, "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert "colour the losses hold each LR image to: LR chroma = 0.000 x HR chroma" in " ".join(result.output.split())
    loss = json.loads((run / "config.json").read_text())["loss"]
    assert loss["colour"] == 100.0 and loss["colour_map"] == [0.0, 0.0, 0.0, 0.0]
    assert "LR chroma = 0.000 x HR chroma" in (run / "report.html").read_text()
    off = CliRunner().invoke(degrade, [*args, "--steps", "1", "--set", "loss.colour=0", "--out", str(tmp_path / "off")])
    assert off.exit_code == 0, off.output
    assert "colour the losses" not in off.output
    assert json.loads((tmp_path / "off" / "config.json").read_text())["loss"]["colour_map"] == [1.0, 0.0, 0.0, 0.0]
