"""`fit()`: train the High-to-Low GAN on two unpaired folders (paper sections 3.5-3.6)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from degrader import dist, texture
from degrader.checkpoint import DEGRADER_FILE, Degrader, noise_from_seeds
from degrader.device import accelerate, autocast, resolve_device
from degrader.errors import UserError
from degrader.files import check_out_dir, check_out_outside, list_digest, write_json
from degrader.gan import Ema, LossConfig, adam, chain_loss, discriminator_loss, generator_loss, set_lr, update
from degrader.grids import numbered
from degrader.images import CACHE_MB, Scan, first_readable, save_grid, scan_images, shuffled
from degrader.model import HighToLowConfig, HighToLowGenerator
from degrader.nets import Discriminator
from degrader.presets import PRESETS
from degrader.progress import Progress
from degrader.run import (
    INPUTS_FILE,
    Bookkeeping,
    RunResult,
    check_inputs,
    config_dict,
    deferred_interrupt,
    grid_images,
    load_state,
    open_run,
    save_state,
    unpaired_batches,
    write_skipped,
)
from degrader.structured import StructuredConfig, StructuredGenerator
from degrader.texture import measure_texture
from degrader.tone import (
    IMAGES,
    BlockGrid,
    ColourMap,
    NoiseFloor,
    ToneMap,
    measure_blocks,
    measure_colour,
    measure_noise,
    measure_tone,
)
from degrader.validation import Validation, ValidationSet, split_validation

SAMPLE_SEEDS = (0, 1, 2, 3)  # noise seeds of the sample grid's G(HR, z) rows
JPEG_FLOOR = 95.0  # the JPEG quality `loss.jpeg` holds where the real LR shows no block grid (the chain's start)
GENERATORS = ("paper", "structured")


@dataclass
class FitConfig:
    hr: str  # folder of clean HR images (scanned recursively)
    lr: str  # folder of real low-quality images, unpaired with `hr`
    out: str  # run directory: config, checkpoints, log, sample grids
    hr_prep: str = "resize"  # "resize": shorter side to hr_size + centre crop (face crops); "crop": random crops
    lr_prep: str = "resize"  # same for the LR folder; "crop" keeps the real noise of large LR photos intact
    lr_frame: float = 1.0  # "resize": centre fraction of each LR image kept, < 1 to match the HR set's framing
    preset: str = "small"  # "small" (2 CPU cores) or "paper" (the authors'); see degrader.presets.PRESETS
    hr_size: int = 64  # HR crop size; LR size is hr_size // scale
    scale: int = 4  # downscaling factor the degrader learns
    residual: bool | None = None  # paper generator: a residual over avg-pooled HR; None takes the preset's choice
    generator: str | None = None  # "paper" (the authors' network) or "structured"; None: the preset's
    sharpen: float | None = None  # structured: strongest unsharp mask it may learn (0: no such step); None: preset's
    steps: int = 2000  # generator updates
    batch_size: int = 16
    loss: LossConfig | None = None  # alpha, beta, Adam, D steps per G step, stabilisers; None: the preset's
    d_patch: int = 0  # 0: the paper's discriminator; N > 0: a patch discriminator of N blocks
    seed: int = 0  # fixes initialisation, data order, augmentation and noise
    threads: int | None = None  # torch CPU threads; None: degrader.threads' policy, as the CLI (in config.json)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    bf16: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False  # networks in channels_last memory format (faster convolutions on CUDA)
    compile: bool = False  # torch.compile the networks (first steps slower while compiling)
    cache_mb: float = CACHE_MB  # decoded-image cache per DataLoader worker (per folder), MiB; 0: none
    workers: int = 2  # DataLoader worker processes per folder
    log_every: int = 10  # steps between log lines (losses averaged over them)
    sample_every: int = 250  # steps between sample grids
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    val_lr: str | None = None  # folder of real LR images for validation; None: hold out part of `lr` (val_split)
    val_split: float = 0.1  # share of `lr` held out for validation (at most 2 x val_n images); 0: no validation
    val_n: int = 128  # images per set in validation: HR degraded, and each half of the held-out real LR
    eval_every: int = 100  # steps between validations (and the last step); the best is kept as best.safetensors
    select: str = "mix"  # what ranks validation steps: "mix" (SWD and image statistics; steadier SR) or "swd"
    min_fidelity: float = 24.0  # dB PSNR-Y against bicubic LR: a step above it beats any below; 0 off (docs/results.md)
    resume: bool = False  # continue the run in `out` from its last checkpoint
    overwrite: bool = False  # replace whatever `out` holds

    BEFORE: ClassVar[dict[str, Any]] = {"sharpen": 0.0}  # what a run written before a setting existed had (--resume)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):  # from a config.json
            self.loss = LossConfig(**self.loss)
        if self.preset in PRESETS:  # an unknown preset is plan_fit's to report
            preset = PRESETS[self.preset]
            self.generator = self.generator or preset.generator
            self.sharpen = preset.sharpen if self.sharpen is None else self.sharpen
            self.loss = self.loss or dataclasses.replace(preset.loss)

    def model(self) -> HighToLowConfig | StructuredConfig:
        preset = PRESETS[self.preset].network()
        if self.generator == "structured":
            return StructuredConfig(
                hr_size=self.hr_size,
                scale=self.scale,
                d_width=preset["d_width"],
                d_patch=self.d_patch,
                sharpen_max=self.sharpen or 0.0,
            )
        if self.residual is not None:
            preset["residual"] = self.residual
        return HighToLowConfig(hr_size=self.hr_size, scale=self.scale, d_patch=self.d_patch, **preset)


def build_generator(model: HighToLowConfig | StructuredConfig) -> HighToLowGenerator | StructuredGenerator:
    """The generator a model config describes."""
    if isinstance(model, StructuredConfig):
        return StructuredGenerator(model)
    return HighToLowGenerator(model)


@dataclass(frozen=True)
class FitPlan:
    """Everything `fit` runs from, checked before anything is written (also the answer to --dry-run)."""

    config: FitConfig
    model: HighToLowConfig | StructuredConfig
    hr: Scan
    lr: Scan
    device: torch.device
    params_g: int
    params_d: int
    validation: ValidationSet | None = None  # the held-out images validation scores on; None: no validation
    validation_note: str = ""  # one line on the validation set, or why there is none
    tone: ToneMap | None = None  # the LR set's tone map for `loss.tone = "auto"` (also in config.loss.tone_map)
    colour: ColourMap | None = None  # its colour map, for tone "auto" with `loss.colour` (config.loss.colour_map)
    noise: NoiseFloor | None = None  # the noise the real LR shows, for `loss.noise` (config.loss.noise_allowed)
    blocks: BlockGrid | None = None  # whether it shows JPEG's block grid, for `loss.jpeg` (config.loss.jpeg_floor)


@dataclass
class FitResult(RunResult):
    validation: dict | None = None  # the best validation result (`degrader.validation.summarize`), if any ran


def plan_fit(config: FitConfig) -> FitPlan:
    """Check the config, scan both folders and size the networks, without writing anything.

    Raises:
        UserError: a folder is missing or holds no usable image, or an option is out of range.
    """
    if config.preset not in PRESETS:
        raise UserError(f"--preset {config.preset!r} is not one of {', '.join(PRESETS)}.")
    if config.generator not in GENERATORS:
        raise UserError(f"generator {config.generator!r} is not one of {', '.join(GENERATORS)}.")
    if config.sharpen is not None and not 0 <= config.sharpen <= 10:
        raise UserError(f"sharpen is {config.sharpen}; give the strongest unsharp-mask amount in [0, 10] (0: none).")
    try:
        model = config.model()
        net_g, net_d = build_generator(model), Discriminator(model.discriminator())
    except ValueError as e:
        raise UserError(f"hr_size/--scale: {e}.") from None
    check_out_outside(config.out, {"--hr": config.hr, "--lr": config.lr, "--val-lr": config.val_lr})
    hr = scan_images(config.hr, min_size=model.hr_size, option="--hr")
    lr = scan_images(config.lr, min_size=model.lr_size, option="--lr")
    if not 0 <= config.val_split < 1 or config.val_n < 8 or config.eval_every < 1:
        raise UserError("val_split must lie in [0, 1), val_n be at least 8 and eval_every at least 1.")
    if config.select not in ("swd", "mix"):
        raise UserError(f"select is {config.select!r}; use swd or mix.")
    if config.min_fidelity < 0:
        raise UserError(f"min_fidelity is {config.min_fidelity}; give 0 (off) or a PSNR in dB, e.g. 24.")
    if not 0.2 <= config.lr_frame <= 1:
        raise UserError(f"lr_frame is {config.lr_frame}; give the centre fraction of each LR image kept, in [0.2, 1].")
    hr, lr, validation, note = split_validation(config, hr, lr, model.lr_size)  # held-out images leave training
    tone = colour = floor = grid = None
    structured = config.generator == "structured"  # the paper's network has no noise level or JPEG quality
    noise, jpeg = config.loss.noise > 0 and structured, config.loss.jpeg > 0 and structured
    if config.loss.tone == "auto" or noise or jpeg:  # measured again on --resume, the same: same images and draws
        sets = tone_sets(config, model, hr, lr)
        maps = {}
        if config.loss.tone == "auto":
            tone = measure_tone(*sets, model.scale)
            colour = measure_colour(*sets, model.scale) if config.loss.colour > 0 and not tone.warning else None
            maps = {"tone_map": (tone.gain, tone.offset)} | ({"colour_map": colour.parts} if colour else {})
        if noise:
            floor = measure_noise(*sets, model.scale)
            maps["noise_allowed"] = round(floor.excess, 6)
        if jpeg:
            grid = measure_blocks(*sets, model.scale)
            maps["jpeg_floor"] = 0.0 if grid.shown else JPEG_FLOOR
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, **maps))
    if config.loss.texture > 0:  # likewise the real LR's texture quantiles, the same again on --resume
        sample = training_sample(lr, texture.IMAGES, model.lr_size, config.lr_prep, "texture", config.lr_frame)
        target = measure_texture(sample)
        config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, texture_target=target))
    dist.init()  # under torchrun: join the process group (and take this rank's GPU)
    device = resolve_device(config.device)
    dist.check_batch(config.batch_size)
    check_out_dir(config.out, resume=config.resume, overwrite=config.overwrite)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    params = count(net_g), count(net_d)
    return FitPlan(config, model, hr, lr, device, *params, validation, note, tone, colour, floor, grid)


def tone_sets(
    config: FitConfig, model: HighToLowConfig | StructuredConfig, hr: Scan, lr: Scan
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `tone.IMAGES` images of each training set for `degrader.tone`'s measurements, drawn independently of
    the seed: the maps describe the data, not the run."""
    rng = torch.Generator().manual_seed(0)  # random crops, for prep "crop"
    sets = []
    for scan, size, prep, frame in (
        (hr, model.hr_size, config.hr_prep, 1.0),
        (lr, model.lr_size, config.lr_prep, config.lr_frame),
    ):
        subset = dataclasses.replace(scan, paths=shuffled(scan.paths, 0, "tone"))
        sets.append(torch.stack(first_readable(subset, IMAGES, size, prep, rng, frame)))
    return sets[0], sets[1]


