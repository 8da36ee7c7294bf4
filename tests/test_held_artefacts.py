"""The noise and the JPEG block grid the real LR shows, measured before training, and the losses that hold the
chain's noise and JPEG to them."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from degrader.color import LUMA
from degrader.gan import LossConfig, chain_loss, jpeg_loss, noise_loss
from degrader.structured import StructuredConfig, StructuredGenerator
from degrader.tone import measure_blocks, measure_noise
from tests.test_tone import faces, write_set


def noisy(lr: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    return lr + sigma / 255 * torch.randn(lr.shape, generator=torch.Generator().manual_seed(seed))


def test_clean_downscaling_of_other_images_shows_no_noise():
    floor = measure_noise(faces(300, 0), F.avg_pool2d(faces(300, 1), 4), 4)
    assert floor.excess == 0.0 and abs(floor.z) < 3
    assert "at most 0.00/255" in floor.describe()


@pytest.mark.parametrize("sigma", [2.0, 6.0])
def test_added_noise_is_measured_at_its_level(sigma):
    floor = measure_noise(faces(300, 0), noisy(F.avg_pool2d(faces(300, 1), 4), sigma, seed=3), 4)
    assert floor.z > 3
    in_luma = sigma * sum(c * c for c in LUMA) ** 0.5  # independent per channel: luma's std is 0.67 sigma
    assert floor.excess == pytest.approx(in_luma, rel=0.2)  # the flattest tenth: a little under


def test_the_loss_is_zero_up_to_the_allowed_level_and_pulls_the_noise_down_above_it():
    std = torch.tensor([1.0, 3.0]) / 255
    assert noise_loss(std, 3.0).item() == 0.0
    assert noise_loss(std, 0.0).item() == pytest.approx((1 + 9) / 2, rel=1e-5)
    torch.manual_seed(0)
    net = StructuredGenerator(StructuredConfig(z_dim=16, hidden=16, residual_width=0, noise_init=0.6))
    z = torch.randn(32, 16)
    before = net.noise_std(z).detach() * 255
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        noise_loss(net.noise_std(z), 1.0).backward()
        opt.step()
    after = net.noise_std(z).detach() * 255
    assert before.median() > 3 and after.max() < 1.1  # held at or under the allowed 1/255
    p = net.params(z)  # the fingerprint's per-channel std at mid-grey is at least the luma's
    assert (after / 255 <= (p["shot"] * 0.5 + p["read"]).sqrt() + 1e-7).all()


def test_fit_measures_the_noise_and_records_it(tmp_path):
    from cli.degrade import degrade

    hr, lr, run = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_set(hr, 40, 64, seed=0)
    write_set(lr, 40, 16, seed=1, tone=lambda x: noisy(x, 8.0, seed=int(x.sum() * 1e4)))
    tiny = ["--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0"]  # LR at its 16 px
    args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny, "--set", "loss.noise=1"]
    result = CliRunner().invoke(degrade, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "sensor noise the losses allow: at most" in " ".join(result.output.split())
    loss = json.loads((run / "config.json").read_text())["loss"]
    assert loss["noise"] == 1.0 and 3 < loss["noise_allowed"] < 6  # 8/255 per channel: 5.3/255 in luma
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("g_noise" in row for row in log)


def jpeg_compressed(lr: torch.Tensor, quality: int) -> torch.Tensor:
    """Each (3, 16, 16) image through Pillow's JPEG at `quality`: the 8-px block grid aligned with the image."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in lr:
        buf = io.BytesIO()
        Image.fromarray((img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(
            buf, "JPEG", quality=quality
        )
        out.append(torch.from_numpy(np.asarray(Image.open(buf))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def test_a_block_grid_is_seen_only_where_the_lr_was_compressed_at_its_size():
    hr, lr = faces(300, 0), noisy(F.avg_pool2d(faces(300, 1), 4), 3.0, seed=4)  # texture for the blocks to cut
    assert not measure_blocks(hr, lr, 4).shown
    grid = measure_blocks(hr, jpeg_compressed(lr, 30), 4)
    assert grid.shown and grid.real > grid.clean
    assert "any" in grid.describe() and "high only" in measure_blocks(hr, lr, 4).describe()


def test_the_jpeg_loss_holds_the_quality_up_to_its_floor():
    q = torch.tensor([50.0, 95.0, 99.0])
    assert jpeg_loss(q, 0.0).item() == 0.0 and jpeg_loss(q[1:], 95.0).item() == 0.0
    assert jpeg_loss(q, 95.0).item() == pytest.approx(4.5**2 / 3)
    torch.manual_seed(0)
    net = StructuredGenerator(StructuredConfig(z_dim=16, hidden=16, residual_width=0, quality_init=40.0))
    z = torch.randn(32, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        total, logs = chain_loss(net, z, LossConfig(jpeg=1.0, jpeg_floor=95.0))
        total.backward()
        opt.step()
    assert set(logs) == {"g_jpeg"} and net.jpeg_quality(z).min() > 94
    assert chain_loss(net, z, LossConfig(jpeg=1.0, jpeg_floor=0.0))[1] == {}  # a grid seen: no constraint


def test_fit_holds_jpeg_high_for_an_lr_set_without_blocks(tmp_path):
    from cli.degrade import degrade

    hr, lr, run = tmp_path / "hr", tmp_path / "lr", tmp_path / "run"
    write_set(hr, 40, 64, seed=0)
    write_set(lr, 40, 16, seed=1)
    tiny = ["--batch-size", "2", "--set=workers=0", "--device", "cpu", "--set=val_split=0", "--steps", "2"]
    result = CliRunner().invoke(
        degrade, ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *tiny, "--set=loss.jpeg=1"]
    )
    assert result.exit_code == 0, result.output
    assert "JPEG quality the losses allow: high only" in " ".join(result.output.split())
    assert json.loads((run / "config.json").read_text())["loss"]["jpeg_floor"] == 95.0
