"""`train()`: the Low-to-High GAN (paper sections 3.4-3.5) on paired data, with the degrader's loop and run files.

Paired data comes from one of two places:
- shards (`degrader export-shards` output) through the map-style shard reader, for exact resume;
- on the fly: HR images from a folder through a learned degrader (`Degrader.degrade`) or a classical one
  (`bicubic`, `bilinear`, `blur-bilinear`), with a fresh noise seed for every sample every time it is drawn.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from degrader import dist
from degrader.checkpoint import DegraderLike, load_degrader
from degrader.device import accelerate, autocast, resolve_device
from degrader.errors import UserError
from degrader.gan import LossConfig, adam, discriminator_loss, generator_loss, update
from degrader.grids import numbered
from degrader.images import (
    AUGMENTS,
    CACHE_MB,
    PREP_MODES,
    Scan,
    first_readable,
    save_grid,
    scan_images,
)
from degrader.loader import infinite_loader, make_loader
from degrader.nets import Discriminator
from degrader.progress import Progress
from degrader.run import (
    GRID_SAMPLES,
    SKIPPED_FILE,
    Bookkeeping,
    RunResult,
    config_dict,
    deferred_interrupt,
    load_state,
    open_run,
    save_state,
    write_skipped,
)
from degrader.shards import ShardMapDataset
from sr.model import PRESETS, SR_FILE, LowToHighConfig, LowToHighGenerator, save_sr_generator


@dataclass
class SRTrainConfig:
    out: str  # run directory: config, checkpoints, log, sample grids
    shards: str | None = None  # paired shards: directory, manifest, glob or brace pattern (local files)
    verify: bool = True  # compare each shard's sha256 with the manifest before training (a changed shard is refused)
    degrader: str | None = None  # on the fly: a `degrade fit` run dir / .safetensors, or a `classical.CLASSICAL` name
    hr: str | None = None  # folder of HR images for on-the-fly data (with `degrader`)
    hr_prep: str = "resize"  # how HR images become hr_size squares: "resize" (face crops) or "crop" (random crops)
    augment: str = "flip"  # HR augmentation for on-the-fly data: "none", "flip" or "paper"
    preset: str = "small"  # "small" (2 CPU cores) or "paper"; see sr.model.PRESETS
    scale: int | None = None  # None follows the data (a learned degrader or the shards); classical default 4
    lr_size: int | None = None  # LR training crop; None follows the data (classical default 16)
    steps: int = 2000  # generator updates
    batch_size: int = 16
    loss: LossConfig = field(default_factory=LossConfig)  # alpha 1, beta 0.05, Adam 1e-4 (0, 0.9), 5 D steps
    pixel_only: bool = False  # the L2 loss alone: beta 0 and no discriminator updates (Table 1's "pixel loss")
    warmup_steps: int = 0  # first steps with the L2 loss alone (as ESRGAN pre-trains), then the GAN loss too
    seed: int = 0  # fixes initialisation, data order, crops and the noise seeds of on-the-fly degradation
    threads: int | None = None  # torch CPU threads; None: degrader.threads' policy, as the CLI (in config.json)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    bf16: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False  # networks in channels_last memory format (faster convolutions on CUDA)
    compile: bool = False  # torch.compile the networks (first steps slower while compiling)
    cache_mb: float = CACHE_MB  # decoded-image cache per DataLoader worker (per folder), MiB; 0: none
    workers: int = 2  # DataLoader worker processes
    log_every: int = 10  # steps between log lines (losses averaged over them)
    sample_every: int = 250  # steps between sample grids
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    resume: bool = False  # continue the run in `out` from its last checkpoint
    overwrite: bool = False  # replace whatever `out` holds

    def loss_at(self, step: int) -> tuple[LossConfig, int]:
        """The loss of training step `step` and its D updates: the pixel loss alone and none while warming up or
        pixel-only."""
        if self.pixel_only or step < self.warmup_steps:
            return replace(self.loss, beta=0.0), 0
        return self.loss, self.loss.d_steps

    def pairs_before(self, step: int) -> int:
        """How many pairs the steps before `step` consumed: one batch per G step and one per D step."""
        warm = step if self.pixel_only else min(step, self.warmup_steps)
        return self.batch_size * (warm + (step - warm) * (self.loss.d_steps + 1))


@dataclass(frozen=True)
class SRPlan:
    """Everything `train` runs from, checked before anything is written (also the answer to --dry-run)."""

    config: SRTrainConfig
    model: LowToHighConfig
    source: str  # a one-line description of the data
    samples: int  # images (on the fly) or pairs (shards) available
    device: torch.device
    params_g: int
    params_d: int
    scan: Scan | None = None  # on the fly: the HR folder
    degrader: DegraderLike | None = None  # on the fly: a `Degrader` or a classical degrader
    shards: ShardMapDataset | None = None  # shards: the map-style reader


def noise_seed(seed: int, position: int) -> int:
    """The degradation seed of the sample at stream `position`: fresh each time, the same on resume."""
    digest = hashlib.blake2b(f"sr-noise:{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _png_size(f, offset: int) -> tuple[int, int] | None:
    """(width, height) from a PNG's header; None when it is not a PNG (decoding names that file later)."""
    f.seek(offset)
    head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def check_pair_sizes(shards: ShardMapDataset, scale: int, lr_size: int, option: str) -> None:
    """Every pair must be `scale` apart with an LR of at least `lr_size` px, or batches could not be stacked.

    Reads only the PNG headers (24 bytes a member), so a bad sample is named before training, not mid-run.
    """
    bad = []
    for i, entries in itertools.groupby(shards.entries, key=lambda e: e.shard):  # entries come shard by shard
        url = shards.urls[i]
        with open(url, "rb") as f:
            for entry in entries:
                lr, hr = _png_size(f, entry.members["lr.png"][0]), _png_size(f, entry.members["hr.png"][0])
                if lr and hr and (min(lr) < lr_size or hr != (lr[0] * scale, lr[1] * scale)):
                    bad.append(f"{url}: {entry.key} (LR {lr[0]}x{lr[1]}, HR {hr[0]}x{hr[1]})")
    if bad:
        raise UserError(
            f"--shards {option}: {len(bad)} samples are not x{scale} pairs with at least {lr_size} px LR, as the "
            f"first is; e.g. {bad[0]}. Re-export those shards, or set lr_size for a smaller crop."
        )


