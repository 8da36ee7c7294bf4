"""City100 iPhone X: does SR trained on a learned degrader's shards beat bicubic-trained SR on a real camera?

    python benchmarks/bench_camera.py --city100 DIR [--cache ~/.cache/degrader/city100] [--scale 4] [--device auto]

DIR is CameraSR's `City100/City100_iPhoneX` folder (github.com/ngchc/CameraSR): 100 aligned scenes, `001H.PNG`
(the HR shot) and `001L.PNG` (the same scene at the short focal length, aligned and stored at HR size). The
data stays outside the repository; without `--city100` (or when the folder is missing) the script says so
and exits 0. The split is by scene (issue 25), built once into `--cache`:
  hr/        HR of scenes 1-40                        (the clean set `fit` and every export see)
  lr/        real LR of scenes 41-80: the aligned LR area-downscaled x scale (unpaired with hr/)
  test-hr/, test-lr/   pairs of scenes 81-100, built the same way
  true-lr/   scenes 1-40's own aligned LR at HR size: the "true" degrader cuts and area-downscales its crops
Then: `fit` with `--hr-prep crop --lr-prep crop`; shards of the grid crops of hr/ from bicubic,
blur-bilinear, the learned degrader and the true pairs; the same SR model (`--pixel-only`) on each; PSNR/SSIM
in RGB and Y on the test pairs (`sr.evaluate`, i.e. `sr.metrics`), and the learned white-balance gains (R/G,
B/G over 512 seeds) beside the gains measured between each real LR of scenes 41-80 and its aligned HR.
Everything a step writes is kept in the cache and reused by a rerun (delete a folder to redo that step).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader.crops import grid_boxes  # noqa: E402
from degrader.images import load_rgb, to_tensor  # noqa: E402

DEGRADERS = ("bicubic", "blur-bilinear", "realesrgan", "bsrgan", "learned", "true")
SPLIT = (40, 80)  # scenes 1..40 HR, 41..80 real LR, 81.. test pairs
SPLIT_FILE = "split.json"


def scene_files(city100: Path) -> dict[int, tuple[Path, Path]]:
    """Scene number -> (HR, aligned LR), from City100's `NNNH.PNG` / `NNNL.PNG` names (any case)."""
    found: dict[int, dict[str, Path]] = {}
    for p in city100.iterdir():
        stem = p.stem.upper()
        if p.suffix.lower() == ".png" and len(stem) == 4 and stem[:3].isdigit() and stem[3] in "HL":
            found.setdefault(int(stem[:3]), {})[stem[3]] = p
    return {n: (v["H"], v["L"]) for n, v in sorted(found.items()) if len(v) == 2}


def mod_crop(img: Image.Image, scale: int) -> Image.Image:
    return img.crop((0, 0, img.width - img.width % scale, img.height - img.height % scale))


def area_down(img: Image.Image, scale: int) -> Image.Image:
    """Downscale by averaging scale x scale blocks (area), as a real sensor of 1/scale the pixels would."""
    return mod_crop(img, scale).reduce(scale)


def channel_gains(lr: Image.Image, hr: Image.Image) -> list[float]:
    """Per-channel ratio of mean LR to mean HR: the white balance the LR camera applies to the HR's scene."""
    a = np.asarray(lr, dtype=np.float64).reshape(-1, 3).mean(0)
    b = np.asarray(hr, dtype=np.float64).reshape(-1, 3).mean(0)
    return (a / np.maximum(b, 1e-6)).tolist()


def build_split(city100: Path, cache: Path, scale: int, split: tuple[int, int] = SPLIT) -> dict:
    """Write the split's folders into `cache` (once per scale and split) and return its record (`SPLIT_FILE`)."""
    scenes, (a, b) = scene_files(city100), split
    record = {"city100": str(city100.resolve()), "scale": scale, "split": list(split), "scenes": sorted(scenes)}
    done = cache / SPLIT_FILE
    if done.exists() and {k: v for k, v in json.loads(done.read_text()).items() if k != "gains"} == record:
        return json.loads(done.read_text())
    for name in ("hr", "lr", "test-hr", "test-lr", "true-lr"):
        (cache / name).mkdir(parents=True, exist_ok=True)
    gains = []
    for n, (hr_path, lr_path) in scenes.items():
        hr, lr, name = mod_crop(load_rgb(hr_path), scale), mod_crop(load_rgb(lr_path), scale), f"{n:03d}.png"
        if n <= a:
            hr.save(cache / "hr" / name)
            lr.save(cache / "true-lr" / name)  # full size: crops are cut at the HR crop's box, then downscaled
        elif n <= b:
            area_down(lr, scale).save(cache / "lr" / name)
            gains.append(channel_gains(lr, hr))
        else:
            hr.save(cache / "test-hr" / name)
            area_down(lr, scale).save(cache / "test-lr" / name)
    record["gains"] = gains
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(done)  # written last: a split.json means the folders are complete
    return record


