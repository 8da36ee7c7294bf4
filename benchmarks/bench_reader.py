"""Shard reader throughput against a folder-of-PNG-pairs loader reading the same pairs (as BasicSR's
PairedImageDataset does: one LR and one HR file per sample, decoded to float tensors), both through a
DataLoader with 2 workers.

    python benchmarks/bench_reader.py [--pairs 2000] [--hr-size 128] [--epochs 2] [--cache warm|cold|both]
    python benchmarks/bench_reader.py --hr-size 64 --workers 8 --consumer cuda --bf16   # against one GPU

Generated data only; prints pairs/s for each and the ratio shards / folder, measured in the same run.
"warm" reads from the page cache (a data set that fits in RAM, read before); "cold" evicts every file of both
data sets from the page cache before each pass (posix_fadvise DONTNEED), so reads come from the disk, as they
do for a training set larger than RAM or on first use.
`--consumer cuda` (the default where CUDA is available) also measures what one GPU consumes: `sr train`'s
iteration (G + 5 D steps, bench_sr's loop on in-memory batches of the same size), and prints each reader's
rate against it; above 1 the reader keeps the GPU fed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_export import write_images  # noqa: E402  (the same generated photos as the export benchmark)
from bench_fit import Variant  # noqa: E402
from bench_sr import iteration_rate  # noqa: E402

from degrader.export import ExportConfig, export_shards, plan_export  # noqa: E402
from degrader.shards import ShardDataset, ShardMapDataset, shard_urls, tar_samples  # noqa: E402


class PairedFolder(Dataset):
    """BasicSR's PairedImageDataset in spirit: paired file lists, each item reads and decodes two files (PIL)."""

    def __init__(self, lq_dir: Path, gt_dir: Path):
        self.lq = sorted(lq_dir.glob("*.png"))
        self.gt = [gt_dir / p.name for p in self.lq]

    def __len__(self) -> int:
        return len(self.lq)

    @staticmethod
    def _read(path: Path) -> torch.Tensor:
        with Image.open(path) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, i: int) -> dict:
        return {"lq": self._read(self.lq[i]), "gt": self._read(self.gt[i]), "lq_path": str(self.lq[i])}


def evict(root: Path) -> None:
    """Drop every file under `root` from the page cache, so the next read comes from the disk."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rates(loaders: dict[str, DataLoader], epochs: int, cold_root: Path | None = None) -> dict[str, float]:
    """Best pairs/s of each loader over `epochs` passes, interleaved so that load from other processes on the
    machine hits every loader alike. With `cold_root`, its files are evicted from the page cache before each pass;
    otherwise the first pass warms the cache."""
    best = dict.fromkeys(loaders, 0.0)
    for _ in range(epochs):
        for name, loader in loaders.items():
            if cold_root is not None:
                evict(cold_root)
            start, n = time.perf_counter(), 0
            for batch in loader:
                n += len(batch["lq"])
            best[name] = max(best[name], n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--hr-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--dir", default=None, help="where to write the data (a disk, not tmpfs, for --cache cold)")
    parser.add_argument("--consumer", choices=["auto", "cuda", "cpu", "none"], default="auto", help="auto: cuda if any")
    parser.add_argument("--preset", default="small", help="SR preset the consumer trains")
    parser.add_argument("--bf16", action="store_true", help="consumer with bf16 autocast and channels_last")
    args = parser.parse_args()
    consumer = args.consumer
    if consumer == "auto":
        consumer = "cuda" if torch.cuda.is_available() else "none"
    gpu_rate = None
    if consumer != "none":
        variant = Variant(bf16=args.bf16, channels_last=args.bf16)
        device = torch.device(consumer)
        iters, warmup = (20, 3) if device.type == "cuda" else (1, 1)  # a CPU iteration takes seconds
        gpu_rate = iteration_rate(
            args.preset, device, args.batch_size, iters, False, False, variant, lr_size=args.hr_size // 4, warmup=warmup
        )
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"consumer: sr train {args.preset} {variant.name}, G+5D, on {name}: {gpu_rate:.1f} pairs/s")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        write_images(root / "hr", args.pairs, args.hr_size)
        config = ExportConfig(
            degrader="bicubic", hr=str(root / "hr"), out=str(root / "shards"), hr_size=args.hr_size,
            samples_per_shard=250, workers=2, device="cpu",
        )  # fmt: skip
        export_shards(plan_export(config))
        for d in ("lq", "gt"):  # the same pairs as a folder of PNG files, bytes copied from the shards
            (root / d).mkdir()
        for raw in tar_samples(shard_urls(root / "shards")):
            (root / "lq" / f"{raw['__key__']}.png").write_bytes(raw["lr.png"])
            (root / "gt" / f"{raw['__key__']}.png").write_bytes(raw["hr.png"])
        kw = dict(batch_size=args.batch_size, num_workers=args.workers, persistent_workers=False)
        loaders = {
            "folder": DataLoader(PairedFolder(root / "lq", root / "gt"), shuffle=True, **kw),
            "shards": DataLoader(ShardDataset(root / "shards", shuffle=True, seed=0), **kw),
            "mapped": DataLoader(ShardMapDataset(root / "shards"), shuffle=True, **kw),
        }
        print(f"{args.pairs} pairs, HR {args.hr_size}px, LR {args.hr_size // 4}px, batch {args.batch_size}, "
              f"{args.workers} DataLoader workers, best of {args.epochs} epochs")  # fmt: skip
        for cache in ("warm", "cold") if args.cache == "both" else (args.cache,):
            r = rates(loaders, args.epochs, cold_root=root if cache == "cold" else None)
            folder, shards, mapped = r["folder"], r["shards"], r["mapped"]
            print(f"-- {cache} page cache")
            print(f"folder of PNG pairs (PairedImageDataset-like): {folder:8.1f} pairs/s")
            print(f"ShardDataset (iterable, shuffled):             {shards:8.1f} pairs/s")
            print(f"ShardMapDataset (map-style, shuffled):         {mapped:8.1f} pairs/s")
            print(f"ratio iterable / folder: {shards / folder:.2f}   map-style / folder: {mapped / folder:.2f}")
            if gpu_rate:
                print(f"ratio to what the {consumer} consumer trains on: folder {folder / gpu_rate:.2f}  "
                      f"iterable {shards / gpu_rate:.2f}  map-style {mapped / gpu_rate:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
