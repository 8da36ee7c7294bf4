"""The GAN losses and stabilisers: augmentation, R1, separate D learning rate, EMA, luma pixel losses."""

import pytest
import torch
from torch import nn

from degrader.gan import (
    Ema,
    LossConfig,
    adam,
    diff_augment,
    discriminator_loss,
    exposure_loss,
    generator_loss,
    high_pass,
    pixel_loss,
    set_lr,
)
from degrader.nets import Discriminator, DiscriminatorConfig


def tiny_d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_augment_is_seeded_differentiable_and_changes_images():
    x = images().requires_grad_(True)
    policy = ("translation", "cutout", "colour")
    a = diff_augment(x, policy, torch.Generator().manual_seed(3))
    b = diff_augment(x, policy, torch.Generator().manual_seed(3))
    c = diff_augment(x, policy, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_content_and_cutout_zeroes_a_quarter():
    x = images(8)
    shifted = diff_augment(x, ("translation",), torch.Generator().manual_seed(0))
    # every output pixel is an input pixel of the same image or the zero fill
    for i in range(len(x)):
        values = set(x[i].flatten().tolist()) | {0.0}
        assert set(shifted[i].flatten().tolist()) <= values
    cut = diff_augment(x, ("cutout",), torch.Generator().manual_seed(0))
    zero_fraction = (cut == 0).all(dim=1).float().mean(dim=(1, 2))
    assert torch.allclose(zero_fraction, torch.full((8,), 0.25))


def test_dihedral_turns_or_flips_each_image_and_keeps_the_jpeg_grid():
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    turned = diff_augment(x, ("dihedral",), torch.Generator().manual_seed(0))
    seen = set()
    for i in range(len(x)):
        variants = [torch.rot90(x[i].flip(-1) if f else x[i], k, dims=(1, 2)) for f in (0, 1) for k in range(4)]
        (match,) = [j for j, v in enumerate(variants) if torch.equal(v, turned[i])]
        seen.add(match)
    assert len(seen) > 4  # the 16 images drew most of the 8 transforms
    # a pixel at the edge of an 8-px block stays at the edge of a block
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 7, 3] = 1
    for seed in range(8):
        moved = diff_augment(edge, ("dihedral",), torch.Generator().manual_seed(seed))
        ((row, col),) = torch.nonzero(moved[0, 0]).tolist()
        assert row % 8 in (0, 7) or col % 8 in (0, 7)
    with pytest.raises(ValueError, match="square"):
        diff_augment(torch.rand(1, 3, 8, 16), ("dihedral",), torch.Generator())


def test_unknown_augmentation_and_pixel_loss_are_refused():
    with pytest.raises(ValueError, match="augmentation"):
        LossConfig(augment="translation,rotate")
    with pytest.raises(ValueError, match="pixel loss"):
        LossConfig(pixel="lab")
    with pytest.raises(ValueError, match="Generator"):
        generator_loss(images(), images(), tiny_d(), LossConfig(augment="colour"))


def test_luma_pixel_losses_ignore_colour_and_detail():
    target = images(2)
    grey = target.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    luma_of = lambda x: (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    recoloured = grey + (target - grey) * 0.0 + (luma_of(target) - luma_of(grey))  # same luma, no colour
    assert pixel_loss(recoloured, target, "rgb") > 1e-3
    assert pixel_loss(recoloured, target, "luma") < 1e-10
    # a checkerboard of +-d in luma averages out in 2x2 pools: luma-lowpass ignores it, luma does not
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 * 0.2 - 0.1
    assert pixel_loss(target + checker, target, "luma") > 1e-3
    assert pixel_loss(target + checker, target, "luma-lowpass") < 1e-10


def test_exposure_loss_sees_each_image_brightness_not_its_detail_or_colour():
    target = images(2)
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 * 0.4 - 0.2  # zero mean
    luma_free = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 0.3  # a colour cast of zero luma
    assert exposure_loss(target + checker + luma_free, target) < 1e-10
    brighter = target.clone()
    brighter[1] += 0.1  # one image of two brighter by 0.1: (0.1^2 + 0) / 2
    assert exposure_loss(brighter, target) == pytest.approx(0.005, rel=1e-4)
    # the weight reaches the generator's loss, and only when set
    net_d = tiny_d()
    off, logs_off = generator_loss(brighter, target, net_d, LossConfig())
    on, logs_on = generator_loss(brighter, target, net_d, LossConfig(exposure=10.0))
    assert "g_exposure" not in logs_off and logs_on["g_exposure"] == pytest.approx(0.005, rel=1e-4)
    assert (on - off).item() == pytest.approx(0.05, rel=1e-3)
    with pytest.raises(ValueError, match="exposure"):
        LossConfig(exposure=-1.0)


def test_r1_penalises_the_gradient_on_real_images():
    net_d, real, fake = tiny_d(), images(4, 1), images(4, 2)
    plain, logs = discriminator_loss(net_d, real, fake, LossConfig())
    with_r1, logs_r1 = discriminator_loss(net_d, real, fake, LossConfig(r1=10.0))
    assert "d_r1" not in logs and logs_r1["d_r1"] > 0
    assert with_r1.item() == pytest.approx(plain.item() + 5.0 * logs_r1["d_r1"], rel=1e-5)
    with_r1.backward()  # the penalty is differentiable with respect to D's weights
    assert all(p.grad is not None for p in net_d.parameters())


def test_r1_of_a_patch_discriminator_penalises_each_image_mean_score():
    net_d = Discriminator(DiscriminatorConfig(in_size=8, width=8, patch_blocks=1)).eval()  # fixed SN estimate
    real, fake = images(4, 1), images(4, 2)
    _, logs = discriminator_loss(net_d, real, fake, LossConfig(r1=1.0))
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net_d(x).mean((1, 2)).sum(), x)
    assert logs["d_r1"] == pytest.approx(grad.pow(2).flatten(1).sum(1).mean().item(), rel=1e-4)


