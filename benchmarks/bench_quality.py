"""A degradation benchmark with ground truth: does a learned degrader beat bicubic, and does its data help SR?

The "real" LR set is real HR faces degraded by `degrader.synthetic.camera_degrade` (blur, colour loss, noise,
JPEG; its parameters drawn per image), so the truth is known. The faces are split once into disjoint sets:

    hr     1,000 clean HR faces: the degrader's HR input, and the SR model's training images
    lr     1,000 other faces, camera-degraded: the unpaired "real" LR training set (300 of them for validation)
    test     993 other faces, camera-degraded: held-out real LR for realism, and the SR test pairs

Each variant (generator + GAN stabilisers) is fitted for `--seconds` (or `--max-steps`) per fit, keeping its
best checkpoint by validation as `degrade fit` does: by the SWD and image statistics together (`--select
val_mix`; `val_swd_rel` for the SWD alone), a checkpoint at or above `--min-fidelity` dB beating any below it.
Reported per variant and seed:

    syn_rel   SWD relative to bicubic on the held-out camera-degraded faces (1 = bicubic, 0 = real as real)
    syn_mix   the mean of that and the per-image statistics' relative figures (`RealismProbe`'s val_mix)
    syn_c2st  accuracy of a small classifier telling its LR from real (0.5: indistinguishable)
    syn_tex_c2st
              the same classifier shown only texture (grey x - box3x3(x): tone and colour out)
    web_rel   the same SWD figure for a second fit against the real web faces (`faces-lr-web`, held-out part)
    web_fine, web_coarse
              the relative SWD of the finest and of the coarsest pyramid level alone: the finest sees blur, noise
              and JPEG; the coarsest (8x8 at 16 px) the tone and layout of the faces: a degradation can change the
              tone, not the content where the HR faces and the web faces differ (people, pose, framing). The row
              `grey` (bicubic, then grey) measures how far plain downscaling gets, `grey-tone` how far it gets
              in the tone `--tone auto` measures on the web faces
    *_noblur  with --ablate-blur: the same web figures with the learned blur replaced by a delta (is the
              blur what the fit gets wrong?)
    *_fid     fidelity: PSNR-Y (dB) of the degrader's LR against bicubic LR of the same HR faces; whether the
              faces survive (the true camera process scores 29.9 dB here; a realism figure alone can be met by
              LR that has lost them)
    psnr      PSNR (Y, dB) on the test pairs of one small SR model trained `--sr-steps` pixel-only steps on
              pairs the degrader makes on the fly; the rows `bicubic` and `oracle` (true camera pairs) train the
              same model on bicubic and on the true process; closure = (psnr - bicubic) / (oracle - bicubic)
              (`bicubic` also scores its camera realism, syn_*: rel. SWD 1 by definition, C2ST and texture C2ST)
    realesrgan, bsrgan
              rows without a fit: the hand-made pipelines (`degrader.handmade`), scored as the learned rows
              (syn_*, web_*) and with SR on their pairs made on the fly (psnr, closure)

    OMP_NUM_THREADS=1 python benchmarks/bench_quality.py --out runs/bench-quality --seconds 60 --jobs 2 \
        --variants paper,structured,tuned-b1-hp1-ld0.5-ex100-tone --seeds 0,1,2

Everything is loaded into memory tensors once (`--data FILE` caches them as safetensors, so a machine without
the image folders can run it). Writes results.json, results.md and PNG grids to `--out`: grid-<variant>.png
(camera faces) and grid-web-<variant>.png (web faces); rows HR, bicubic, three seeds, then real LR.
`--compare-selection` also scores the checkpoint the other figure ranks best, from the same fits (`*_alt`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrader import texture  # noqa: E402
from degrader.checkpoint import Degrader, noise_from_seeds  # noqa: E402
from degrader.classical import HANDMADE, make_classical  # noqa: E402
from degrader.gan import (  # noqa: E402
    Ema,
    LossConfig,
    adam,
    chain_loss,
    discriminator_loss,
    generator_loss,
    luma,
    set_lr,
    update,
)
from degrader.images import load_rgb, prepare, save_grid, scan_images, to_tensor  # noqa: E402
from degrader.model import HighToLowConfig, HighToLowGenerator  # noqa: E402
from degrader.nets import Discriminator  # noqa: E402
from degrader.presets import PRESETS  # noqa: E402
from degrader.realism import RealismProbe, classifier_two_sample_test  # noqa: E402
from degrader.structured import StructuredConfig, StructuredGenerator  # noqa: E402
from degrader.synthetic import camera_degrade  # noqa: E402
from degrader.texture import measure_texture  # noqa: E402
from degrader.tone import ToneMap, measure_blocks, measure_colour, measure_noise, measure_tone  # noqa: E402
from degrader.train import JPEG_FLOOR  # noqa: E402
from sr.metrics import psnr  # noqa: E402
from sr.model import PRESETS as SR_PRESETS  # noqa: E402
from sr.model import LowToHighConfig, LowToHighGenerator  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = {"hr": 1000, "lr": 1000}  # the rest of faces-hr is the test split
VAL = 300  # of the "lr" split, held out of training for checkpoint selection
WEB_TEST = 1044  # of faces-lr-web, held out

# Each variant: the generator ("paper": the paper's network at the small width; "structured") and overrides of
# LossConfig and StructuredConfig. "paper" is the paper's losses and optimiser on that network.
STABLE = dict(augment="translation,colour", r1=1.0, lr_d=4e-4, d_steps=1, ema=0.99)
TUNED = {**STABLE, "pixel": "luma-lowpass"}
HP1 = {**TUNED, "beta": 1.0, "d_highpass": 1.0}
SMALL = {**HP1, "lr_decay": 0.5, "exposure": 100.0, "tone": "auto"}  # `degrade fit --preset small` before texture
VARIANTS: dict[str, dict] = {
    "s-init": dict(generator="structured", loss={}, max_steps=0),  # the start: light blur + area downscaling
    "paper": dict(generator="paper", loss={}),  # the paper's network (small width) and losses
    "paper-stable": dict(generator="paper", loss=STABLE),
    "structured": dict(generator="structured", loss={}),  # the paper's losses and optimiser
    "s-stable": dict(generator="structured", loss=STABLE),
    "tuned": dict(generator="structured", loss=TUNED),
    "tuned-noaug": dict(generator="structured", loss={**TUNED, "augment": ""}),
    "tuned-nor1": dict(generator="structured", loss={**TUNED, "r1": 0.0}),
    "tuned-noema": dict(generator="structured", loss={**TUNED, "ema": 0.0}),
    "tuned-d5": dict(generator="structured", loss={**TUNED, "d_steps": 5, "lr_d": None}),
    "tuned-rgb": dict(generator="structured", loss={**TUNED, "pixel": "rgb"}),
    "tuned-b0.2": dict(generator="structured", loss={**TUNED, "beta": 0.2}),
    "tuned-nores": dict(generator="structured", loss=TUNED, net=dict(residual_width=0)),
    "tuned-b0.5": dict(generator="structured", loss={**TUNED, "beta": 0.5}),
    "tuned-b1": dict(generator="structured", loss={**TUNED, "beta": 1.0}),  # `small` before --d-highpass
    # small + `--augment translation,colour,dihedral`: D also sees the images flipped and turned
    "tuned-b1-dih": dict(generator="structured", loss={**TUNED, "beta": 1.0, "augment": "translation,colour,dihedral"}),
    # D sees only the detail finer than a Gaussian of sigma 1 LR px, plus each image's mean colour (`--d-highpass 1`)
    "tuned-b1-hp1": dict(generator="structured", loss=HP1),
    # the previous `small`: also `--lr-decay 0.5`, both learning rates falling linearly to 0 over the
    # second half (CycleGAN's schedule); ld0.75: over the last three quarters
    "tuned-b1-hp1-ld0.5": dict(generator="structured", loss={**HP1, "lr_decay": 0.5}),
    "tuned-b1-hp1-ld0.75": dict(generator="structured", loss={**HP1, "lr_decay": 0.75}),
    # the previous `small` with the free-form residual allowed twice the change per pixel (0.2 of the range, not 0.1)
    "tuned-b1-hp1-ld0.5-r0.2": dict(generator="structured", loss={**HP1, "lr_decay": 0.5}, net=dict(residual_max=0.2)),
    # with `--exposure W`: each image's mean luma held to the HR's with weight W (100: `degrade fit --preset small`)
    "tuned-b1-hp1-ld0.5-ex10": dict(generator="structured", loss={**HP1, "lr_decay": 0.5, "exposure": 10.0}),
    "tuned-b1-hp1-ld0.5-ex100": dict(generator="structured", loss={**HP1, "lr_decay": 0.5, "exposure": 100.0}),
    # with `--tone auto`: those targets carried through the LR set's tone map, measured from the training sets
    "tuned-b1-hp1-ld0.5-ex100-tone": dict(
        generator="structured", loss={**HP1, "lr_decay": 0.5, "exposure": 100.0, "tone": "auto"}
    ),
    # `small` with the real LR's texture statistics as a target (`loss.texture`: weight of their W1 match)
    "small-tex1": dict(
        generator="structured", loss={**HP1, "lr_decay": 0.5, "exposure": 100.0, "tone": "auto", "texture": 1.0}
    ),
    "small-tex3": dict(
        generator="structured", loss={**HP1, "lr_decay": 0.5, "exposure": 100.0, "tone": "auto", "texture": 3.0}
    ),
    # `small` today: also each image's mean chroma held to the LR set's measured colour map (`loss.colour`)
    "small-colour": dict(generator="structured", loss={**SMALL, "colour": 100.0}),
    # and a camera's sharpening after the noise (an unsharp mask of amount up to 2: `--set sharpen=2`)
    "small-sharp": dict(generator="structured", loss={**SMALL, "colour": 100.0}, net=dict(sharpen_max=2.0)),
    # and the chain's noise held at or below what the real LR's flattest images show (`--set loss.noise=1`)
    "small-sharp-noise": dict(
        generator="structured", loss={**SMALL, "colour": 100.0, "noise": 1.0}, net=dict(sharpen_max=2.0)
    ),
    # and the JPEG quality held high where the real LR shows no block grid (`--set loss.jpeg=1`)
    "small-sharp-held": dict(
        generator="structured", loss={**SMALL, "colour": 100.0, "noise": 1.0, "jpeg": 1.0}, net=dict(sharpen_max=2.0)
    ),
    # the same with the sensor noise starting higher in its range (noise_init 0.3, not 0.05: a ~ 2e-5, b ~ 3e-6)
    "tuned-b1-hp1-ld0.5-ex100-tone-n0.3": dict(
        generator="structured",
        loss={**HP1, "lr_decay": 0.5, "exposure": 100.0, "tone": "auto"},
        net=dict(noise_init=0.3),
    ),
    "tuned-b0.5-hp1": dict(generator="structured", loss={**HP1, "beta": 0.5}),
    "tuned-b1-hp0.7": dict(generator="structured", loss={**HP1, "d_highpass": 0.7}),
    "tuned-b1-hp2": dict(generator="structured", loss={**HP1, "d_highpass": 2.0}),
    # a patch discriminator (`--d-patch 1`: D scores 7-px patches, not whole images; p2: 11-px patches)
    "tuned-b1-p1": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(d_patch=1)),
    "tuned-b1-p2": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(d_patch=2)),
    "tuned-b0.5-colour": dict(generator="structured", loss={**TUNED, "beta": 0.5, "augment": "colour"}),
    "tuned-b1-cutout": dict(generator="structured", loss={**TUNED, "beta": 1.0, "augment": "cutout,colour"}),
    "tuned-b1-translation": dict(generator="structured", loss={**TUNED, "beta": 1.0, "augment": "translation"}),
    "tuned-b1-colour": dict(generator="structured", loss={**TUNED, "beta": 1.0, "augment": "colour"}),
    "tuned-b0.2-colour": dict(generator="structured", loss={**TUNED, "beta": 0.2, "augment": "colour"}),
    "tuned-b1-q70": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(quality_init=70.0)),
    "tuned-b1-colour-noise": dict(
        generator="structured", loss={**TUNED, "beta": 1.0, "augment": "colour"}, net=dict(noise_init=0.3)
    ),
    "tuned-b1-s0.3": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(sigma_init=0.3)),
    "tuned-b1-h20": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(head_lr_mult=20.0)),
    "tuned-b1-noise": dict(generator="structured", loss={**TUNED, "beta": 1.0}, net=dict(noise_init=0.5)),
    "tuned-b0.2-h30": dict(generator="structured", loss={**TUNED, "beta": 0.2}, net=dict(head_lr_mult=30.0)),
}
REFERENCES = ("bicubic", "oracle", "grey", "grey-tone", *HANDMADE)  # rows without a fit: SR on bicubic and true
# pairs; web: grey bicubic, and grey bicubic in the web faces' measured tone; the hand-made pipelines: everything
SR_REFS = ("bicubic", "oracle")  # the ends of the SR gap; every other row with SR has a gap closed
OTHER = {"val_swd_rel": "val_mix", "val_mix": "val_swd_rel"}  # --compare-selection


# ------------------------------------------------------------------------------------------------ data


def load_data(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """All images as uint8 tensors, prepared once (and cached in `--data` when given)."""
    from safetensors.torch import load_file, save_file

    if args.data and Path(args.data).exists():
        return load_file(args.data)
    rng = random.Random(0)
    load = lambda folder, size: torch.stack(  # noqa: E731
        [to_tensor(prepare(load_rgb(p), size, "resize", rng)) for p in scan_images(folder).paths]
    )
    data = {"faces": (load(args.hr, 64) * 255).round().to(torch.uint8), "web": (load(args.lr, 16) * 255).round()}
    data["web"] = data["web"].to(torch.uint8)
    if args.data:
        Path(args.data).parent.mkdir(parents=True, exist_ok=True)
        save_file(data, args.data)
    return data


def _camera(hr: torch.Tensor, tag: str) -> torch.Tensor:
    """camera_degrade each uint8 (N, 3, 64, 64) image with its own parameters -> uint8 (N, 3, 16, 16)."""
    from PIL import Image

    out = []
    for i, img in enumerate(hr):
        lr = camera_degrade(Image.fromarray(img.permute(1, 2, 0).numpy()), 4, random.Random(f"{tag}:{i}"))
        out.append(torch.from_numpy(np.array(lr)).permute(2, 0, 1))
    return torch.stack(out)


def make_splits(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The benchmark's disjoint splits (uint8); a fixed shuffle and per-image seeds, so every run agrees."""
    faces = data["faces"][torch.randperm(len(data["faces"]), generator=torch.Generator().manual_seed(0))]
    web = data["web"][torch.randperm(len(data["web"]), generator=torch.Generator().manual_seed(1))]
    n_hr, n_lr = SPLITS["hr"], SPLITS["lr"]
    hr, lr_src, test = faces[:n_hr], faces[n_hr : n_hr + n_lr], faces[n_hr + n_lr :]
    lr = _camera(lr_src, "lr")
    splits = {
        "hr": hr,
        "lr_train": lr[VAL:],
        "lr_val": lr[:VAL],
        "test_hr": test,
        "test_lr": _camera(test, "test"),
        "oracle_lr": torch.cat([_camera(hr, "oracle0"), _camera(hr, "oracle1")]),  # two true draws per HR image
        "web_train": web[WEB_TEST:],
        "web_test": web[:WEB_TEST],
    }
    return splits


