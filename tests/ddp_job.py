"""Run by tests/test_distributed.py under `torchrun --standalone --nproc_per_node 2` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_job.py PHASE WORK_DIR

Phase "a": data order of the fit loaders, DDP on a spectral-norm discriminator against one process, a 2-step
fit, then an export that rank 0 kills with SIGKILL part-way. Phase "b": the export resumed, sr train on its
shards, sr finetune, and the on-the-fly SR data. Rank 0 writes what it measured to WORK_DIR/result-PHASE.json
and the gathered batches to WORK_DIR/batches-PHASE.safetensors; the test compares them with one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from degrader import dist

PHASE, WORK = sys.argv[1], Path(sys.argv[2])
HR, LR = WORK / "hr", WORK / "lr"
FIT, SR, JOINT, SHARDS = WORK / "fit", WORK / "sr", WORK / "joint", WORK / "shards"
RUN = dict(batch_size=4, workers=0, device="cpu", log_every=1, sample_every=1, checkpoint_every=1)
EXPORT = dict(hr=str(HR), out=str(SHARDS), per_image=3, samples_per_shard=4, batch_size=6, workers=0, device="cpu")
result: dict = {}
batches: dict[str, torch.Tensor] = {}
wrapped: list[torch.nn.Module] = []
real_wrap = dist.wrap


def spy_wrap(net, device):
    """The real `dist.wrap`, remembering the networks, so their parameters can be compared across ranks."""
    wrapped.append(net)
    return real_wrap(net, device)


dist.wrap = spy_wrap


def digest(nets: list[torch.nn.Module]) -> str:
    """Parameters and spectral norm's u, v. Not BN running statistics: without SyncBatchNorm (CUDA only) each
    rank tracks those of its own part of the batch (only eval uses them, and rank 0's are saved)."""
    h = hashlib.sha256()
    for net in nets:
        for name, t in sorted(net.state_dict().items()):
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
                continue
            h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def ranks_agree(nets: list[torch.nn.Module]) -> bool | None:
    """Whether every rank holds bit-identical parameters and spectral-norm buffers."""
    digests = dist.gather_to_main(digest(nets))
    return None if digests is None else len(set(digests)) == 1


def gathered(name: str, t: torch.Tensor) -> None:
    parts = dist.gather_to_main(t.contiguous())
    if parts is not None:
        batches[name] = torch.cat(parts)


def save() -> None:
    if dist.is_main():
        (WORK / f"result-{PHASE}.json").write_text(json.dumps(result))
        save_file(batches, WORK / f"batches-{PHASE}.safetensors")
    dist.barrier()


def discriminator_check() -> None:
    """One process on the global batch against DDP on its halves: R1, two forwards (real, fake), one backward."""
    from degrader.gan import LossConfig, adam, discriminator_loss
    from degrader.nets import Discriminator, DiscriminatorConfig

    loss = LossConfig(r1=1.0)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1, torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1)]
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(Discriminator(DiscriminatorConfig(in_size=16, width=8, blocks=2)))
    net, ref = nets
    opt, opt_ref, ddp = adam(net, loss), adam(ref, loss), dist.wrap(net, torch.device("cpu"))
    worst = 0.0
    for real, fake in data * 3:
        for model, optim, r, f in ((ddp, opt, dist.part(real), dist.part(fake)), (ref, opt_ref, real, fake)):
            optim.zero_grad()
            discriminator_loss(model, r, f, loss)[0].backward()
        for a, b in zip(net.parameters(), ref.parameters(), strict=True):
            worst = max(worst, ((a.grad - b.grad).norm() / b.grad.norm()).item())
        opt.step(), opt_ref.step()
    u = [b for name, b in net.named_buffers() if name.endswith("_u")]
    result["d_grad_rel"] = worst
    result["d_u_close"] = max(
        (a - b).abs().max().item()
        for a, b in zip(u, [b for n, b in ref.named_buffers() if n.endswith("_u")], strict=True)
    )
    result["d_ranks_agree"] = ranks_agree([net])
    wrapped.clear()


def phase_a() -> None:
    from degrader.export import ExportConfig, export_shards, plan_export
    from degrader.run import unpaired_batches
    from degrader.train import FitConfig, fit, plan_fit

    config = FitConfig(hr=str(HR), lr=str(LR), out=str(FIT), steps=2, **RUN)
    plan = plan_fit(config)
    hr_batches, lr_batches = unpaired_batches(config, plan.hr, plan.lr, 64, 16, step=1)
    for i in range(2):
        gathered(f"fit_hr{i}", next(hr_batches))
    gathered("fit_lr0", next(lr_batches))
    result["world"] = dist.world()

    discriminator_check()
    fit(plan)
    result["fit_ranks_agree"] = ranks_agree(wrapped)
    wrapped.clear()
    save()

    def kill(step: int, total: int, logs: dict) -> None:
        if step >= 7:
            os.kill(os.getpid(), signal.SIGKILL)

    export_shards(plan_export(ExportConfig(degrader=str(FIT), **EXPORT)), kill)


def phase_b() -> None:
    from degrader.export import ExportConfig, export_shards, plan_export
    from sr.finetune import FinetuneConfig, finetune, plan_finetune
    from sr.train import SRTrainConfig, pair_batches, plan_train, train

    export_shards(plan_export(ExportConfig(degrader=str(FIT), resume=True, **EXPORT)))

    train(plan_train(SRTrainConfig(out=str(SR), shards=str(SHARDS), steps=2, warmup_steps=1, **RUN)))
    result["sr_ranks_agree"] = ranks_agree(wrapped)
    wrapped.clear()
    finetune(
        plan_finetune(
            FinetuneConfig(degrader=str(FIT), sr=str(SR), hr=str(HR), lr=str(LR), out=str(JOINT), steps=1, **RUN)
        )
    )
    result["finetune_ranks_agree"] = ranks_agree(wrapped)

    otf = plan_train(SRTrainConfig(out=str(WORK / "unused"), degrader=str(FIT), hr=str(HR), **RUN))
    pairs = pair_batches(otf, start=8)
    for i in range(2):
        lr, hr = next(pairs)
        gathered(f"otf_lr{i}", lr)
        gathered(f"otf_hr{i}", hr)
    pairs.close()  # its DataLoader workers end here, not during interpreter teardown
    save()


dist.init()
phase_a() if PHASE == "a" else phase_b()
