"""The losses of the paper (section 3.5), shared by the High-to-Low and the Low-to-High trainers.

Both GANs use the same form: generator loss = alpha * MSE(output, target) + beta * hinge loss, where the
target is the average-pooled HR image for the degrader and the HR image for SR; the discriminator uses the
hinge loss on real images and on detached fakes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossConfig:
    alpha: float = 1.0  # weight of the pixel (L2) loss
    beta: float = 0.05  # weight of the hinge GAN loss; 0 trains with the pixel loss alone
    lr: float = 1e-4  # Adam learning rate for both networks
    betas: tuple[float, float] = (0.0, 0.9)  # Adam betas (floats: torch rejects an int 0)
    d_steps: int = 5  # discriminator updates per generator update


@contextmanager
def frozen(net: nn.Module) -> Iterator[None]:
    """Stop gradients into `net`'s parameters for the duration of a generator step."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def generator_loss(
    fake: torch.Tensor, target: torch.Tensor, net_d: nn.Module, loss: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """alpha * MSE(fake, target) + beta * hinge generator loss, with `net_d` frozen.

    Returns the loss to back-propagate and its parts as floats for the log.
    """
    pixel = F.mse_loss(fake.float(), target.float())
    if loss.beta > 0:
        with frozen(net_d):
            adversarial = -net_d(fake).float().mean()
    else:
        adversarial = torch.zeros((), device=fake.device)
    total = loss.alpha * pixel + loss.beta * adversarial
    return total, {"g_pixel": pixel.item(), "g_adv": adversarial.item()}


def discriminator_loss(
    net_d: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Hinge loss: push real scores above +1 and scores of (detached) fakes below -1."""
    real_score = net_d(real).float()
    fake_score = net_d(fake.detach()).float()
    total = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
    return total, {"d_loss": total.item(), "d_real": real_score.mean().item(), "d_fake": fake_score.mean().item()}


def adam(net: nn.Module, loss: LossConfig) -> torch.optim.Adam:
    """The paper's optimizer: Adam with lr 1e-4 and betas (0.0, 0.9)."""
    return torch.optim.Adam(net.parameters(), lr=loss.lr, betas=(float(loss.betas[0]), float(loss.betas[1])))


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on `loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
