"""The README's picture: HR images beside their bicubic and learned LR, and real LR images, in one PNG.

Columns: HR, bicubic LR, the learned degrader's LR of the same HR, and a real LR image of the LR set (unpaired:
other people). The LR columns are enlarged with nearest-neighbour so their pixels stay visible.

    python examples/readme_figure.py --out figure.png                     # generated demo faces, a quick fit
    python examples/readme_figure.py --demo demo-run --out figure.png     # the output of `degrade demo demo-run`
    python examples/readme_figure.py --hr faces-hr --lr faces-lr-web --degrader runs/deg --out docs/figure.png

Without `--demo` or `--degrader` it writes the demo's generated faces to a temporary folder and fits a small
degrader on them first (`--steps`, about a minute on a CPU at the default), so it runs with no data at all.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from degrader.checkpoint import load_degrader
from degrader.images import load_rgb, prepare, save_grid, scan_images, to_tensor


def pick(folder: str | Path, n: int, size: int, seed: int) -> torch.Tensor:
    """`n` images of `folder`, drawn with `seed`, prepared as `degrade fit` prepares them: (n, 3, size, size)."""
    paths = scan_images(folder, option=str(folder)).paths
    chosen = random.Random(seed).sample(paths, min(n, len(paths)))
    rng = random.Random(seed)
    return torch.stack([to_tensor(prepare(load_rgb(p), size, "resize", rng)) for p in chosen])


def demo_inputs(root: Path, steps: int, seed: int) -> tuple[Path, Path, Path]:
    """Write the demo's generated faces under `root` and fit a small degrader on them: (hr, real lr, degrader)."""
    from degrader.synthetic import write_demo_data, write_eval_data
    from degrader.train import FitConfig, fit, plan_fit

    hr, lr, _, _ = write_demo_data(root / "data", seed=seed)
    eval_hr, eval_lr = write_eval_data(root / "data", n=16, seed=seed)  # faces the fit never sees
    config = FitConfig(
        hr=str(hr), lr=str(lr), out=str(root / "degrader"), steps=steps, seed=seed, workers=0, eval_every=25
    )
    fit(plan_fit(config))
    return eval_hr, eval_lr, root / "degrader"


def make_figure(hr_dir: str | Path, lr_dir: str | Path, degrader: str | Path, out: str | Path, n: int = 4,
                seed: int = 0, size: int = 64, cell: int = 128) -> Path:  # fmt: skip
    """Write the figure to `out`: one row per HR image, columns HR / bicubic / learned / real LR."""
    learned = load_degrader(str(degrader), None, "cpu")
    size = learned.hr_size or size
    bicubic = load_degrader("bicubic", learned.scale)
    hr = pick(hr_dir, n, size, seed)
    real = pick(lr_dir, len(hr), size // learned.scale, seed)
    seeds = list(range(len(hr)))
    with torch.no_grad():
        columns = [hr, bicubic.degrade(hr, seeds), learned.degrade(hr, seeds), real]
    columns = [F.interpolate(c, size=(size, size), mode="nearest") for c in columns]  # LR pixels stay visible
    rows = [torch.stack([c[i] for c in columns]) for i in range(len(hr))]
    labels = ["HR", "bicubic", "learned", "real LR (other people)"]
    save_grid(rows, out, col_labels=labels, scale_to=cell)
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="figure.png", help="PNG to write")
    parser.add_argument("--demo", help="a `degrade demo` output folder: its eval faces and its degrader")
    parser.add_argument("--hr", help="HR images (with --lr and --degrader)")
    parser.add_argument("--lr", help="real LR images")
    parser.add_argument("--degrader", help="a `degrade fit` run directory or checkpoint")
    parser.add_argument("--n", type=int, default=4, help="rows")
    parser.add_argument("--steps", type=int, default=150, help="fit steps when no degrader is given")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small nets: one thread is as fast, and kind to a shared machine
    if args.demo:
        root = Path(args.demo)
        args.hr, args.lr, args.degrader = root / "data" / "eval_hr", root / "data" / "eval_lr", root / "degrader"
    if args.hr and args.lr and args.degrader:
        path = make_figure(args.hr, args.lr, args.degrader, args.out, n=args.n, seed=args.seed)
    elif args.hr or args.lr or args.degrader:
        parser.error("give --hr, --lr and --degrader together (or --demo, or none of them)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            hr, lr, degrader = demo_inputs(Path(tmp), args.steps, args.seed)
            path = make_figure(hr, lr, degrader, args.out, n=args.n, seed=args.seed)
    print(f"figure: {path}")
    return path


if __name__ == "__main__":
    main()
