"""`finetune()`: joint end-to-end training of the degrader and the SR generator (end of paper section 3.6).

HR -> High-to-Low -> LR -> Low-to-High -> SR, with both losses at once: the degrader's (pixel loss to
average-pooled HR + hinge loss against real LR images) and the SR model's (pixel loss to HR + hinge loss
against HR images). The SR loss back-propagates through the degrader, so the degrader learns to make LR
images the SR model can invert while its own discriminator keeps them realistic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from degrader import dist
from degrader.checkpoint import DEGRADER_FILE, Degrader, load_checkpoint, load_module, noise_from_seeds
from degrader.device import accelerate, autocast, resolve_device
from degrader.errors import UserError
from degrader.gan import LossConfig, adam, discriminator_loss, generator_loss, update
from degrader.grids import numbered
from degrader.images import CACHE_MB, PREP_MODES, Scan, save_grid, scan_images
from degrader.nets import Discriminator
from degrader.progress import Progress
from degrader.run import (
    STATE_FILE,
    STATE_KIND,
    Bookkeeping,
    RunResult,
    config_dict,
    deferred_interrupt,
    grid_images,
    load_state,
    open_run,
    save_state,
    unpaired_batches,
)
from sr.model import SR_FILE, LowToHighGenerator, load_sr_generator, save_sr_generator


@dataclass
class FinetuneConfig:
    degrader: str  # `degrade fit` run directory (or its degrader.safetensors) to start from
    sr: str  # `sr train` run directory (or its sr.safetensors) to start from
    hr: str  # folder of clean HR images
    lr: str  # folder of real low-quality images, unpaired with `hr` (for the degrader's discriminator)
    out: str  # run directory for the fine-tuned pair: degrader.safetensors and sr.safetensors
    hr_prep: str = "resize"  # "resize" (face crops) or "crop" (random crops), as for `degrade fit`
    lr_prep: str = "resize"  # same for the LR folder
    lr_frame: float = 1.0  # "resize": centre fraction of each LR image kept, as `degrade fit`'s lr_frame
    steps: int = 2000  # joint generator updates
    batch_size: int = 16
    loss: LossConfig = field(default_factory=LossConfig)  # the same weights and Adam settings for both GANs
    seed: int = 0  # fixes data order, augmentation, noise and any discriminator that starts fresh
    threads: int | None = None  # torch CPU threads; None: degrader.threads' policy, as the CLI (in config.json)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    bf16: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False  # networks in channels_last memory format (faster convolutions on CUDA)
    compile: bool = False  # torch.compile the networks (first steps slower while compiling)
    cache_mb: float = CACHE_MB  # decoded-image cache per DataLoader worker (per folder), MiB; 0: none
    workers: int = 2  # DataLoader worker processes per folder
    log_every: int = 10  # steps between log lines
    sample_every: int = 250  # steps between sample grids
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    resume: bool = False  # continue the run in `out` from its last checkpoint
    overwrite: bool = False  # replace whatever `out` holds


@dataclass(frozen=True)
class FinetunePlan:
    """Everything `finetune` runs from: the loaded starting point and the data, checked before anything is written."""

    config: FinetuneConfig
    degrader: Degrader
    net_sr: LowToHighGenerator
    sr_step: int
    hr: Scan
    lr: Scan
    device: torch.device
    d_from: dict[str, Path | None]  # where each discriminator ("lr", "hr") starts: its run's state file, or fresh


def state_file(run: str) -> Path | None:
    """The state file beside a run's checkpoint, which holds its discriminator; None when there is none."""
    state = Path(run) / STATE_FILE if Path(run).is_dir() else Path(run).parent / STATE_FILE
    return state if state.is_file() else None


def load_discriminator(state: Path | None, net_d: Discriminator, option: str) -> None:
    """Load a run's discriminator from its state file; a missing file leaves `net_d` fresh."""
    if state is not None:
        tensors, _ = load_checkpoint(state, STATE_KIND, option=option)
        load_module(net_d, "net_d", tensors, state)