def plan_train(config: SRTrainConfig) -> SRPlan:
    """Check the config, open the data and size the networks, without writing anything.

    Raises:
        UserError: no data source or two, a missing folder or shard, a bad checkpoint or option.
    """
    if config.preset not in PRESETS:
        raise UserError(f"--preset {config.preset!r} is not one of {', '.join(PRESETS)}.")
    if (config.shards is None) == (config.degrader is None):
        raise UserError("give either --shards (paired shards) or --degrader with --hr (on-the-fly pairs), not both.")
    if config.hr_prep not in PREP_MODES or config.augment not in AUGMENTS:
        raise UserError(f"--hr-prep must be one of {', '.join(PREP_MODES)}; augment one of {', '.join(AUGMENTS)}.")
    if config.steps < 0 or config.batch_size < 1:
        raise UserError("--steps must be >= 0 and --batch-size >= 1.")
    dist.init()  # under torchrun: join the process group (and take this rank's GPU)
    device = resolve_device(config.device)
    dist.check_batch(config.batch_size)
    scan = degrader = shards = None
    if config.shards is not None:
        if config.hr is not None:
            raise UserError("--hr is only used with --degrader; shards already hold the HR images.")
        shards = ShardMapDataset(config.shards, check_sha256=config.verify)
        if len(shards) == 0:
            raise UserError(f"--shards {config.shards}: the shards hold no samples; export some first.")
        first = shards[0]
        h, w = first["lq"].shape[-2:]
        scale = first["gt"].shape[-1] // w
        if config.scale is not None and config.scale != scale:
            raise UserError(f"--scale {config.scale}: the shards are x{scale}; drop --scale.")
        lr_size = config.lr_size or min(h, w)
        if lr_size > min(h, w):
            raise UserError(f"lr_size {lr_size}: the shards' LR images are only {w}x{h}.")
        check_pair_sizes(shards, scale, lr_size, config.shards)
        source, samples = f"{len(shards)} pairs from {len(shards.urls)} shards ({config.shards})", len(shards)
    else:
        if config.hr is None:
            raise UserError("--degrader needs --hr, the folder of HR images to degrade on the fly.")
        degrader = load_degrader(config.degrader, config.scale, config.device)
        scale = degrader.scale
        if degrader.hr_size is None:  # classical: any size
            lr_size = config.lr_size or 16
        else:
            lr_size = degrader.hr_size // scale
            if config.lr_size not in (None, lr_size):
                raise UserError(f"lr_size {config.lr_size}: the degrader makes {lr_size} px LR images; drop it.")
        scan = scan_images(config.hr, min_size=lr_size * scale, option="--hr")
        source, samples = f"{len(scan.paths)} HR images ({config.hr}) through {config.degrader}", len(scan.paths)
    try:
        model = LowToHighConfig(lr_size=lr_size, scale=scale, **PRESETS[config.preset])
        net_g, net_d = LowToHighGenerator(model), Discriminator(model.discriminator())
    except ValueError as e:
        raise UserError(f"--scale/lr_size: {e}.") from None
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    return SRPlan(config, model, source, samples, device, count(net_g), count(net_d), scan, degrader, shards)