def _key(crop: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(crop).tobytes(), digest_size=16).digest()


class TrueDegrader:
    """The camera's own LR for each grid crop of hr/: the aligned LR cut at the crop's box and area-downscaled.

    `export_shards` hands a degrader only pixels, so the crop is found by its pixels (exact: both come from
    the same PNG). Meant for `--crop grid` exports of `hr_dir` at `size`.
    """

    name, sha256 = "true-pairs", ""

    def __init__(self, hr_dir: Path, lr_dir: Path, size: int, scale: int):
        self.scale, self.hr_size, self.table = scale, size, {}
        for p in sorted(hr_dir.glob("*.png")):
            hr, lr = np.asarray(load_rgb(p)), load_rgb(lr_dir / p.name)
            for top, left in grid_boxes(hr.shape[1], hr.shape[0], size):
                box = (left, top, left + size, top + size)
                self.table[_key(hr[top : top + size, left : left + size])] = to_tensor(lr.crop(box).reduce(scale))

    def degrade(self, hr: torch.Tensor, seeds) -> torch.Tensor:
        crops = hr.detach().cpu().permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).numpy()  # (B, H, W, 3)
        return torch.stack([self.table[_key(c)] for c in crops])


def effective_gains(degrader, hr_dir: Path, scale: int, seeds: int = 4) -> list[list[float]]:
    """`channel_gains` of a degrader's LR against its own HR photo: what it does to each photo's colour (whatever
    mix of gains, offsets and saturation does it), `seeds` draws per photo."""
    gains = []
    for i, path in enumerate(sorted(hr_dir.iterdir())):
        hr = mod_crop(Image.open(path).convert("RGB"), scale)
        x = to_tensor(hr)[None].expand(seeds, -1, -1, -1)  # (seeds, 3, H, W)
        with torch.no_grad():
            lr = degrader.degrade(x, [1000 * i + k for k in range(seeds)])  # (seeds, 3, H/scale, W/scale)
        for image in lr:
            pixels = image.permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
            gains.append(channel_gains(Image.fromarray(pixels), hr))
    return gains


def white_balance(gains: list[list[float]]) -> dict[str, tuple[float, float, float]]:
    """R/G and B/G of per-image gains: (10th percentile, median, 90th percentile)."""
    out = {}
    for name, c in (("R/G", 0), ("B/G", 2)):
        ratios = sorted(g[c] / g[1] for g in gains)
        q = statistics.quantiles(ratios, n=10) if len(ratios) > 1 else ratios * 9
        out[name] = (q[0], statistics.median(ratios), q[-1])
    return out


