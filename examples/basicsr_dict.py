"""Degrader shards in a BasicSR-style trainer: an `opt` dict builds the dataset, items are BasicSR's dicts.

BasicSR's paired datasets yield {"lq", "gt", "lq_path", "gt_path"} with float CHW images in [0, 1], and its
models read them in `feed_data`. `degrader.shards.ShardMapDataset` yields exactly these keys (plus "seed"
and "key"), with random access and `len()`, so it drops into such a trainer unchanged. With BasicSR installed,
register the class below (`DATASET_REGISTRY.register()(ShardPairedDataset)`) and name it in the YAML:

    datasets:
      train: {name: faces, type: ShardPairedDataset, dataroot: runs/shards, gt_size: 64,
              use_hflip: true, use_rot: true, batch_size_per_gpu: 16, phase: train}

    python examples/basicsr_dict.py --shards runs/shards --steps 200
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from degrader.shards import ShardMapDataset
from sr.metrics import psnr


class ShardPairedDataset(ShardMapDataset):
    """BasicSR's PairedImageDataset interface over shards: built from an `opt` dict, augmented in training."""

    def __init__(self, opt: dict[str, Any]):
        train = opt.get("phase") == "train"
        super().__init__(
            opt["dataroot"],
            gt_size=opt.get("gt_size") if train else None,
            flip=train and opt.get("use_hflip", False),  # horizontal and vertical flips
            rot=train and opt.get("use_rot", False),
        )


class TinySRModel:
    """The shape of a BasicSR model, cut to the bone: `feed_data`, `optimize_parameters`, `test`."""

    def __init__(self, scale: int):
        self.net_g = nn.Sequential(  # ESPCN-like: features at LR, pixel shuffle to HR
            nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.Conv2d(32, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale)
        )
        self.opt = torch.optim.Adam(self.net_g.parameters(), lr=1e-3)

    def feed_data(self, data: dict[str, Any]) -> None:
        self.lq = data["lq"]
        if "gt" in data:
            self.gt = data["gt"]

    def optimize_parameters(self) -> float:
        loss = F.l1_loss(self.net_g(self.lq), self.gt)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def test(self) -> torch.Tensor:
        return self.net_g(self.lq).clamp(0, 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="shard directory (with manifest.json), glob or brace pattern")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--gt-size", type=int, default=32, help="HR crop side in training")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    opt = {"phase": "train", "dataroot": args.shards, "gt_size": args.gt_size, "use_hflip": True, "use_rot": True}
    train_set = ShardPairedDataset(opt)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=False)
    batch = next(iter(loader))
    print(f"{len(train_set)} samples; a batch holds: " + ", ".join(sorted(batch)))
    print(f"  lq {tuple(batch['lq'].shape)}  gt {tuple(batch['gt'].shape)}  gt_path {batch['gt_path'][0]}")
    scale = batch["gt"].shape[-1] // batch["lq"].shape[-1]

    model, step = TinySRModel(scale), 0
    while step < args.steps:  # BasicSR counts iterations, not epochs
        for data in loader:
            model.feed_data(data)
            loss = model.optimize_parameters()
            step += 1
            if step % 50 == 0 or step == args.steps:
                print(f"iter {step}/{args.steps}  l1 {loss:.4f}")
            if step == args.steps:
                break

    val_set = ShardPairedDataset({"phase": "val", "dataroot": args.shards})  # full samples, no augmentation
    scores = []
    for data in DataLoader(val_set, batch_size=args.batch_size):
        model.feed_data(data)
        scores += psnr(model.test(), data["gt"], crop_border=scale, y_channel=True).tolist()
    result = {"keys": sorted(batch), "psnr_y": sum(scores) / len(scores), "samples": len(scores)}
    print(f"PSNR-Y over {len(scores)} samples: {result['psnr_y']:.2f} dB")
    return result


if __name__ == "__main__":
    main()