def load_splits(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() / 255 for k, v in load_file(path).items()}


# ------------------------------------------------------------------------------------------------ fitting


def build(spec: dict, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, LossConfig]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec["generator"] == "paper":
            cfg = HighToLowConfig(**PRESETS["small"].network())
            net_g = HighToLowGenerator(cfg)
        else:
            cfg = StructuredConfig(**spec.get("net", {}))
            net_g = StructuredGenerator(cfg)
        net_d = Discriminator(cfg.discriminator())
    return net_g, net_d, LossConfig(**spec["loss"])


def degrade_fn(net_g: torch.nn.Module, device: torch.device):
    """`degrade(hr, seeds)` on [0, 1] tensors, as `Degrader.degrade`, for the realism probe."""

    @torch.no_grad()
    def degrade(hr: torch.Tensor, seeds) -> torch.Tensor:
        z = noise_from_seeds(seeds, net_g.config.z_dim).to(device)
        out = [net_g(hr[i : i + 256].to(device) * 2 - 1, z[i : i + 256]) for i in range(0, len(hr), 256)]
        return ((torch.cat(out) + 1) / 2).clamp(0, 1).cpu()

    return degrade


def training_tone(spec: dict, hr: torch.Tensor, real: torch.Tensor) -> ToneMap:
    """The tone map `degrade fit` measures for the variant (`--tone auto`) from its training sets, or the identity."""
    return measure_tone(hr, real, 4) if spec["loss"].get("tone") == "auto" else ToneMap()