def learned_gains(degrader, seeds: int = 512) -> list[list[float]] | None:
    """The white-balance gains a structured degrader draws for seeds 0..n-1; None for the paper's network."""
    from degrader.checkpoint import noise_from_seeds

    net = degrader.net_g
    if not hasattr(net, "params"):
        return None
    with torch.no_grad():
        return net.params(noise_from_seeds(range(seeds), net.config.z_dim))["gains"].tolist()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--city100", type=Path, help="the City100_iPhoneX folder (001H.PNG, 001L.PNG, ...)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "degrader" / "city100")
    p.add_argument("--scale", type=int, default=4, choices=(2, 4))
    p.add_argument("--split", type=int, nargs=2, default=SPLIT, help="last HR scene, last real-LR scene")
    p.add_argument("--fit-steps", type=int, default=1500)
    p.add_argument("--sr-steps", type=int, default=1500)
    p.add_argument("--hr-size", type=int, default=64, help="HR crop of the fit, the shards and SR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--degraders", nargs="+", default=list(DEGRADERS), choices=DEGRADERS)
    p.add_argument("--split-only", action="store_true", help="build the split and stop")
    p.add_argument("--fit-set", action="append", default=[], metavar="KEY=VALUE", help="a fit setting, as --set")
    p.add_argument("--tag", default="", help="names the fit and its learned rows (e.g. a --fit-set variant)")
    p.add_argument("--lr-dir", type=Path, help="the real LR folder of the fit (default: the split's lr/)")
    args = p.parse_args()
    if args.city100 is None:
        print("skipped: no --city100 given (City100_iPhoneX from github.com/ngchc/CameraSR)")
        return 0
    if not args.city100.is_dir() or not scene_files(args.city100):
        where = f"--city100 {args.city100} holds no NNNH.PNG/NNNL.PNG pairs"
        where = f"--city100 {args.city100} is not a folder" if not args.city100.is_dir() else where
        print(f"skipped: {where} (City100_iPhoneX from github.com/ngchc/CameraSR)")
        return 0

    cache = args.cache / f"x{args.scale}"
    record = build_split(args.city100, cache, args.scale, tuple(args.split))
    print(f"split in {cache}: {len(record['scenes'])} scenes, {len(record['gains'])} real-LR gains measured")
    if args.split_only:
        return 0

    import dataclasses

    from degrader.checkpoint import Degrader
    from degrader.config_io import build, merge, parse_sets
    from degrader.export import ExportConfig, export_shards, plan_export
    from degrader.presets import PRESETS
    from degrader.train import FitConfig, fit, plan_fit
    from sr.evaluate import evaluate_pairs
    from sr.train import SRTrainConfig, plan_train, train

    tag = f"s{args.seed}"
    fit_tag = f"{args.tag}-{tag}" if args.tag else tag
    run = cache / "runs" / f"degrader-{fit_tag}"
    if "learned" in args.degraders and not (run / "degrader.safetensors").exists():
        config = FitConfig(
            hr=str(cache / "hr"), lr=str(args.lr_dir or cache / "lr"), out=str(run), hr_prep="crop", lr_prep="crop",
            hr_size=args.hr_size, scale=args.scale, steps=args.fit_steps, seed=args.seed, device=args.device,
            overwrite=True,
        )  # fmt: skip
        if args.fit_set:  # as `degrade fit --set`: the preset's settings, then these
            layers = merge(dataclasses.asdict(config), PRESETS["small"].training(), parse_sets(args.fit_set))
            config = build(FitConfig, {k: v for k, v in layers.items() if v is not None})
        plan = plan_fit(config)
        print(plan.validation_note)
        if plan.colour:
            print(f"colour map: {plan.colour.describe()}")
        if plan.noise:
            print(f"noise allowed: {plan.noise.describe()}")
        if plan.blocks:
            print(f"JPEG allowed: {plan.blocks.describe()}")
        result = fit(plan)
        from degrader.validation import verdict

        print(verdict(result.validation)[1])

    rows = {"bicubic upscaling": {}}  # filled from any evaluation: each scores bicubic upscaling too
    for name in args.degraders:
        own = fit_tag if name == "learned" else tag
        shards, sr_run = cache / "shards" / f"{name}-{own}", cache / "runs" / f"sr-{name}-{own}-{args.sr_steps}"
        if not (shards / "manifest.json").exists():
            spec = str(run) if name == "learned" else "bicubic" if name == "true" else name
            sizes = {} if name == "learned" else {"hr_size": args.hr_size, "scale": args.scale}
            config = ExportConfig(spec, str(cache / "hr"), str(shards), crop="grid", seed=args.seed, overwrite=True)
            plan = plan_export(replace(config, device=args.device, **sizes))
            if name == "true":
                true = TrueDegrader(cache / "hr", cache / "true-lr", args.hr_size, args.scale)
                plan = replace(plan, degrader=true, recorded={**plan.recorded, "degrader": true.name})
            export_shards(plan)
        if not (sr_run / "sr.safetensors").exists():
            config = SRTrainConfig(
                str(sr_run), shards=str(shards), pixel_only=True, steps=args.sr_steps, seed=args.seed,
                device=args.device, overwrite=True,
            )  # fmt: skip
            train(plan_train(config))
        report = evaluate_pairs(sr_run, hr_dir=cache / "test-hr", lr_dir=cache / "test-lr", device=args.device)
        rows[name] = report.mean["model"]
        rows["bicubic upscaling"] = report.mean["bicubic"]
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return 0

    print(f"\nx{args.scale}, seed {args.seed}: SR ({args.sr_steps} steps, pixel loss) on each degrader's shards, "
          f"tested on scenes {args.split[1] + 1}-{max(record['scenes'])}")  # fmt: skip
    print(f"{'trained on':<20} {'PSNR':>7} {'SSIM':>7} {'PSNR-Y':>7} {'SSIM-Y':>7}")
    for name, m in rows.items():
        print(f"{name:<20} {m['psnr']:7.2f} {m['ssim']:7.4f} {m['psnr_y']:7.2f} {m['ssim_y']:7.4f}")
    degrader = Degrader.load(run) if "learned" in args.degraders else None
    learned = learned_gains(degrader) if degrader else None
    rows["white balance"] = {"real": white_balance(record["gains"])}
    sets = {"real LR vs its aligned HR": record["gains"], "learned (512 seeds)": learned}
    if learned:
        effective = effective_gains(degrader, cache / "hr", args.scale)
        rows["white balance"] |= {"learned": white_balance(learned), "learned, effective": white_balance(effective)}
        sets["learned LR vs its HR photo"] = effective
    results = cache / f"results-{fit_tag}-sr{args.sr_steps}.json"
    old = json.loads(results.read_text()) if results.exists() else {}
    results.write_text(json.dumps(old | rows, indent=1))  # rows of earlier runs with other --degraders stay
    print("\nwhite balance (10th percentile / median / 90th percentile)")
    for label, gains in sets.items():
        if not gains:
            print(f"{label:<28} (the paper's generator draws no gains)")
            continue
        wb = white_balance(gains)
        print(f"{label:<28} " + "  ".join(f"{k} {lo:.3f} / {mid:.3f} / {hi:.3f}" for k, (lo, mid, hi) in wb.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
