"""`degrade apply`: whole images of any size, tiled without seams, reproducible from their seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from degrader.apply import degrade_files, degrade_image, margin
from degrader.checkpoint import Degrader
from degrader.errors import UserError
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.structured import StructuredConfig, StructuredGenerator


def structured_degrader(sharpen_max: float = 0.0) -> Degrader:
    """Visible blur, noise and JPEG at quality ~50, and a non-zero residual, so every step can show a seam."""
    torch.manual_seed(0)
    cfg = StructuredConfig(head_init=1.0, quality_init=50.0, noise_init=0.5, sigma_init=1.5, sharpen_max=sharpen_max)
    net = StructuredGenerator(dataclasses.replace(cfg, sharpen_init=1.0) if sharpen_max else cfg)
    torch.nn.init.normal_(net.residual.out.weight, std=0.1)
    return Degrader(net)


@pytest.mark.parametrize("tile,sharpen_max", [(16, 0.0), (32, 0.0), (16, 2.0)])
def test_tiled_output_equals_untiled_output(tile, sharpen_max):
    deg = structured_degrader(sharpen_max)
    hr = torch.rand(3, 4 * 40 + 3, 4 * 37 + 1, generator=torch.Generator().manual_seed(1))  # cropped to 40 x 37
    whole = degrade_image(deg, hr, seed=5, tile=None)
    tiled = degrade_image(deg, hr, seed=5, tile=tile)
    assert whole.shape == (3, 40, 37)
    assert torch.equal(whole, tiled)
    assert not torch.equal(whole, degrade_image(deg, hr, seed=6, tile=tile))  # the seed matters
    # the margin is what makes it exact: without it the tiles' borders differ
    assert margin(deg.config) % 16 == 0 and margin(deg.config) >= 3 + 1 + 2


def test_a_too_small_margin_shows_seams(monkeypatch):
    import degrader.apply as apply

    deg = structured_degrader()
    hr = torch.rand(3, 4 * 32, 4 * 32, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(apply, "margin", lambda config: 0)
    assert not torch.equal(degrade_image(deg, hr, 1, tile=None), degrade_image(deg, hr, 1, tile=16))


def test_files_get_their_own_reproducible_seeds(tmp_path):
    deg = structured_degrader()
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 24)), ("sub/b.jpg", (64, 64))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(src / name)
    written, failed = degrade_files(deg, [src, tmp_path / "missing.png"], tmp_path / "out", seed=3, tile=16)
    assert [p.relative_to(tmp_path / "out").as_posix() for p, _ in written] == ["a.png", "sub/b.png"]
    assert [p.name for p, _ in failed] == ["missing.png"]
    (a, seed_a), (_, seed_b) = written
    assert seed_a != seed_b
    assert Image.open(a).size == (10, 6)
    from degrader.images import load_rgb, to_tensor

    again = degrade_image(deg, to_tensor(load_rgb(src / "a.png")), seed_a, tile=None)
    assert np.array_equal(np.asarray(Image.open(a)), again.mul(255).round().byte().permute(1, 2, 0).numpy())
    with pytest.raises(UserError, match="not empty"):
        degrade_files(deg, [src], tmp_path / "out")


def test_paper_generator_takes_only_its_size_and_tiles_are_checked():
    paper = Degrader(HighToLowGenerator(HighToLowConfig(hr_size=32, width=8, blocks_per_group=1, d_width=8)))
    assert degrade_image(paper, torch.rand(3, 32, 32), 0).shape == (3, 8, 8)
    with pytest.raises(UserError, match="generator structured"):
        degrade_image(paper, torch.rand(3, 64, 48), 0)
    with pytest.raises(UserError, match="multiple of 16"):
        degrade_image(structured_degrader(), torch.rand(3, 64, 64), 0, tile=20)


def test_cli_fit_structured_then_apply(tiny_folders, tmp_path):
    import json

    from click.testing import CliRunner

    from cli.degrade import degrade

    hr, lr = tiny_folders
    run, out = tmp_path / "run", tmp_path / "lr-out"
    common = ["--set=hr_size=32", "--steps", "2", "--batch-size", "2", "--set=workers=0", "--device", "cpu"]
    given = [f"--set=loss.{kv}" for kv in ("beta=0.1", "d_highpass=0.5", "lr_decay=0.25", "exposure=5")]
    result = CliRunner().invoke(
        degrade,
        ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(run), *common, "--set", "val_split=0", *given],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["generator"] == "structured"  # the small preset's, with the option given and the rest its own
    assert (config["loss"]["beta"], config["loss"]["ema"], config["loss"]["d_steps"]) == (0.1, 0.99, 1)
    loss = config["loss"]
    assert (loss["d_highpass"], loss["lr_decay"], loss["exposure"]) == (0.5, 0.25, 5.0)  # not the preset's
    result = CliRunner().invoke(degrade, ["apply", "--degrader", str(run), str(hr), "--out", str(out), "--tile", "16"])
    assert result.exit_code == 0, result.output
    seeds = json.loads((out / "seeds.json").read_text())
    assert len(seeds) == 6 and len(set(seeds.values())) == 6
    assert all(Image.open(out / name).size == (16, 16) for name in seeds)
    bad = CliRunner().invoke(
        degrade, ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "x"), "--set", "loss.augment=rotate"]
    )
    assert bad.exit_code != 0 and "augmentation" in bad.output and "Traceback" not in bad.output