def fit(spec: dict, hr: torch.Tensor, real: torch.Tensor, val: RealismProbe, args, seed: int, tone: ToneMap) -> dict:
    """Train one degrader for `args.seconds` (or `args.max_steps`); keep the best by validation (`args.select`).

    `tone` is `training_tone(spec, hr, real)`, which `val` should have been made with as well.
    """
    device = torch.device(args.device)
    net_g, net_d, loss = build(spec, seed)
    net_g, net_d = net_g.to(device), net_d.to(device)
    loss = dataclasses.replace(loss, tone_map=(tone.gain, tone.offset))
    if loss.colour > 0 and loss.tone == "auto":  # the real LR set's colour map, as `degrade fit` measures it
        loss = dataclasses.replace(loss, colour_map=measure_colour(hr, real, 4).parts)
    if loss.noise > 0:  # the noise the real LR set shows, as `degrade fit` measures it
        loss = dataclasses.replace(loss, noise_allowed=measure_noise(hr[:1000], real[:1000], 4).excess)
    if loss.jpeg > 0:  # and whether it shows a block grid
        floor = 0.0 if measure_blocks(hr[:1000], real[:1000], 4).shown else JPEG_FLOOR
        loss = dataclasses.replace(loss, jpeg_floor=floor)
    if loss.texture > 0:  # the real LR set's texture quantiles, as `degrade fit` measures them
        loss = dataclasses.replace(loss, texture_target=measure_texture(real[: texture.IMAGES]))
    opt_g, opt_d = adam(net_g, loss), adam(net_d, loss, discriminator=True)
    ema = Ema(net_g, loss.ema) if loss.ema > 0 else None
    gen = torch.Generator().manual_seed(seed)
    b, scale = args.batch, 4

    def batch(x: torch.Tensor) -> torch.Tensor:
        x = x[torch.randint(len(x), (b,), generator=gen)]
        flip = torch.rand(b, generator=gen) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x).to(device) * 2 - 1

    def noise() -> torch.Tensor:
        return torch.randn(b, net_g.config.z_dim, generator=gen).to(device)

    keys = [args.select, *([OTHER[args.select]] if args.compare_selection else [])]  # what ranks checkpoints
    best = {k: ((True, math.inf), 0, None) for k in keys}  # key -> ((below --min-fidelity, score), step, state)
    history, step, t0 = [], 0, time.perf_counter()
    next_eval = args.eval_every
    while True:
        elapsed = time.perf_counter() - t0
        if (args.seconds and elapsed >= args.seconds) or (args.max_steps and step >= args.max_steps):
            break
        if step >= spec.get("max_steps", math.inf):  # the "-init" variants: the generator as initialised
            break
        # the share of the budget spent: steps, or seconds, whichever runs out first
        set_lr(opt_g, opt_d, loss, max(step / (args.max_steps or math.inf), elapsed / (args.seconds or math.inf)))
        # G step, D frozen
        hr_b, z = batch(hr), noise()
        fake = net_g(hr_b, z)
        g_loss, _ = generator_loss(fake, F.avg_pool2d(hr_b, scale), net_d, loss, gen)
        g_loss = g_loss + chain_loss(net_g, z, loss)[0]
        update(opt_g, g_loss)
        if ema:
            ema.update(net_g)
        # D steps on real and on detached fakes
        for _ in range(loss.d_steps):
            with torch.no_grad():
                fake = net_g(batch(hr), noise())
            d_loss, _ = discriminator_loss(net_d, batch(real), fake, loss, gen)
            update(opt_d, d_loss)
        step += 1
        if step % args.eval_every == 0 or step == next_eval:
            shown = ema.module if ema else net_g
            scores = val.score(degrade_fn(shown.eval(), device))
            shown.train() if not ema else None
            logged = ("val_swd_rel", "val_mix", "val_fidelity")
            history.append([step, round(time.perf_counter() - t0, 1), *(round(scores[k], 4) for k in logged)])
            for k in keys:  # a checkpoint above the fidelity floor beats any below it (as `degrade fit`)
                rank = (scores["val_fidelity"] < args.min_fidelity, scores[k])
                if rank < best[k][0]:
                    best[k] = (rank, step, {n: v.detach().clone() for n, v in shown.state_dict().items()})
    final = (ema.module if ema else net_g).eval()
    out = {"steps": step, "seconds": time.perf_counter() - t0, "val": history, "net_final": copy.deepcopy(final)}
    for k, suffix in zip(keys, ("", "_alt")[: len(keys)], strict=True):  # best weights (the last: none scored)
        _, out["best_step" + suffix], state = best[k]
        out["net" + suffix] = copy.deepcopy(final)
        if state is not None:
            out["net" + suffix].load_state_dict(state)
    return out


