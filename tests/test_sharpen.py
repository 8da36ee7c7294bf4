"""The structured generator's sharpening step: an unsharp mask a camera's pipeline applies at the output size."""

from __future__ import annotations

import math

import pytest
import torch

from degrader.structured import Sharpen, StructuredConfig, StructuredGenerator, blur, gaussian_kernels
from tests.test_structured import SMALL, faces, set_head


def raw(value: float, lo: float, hi: float) -> float:
    frac = (value - lo) / (hi - lo)
    return math.log(frac / (1 - frac))


def test_unsharp_mask_overshoots_an_edge_and_keeps_the_mean():
    cfg = StructuredConfig(**SMALL, sharpen_max=2.0)
    step = Sharpen(cfg.hidden, cfg)
    set_head(step, [raw(1.0, 0, 2.0), raw(1.0, 0.5, 1.5)])  # amount 1, width 1 LR px
    x = torch.full((1, 3, 16, 16), 0.25)
    x[..., 8:] = 0.75  # a vertical edge
    h = torch.randn(1, cfg.hidden)
    out = step(x, h)
    low = blur(x, gaussian_kernels(torch.ones(1, 2), torch.zeros(1), 7))
    assert torch.allclose(out, 2 * x - low, atol=1e-6)  # x + 1 * (x - Gaussian(x))
    assert out.max() > 0.8 and out.min() < 0.2  # halos on both sides: what no blur can make
    assert out.mean().item() == pytest.approx(0.5, abs=1e-6)
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert torch.allclose(step(flat, h), flat, atol=1e-6)  # a flat image is left alone


def test_the_step_is_absent_unless_asked_for_so_older_degraders_load():
    torch.manual_seed(0)
    old = StructuredGenerator(StructuredConfig(**SMALL))
    torch.manual_seed(0)
    new = StructuredGenerator(StructuredConfig(**SMALL, sharpen_max=2.0))
    assert old.sharpen is None and "sharpen" not in old.params(torch.randn(2, 16))
    assert set(old.state_dict()) < set(new.state_dict())
    assert {k for k in new.state_dict() if k not in old.state_dict()} == {"sharpen.head.weight", "sharpen.head.bias"}
    p = new.params(torch.randn(64, 16))
    assert ((p["sharpen"] >= 0) & (p["sharpen"] <= 2.0)).all() and p["sharpen"].median() < 0.2  # starts near none
    assert ((p["sharpen_sigma"] >= 0.5) & (p["sharpen_sigma"] <= 1.5)).all()


@pytest.mark.parametrize("bad", [dict(sharpen_max=-1.0), dict(sharpen_max=1.0, sharpen_init=1.5)])
def test_bad_sharpening_settings_are_refused(bad):
    with pytest.raises(ValueError, match="sharpen"):
        StructuredConfig(**bad)


def test_gradient_descent_recovers_a_cameras_sharpening():
    """Only the sharpening head learns, from LR made by a known mask: it finds the amount and the width."""
    cfg = StructuredConfig(**SMALL, sharpen_max=2.0)
    torch.manual_seed(0)
    step = Sharpen(cfg.hidden, cfg)
    x = faces(8, 16)
    h = torch.zeros(8, cfg.hidden)  # the same parameters for every image: only the biases matter
    low = blur(x, gaussian_kernels(torch.full((8, 2), 0.8), torch.zeros(8), 7))
    target = x + 0.7 * (x - low)
    opt = torch.optim.Adam(step.parameters(), lr=1e-3)
    for _ in range(900):
        opt.zero_grad()
        loss = (step(x, h) - target).pow(2).mean()
        loss.backward()
        opt.step()
    p = step.params(h)
    assert p["sharpen"][0].item() == pytest.approx(0.7, rel=0.05)
    assert p["sharpen_sigma"][0].item() == pytest.approx(0.8, rel=0.05)


def test_fit_learns_the_step_when_asked_and_reports_it(tiny_folders, tmp_path):
    from click.testing import CliRunner

    from cli.degrade import degrade
    from degrader.checkpoint import Degrader
    from degrader.run_report import fingerprint

    hr, lr = tiny_folders
    common = ["--hr", str(hr), "--lr", str(lr), "--steps", "2", "--set=hr_size=32", "--set=workers=0"]
    common += ["--device", "cpu"]
    result = CliRunner().invoke(degrade, ["fit", *common, "--out", str(tmp_path / "run"), "--set", "sharpen=1.5"])
    assert result.exit_code == 0, result.output
    net = Degrader.load(tmp_path / "run").net_g
    assert net.config.sharpen_max == 1.5 and net.sharpen is not None
    assert fingerprint(net, n=16)["sharpening amount"].max() <= 1.5
    bad = CliRunner().invoke(degrade, ["fit", *common, "--out", str(tmp_path / "bad"), "--set", "sharpen=-1"])
    assert bad.exit_code != 0 and "sharpen is -1.0" in bad.output and "Traceback" not in bad.output


def test_a_run_from_before_the_step_resumes_without_it(tiny_folders, tmp_path):
    import json

    from click.testing import CliRunner

    from cli.degrade import degrade

    hr, lr = tiny_folders
    run = tmp_path / "run"
    common = ["--hr", str(hr), "--lr", str(lr), "--out", str(run), "--set=hr_size=32", "--set=workers=0"]
    result = CliRunner().invoke(degrade, ["fit", *common, "--steps", "2", "--set", "sharpen=0", "--set=val_split=0"])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    del config["sharpen"]  # as config.json was written before the setting existed
    (run / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(degrade, ["fit", "--out", str(run), "--resume", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["sharpen"] == 0.0
