"""High-to-Low networks, the inference `Degrader` and its checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from degrader.checkpoint import (
    DEGRADER_FILE,
    DEGRADER_KIND,
    Degrader,
    load_checkpoint,
    module_tensors,
    save_checkpoint,
)
from degrader.errors import UserError
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.nets import Discriminator, DiscriminatorConfig

TINY = dict(width=8, blocks_per_group=1, d_width=8, z_dim=16)


def tiny_generator(hr_size: int = 32, scale: int = 4, residual: bool = False, seed: int = 0) -> HighToLowGenerator:
    torch.manual_seed(seed)
    return HighToLowGenerator(HighToLowConfig(hr_size=hr_size, scale=scale, residual=residual, **TINY))


def hr_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1], as the networks take it."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def z_batch(n: int, z_dim: int = TINY["z_dim"], seed: int = 0) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def with_running_stats(net: HighToLowGenerator) -> HighToLowGenerator:
    """Give the batch norms non-trivial running statistics, so a checkpoint that dropped them would show."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return net


# ------------------------------------------------------------------------------------------------ networks


@pytest.mark.parametrize("hr_size", [32, 64])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_output_shape_and_range(hr_size, scale):
    net = tiny_generator(hr_size, scale)
    lr = net(hr_batch(2, hr_size), z_batch(2))
    assert lr.shape == (2, 3, hr_size // scale, hr_size // scale)
    assert net.config.lr_size == hr_size // scale
    assert torch.isfinite(lr).all() and lr.abs().max() <= 1  # tanh output


@pytest.mark.parametrize("in_size", [4, 16, 64])
def test_discriminator_gives_one_score_per_image(in_size):
    net_d = Discriminator(DiscriminatorConfig(in_size=in_size, width=8))
    score = net_d(hr_batch(3, in_size))
    assert score.shape == (3,) and torch.isfinite(score).all()
    pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in net_d.modules())
    assert pools == {4: 0, 16: 2, 64: 4}[in_size]  # only the last blocks pool; 64 px adds two poolings


@pytest.mark.parametrize("blocks", [1, 2])
def test_patch_discriminator_scores_each_pixel_from_its_patch_alone(blocks):
    net_d = Discriminator(DiscriminatorConfig(in_size=16, width=8, patch_blocks=blocks)).eval()  # fixed SN estimate
    x = hr_batch(2, 16)
    score = net_d(x)
    assert score.shape == (2, 16, 16) and torch.isfinite(score).all()
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net_d.modules())
    y = x.clone()
    y[0, :, 8, 8] += (
        0.5  # one pixel of the first image: only the scores whose (4 * blocks + 3)-px patch holds it may change
    )
    changed = (net_d(y) - score).abs()[0] > 1e-7
    radius = 2 * blocks + 1
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[8, 8] and rows.min() >= 8 - radius and rows.max() <= 8 + radius
    assert cols.min() >= 8 - radius and cols.max() <= 8 + radius
    assert torch.allclose(net_d(y)[1], score[1], atol=1e-6)  # and only in its own image


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        HighToLowGenerator(HighToLowConfig(hr_size=48, **TINY))
    with pytest.raises(ValueError, match="too small"):
        HighToLowGenerator(HighToLowConfig(hr_size=16, scale=8, **TINY))
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(DiscriminatorConfig(in_size=24, width=8))


