"""Train an SR network that is not ours on degrader shards: ESRGAN's RRDBNet from spandrel, in a plain loop.

The shards (from `degrade export-shards`) hold (lq, gt) pairs; `degrader.shards.ShardDataset` streams them as
float tensors in [0, 1], which is all a third-party model needs.

    pip install 'degrader[examples]'
    python examples/train_third_party.py --shards runs/shards --steps 2000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from spandrel.architectures.ESRGAN import ESRGAN  # the RRDBNet of ESRGAN / Real-ESRGAN
from torch.utils.data import DataLoader

from degrader.shards import ShardDataset
from sr.evaluate import bicubic_upscale
from sr.metrics import psnr


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="shard directory, glob or brace pattern")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--filters", type=int, default=32, help="RRDBNet width (ESRGAN uses 64)")
    p.add_argument("--blocks", type=int, default=4, help="RRDB blocks (ESRGAN uses 23)")
    p.add_argument("--eval-shards", help="held-out shards to score at the end [default: --shards]")
    p.add_argument("--eval-samples", type=int, default=200, help="samples scored at the end")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # Data: shuffled, flipped pairs; epoch_length makes the stream exactly `steps` batches long.
    first = next(iter(ShardDataset(args.shards)))
    scale = first["gt"].shape[-1] // first["lq"].shape[-1]
    train = ShardDataset(
        args.shards, shuffle=True, seed=args.seed, flip=True, rot=True, epoch_length=args.steps * args.batch_size
    )
    loader = DataLoader(train, batch_size=args.batch_size, num_workers=args.workers, drop_last=True)

    # Model and optimiser: nothing from this project.
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=args.filters, num_blocks=args.blocks, scale=scale).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.9, 0.99))

    # Train with the L1 loss, as ESRGAN's PSNR-oriented stage does.
    net.train()
    for step, batch in enumerate(loader, start=1):
        lq, gt = batch["lq"].to(device), batch["gt"].to(device)  # (B, 3, h, w), (B, 3, h*s, w*s) in [0, 1]
        loss = F.l1_loss(net(lq), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps}  l1 {loss.item():.4f}")

    # Score the first samples against bicubic upscaling: PSNR on Y with a `scale` border, as SR papers do.
    net.eval()
    model_db, bicubic_db = [], []
    with torch.no_grad():
        for i, sample in enumerate(ShardDataset(args.eval_shards or args.shards)):
            if i >= args.eval_samples:
                break
            sr = net(sample["lq"][None].to(device)).clamp(0, 1)[0].cpu()
            model_db.append(psnr(sr, sample["gt"], crop_border=scale, y_channel=True).item())
            bicubic = bicubic_upscale(sample["lq"], scale)
            bicubic_db.append(psnr(bicubic, sample["gt"], crop_border=scale, y_channel=True).item())
    n = len(model_db)
    result = {"psnr_y": sum(model_db) / n, "bicubic_psnr_y": sum(bicubic_db) / n}
    print(f"PSNR-Y over {n} samples: RRDBNet {result['psnr_y']:.2f}, bicubic {result['bicubic_psnr_y']:.2f} dB")
    return result


if __name__ == "__main__":
    main()