def input_images(plan: FitPlan) -> dict[str, dict[str, str]]:
    """The training folders and the digests of their image lists (`files.list_digest`), as INPUTS_FILE holds them."""
    return {
        k: {"folder": str(s.root), "images": list_digest(s.root, s.paths)}
        for k, s in (("hr", plan.hr), ("lr", plan.lr))
    }


def training_sample(scan: Scan, n: int, size: int, prep: str, tag: str, frame: float = 1.0) -> torch.Tensor:
    """Up to n readable images of a training set (N, 3, size, size), in an order fixed by `tag`, not the seed."""
    rng = torch.Generator().manual_seed(0)  # random crops, for prep "crop"
    subset = dataclasses.replace(scan, paths=shuffled(scan.paths, 0, tag))
    return torch.stack(first_readable(subset, n, size, prep, rng, frame))


def fit(plan: FitPlan, on_progress: Progress | None = None) -> FitResult:
    """Train a High-to-Low degrader; writes checkpoints, log and sample grids to `plan.config.out`.

    Args:
        plan: the result of `plan_fit(config)`.
        on_progress: called after every step as `on_progress(step, total_steps, losses)`.

    Returns:
        Where the run is, how far it got, and its last losses. Load the degrader with `Degrader.load(out)`.
    """
    config, model, device = plan.config, plan.model, plan.device
    out = Path(config.out)
    images = input_images(plan)
    check_inputs(out, images, config.resume)  # first: a changed folder also changes the tone map, a setting
    resuming = open_run(out, config_dict(config), resume=config.resume, overwrite=config.overwrite)
    if dist.is_main():
        write_json(out / INPUTS_FILE, images)
    write_skipped(out, {"--hr": plan.hr.skipped, "--lr": plan.lr.skipped})

    # --- networks, optimizers, EMA of G ---
    loss = config.loss
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        net_g = accelerate(build_generator(model).to(device), config)  # channels_last, compile
        eager_d = dataclasses.replace(config, compile=False)  # R1's double backward: torch.compile has none
        net_d = accelerate(Discriminator(model.discriminator()).to(device), config if loss.r1 == 0 else eager_d)
    net_g = dist.sync_batchnorm(net_g, device)  # several GPUs: BN statistics of the global batch
    opt_g, opt_d = adam(net_g, loss), adam(net_d, loss, discriminator=True)
    ema = Ema(net_g, loss.ema) if loss.ema > 0 else None
    exported = ema.module if ema else net_g  # what checkpoints, samples and validation see
    z_rng = torch.Generator().manual_seed(config.seed)  # fresh z for every sample, drawn on the CPU
    aug_rng = torch.Generator().manual_seed(config.seed + 2)  # DiffAugment's draws
    val = None  # held-out realism every eval_every steps; its best weights travel in the state for resume
    if plan.validation is not None:
        val = Validation(out, plan.validation, model, config, build_generator(model).to(device))
    extra = ({"best_g": val.best_net} if val else {}) | ({"ema_g": ema.module} if ema else {})
    rngs = {"z": z_rng, "aug": aug_rng}
    state = ({"net_g": net_g, "net_d": net_d, **extra}, {"opt_g": opt_g, "opt_d": opt_d}, rngs)
    step = load_state(out, *state) if resuming else 0
    if ema:
        ema.updates = step  # the decay's ramp continues where it stopped
    if val and resuming:
        val.restore()
    train_g, train_d = dist.wrap(net_g, device), dist.wrap(net_d, device)  # DDP under torchrun, for backward

    # --- data: each step takes d_steps + 1 HR batches and d_steps real LR batches ---
    b, k = config.batch_size, config.loss.d_steps
    hr_batches, lr_batches = unpaired_batches(config, plan.hr, plan.lr, model.hr_size, model.lr_size, step)
    grid_hr, grid_lr = grid_images(config, plan.hr, plan.lr, model.hr_size, model.lr_size)

    def to_net(x: torch.Tensor) -> torch.Tensor:
        return x.to(device) * 2 - 1  # [0, 1] -> [-1, 1]

    def noise() -> torch.Tensor:
        return dist.part(torch.randn(b, model.z_dim, generator=z_rng)).to(device)  # this rank's rows of z

    def checkpoint(step: int) -> None:
        Degrader(exported, name=out.name, step=step).save(out / DEGRADER_FILE)
        save_state(out, step, *state)
        net_g.train()

    books = Bookkeeping(
        out,
        config,
        "hr_per_s",
        val.progress(on_progress) if val else on_progress,
        lambda path: write_samples(path, exported, grid_hr, grid_lr, device),
        checkpoint,
    )
    with deferred_interrupt() as interrupted:
        while step < config.steps and not interrupted():
            set_lr(opt_g, opt_d, loss, step / config.steps)
            # --- G step, D frozen: pixel loss to avg-pooled HR + hinge loss (on augmented fakes) ---
            hr = to_net(next(hr_batches))  # (B, 3, H, H)
            with autocast(device, config.bf16):
                z = noise()
                fake = train_g(hr, z)  # (B, 3, H/s, H/s)
                g_loss, g_logs = generator_loss(fake, F.avg_pool2d(hr, model.scale), net_d, loss, aug_rng)
                held, held_logs = chain_loss(net_g, z, loss)  # no more noise and blocks than the real LR shows
                g_loss, g_logs = g_loss + held, g_logs | held_logs
            update(opt_g, g_loss)
            if ema:
                ema.update(net_g)

            # --- D steps: real LR images against fresh fakes, detached (both augmented alike; R1 on real) ---
            for _ in range(k):
                hr, real = to_net(next(hr_batches)), to_net(next(lr_batches))
                with autocast(device, config.bf16):
                    with torch.no_grad():
                        fake = net_g(hr, noise())
                    d_loss, d_logs = discriminator_loss(train_d, real, fake, loss, aug_rng)
                update(opt_d, d_loss)
            step += 1
            if val:
                val(step, exported)  # before this step's checkpoint, so that the state holds the best weights
            books.step(step, {**g_logs, **d_logs}, items=(k + 1) * b)
        best_grid = out / "samples" / f"step-{val.best_step:06d}.png" if val and val.best_step else None
        if best_grid and dist.is_main() and not best_grid.exists():  # the weights Degrader.load uses, in report.html
            write_samples(best_grid, val.best_net, grid_hr, grid_lr, device)
        result = books.finish(step, interrupted())
    return FitResult(**vars(result), validation=val.summary() if val else None)


@torch.no_grad()
def write_samples(
    path: Path, net_g: HighToLowGenerator | StructuredGenerator, hr: torch.Tensor, real_lr: torch.Tensor, device
) -> None:
    """Rows: HR, bicubic-downscaled HR, G(HR, z) for several z, then real LR images for comparison."""
    path.parent.mkdir(exist_ok=True)
    s, n = net_g.config.scale, hr.shape[0]
    bicubic = F.interpolate(hr, scale_factor=1 / s, mode="bicubic", antialias=True).clamp(0, 1)  # (n, 3, H/s, H/s)
    training = net_g.training  # the EMA copy stays in eval mode, the trained network goes back to train mode
    net_g.eval()
    fakes = [
        (net_g(hr.to(device) * 2 - 1, noise_from_seeds([seed] * n, net_g.config.z_dim).to(device)).cpu() + 1) / 2
        for seed in SAMPLE_SEEDS
    ]
    net_g.train(training)
    labels = ["HR", f"bicubic /{s}", *[f"G(HR, z seed {seed})" for seed in SAMPLE_SEEDS], "real LR (unpaired)"]
    save_grid([hr, bicubic, *[f.clamp(0, 1) for f in fakes], real_lr], path, row_labels=labels, col_labels=numbered(n))