def nonzero_grad(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and bool(torch.isfinite(p.grad).all()) and bool(p.grad.abs().sum() > 0)


def g_and_d_loss(net_g, net_d, hr, z):
    """A loss that every parameter of G and D takes part in: D's score of G's output plus a pixel term."""
    fake = net_g(hr, z)
    return net_d(fake).mean() + F.mse_loss(fake, F.avg_pool2d(hr, net_g.config.scale))


@pytest.mark.parametrize("hr_size,scale", [(32, 4), (64, 4), (32, 2)])
def test_gradients_reach_every_parameter(hr_size, scale):
    # The plain (tanh) variant: the residual one zero-inits its last conv, which blocks gradients at init.
    net_g = tiny_generator(hr_size, scale, residual=False)
    net_d = Discriminator(DiscriminatorConfig(in_size=hr_size // scale, width=8))
    loss = g_and_d_loss(net_g, net_d, hr_batch(2, hr_size), z_batch(2))
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in [*net_g.named_parameters(), *net_d.named_parameters()] if not nonzero_grad(p)]
    assert missing == []
    assert nonzero_grad(net_g.noise.fc.weight)  # z really enters the network


def test_residual_starts_as_average_pooling_and_then_trains_everything():
    net_g = tiny_generator(32, 4, residual=True)
    hr = hr_batch(2, 32)
    assert torch.equal(net_g(hr, z_batch(2)), F.avg_pool2d(hr, 4))
    assert torch.equal(net_g(hr, z_batch(2, seed=1)), F.avg_pool2d(hr, 4))  # z is ignored at init, exactly
    # After one update the last conv is no longer zero and gradients reach every parameter.
    net_d = Discriminator(DiscriminatorConfig(in_size=8, width=8))
    opt = torch.optim.Adam(net_g.parameters(), lr=1e-2)
    g_and_d_loss(net_g, net_d, hr, z_batch(2)).backward()
    opt.step()
    net_g.zero_grad()
    g_and_d_loss(net_g, net_d, hr, z_batch(2)).backward()
    assert [n for n, p in net_g.named_parameters() if not nonzero_grad(p)] == []
    assert not torch.equal(net_g(hr, z_batch(2)), F.avg_pool2d(hr, 4))


@pytest.mark.parametrize("residual", [False, True])
def test_init_weights_zeroes_only_the_residual_output_conv(residual):
    net_g = tiny_generator(32, 4, residual=residual)
    assert [name for name, _ in net_g.named_children()] == ["noise", "head", "body", "tail"]
    weights = {n: p for n, p in net_g.named_parameters() if n.endswith("weight") and p.dim() > 1}  # convs, linears
    zero = sorted(n for n, p in weights.items() if not p.any())
    assert zero == (["tail.conv.weight"] if residual else [])
    torch.nn.init.normal_(net_g.tail.conv.weight)
    net_g.init_weights()
    assert net_g.tail.conv.weight.any() != residual  # init_weights() puts the zero back, and only there


def test_z_changes_the_output():
    net_g = tiny_generator(32, 4).eval()
    hr = hr_batch(2, 32)
    a, b = net_g(hr, z_batch(2, seed=0)), net_g(hr, z_batch(2, seed=1))
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(a, net_g(hr, z_batch(2, seed=0)))


# ------------------------------------------------------------------------------------------------ Degrader


@pytest.fixture
def degrader() -> Degrader:
    return Degrader(with_running_stats(tiny_generator(32, 4)), step=5)


def test_degrade_is_deterministic_per_seed(degrader):
    hr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)).repeat(3, 1, 1, 1)
    lr = degrader.degrade(hr, seeds=[7, 7, 8])
    assert lr.shape == (3, 3, 8, 8) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr[0], lr[1])  # same image, same seed
    assert (lr[0] - lr[2]).abs().max() > 1e-3  # same image, other seed
    assert torch.equal(degrader.degrade(hr, seeds=[7, 7, 8]), lr)  # and again later
    # A seed fixes the result whatever else is in the batch.
    alone = degrader.degrade(hr[2:], seeds=[8])
    torch.testing.assert_close(alone[0], lr[2], atol=1e-5, rtol=0)


def test_degrade_keeps_the_global_rng_alone(degrader):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    degrader.degrade(torch.rand(2, 3, 32, 32), seeds=[0, 1])
    torch.manual_seed(123)
    degrader.degrade(torch.zeros(2, 3, 32, 32), seeds=[0, 1])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "shape,seeds,why",
    [
        ((2, 3, 64, 64), [0, 1], "expected HR images"),
        ((2, 3, 32, 16), [0, 1], "expected HR images"),
        ((2, 1, 32, 32), [0, 1], "expected HR images"),
        ((3, 32, 32), [0], "expected HR images"),
        ((2, 3, 32, 32), [0], "got 1 seeds for 2 images"),
    ],
)
def test_degrade_rejects_wrong_input(degrader, shape, seeds, why):
    with pytest.raises(ValueError, match=why):
        degrader.degrade(torch.rand(*shape), seeds=seeds)