def realism(degrade, probe_hr: torch.Tensor, real_test: torch.Tensor, seed: int) -> dict[str, float]:
    """Held-out realism of `degrade(hr, seeds) -> lr` against `real_test`: the probe's figures, C2ST, fidelity."""
    probe = RealismProbe(probe_hr, real_test, 4, seed=seed)
    fake = degrade(probe.hr, probe.seeds)
    scores = probe.score(lambda hr, seeds: fake)  # the probe degrades exactly these: one pass for every figure
    c2st = classifier_two_sample_test(fake, real_test[: len(fake)], seed=seed)["c2st"]
    tex_c2st = texture.texture_two_sample_test(fake, real_test[: len(fake)], seed=seed)["tex_c2st"]
    fine, *_, coarse = scores["val_swd_rel_levels"]
    return {"rel": scores["val_swd_rel"], "mix": scores["val_mix"], "c2st": c2st, "fid": scores["val_fidelity"]} | {
        "fine": fine,  # the finest pyramid level's relative SWD: blur, noise, JPEG
        "coarse": coarse,  # the coarsest: tone and layout (the content, where the HR and web faces differ)
        "tex_c2st": tex_c2st,  # the same classifier shown only texture (grey x - box3x3): tone and colour out
    }


# ------------------------------------------------------------------------------------------------ SR