def plan_finetune(config: FinetuneConfig) -> FinetunePlan:
    """Load both generators, check they fit together, and scan both folders, without writing anything.

    Raises:
        UserError: a missing or wrong checkpoint, generators of different scales or sizes, a bad folder.
    """
    if config.hr_prep not in PREP_MODES or config.lr_prep not in PREP_MODES:
        raise UserError(f"--hr-prep/--lr-prep must be one of {', '.join(PREP_MODES)}.")
    dist.init()  # under torchrun: join the process group (and take this rank's GPU)
    device = resolve_device(config.device)
    dist.check_batch(config.batch_size)
    degrader = Degrader.load(config.degrader, device)
    net_sr, meta = load_sr_generator(config.sr, device, option="--sr")
    if (net_sr.config.scale, net_sr.config.hr_size) != (degrader.scale, degrader.hr_size):
        raise UserError(
            f"--sr {config.sr} is x{net_sr.config.scale} at {net_sr.config.hr_size} px but --degrader "
            f"{config.degrader} is x{degrader.scale} at {degrader.hr_size} px; pair models trained at the same scale "
            "and size."
        )
    hr = scan_images(config.hr, min_size=degrader.hr_size, option="--hr")
    lr = scan_images(config.lr, min_size=degrader.hr_size // degrader.scale, option="--lr")
    d_from = {"lr": state_file(config.degrader), "hr": state_file(config.sr)}
    return FinetunePlan(config, degrader, net_sr, int(meta.get("step", 0)), hr, lr, device, d_from)


def finetune(plan: FinetunePlan, on_progress: Progress | None = None) -> RunResult:
    """Fine-tune a degrader and an SR generator together; writes both checkpoints to `plan.config.out`.

    Args:
        plan: the result of `plan_finetune(config)`.
        on_progress: called after every step as `on_progress(step, total_steps, losses)`.

    Returns:
        Where the run is, how far it got, and its last losses. `Degrader.load(out)` and
        `load_sr_generator(out)` read the results.
    """
    config, device, loss = plan.config, plan.device, plan.config.loss
    out = Path(config.out)
    resuming = open_run(out, config_dict(config), resume=config.resume, overwrite=config.overwrite)

    # --- networks: both generators as trained, their discriminators from their runs where saved ---
    net_hl, net_lh = plan.degrader.net_g.train(), plan.net_sr.train()
    hl, lh = net_hl.config, net_lh.config
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        net_dl = Discriminator(hl.discriminator()).to(device)  # judges LR images
        net_dh = Discriminator(lh.discriminator()).to(device)  # judges HR images
    load_discriminator(plan.d_from["lr"], net_dl, "--degrader")
    load_discriminator(plan.d_from["hr"], net_dh, "--sr")
    for net in (net_hl, net_lh, net_dl, net_dh):
        accelerate(net, config)  # channels_last, compile; state dict keys unchanged
    net_hl, net_lh = dist.sync_batchnorm(net_hl, device), dist.sync_batchnorm(net_lh, device)  # several GPUs
    # One optimizer per side: the SR loss updates the degrader through the shared backward pass.
    opt_g, opt_d = adam(nn.ModuleList([net_hl, net_lh]), loss), adam(nn.ModuleList([net_dl, net_dh]), loss)
    z_rng = torch.Generator().manual_seed(config.seed)  # fresh z for every sample, drawn on the CPU
    modules = {"net_hl": net_hl, "net_lh": net_lh, "net_dl": net_dl, "net_dh": net_dh}
    state = (modules, {"opt_g": opt_g, "opt_d": opt_d}, {"z": z_rng})
    step = load_state(out, *state) if resuming else 0
    train_hl, train_lh = dist.wrap(net_hl, device), dist.wrap(net_lh, device)  # DDP under torchrun, for backward
    train_dl, train_dh = dist.wrap(net_dl, device), dist.wrap(net_dh, device)

    # --- data: each step takes d_steps + 1 HR batches and d_steps real LR batches ---
    b, k = config.batch_size, loss.d_steps
    hr_batches, lr_batches = unpaired_batches(config, plan.hr, plan.lr, hl.hr_size, hl.lr_size, step)
    grid_hr, grid_lr = grid_images(config, plan.hr, plan.lr, hl.hr_size, hl.lr_size)

    def to_net(x: torch.Tensor) -> torch.Tensor:
        return x.to(device) * 2 - 1  # [0, 1] -> [-1, 1]

    def both(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = dist.part(torch.randn(b, hl.z_dim, generator=z_rng)).to(device)  # this rank's rows of the global z
        lr = train_hl(hr, z)  # (B, 3, H/s, H/s)
        return lr, train_lh(lr.clamp(-1, 1))  # (B, 3, H, H); the clamp matches what `Degrader.degrade` hands SR

    def checkpoint(step: int) -> None:
        Degrader(net_hl, name=out.name, step=step).save(out / DEGRADER_FILE, finetuned_from=config.degrader)
        save_sr_generator(out / SR_FILE, net_lh, plan.sr_step + step, finetuned_from=config.sr)
        save_state(out, step, *state)
        net_hl.train(), net_lh.train()  # Degrader() puts its network in eval mode

    def samples(path: Path) -> None:
        write_samples(path, net_hl, net_lh, grid_hr, grid_lr, device)

    books = Bookkeeping(out, config, "hr_per_s", on_progress, samples, checkpoint)
    with deferred_interrupt() as interrupted:
        while step < config.steps and not interrupted():
            # --- G step, both Ds frozen: both generator losses, one backward pass through both networks ---
            hr = to_net(next(hr_batches))  # (B, 3, H, H)
            with autocast(device, config.bf16):
                lr, sr = both(hr)
                hl_loss, hl_logs = generator_loss(lr, F.avg_pool2d(hr, hl.scale), net_dl, loss)
                lh_loss, lh_logs = generator_loss(sr, hr, net_dh, loss)
            update(opt_g, hl_loss + lh_loss)

            # --- D steps: real LR and real HR images against fresh fakes, detached ---
            d_logs: dict[str, float] = {}
            for _ in range(k):
                hr, real_lr = to_net(next(hr_batches)), to_net(next(lr_batches))
                with autocast(device, config.bf16):
                    with torch.no_grad():
                        lr, sr = both(hr)
                    dl_loss, dl_logs = discriminator_loss(train_dl, real_lr, lr)
                    dh_loss, dh_logs = discriminator_loss(train_dh, hr, sr)
                update(opt_d, dl_loss + dh_loss)
                d_logs = {**prefixed("hl_", dl_logs), **prefixed("lh_", dh_logs)}
            step += 1
            books.step(step, {**prefixed("hl_", hl_logs), **prefixed("lh_", lh_logs), **d_logs}, items=(k + 1) * b)
        return books.finish(step, interrupted())


def prefixed(prefix: str, logs: dict[str, float]) -> dict[str, float]:
    return {prefix + k: v for k, v in logs.items()}


@torch.no_grad()
def write_samples(path: Path, net_hl, net_lh, hr: torch.Tensor, real_lr: torch.Tensor, device) -> None:
    """Rows: HR, its degraded LR (seed 0), SR of that, real LR images, SR of those."""
    net_hl.eval(), net_lh.eval()
    z = noise_from_seeds([0] * hr.shape[0], net_hl.config.z_dim).to(device)
    lr = net_hl(hr.to(device) * 2 - 1, z).clamp(-1, 1)  # (n, 3, H/s, H/s)
    sr = net_lh(lr)  # (n, 3, H, H)
    sr_real = net_lh(real_lr.to(device) * 2 - 1)
    net_hl.train(), net_lh.train()

    def to_image(x: torch.Tensor) -> torch.Tensor:
        return ((x.float().cpu() + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1]

    labels = ["HR", "degraded (z seed 0)", "SR of degraded", "real LR (unpaired)", "SR of real LR"]
    rows = [hr, to_image(lr), to_image(sr), real_lr, to_image(sr_real)]
    save_grid(rows, path, row_labels=labels, col_labels=numbered(hr.shape[0]))
