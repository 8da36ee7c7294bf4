"""`plan_export`: an export's options checked and its work counted, before anything is written.

`ExportConfig` holds the options of `degrade export-shards`; `plan_export` checks them, loads the degrader,
scans the HR folder and returns a frozen `ExportPlan` that `degrader.export.export_shards` runs (and the CLI
prints on `--dry-run`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from degrader import dist
from degrader.checkpoint import DegraderLike, load_degrader
from degrader.crops import grid_boxes
from degrader.errors import UserError
from degrader.files import check_out_dir, check_out_outside
from degrader.images import Scan, scan_images
from degrader.shards import PNG_LEVEL

CROPS = ("center", "random", "grid")
RUN_ONLY = ("out", "workers", "batch_size", "device", "resume", "overwrite")  # never change the output bytes


@dataclass
class ExportConfig:
    degrader: str = "bicubic"  # `degrade fit` run dir or .safetensors, or a `classical.CLASSICAL` name (bicubic...)
    hr: str = ""  # folder of HR images, searched recursively
    out: str = ""  # output folder for shard-NNNNNN.tar and manifest.json
    per_image: int = 1  # K: LR variants per HR crop, each with its own seed
    seed: int = 0  # S: the seed of variant k of a crop is sample_seed(S, crop id, k)
    samples_per_shard: int = 1000  # samples per tar file (the last one may hold fewer)
    crop: str = "center"  # center: resize + centre crop as `degrade fit` does; random: one seeded native-res
    #                       crop per image; grid: every non-overlapping hr_size crop (large non-face images)
    crops_per_image: int = 1  # random: seeded crops per image, all cut from one decode (large photos)
    hr_size: int | None = None  # HR crop side; None takes the learned degrader's (64 for classical ones)
    scale: int | None = None  # classical degraders only (default 4); a learned degrader has its own
    png_level: int = PNG_LEVEL  # zlib level of the HR and LR PNGs, 0 (stored: fastest, largest) to 9; lossless
    workers: int = 2  # loader processes (decode, crop, HR PNG) and as many shard writers (LR PNG, tar, sha256); 0: none
    batch_size: int = 32  # crops per degrader call
    device: str = "auto"  # where a learned degrader runs: auto (CUDA if available), cpu or cuda
    resume: bool = False  # continue an interrupted export in `out`
    overwrite: bool = False  # clear a non-empty `out` first


@dataclass(frozen=True)
class ExportPlan:
    """What `export_shards` will do, checked before anything is written (also the answer to --dry-run)."""

    config: ExportConfig
    degrader: DegraderLike
    scan: Scan  # the HR images
    recorded: dict[str, Any]  # the options that fix the output bytes, as the manifest records them
    crops: int  # HR crops in all
    samples: int  # pairs to write: crops x per_image
    shards: int  # tar files to write


def plan_export(config: ExportConfig) -> ExportPlan:
    """Check the options and count the work without writing anything (what `--dry-run` shows).

    Raises:
        UserError: bad option, missing HR folder, unknown degrader, no usable image.
    """
    if not config.hr or not config.out:
        raise UserError("--hr and --out are required: the HR image folder and the folder to write shards to.")
    check_out_outside(config.out, {"--hr": config.hr})
    if config.crop not in CROPS:
        raise UserError(f"--crop {config.crop!r} is not one of {', '.join(CROPS)}.")
    for name in ("per_image", "samples_per_shard", "batch_size", "crops_per_image"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1.")
    if not 0 <= config.png_level <= 9:
        raise UserError(f"png_level {config.png_level}: a zlib level is 0 (stored) to 9.")
    if config.crops_per_image > 1 and config.crop != "random":
        raise UserError(f"--crops-per-image is for --crop random; --crop {config.crop} takes its crops itself.")
    check_out_dir(config.out, resume=config.resume, overwrite=config.overwrite)
    dist.init()  # under torchrun: join the process group (and take this rank's GPU)
    degrader = load_degrader(config.degrader, config.scale, config.device)
    size = config.hr_size or degrader.hr_size or 64
    if degrader.hr_size is not None and size != degrader.hr_size:
        raise UserError(f"--hr-size {size}: this degrader takes {degrader.hr_size} px HR crops; leave --hr-size out.")
    if size % degrader.scale:
        raise UserError(f"--hr-size {size} is not divisible by the scale {degrader.scale}.")
    scan = scan_images(config.hr, min_size=size, option="--hr")
    if config.crop == "grid":

        def count(path: Path) -> int:
            with Image.open(path) as im:  # header only
                return len(grid_boxes(*im.size, size))

        crops = sum(count(p) for p in scan.paths)
    else:
        crops = len(scan.paths) * config.crops_per_image
    samples = crops * config.per_image
    recorded = {k: v for k, v in asdict(config).items() if k not in RUN_ONLY}
    if config.crops_per_image == 1:  # as manifests recorded before the option, so their exports still resume
        del recorded["crops_per_image"]
    if config.png_level == PNG_LEVEL:  # likewise: the default's manifest is the one recorded before the option
        del recorded["png_level"]
    recorded.update(hr=str(Path(config.hr).resolve()), hr_size=size, scale=degrader.scale)
    return ExportPlan(config, degrader, scan, recorded, crops, samples, -(-samples // config.samples_per_shard))