def train_sr(make_lr, hr: torch.Tensor, test_hr: torch.Tensor, test_lr: torch.Tensor, args, seed: int) -> float:
    """Train the small SR model pixel-only on `make_lr(hr_batch, seeds, gen) -> lr_batch`; PSNR on the test pairs."""
    device = torch.device(args.sr_device or args.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LowToHighGenerator(LowToHighConfig(lr_size=16, scale=4, **SR_PRESETS["small"])).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed + 7)
    for _ in range(args.sr_steps):
        idx = torch.randint(len(hr), (args.batch,), generator=gen)
        lr = make_lr(idx, gen)
        sr = net(lr.to(device) * 2 - 1)
        update(opt, F.l1_loss(sr, hr[idx].to(device) * 2 - 1))
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(test_lr[i : i + 256].to(device) * 2 - 1) for i in range(0, len(test_lr), 256)])
    return float(psnr(((out.cpu() + 1) / 2).clamp(0, 1), test_hr, crop_border=4, y_channel=True).mean())


def run_job(job: tuple[str, int, dict, dict]) -> dict:
    """One variant and seed; an exception becomes an "error" field, so one failure does not end a sweep."""
    try:
        return _run_job(*job)
    except Exception:  # noqa: BLE001
        import traceback

        return {"variant": job[0], "seed": job[1], "error": traceback.format_exc()}