def pair_batches(plan: SRPlan, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of (lr, hr) batches in [0, 1], from sample position `start` on (for resume)."""
    config, m = plan.config, plan.model
    if plan.shards is not None:
        data = plan.shards.view(gt_size=m.lr_size * m.scale, pairs=True)  # items (index, seed): crops from seeds
        yield from infinite_loader(
            data, batch_size=config.batch_size, seed=config.seed, start=start, workers=config.workers,
            rank=dist.rank(), world=dist.world(),
        )  # fmt: skip
        return
    hr_batches = make_loader(
        plan.scan.paths, m.hr_size, config.hr_prep, config.augment, batch_size=config.batch_size, seed=config.seed,
        start=start, workers=config.workers, cache_mb=config.cache_mb, rank=dist.rank(), world=dist.world(),
        failed_log=(Path(config.out) / SKIPPED_FILE, "--hr"),  # late decode failures join the run's list
    )  # fmt: skip
    position = start  # of the global batch; under torchrun this rank holds its `rank`-th slice
    for hr in hr_batches:
        first = position + dist.rank() * hr.shape[0]
        seeds = [noise_seed(config.seed, first + i) for i in range(hr.shape[0])]
        position += config.batch_size
        lr = plan.degrader.degrade(hr, seeds).cpu()  # (B, 3, H/s, H/s)
        yield lr, hr


def sample_pairs(plan: SRPlan, n: int = GRID_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` pairs without augmentation: the same faces in every grid."""
    m = plan.model
    if plan.shards is not None:
        data = plan.shards.view(gt_size=m.lr_size * m.scale, pairs=True)
        pairs = [data[(i, 0)] for i in range(min(n, len(data)))]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    hr = torch.stack(first_readable(plan.scan, n, m.hr_size, plan.config.hr_prep, torch.Generator().manual_seed(0)))
    return plan.degrader.degrade(hr, list(range(hr.shape[0]))).cpu(), hr


@torch.no_grad()
def write_samples(path: Path, net_g: LowToHighGenerator, lr: torch.Tensor, hr: torch.Tensor, device) -> None:
    """Rows: LR (enlarged nearest), bicubic upscale, SR, HR."""
    s = net_g.config.scale
    bicubic = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)  # (n, 3, H, H)
    net_g.eval()
    sr = ((net_g(lr.to(device) * 2 - 1).float().cpu() + 1) / 2).clamp(0, 1)  # (n, 3, H, H)
    net_g.train()
    labels = ["LR", f"bicubic x{s}", "SR", "HR"]
    save_grid([lr, bicubic, sr, hr], path, row_labels=labels, col_labels=numbered(lr.shape[0]))


