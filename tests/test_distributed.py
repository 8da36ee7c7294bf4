"""Several processes: 2-process torchrun jobs (gloo, CPU) for fit, export, sr train and finetune, checked against
one process; the loaders' rank split and the shard reader's equal counts, in-process.

The two torchrun launches (tests/ddp_job.py) are shared by the tests through one module fixture (~40 s on 2
busy cores): phase "a" ends with rank 0 killed (SIGKILL) in the middle of an export, phase "b" resumes it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_images
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from degrader import dist
from degrader.errors import UserError
from degrader.loader import InfiniteSampler, make_loader
from degrader.shards import ShardDataset, shard_urls, tar_samples

ROOT = Path(__file__).resolve().parents[1]
JOB = Path(__file__).with_name("ddp_job.py")


def torchrun(phase: str, work: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run([*args, str(JOB), phase, str(work)], env=env, capture_output=True, text=True, timeout=300)


def samples_in_order(out: Path) -> list[tuple]:
    """Every sample's key and members, reading the shards in manifest order."""
    return [(s["__key__"], s["hr.png"], s["lr.png"], s["json"], s["seed.txt"]) for s in tar_samples(shard_urls(out))]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp")
    write_images(work / "hr", 10, 64, seed=1)
    write_images(work / "lr", 10, 16, seed=2)
    a = torchrun("a", work)
    assert a.returncode != 0 and "SIGKILL" in a.stderr, a.stderr[-3000:]  # rank 0 killed itself mid-export
    partial = sorted(p.name for p in (work / "shards").iterdir())
    b = torchrun("b", work)
    assert b.returncode == 0, b.stderr[-3000:]
    results = {**json.loads((work / "result-a.json").read_text()), **json.loads((work / "result-b.json").read_text())}
    batches = {**load_file(work / "batches-a.safetensors"), **load_file(work / "batches-b.safetensors")}
    return work, results, batches, partial


def test_fit_loaders_give_each_rank_its_slice_of_the_single_process_batches(job):
    from degrader.run import unpaired_batches
    from degrader.train import FitConfig, plan_fit

    work, results, batches, _ = job
    assert results["world"] == 2
    config = FitConfig(hr=str(work / "hr"), lr=str(work / "lr"), out=str(work / "unused"), batch_size=4, workers=0)
    plan = plan_fit(config)
    hr_batches, lr_batches = unpaired_batches(config, plan.hr, plan.lr, 64, 16, step=1)
    assert torch.equal(batches["fit_hr0"], next(hr_batches)) and torch.equal(batches["fit_hr1"], next(hr_batches))
    assert torch.equal(batches["fit_lr0"], next(lr_batches))


def test_on_the_fly_sr_pairs_follow_the_single_process_stream(job):
    from sr.train import SRTrainConfig, pair_batches, plan_train

    work, _, batches, _ = job
    config = SRTrainConfig(
        out=str(work / "unused"), degrader=str(work / "fit"), hr=str(work / "hr"), batch_size=4, workers=0, device="cpu"
    )
    pairs = pair_batches(plan_train(config), start=8)
    for i in range(2):
        lr, hr = next(pairs)
        assert torch.equal(batches[f"otf_hr{i}"], hr)
        # same images and noise seeds; the degrader ran on 2 images, not 4, which may move the last float bit
        assert torch.allclose(batches[f"otf_lr{i}"], lr, atol=1e-6, rtol=0)


def test_ddp_discriminator_matches_one_process_and_ranks_agree(job):
    _, results, _, _ = job
    # R1, two forwards (real, fake) and one backward through DDP: the gradient of the global batch
    assert results["d_grad_rel"] < 1e-4
    # power iteration from synchronised weights: spectral norm's u the same on every rank without broadcasts
    assert results["d_ranks_agree"] and results["d_u_close"] < 1e-5


def test_trainers_keep_ranks_in_sync_and_rank_0_writes_the_run(job):
    work, results, _, _ = job
    assert results["fit_ranks_agree"] and results["sr_ranks_agree"] and results["finetune_ranks_agree"]
    for run, steps in (("fit", 2), ("sr", 2), ("joint", 1)):
        logged = [json.loads(line)["step"] for line in (work / run / "log.jsonl").read_text().splitlines()]
        assert logged == list(range(1, steps + 1))  # one line per step: rank 1 wrote none
        assert sorted(p.name for p in (work / run / "samples").iterdir()) == [f"step-{s:06d}.png" for s in logged]