def _run_job(name: str, seed: int, spec: dict, argv: dict) -> dict:
    args = argparse.Namespace(**argv)
    torch.set_num_threads(args.threads)
    s = load_splits(args.splits)
    device = torch.device(args.device)
    hr, probe_hr = s["hr"], s["hr"][:600]
    row: dict = {"variant": name, "seed": seed}
    t0 = time.perf_counter()
    if name == "grey":  # bicubic, then luma in all three channels (the web faces are grey); no SR, no fit
        if "web" in args.targets:
            grey = realism(lambda x, _: _grey(_bicubic(x)), probe_hr, s["web_test"], seed)
            row |= {f"web_{k}": v for k, v in grey.items()}
    elif name == "grey-tone":  # the same, then the tone map `--tone auto` measures on the web faces; no learning
        if "web" in args.targets:
            tone = measure_tone(hr, s["web_train"][VAL:], 4)
            toned = lambda x, _: (tone.gain * _grey(_bicubic(x)) + tone.offset).clamp(0, 1)  # noqa: E731
            row |= {f"web_{k}": v for k, v in realism(toned, probe_hr, s["web_test"], seed).items()}
    elif name in HANDMADE:  # no fit: realism as the learned rows', SR on its pairs made on the fly
        deg = make_classical(name, 4)
        for target, real in (("synthetic", s["test_lr"]), ("web", s["web_test"])):
            if target in args.targets:
                row |= {f"{target[:3]}_{k}": v for k, v in realism(deg.degrade, probe_hr, real, seed).items()}
        if args.sr_steps:  # fresh seeds per drawn sample from the SR run's generator, as the learned rows draw them
            draw = lambda i, g: deg.degrade(hr[i], torch.randint(2**62, (len(i),), generator=g).tolist())  # noqa: E731
            row["psnr"] = train_sr(draw, hr, s["test_hr"], s["test_lr"], args, seed)
    elif name == "bicubic":  # the camera realism of plain downscaling too (its relative SWD is 1 by definition)
        if "synthetic" in args.targets:
            row |= {f"syn_{k}": v for k, v in realism(lambda x, _: _bicubic(x), probe_hr, s["test_lr"], seed).items()}
        if args.sr_steps:
            row["psnr"] = train_sr(lambda i, g: _bicubic(hr[i]), hr, s["test_hr"], s["test_lr"], args, seed)
    elif name == "oracle":
        draw = lambda i, g: s["oracle_lr"][i + len(hr) * torch.randint(2, (len(i),), generator=g)]  # noqa: E731
        row["psnr"] = train_sr(draw, hr, s["test_hr"], s["test_lr"], args, seed)
    elif "synthetic" in args.targets:
        tone = training_tone(spec, hr, s["lr_train"])
        val = RealismProbe(probe_hr[:VAL], s["lr_val"], 4, seed=seed, tone=(tone.gain, tone.offset))
        syn = fit(spec, hr, s["lr_train"], val, args, seed, tone)
        net = syn["net"]
        row |= {
            "steps": syn["steps"],
            "best_step": syn["best_step"],
            "fit_s": round(syn["seconds"], 1),
            "val": syn["val"],
            "tone": dataclasses.asdict(tone),
        }
        row |= {f"syn_{k}": v for k, v in realism(degrade_fn(net, device), probe_hr, s["test_lr"], seed).items()}
        keep(net, syn["best_step"], Path(args.out) / f"degrader-{name}-s{seed}.safetensors")
        if isinstance(net, StructuredGenerator):
            p = net.params(noise_from_seeds(range(256), net.config.z_dim).to(device))
            row["fingerprint"] = {
                k: float(f"{float(p[k].float().mean()):.4g}") for k in ("saturation", "quality", "shot", "read")
            }
            row["fingerprint"]["sigma"] = round(float(p["sigma"].amax(-1).mean()), 3)

        def sr_psnr(net_g: torch.nn.Module) -> float:  # SR on pairs `net_g` makes on the fly, fresh seeds
            degrade = degrade_fn(net_g, device)
            draw = lambda i, g: degrade(hr[i], torch.randint(2**62, (len(i),), generator=g).tolist())  # noqa: E731
            return train_sr(draw, hr, s["test_hr"], s["test_lr"], args, seed)

        row["psnr"] = sr_psnr(net)
        if "net_alt" in syn:  # --compare-selection: the checkpoint the other figure keeps
            row["best_step_alt"] = syn["best_step_alt"]
            same = syn["best_step_alt"] == syn["best_step"]
            row["psnr_alt"] = row["psnr"] if same else sr_psnr(syn["net_alt"])
            alt = realism(degrade_fn(syn["net_alt"], device), probe_hr, s["test_lr"], seed)
            row |= {f"syn_{k}_alt": v for k, v in alt.items()}
        if seed == args.seed_list[0]:  # the last row: the same faces through the camera
            sample_grid(net, s["test_hr"][:8], [s["test_lr"][:8]], Path(args.out) / f"grid-{name}.png", device)
    if name not in REFERENCES and "web" in args.targets:
        tone = training_tone(spec, hr, s["web_train"][VAL:])
        web_val = RealismProbe(probe_hr[:VAL], s["web_train"][:VAL], 4, seed=seed, tone=(tone.gain, tone.offset))
        web = fit(spec, hr, s["web_train"][VAL:], web_val, args, seed, tone)
        row |= {"web_steps": web["steps"], "web_best_step": web["best_step"], "web_val": web["val"]}
        row |= {"web_tone": dataclasses.asdict(tone)}
        keep(web["net"], web["best_step"], Path(args.out) / f"degrader-web-{name}-s{seed}.safetensors")
        row |= {"web_best_step_alt": web["best_step_alt"]} if "net_alt" in web else {}
        if seed == args.seed_list[0]:  # the last rows: other faces, real web LR
            real = [s["web_test"][:8], s["web_test"][8:16]]
            sample_grid(web["net"], s["test_hr"][:8], real, Path(args.out) / f"grid-web-{name}.png", device)
        for suffix in ("", "_alt") if "net_alt" in web else ("",):
            scores = realism(degrade_fn(web["net" + suffix], device), probe_hr, s["web_test"], seed)
            row |= {f"web_{k}{suffix}": v for k, v in scores.items()}
        if args.ablate_blur and isinstance(web["net"], StructuredGenerator):
            sharp = copy.deepcopy(web["net"])
            sharp.blur = AreaOnly(sharp.config.scale)
            scores = realism(degrade_fn(sharp, device), probe_hr, s["web_test"], seed)
            row |= {f"web_{k}_noblur": v for k, v in scores.items()}
    row["job_s"] = round(time.perf_counter() - t0, 1)
    return row