def train(plan: SRPlan, on_progress: Progress | None = None) -> RunResult:
    """Train a Low-to-High SR generator; writes checkpoints, log and sample grids to `plan.config.out`.

    Args:
        plan: the result of `plan_train(config)`.
        on_progress: called after every step as `on_progress(step, total_steps, losses)`.

    Returns:
        Where the run is, how far it got, and its last losses. Load the generator with `load_sr_generator(out)`.
    """
    config, model, device = plan.config, plan.model, plan.device
    out = Path(config.out)
    resuming = open_run(out, config_dict(config), resume=config.resume, overwrite=config.overwrite)
    write_skipped(out, {"--hr": plan.scan.skipped if plan.scan is not None else []})

    # --- networks and optimizers ---
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        net_g = accelerate(LowToHighGenerator(model).to(device), config)  # channels_last, compile
        net_d = accelerate(Discriminator(model.discriminator()).to(device), config)
    net_g = dist.sync_batchnorm(net_g, device)  # several GPUs: BN statistics of the global batch
    opt_g, opt_d = adam(net_g, config.loss), adam(net_d, config.loss)
    state = ({"net_g": net_g, "net_d": net_d}, {"opt_g": opt_g, "opt_d": opt_d}, {})
    step = load_state(out, *state) if resuming else 0
    train_g, train_d = dist.wrap(net_g, device), dist.wrap(net_d, device)  # DDP under torchrun, for backward

    # --- data: each step takes d_steps + 1 batches of pairs (one while warming up) ---
    pairs = pair_batches(plan, start=config.pairs_before(step))
    grid_lr, grid_hr = sample_pairs(plan)

    def to_net(x: torch.Tensor) -> torch.Tensor:
        return x.to(device) * 2 - 1  # [0, 1] -> [-1, 1]

    def checkpoint(step: int) -> None:
        save_sr_generator(out / SR_FILE, net_g, step)
        save_state(out, step, *state)

    books = Bookkeeping(
        out,
        config,
        "pairs_per_s",
        on_progress,
        lambda path: write_samples(path, net_g, grid_lr, grid_hr, device),
        checkpoint,
    )
    with deferred_interrupt() as interrupted:
        while step < config.steps and not interrupted():
            loss, d_steps = config.loss_at(step)  # the pixel loss alone while warming up
            # --- G step, D frozen: pixel loss to HR + hinge loss ---
            lr, hr = map(to_net, next(pairs))  # (B, 3, h, h), (B, 3, H, H)
            with autocast(device, config.bf16):
                fake = train_g(lr)  # (B, 3, H, H)
                g_loss, g_logs = generator_loss(fake, hr, net_d, loss)
            update(opt_g, g_loss)

            # --- D steps: real HR images against fresh SR outputs, detached ---
            d_logs: dict[str, float] = {}
            for _ in range(d_steps):
                lr, real = map(to_net, next(pairs))
                with autocast(device, config.bf16):
                    with torch.no_grad():
                        fake = net_g(lr)
                    d_loss, d_logs = discriminator_loss(train_d, real, fake)
                update(opt_d, d_loss)
            step += 1
            books.step(step, {**g_logs, **d_logs}, items=(d_steps + 1) * config.batch_size)
        return books.finish(step, interrupted())