def test_a_torchrun_fit_resumes_in_one_process(job, tmp_path):
    import shutil

    from degrader.train import FitConfig, fit, plan_fit

    work, _, _, _ = job
    run = shutil.copytree(work / "fit", tmp_path / "fit")
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "out": str(run)}))  # the run, moved
    config = FitConfig(hr=str(work / "hr"), lr=str(work / "lr"), out=str(run), steps=3, batch_size=4, workers=0,
                       device="cpu", log_every=1, sample_every=10, checkpoint_every=10, resume=True)  # fmt: skip
    assert fit(plan_fit(config)).step == 3
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_killed_torchrun_export_resumes_to_the_single_process_samples(job, tmp_path):
    from degrader.export import ExportConfig, export_shards, plan_export

    work, _, _, partial = job
    assert ".export-state-r0000.json" in partial and any(n.startswith(".shard-r0000-") for n in partial)
    out = tmp_path / "single"
    config = ExportConfig(degrader=str(work / "fit"), hr=str(work / "hr"), out=str(out), per_image=3,
                          samples_per_shard=4, batch_size=6, workers=0, device="cpu")  # fmt: skip
    single = export_shards(plan_export(config))
    ranks = json.loads((work / "shards" / "manifest.json").read_text())
    assert samples_in_order(work / "shards") == samples_in_order(out)  # key, HR, LR, meta and seed, byte for byte
    assert ranks["totals"] == single["totals"] and ranks["config"] == single["config"]
    names = sorted(p.name for p in (work / "shards").iterdir())
    assert names == ["manifest.json", *sorted(s["name"] for s in ranks["shards"])]  # no progress files left
    assert {n[:11] for n in names[1:]} == {"shard-r0000", "shard-r0001"}
    # An unfinished torchrun export is resumed by as many processes: one process cannot take over the parts.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    state = {"config": ranks["config"], "degrader": ranks["degrader"], "processes": 2, "shards": [], "failed": []}
    (unfinished / ".export-state.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match="exported by 2 processes, this run has 1"):
        export_shards(plan_export(ExportConfig(**{**config.__dict__, "out": str(unfinished), "resume": True})))


def test_batch_part_splits_every_global_batch_into_contiguous_slices():
    stream = list(zip(range(24), InfiniteSampler(7, seed=3, start=8), strict=False))
    parts = [
        list(zip(range(8), dist.BatchPart(InfiniteSampler(7, seed=3, start=8), 8, r, 4), strict=False))
        for r in range(4)
    ]
    for batch in range(2):
        joined = [item for r in range(4) for _, item in parts[r][batch * 2 : batch * 2 + 2]]
        assert joined == [item for _, item in stream[batch * 8 : batch * 8 + 8]]
    with pytest.raises(UserError, match="does not split evenly"):
        dist.BatchPart(InfiniteSampler(7, seed=3), 6, 0, 4)


def test_image_loader_ranks_concatenate_to_the_single_process_batch(tmp_path):
    paths = write_images(tmp_path / "img", 5, 16)
    kw = dict(batch_size=4, seed=2, start=4)
    single = make_loader(paths, 16, "resize", "paper", **kw)
    ranks = [make_loader(paths, 16, "resize", "paper", **kw, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        assert torch.equal(next(single), torch.cat([next(r) for r in ranks]))


@pytest.mark.parametrize(("world", "workers"), [(2, 0), (3, 2)])
def test_reader_gives_every_rank_the_same_count_and_every_sample_once(job, world, workers, monkeypatch):
    work, _, _, _ = job
    out = work / "shards"  # uneven: rank 1's last shard holds 2 samples, the others 4
    everything = [s["key"] for s in ShardDataset(out)]
    seen, counts = [], []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        dataset = ShardDataset(out, shuffle=True, buffer_size=4, seed=1)
        keys = [s["key"] for s in DataLoader(dataset, batch_size=None, num_workers=workers)]
        seen += keys
        counts.append(len(keys))
        assert len(keys) == len(dataset)
    n = len(everything)
    assert counts == [-(-n // world)] * world  # equal: no rank waits for another at the end of an epoch
    assert set(seen) == set(everything) and len(seen) - n == -n % world  # each once; the padding only repeats
    urls = shard_urls(out)  # bare URLs carry no counts: under DDP that needs epoch_length
    with pytest.raises(ValueError, match="epoch_length"):
        next(iter(ShardDataset(urls)))
    assert len(list(ShardDataset(urls, epoch_length=2 * world))) == 2