def keep(net_g: torch.nn.Module, step: int, path: Path) -> None:
    """Save the kept checkpoint as a degrader file (`degrade eval --degrader`, `degrade apply`, fingerprints)."""
    Degrader(net_g, name=path.stem, step=step).save(path)  # fit's nets are in eval mode; save copies to the CPU


class AreaOnly(torch.nn.Module):
    """The structured chain's blur step with a delta kernel: area downscaling only (`--ablate-blur`)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.scale)


def sample_grid(net_g, hr: torch.Tensor, real: list[torch.Tensor], path: Path, device) -> None:
    """Rows: HR, bicubic, the degrader's LR for seeds 0-2, then the rows of `real` LR."""
    degrade = degrade_fn(net_g, device)
    rows = [hr, _bicubic(hr), *(degrade(hr, [k] * len(hr)) for k in range(3)), *real]
    save_grid(rows, path, scale_to=64)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return luma(x).expand(-1, 3, -1, -1)


def _bicubic(hr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ report


def _cell(e: dict, c: str, fmt: str = "{:.3f}") -> str:
    """Mean, and (min..max) over seeds when they differ."""
    if c not in e:
        return "–"
    if e[c + "_min"] == e[c + "_max"]:
        return fmt.format(e[c])
    return f"{fmt.format(e[c])} ({fmt.format(e[c + '_min'])}..{fmt.format(e[c + '_max'])})"


def _fmt(column: str) -> str:
    """Decibels and gap fractions to 0.01, counts and seconds whole, realism figures to 0.001."""
    name = column.removesuffix("_alt").removesuffix("_noblur")
    if name.endswith(("fid", "psnr", "closure")):
        return "{:.2f}"
    return "{:.0f}" if name in ("steps", "fit_s") else "{:.3f}"


def summarise(rows: list[dict]) -> tuple[list[dict], str]:
    ref = {r: [x["psnr"] for x in rows if x["variant"] == r and "psnr" in x] for r in SR_REFS}
    bic, ora = (statistics.mean(v) if v else math.nan for v in ref.values())
    table, names = [], list(dict.fromkeys(r["variant"] for r in rows))
    cols = ("syn_rel", "syn_mix", "syn_c2st", "syn_tex_c2st", "syn_fid", "web_rel", "web_fine", "web_coarse")
    cols += ("web_mix", "web_c2st", "web_tex_c2st", "web_fid", "psnr", "closure", "steps", "fit_s")
    alt_cols = ("syn_rel_alt", "syn_c2st_alt", "syn_fid_alt", "web_rel_alt", "web_fine_alt", "web_coarse_alt")
    alt_cols += ("web_mix_alt", "web_c2st_alt", "web_fid_alt", "psnr_alt", "closure_alt")
    noblur_cols = ("web_rel_noblur", "web_fine_noblur", "web_coarse_noblur", "web_c2st_noblur", "web_fid_noblur")
    cols += alt_cols + noblur_cols  # --compare-selection, --ablate-blur
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        for r in mine:
            for c in ("", "_alt"):
                r["closure" + c] = (
                    (r["psnr" + c] - bic) / (ora - bic) if "psnr" + c in r and name not in SR_REFS else math.nan
                )
        entry = {"variant": name, "seeds": len(mine)}
        for c in cols:
            vals = [r[c] for r in mine if c in r and r[c] is not None and not math.isnan(r[c])]
            if vals:
                entry[c] = statistics.mean(vals)
                entry[c + "_min"], entry[c + "_max"] = min(vals), max(vals)
        table.append(entry)
    head = "| variant | seeds | syn rel SWD | syn mix | syn C2ST | syn texture C2ST | syn fidelity (dB) | web rel SWD |"
    head += " web fine | web coarse | web mix | web C2ST | web texture C2ST | web fidelity (dB) | SR PSNR (dB) |"
    lines = [head + " gap closed | steps | fit s |", "|" + "---|" * 18]
    for e in table:
        cells = [_cell(e, c, _fmt(c)) for c in cols[:16]]
        lines.append(f"| {e['variant']} | {e['seeds']} | " + " | ".join(cells) + " |")
    alt = [e for e in table if any(c in e for c in alt_cols)]
    if alt:  # --compare-selection
        lines += ["", "The checkpoints the other figure keeps, from the same fits:", ""]
        head = "| variant | syn rel SWD | syn C2ST | syn fidelity (dB) | web rel SWD | web fine | web coarse |"
        lines += [head + " web mix | web C2ST | web fidelity (dB) | SR PSNR (dB) | gap closed |", "|" + "---|" * 12]
        for e in alt:
            lines.append(f"| {e['variant']} | " + " | ".join(_cell(e, c, _fmt(c)) for c in alt_cols) + " |")
    ablated = [e for e in table if any(c in e for c in noblur_cols)]
    if ablated:  # --ablate-blur
        lines += ["", "The web checkpoints with their learned blur replaced by a delta (area downscaling only):", ""]
        lines += ["| variant | web rel SWD | web fine | web coarse | web C2ST | web fidelity (dB) |", "|" + "---|" * 6]
        for e in ablated:
            lines.append(f"| {e['variant']} | " + " | ".join(_cell(e, c, _fmt(c)) for c in noblur_cols) + " |")
    return table, "\n".join(lines) + "\n"


def write_results(rows: list[dict], names: list[str], args: argparse.Namespace) -> str:
    """results.json and results.md in --out, rows sorted by variant and seed; returns the markdown table."""
    order = {n: i for i, n in enumerate([*REFERENCES, *names])}
    rows.sort(key=lambda r: (order[r["variant"]], r["seed"]))
    table, md = summarise([r for r in rows if "error" not in r])
    meta = {k: v for k, v in vars(args).items() if k != "seed_list"}
    (Path(args.out) / "results.json").write_text(json.dumps({"args": meta, "table": table, "runs": rows}, indent=1))
    (Path(args.out) / "results.md").write_text(md)
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-quality")
    p.add_argument("--hr", default=str(DATA / "faces-hr"))
    p.add_argument("--lr", default=str(DATA / "faces-lr-web"))
    p.add_argument("--data", default=None, help="safetensors cache of the prepared images (read, or written)")
    small = "tuned-b1-hp1-ld0.5-ex100-tone"  # `degrade fit --preset small`
    p.add_argument("--variants", default=f"paper,structured,{small}", help=f"of: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0")
    p.add_argument("--seconds", type=float, default=60.0, help="time budget of each fit (0: --max-steps only)")
    p.add_argument("--max-steps", type=int, default=0, help="step budget of each fit (0: --seconds only)")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validation scores")
    p.add_argument("--sr-steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--targets", default="synthetic,web")
    p.add_argument(
        "--references", default="bicubic,oracle,grey,grey-tone,realesrgan,bsrgan",
        help="rows without a fit ('' for none): SR on bicubic and on true pairs; grey bicubic on the web faces, "
        "and in their measured tone (grey-tone); the hand-made pipelines (realesrgan, bsrgan): realism and SR",
    )  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--sr-device", choices=("cpu", "cuda"), default=None, help="where SR trains (default: --device)")
    p.add_argument("--jobs", type=int, default=1, help="variants fitted in parallel processes")
    p.add_argument(
        "--select", choices=("val_swd_rel", "val_mix"), default="val_mix",
        help="what ranks checkpoints: the mean of the SWD and the image statistics (as `degrade fit`), or the SWD",
    )  # fmt: skip
    p.add_argument(
        "--min-fidelity", type=float, default=24.0,
        help="dB; a checkpoint whose validation fidelity reaches it beats any that does not (as `degrade fit`; 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--ablate-blur", action="store_true",
        help="also score the web checkpoint with its learned blur replaced by a delta (web_*_noblur)",
    )  # fmt: skip
    p.add_argument(
        "--compare-selection", action="store_true",
        help="also score the checkpoint the other --select figure keeps: held-out realism and SR (*_alt)",
    )  # fmt: skip
    args = p.parse_args()
    names = [n for n in args.variants.split(",") if n]  # '' for the reference rows alone
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.threads = max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)) // args.jobs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from safetensors.torch import save_file

    args.splits = str(Path(args.out) / "splits.safetensors")
    save_file(make_splits(load_data(args)), args.splits)  # once here; every job reads it
    print(f"data ready in {time.perf_counter() - t0:.0f}s", flush=True)
    jobs = [(n, s, VARIANTS[n], vars(args)) for s in args.seed_list for n in names]  # the long jobs first
    jobs += [(r, s, {}, vars(args)) for s in args.seed_list for r in REFERENCES if r in args.references.split(",")]
    rows: list[dict] = []
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for row in pool.imap_unordered(run_job, jobs):
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("val", "web_val")}), flush=True)
                write_results(rows, names, args)  # after every job: a sweep cut short keeps its rows
    else:
        for job in jobs:
            rows.append(run_job(job))
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("val", "web_val")}), flush=True)
            write_results(rows, names, args)
    print(write_results(rows, names, args))
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