def test_augmented_losses_reach_the_generator_output():
    net_d, loss = tiny_d(), LossConfig(augment="translation,cutout,colour", r1=1.0)
    fake = images(4, 3).requires_grad_(True)
    g_loss, _ = generator_loss(fake, images(4, 4), net_d, loss, torch.Generator().manual_seed(0))
    g_loss.backward()
    assert fake.grad.abs().sum() > 0 and all(p.grad is None for p in net_d.parameters())  # D frozen
    d_loss, _ = discriminator_loss(net_d, images(4, 5), fake, loss, torch.Generator().manual_seed(0))
    d_loss.backward()
    assert all(p.grad is not None for p in net_d.parameters())


def test_high_pass_keeps_detail_and_mean_colour_but_not_layout():
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(high_pass(flat, 1.0), flat, atol=1e-6)  # a plain image is its own mean colour
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    assert torch.allclose(high_pass(x + 0.25, 1.0), high_pass(x, 1.0) + 0.25, atol=1e-5)
    assert torch.allclose(high_pass(x, 1.0).mean((-2, -1)), x.mean((-2, -1)), atol=0.02)  # to the padding
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    checker = ((rows + cols) % 2 * 2 - 1).expand(1, 3, 16, 16)  # the finest detail there is
    blob = torch.exp(-((rows - 5) ** 2 + (cols - 9) ** 2) / 50).expand(1, 3, 16, 16)  # layout: a face-sized blob
    kept = lambda img: ((high_pass(img, 1.0) - img.mean()).std() / (img - img.mean()).std()).item()  # noqa: E731
    assert kept(checker) > 0.9 and kept(blob) < 0.15
    with pytest.raises(ValueError, match="d_highpass"):
        LossConfig(d_highpass=-1.0)


def test_high_pass_discriminator_is_blind_to_layout_and_trains_g():
    net_d, loss = tiny_d(), LossConfig(d_highpass=1.0)
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramp = ((rows + cols) / 14 - 0.5).expand(4, 3, 8, 8)  # zero-mean, smooth: no detail, only layout
    real, fake = images(4, 1), images(4, 2)
    _, logs = discriminator_loss(net_d, real, fake, loss)
    _, moved = discriminator_loss(net_d, real + 0.02 * ramp, fake + 0.02 * ramp, loss)
    _, plain = discriminator_loss(net_d, real + 0.02 * ramp, fake + 0.02 * ramp, LossConfig())
    _, before = discriminator_loss(net_d, real, fake, LossConfig())
    shift = abs(moved["d_real"] - logs["d_real"])
    assert shift < 0.5 * abs(plain["d_real"] - before["d_real"])  # the filter removes most of the ramp
    fake = fake.requires_grad_(True)
    g_loss, _ = generator_loss(fake, images(4, 3), net_d, LossConfig(d_highpass=1.0, alpha=0.0, beta=1.0))
    g_loss.backward()
    assert fake.grad.abs().sum() > 0


def test_separate_learning_rate_for_d():
    net = tiny_d()
    loss = LossConfig(lr=1e-4, lr_d=4e-4)
    assert adam(net, loss).param_groups[0]["lr"] == 1e-4
    assert adam(net, loss, discriminator=True).param_groups[0]["lr"] == 4e-4
    assert adam(net, LossConfig(), discriminator=True).param_groups[0]["lr"] == 1e-4


def test_lr_decay_holds_then_falls_linearly_to_zero_for_both_nets():
    net = tiny_d()
    loss = LossConfig(lr=1e-4, lr_d=4e-4, lr_decay=0.5)
    opt_g, opt_d = adam(net, loss), adam(net, loss, discriminator=True)
    lrs = []
    for step in (0, 49, 50, 75, 99):
        set_lr(opt_g, opt_d, loss, step / 100)
        lrs.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]))
    assert lrs[:3] == [(1e-4, 4e-4)] * 3  # constant through the first half
    assert lrs[3] == pytest.approx((5e-5, 2e-4))  # half-way down at three quarters
    assert 0 < lrs[4][0] < 3e-6 and lrs[4][1] == pytest.approx(4 * lrs[4][0])  # the last update still moves
    constant = LossConfig(lr=1e-4)
    set_lr(opt_g, opt_d, constant, 0.99)
    assert opt_g.param_groups[0]["lr"] == opt_d.param_groups[0]["lr"] == 1e-4  # lr_decay 0: the paper's constant lr
    with pytest.raises(ValueError, match="lr_decay"):
        LossConfig(lr_decay=1.5)


def test_ema_tracks_the_weights_with_its_decay():
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.zero_()
    ema = Ema(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(ema.module.weight, torch.ones(1, 2), atol=1e-6)  # converges to a constant weight
    fresh = Ema(nn.Linear(2, 1), decay=0.9)
    start = fresh.module.weight.clone()
    target = torch.full((1, 2), 5.0)
    with torch.no_grad():
        net.weight.copy_(target)
    fresh.update(net)  # first update: ramped decay min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(fresh.module.weight, d * start + (1 - d) * target)
    assert not any(p.requires_grad for p in fresh.module.parameters())
