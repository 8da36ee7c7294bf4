import pytest
import torch

from degrader.checkpoint import DEGRADER_FILE, DEGRADER_KIND, save_checkpoint
from degrader.errors import UserError
from degrader.nets import Discriminator
from sr.model import (
    PRESETS,
    SR_FILE,
    LowToHighConfig,
    LowToHighGenerator,
    SkipGroup,
    group_levels,
    load_sr_generator,
    save_sr_generator,
)

TINY = dict(width=8, blocks=(1, 1, 1), d_width=8)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("residual", [False, True])
def test_shapes_gradients_and_no_nan(scale, residual):
    torch.manual_seed(0)
    config = LowToHighConfig(scale=scale, residual=residual, **TINY)
    net = LowToHighGenerator(config)
    if residual:  # the zero-initialised last conv would block every gradient below it at step one
        torch.nn.init.normal_(net.tail.conv.weight, std=0.01)
    lr = torch.rand(2, 3, 16, 16) * 2 - 1
    sr = net(lr)
    assert sr.shape == (2, 3, 16 * scale, 16 * scale)
    assert torch.isfinite(sr).all()
    if not residual:
        assert sr.abs().max() <= 1
    sr.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_paper_layout_is_17_blocks_with_the_big_group_at_lr():
    net = LowToHighGenerator(LowToHighConfig(**PRESETS["paper"]))
    groups = [m for m in net.body if isinstance(m, SkipGroup)]
    assert [len(g.body) for g in groups] == [12, 3, 2]
    sizes = []
    x = net.head(torch.zeros(1, 3, 16, 16))
    for m in net.body:
        x = m(x)
        if isinstance(m, SkipGroup):
            sizes.append(x.shape[-1])
    assert sizes == [16, 32, 64]


def test_group_levels_keep_the_last_group_at_hr():
    assert group_levels(3, 1) == [0, 0, 1]
    assert group_levels(3, 2) == [0, 1, 2]
    assert group_levels(3, 3) == [0, 1, 3]


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="scale must be a power of two, got 3"):
        LowToHighGenerator(LowToHighConfig(scale=3, **TINY))
    with pytest.raises(ValueError, match="scale must be 2 or more, got 1"):
        LowToHighGenerator(LowToHighConfig(scale=1, **TINY))


def test_residual_starts_as_bilinear_upscaling():
    net = LowToHighGenerator(LowToHighConfig(residual=True, **TINY))
    lr = torch.rand(1, 3, 16, 16) * 2 - 1
    up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.equal(net(lr), up)


def test_discriminator_takes_hr_images():
    config = LowToHighConfig(**TINY)
    assert config.hr_size == 64
    net_d = Discriminator(config.discriminator())
    assert net_d(torch.zeros(3, 3, 64, 64)).shape == (3,)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    config = LowToHighConfig(scale=2, **TINY)
    net = LowToHighGenerator(config)
    net(torch.rand(4, 3, 16, 16))  # move the BN running stats off their defaults
    save_sr_generator(tmp_path / SR_FILE, net, step=7)
    loaded, meta = load_sr_generator(tmp_path)  # a run directory
    assert meta["step"] == 7 and loaded.config == config and not loaded.training
    lr = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(lr), net.eval()(lr))


def test_wrong_kind_and_missing_file_are_user_errors(tmp_path):
    save_checkpoint(tmp_path / DEGRADER_FILE, {"x": torch.zeros(1)}, {"kind": DEGRADER_KIND, "config": {}})
    with pytest.raises(UserError, match="high-to-low"):
        load_sr_generator(tmp_path / DEGRADER_FILE)
    with pytest.raises(UserError, match="no such checkpoint"):
        load_sr_generator(tmp_path / "nothing")