# ------------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, degrader):
    hr = torch.rand(2, 3, 32, 32)
    expected = degrader.degrade(hr, seeds=[1, 2])
    degrader.save(tmp_path / DEGRADER_FILE)
    for source in (tmp_path, tmp_path / DEGRADER_FILE):  # a run directory or the file itself
        loaded = Degrader.load(source)
        assert loaded.config == degrader.config and loaded.step == 5 and len(loaded.sha256) == 64
        assert not loaded.net_g.training
        assert torch.equal(loaded.degrade(hr, seeds=[1, 2]), expected)
        for (k, a), (_, b) in zip(degrader.net_g.state_dict().items(), loaded.net_g.state_dict().items(), strict=True):
            assert torch.equal(a, b), k


def test_load_checkpoint_of_the_right_kind(tmp_path):
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"w": torch.arange(3.0)}, {"kind": "some-kind", "extra": [1, 2]})
    tensors, meta = load_checkpoint(path, "some-kind")
    assert torch.equal(tensors["w"], torch.arange(3.0))
    assert meta["extra"] == [1, 2] and meta["format"] >= 1 and "version" in meta
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary file left behind


def assert_user_error(path, match: str = "") -> UserError:
    with pytest.raises(UserError) as info:
        Degrader.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert match.lower() in message.lower()
    return info.value


def test_missing_checkpoint(tmp_path):
    assert_user_error(tmp_path / "nope.safetensors", "no such")
    assert_user_error(tmp_path / DEGRADER_FILE, "no such")  # an empty run directory


@pytest.mark.parametrize("cut", [0, 5, 100, -10])
def test_corrupt_checkpoint(tmp_path, degrader, cut):
    path = tmp_path / DEGRADER_FILE
    if cut == 0:
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    else:
        degrader.save(path)
        path.write_bytes(path.read_bytes()[:cut])  # truncated: inside the header, or just short of the end
    assert_user_error(path, "corrupt")


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.ones(2, 2)}, path)  # someone else's model: no degrader metadata
    assert_user_error(path, "not a degrader checkpoint")
    save_file({"weight": torch.ones(2, 2)}, path, metadata={"degrader": "{not json"})
    assert_user_error(path, "not a degrader checkpoint")


def test_checkpoint_of_another_kind(tmp_path, degrader):
    path = tmp_path / "state.safetensors"
    save_checkpoint(path, module_tensors("net_g", degrader.net_g), {"kind": "train-state", "step": 1})
    assert_user_error(path, "'train-state'")


def test_run_directory_of_the_other_kind(tmp_path, degrader):
    run = tmp_path / "sr-run"
    run.mkdir()
    save_checkpoint(run / "sr.safetensors", module_tensors("net_g", degrader.net_g), {"kind": "low-to-high"})
    assert_user_error(run, "holds sr.safetensors, not degrader.safetensors")


def test_checkpoint_from_a_newer_format(tmp_path, degrader):
    path = tmp_path / DEGRADER_FILE
    degrader.save(path, format=999, version="99.0")
    assert_user_error(path, "upgrade")


def test_weights_that_do_not_fit_the_config(tmp_path, degrader):
    path = tmp_path / DEGRADER_FILE
    config = {**vars(degrader.config), "width": 16}  # says width 16, holds width-8 weights
    save_checkpoint(path, module_tensors("net_g", degrader.net_g), {"kind": DEGRADER_KIND, "config": config})
    assert_user_error(path, "does not fit")


@pytest.mark.parametrize("change", [{"new_field": 1}, {"hr_size": 48}, None])
def test_unusable_config_in_checkpoint(tmp_path, degrader, change):
    path = tmp_path / DEGRADER_FILE
    meta = {"kind": DEGRADER_KIND}
    if change is not None:
        meta["config"] = {**vars(degrader.config), **change}
    save_checkpoint(path, module_tensors("net_g", degrader.net_g), meta)
    assert_user_error(path)


class _Trap:
    """Unpickling this writes a file: evidence that a loader ran pickle on user data."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(tmp_path, degrader):
    marker = tmp_path / "unpickled"
    trap = tmp_path / "trap" / DEGRADER_FILE
    trap.parent.mkdir()
    trap.write_bytes(pickle.dumps(_Trap(str(marker))))
    assert_user_error(trap, "corrupt")
    assert_user_error(trap.parent)
    torch.save({"net_g": degrader.net_g.state_dict(), "trap": _Trap(str(marker))}, tmp_path / "model.pt")
    assert_user_error(tmp_path / "model.pt")
    assert not marker.exists()
