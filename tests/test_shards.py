"""The shard format and its readers: round trips through both datasets, stock WebDataset and tar; splitting,
shuffling, epoch length, aligned crops; corrupt shards and `verify_shards`."""

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from degrader.classical import make_classical
from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from degrader.shards import (
    MEMBERS,
    ShardDataset,
    ShardError,
    ShardMapDataset,
    ShardWriter,
    encode_png,
    index_shard,
    paired_augment,
    sample_key,
    sample_seed,
    shard_urls,
    split_by_node,
    split_by_worker,
    summarize_shards,
    to_uint8,
    verify_shards,
    warn_and_continue,
)

N_IMAGES, K, PER_SHARD = 6, 2, 5  # 12 samples in shards of 5, 5 and 2


def make_images(root, n=N_IMAGES, size=(40, 48)):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    config = ExportConfig(
        degrader="blur-bilinear", hr=str(make_images(base / "hr")), out=str(base / "out"), per_image=K,
        samples_per_shard=PER_SHARD, hr_size=32, workers=0, batch_size=4, seed=3,
    )  # fmt: skip
    manifest = export_shards(plan_export(config))
    return base / "out", manifest


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_seeds_and_keys_are_stable_and_safe():
    s = sample_seed(0, "faces/0001.png", 2)
    assert s == sample_seed(0, "faces/0001.png", 2) and 0 <= s < 2**63
    assert len({sample_seed(0, "a.png", k) for k in range(50)} | {sample_seed(1, "a.png", 0)}) == 51
    assert sample_seed(0, "a.png", 0) != sample_seed(0, "b.png", 0)
    assert sample_seed(0, "a.png", 0) == 8317135060911229117  # pinned: changing the derivation changes every dataset
    keys = {sample_key(i, c, k) for i in ("a.b.png", "a_b.png", "x/y z.jpg", "é.png") for c in (0, 1) for k in (0, 1)}
    assert len(keys) == 16
    long_key = sample_key("deep/" * 40 + "name.with.dots.png", 12, 3)
    for key in [*keys, long_key]:
        assert "." not in key and "/" not in key and key.isascii() and len(key) < 80


def test_writer_is_byte_reproducible_and_never_leaves_a_partial_final_name(tmp_path):
    members = {"hr.png": b"h" * 700, "lr.png": b"l" * 30, "seed.txt": b"7", "json": b"{}"}
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        writer = ShardWriter(tmp_path / run, samples_per_shard=2)
        assert writer.write("k0", members) is None
        assert not list((tmp_path / run).glob("shard-*")), "a shard being written has no final name"
        entry = writer.write("k1", members)
        assert entry["name"] == "shard-000000.tar" and entry["samples"] == 2
        # pinned: shards written by earlier versions must keep reading, so the bytes never change
        assert entry["sha256"] == "fed50ba26bd70eb66d8d71d56b947a37b81bbd81937d05045bf0611b7493f038"
        writer.write("k2", members)
        writer.abort()
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["shard-000000.tar"]
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "b/shard-000000.tar").read_bytes()


def test_iterable_round_trip(shards):
    out, manifest = shards
    samples = list(ShardDataset(out))
    assert len(samples) == manifest["totals"]["samples"] == N_IMAGES * K
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 2]
    assert len({s["key"] for s in samples}) == len(samples)
    for i, s in enumerate(samples):
        assert s["lq"].shape == (3, 8, 8) and s["gt"].shape == (3, 32, 32)
        assert s["lq"].dtype == torch.float32 and s["lq"].min() >= 0 and s["gt"].max() <= 1
        image_id, k = f"img{i // K}.png", i % K
        assert s["seed"] == sample_seed(3, image_id, k) and s["key"] == sample_key(image_id, 0, k)
        assert s["lq_path"].endswith(f"{s['key']}.lr.png") and s["gt_path"].endswith(f"{s['key']}.hr.png")
    meta = json.loads(ShardMapDataset(out).raw(3)["json"])
    assert meta["source"] == "img1.png" and meta["k"] == 1 and meta["scale"] == 4 and meta["seed"] == samples[3]["seed"]
    assert meta["degrader"] == "blur-bilinear" and meta["hr_size"] == [32, 32] and meta["lr_size"] == [8, 8]
    assert meta["version"] == manifest["version"] and meta["degrader_sha256"] == ""


def test_lr_regenerates_exactly_from_hr_and_seed(shards):
    out, _ = shards
    degrader = make_classical("blur-bilinear", 4)
    for s in ShardDataset(out):
        lr = to_uint8(degrader.degrade(s["gt"][None], [s["seed"]]))[0]
        assert np.array_equal(lr, to_uint8(s["lq"][None])[0])


def test_map_style_matches_iterable_and_works_in_a_dataloader(shards):
    out, _ = shards
    streamed = list(ShardDataset(out, kair_keys=True))
    mapped = ShardMapDataset(out, kair_keys=True)
    assert len(mapped) == len(streamed)
    for i in (0, 4, 5, 11):
        assert mapped[i]["key"] == streamed[i]["key"] and mapped[i]["seed"] == streamed[i]["seed"]
        assert torch.equal(mapped[i]["lq"], streamed[i]["lq"]) and torch.equal(mapped[i]["H"], streamed[i]["gt"])
    loader = DataLoader(mapped, batch_size=4, shuffle=True, num_workers=2)
    batches = list(loader)
    assert sum(len(b["key"]) for b in batches) == 12 and batches[0]["lq"].shape == (4, 3, 8, 8)


def test_stock_webdataset_reads_the_shards(shards):
    import webdataset as wds

    out, _ = shards
    pairs = list(
        wds.WebDataset(str(out / "shard-{000000..000002}.tar"), shardshuffle=False)
        .decode("pil")
        .to_tuple("lr.png", "hr.png")
    )  # noqa: E501
    assert len(pairs) == 12 and pairs[0][0].size == (8, 8) and pairs[0][1].size == (32, 32)
    first = next(iter(ShardDataset(out)))
    assert np.array_equal(np.asarray(pairs[0][0]), to_uint8(first["lq"][None])[0])


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar program on PATH")
def test_tar_lists_the_members_in_order(shards):
    out, _ = shards
    first = next(iter(ShardDataset(out)))
    names = subprocess.run(["tar", "-tf", out / "shard-000000.tar"], capture_output=True, text=True, check=True)
    listed = names.stdout.split()
    assert len(listed) == 5 * len(MEMBERS) and listed[:4] == [f"{first['key']}.{ext}" for ext in MEMBERS]


def test_urls_dir_glob_brace_and_pipe(shards):
    out, _ = shards
    names = [f"shard-00000{i}.tar" for i in range(3)]
    assert [u.rsplit("/", 1)[1] for u in shard_urls(out)] == names
    assert shard_urls(f"{out}/*.tar") == shard_urls(f"{out}/shard-{{000000..000002}}.tar") == shard_urls(out)
    assert len(list(ShardDataset(f"pipe:cat {out}/shard-{{000000..000002}}.tar"))) == 12
    with pytest.raises(UserError, match="no shards match"):
        shard_urls(f"{out}/nothing-*.tar")


def keys_of(dataset, workers):
    return [s["key"] for s in DataLoader(dataset, batch_size=None, num_workers=workers)]


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_each_sample_once_per_epoch_whatever_the_workers(shards, workers):
    out, _ = shards
    keys = keys_of(ShardDataset(out, shuffle=True, buffer_size=4, seed=1), workers)
    assert sorted(keys) == sorted(s["key"] for s in ShardDataset(out))


@pytest.mark.parametrize(("world", "workers"), [(1, 3), (2, 2), (3, 2)])
def test_split_steps_give_slot_rank_times_workers_plus_worker(world, workers):
    items = range(23)
    for rank in range(world):
        for worker in range(workers):
            got = list(split_by_worker(split_by_node(items, rank, world, workers), worker, workers))
            slot, slots = rank * workers + worker, world * workers
            assert got == list(items[slot::slots])  # the assignment every earlier stream was drawn with


def test_ranks_partition_the_samples(shards, monkeypatch):
    out, _ = shards
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append(keys_of(ShardDataset(out), 0))  # 2 slots, 3 shards: split by shard
        seen.append(keys_of(ShardDataset(out), 2))  # 4 slots, 3 shards: split by sample
    assert not set(seen[0]) & set(seen[2]) and sorted(seen[0] + seen[2]) == sorted(seen[1] + seen[3])
    assert not set(seen[1]) & set(seen[3]) and len(seen[1] + seen[3]) == 12


@pytest.mark.parametrize("workers", [0, 3])
def test_fixed_epoch_length(shards, workers, monkeypatch):
    out, _ = shards
    dataset = ShardDataset(out, shuffle=True, epoch_length=17)
    assert len(dataset) == 17 and len(keys_of(dataset, workers)) == 17
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert len(dataset) == 8 and len(keys_of(dataset, workers)) == 8


def test_shuffle_is_seeded_and_changes_with_the_epoch(shards):
    out, _ = shards
    a = [s["key"] for s in ShardDataset(out, shuffle=True, buffer_size=6, seed=5)]
    b = [s["key"] for s in ShardDataset(out, shuffle=True, buffer_size=6, seed=5)]
    dataset = ShardDataset(out, shuffle=True, buffer_size=6, seed=5)
    dataset.set_epoch(1)
    c = [s["key"] for s in dataset]
    assert a == b and a != c and sorted(a) == sorted(c)
    assert a != [s["key"] for s in ShardDataset(out)]


def test_paired_crop_and_flips_keep_lr_and_hr_aligned():
    import random

    rng = random.Random(0)
    for _ in range(40):
        lq = torch.rand(3, 6, 10)
        gt = lq.repeat_interleave(4, -1).repeat_interleave(4, -2)  # each LR pixel is a 4x4 HR block
        out = paired_augment({"lq": lq, "gt": gt, "L": lq, "H": gt}, rng, 16, flip=True, rot=True)
        assert out["lq"].shape == (3, 4, 4) and out["gt"].shape == (3, 16, 16)
        assert torch.equal(out["gt"], out["lq"].repeat_interleave(4, -1).repeat_interleave(4, -2))
        assert out["L"] is out["lq"]
    with pytest.raises(UserError, match="gt_size"):
        paired_augment({"lq": lq, "gt": gt}, rng, 18, flip=False, rot=False)


def test_crop_options_through_both_datasets(shards):
    out, _ = shards
    for dataset in (ShardDataset(out, gt_size=16, flip=True, rot=True), ShardMapDataset(out, gt_size=16, flip=True)):
        sample = next(iter(dataset)) if isinstance(dataset, ShardDataset) else dataset[3]
        assert sample["lq"].shape == (3, 4, 4) and sample["gt"].shape == (3, 16, 16)


def test_map_style_items_by_index_and_seed_for_exact_resume(shards):
    import random

    out, _ = shards
    full = ShardMapDataset(out)
    pairs = full.view(gt_size=16, pairs=True)
    lq, gt = pairs[(3, 7)]
    assert torch.equal(lq, pairs[(3, 7)][0]) and lq.shape == (3, 4, 4) and gt.shape == (3, 16, 16)
    expected = paired_augment(full[3], random.Random(7), 16, flip=False, rot=False)
    assert torch.equal(lq, expected["lq"]) and torch.equal(gt, expected["gt"])
    assert any(not torch.equal(lq, pairs[(3, seed)][0]) for seed in range(8)), "the crop follows the seed"
    assert pairs.entries is full.entries and full[3]["lq"].shape == (3, 8, 8)  # one index, other options
    del pairs  # a view closes only its own descriptors
    assert full.raw(11)["__key__"] == full.entries[11].key
    with pytest.raises(TypeError, match="shuffle"):
        full.view(shuffle=True)


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_shard_names_shard_and_key_or_is_skipped(shards, tmp_path):
    out = copy(shards[0], tmp_path / "out")
    shard = out / "shard-000001.tar"
    key, members = index_shard(shard)[1]
    offset, size = members["hr.png"]
    shard.write_bytes(shard.read_bytes()[: offset + size // 2])  # cut inside the second sample's HR image
    with pytest.raises(ShardError, match=f"shard-000001.tar: {key}.hr.png: truncated member"):
        list(ShardDataset(out))
    with pytest.warns(UserWarning, match="shard-000001.tar"):
        kept = list(ShardDataset(out, on_error="warn"))
    assert len(kept) == 5 + 1 + 2  # the samples before the cut are kept
    with pytest.raises(ShardError, match="shard-000001.tar"):
        ShardMapDataset(out)
    errors = []  # a handler function of one's own: returning skips the broken part
    assert len(list(ShardDataset(out, on_error=errors.append))) == 8
    assert len(errors) == 1 and isinstance(errors[0], ShardError) and key in str(errors[0])
    assert len(list(ShardDataset(out, on_error=warn_and_continue, shuffle=True, epoch_length=20))) == 20
    with pytest.raises(ValueError, match="on_error"):
        ShardDataset(out, on_error="ignore")


def test_corrupt_header_and_pixels_are_caught(shards, tmp_path):
    out = copy(shards[0], tmp_path / "out")
    flip_byte(out / "shard-000000.tar", 512 * 30)  # inside the data or a header of a later member
    flip_byte(out / "shard-000002.tar", 100)  # the first header's mode field: checksum fails
    with pytest.raises(ShardError, match="shard-000002.tar: after \\(start of shard\\): bad tar header checksum"):
        list(ShardDataset(out / "shard-000002.tar"))
    faults = verify_shards(out)
    assert any(f.startswith("shard-000000.tar: sha256") for f in faults)
    assert any(f.startswith("shard-000002.tar") and "checksum" in f for f in faults)
    assert not any(f.startswith("shard-000001.tar") for f in faults)


def test_verify_clean_flipped_missing_and_extra(shards, tmp_path):
    out = copy(shards[0], tmp_path / "out")
    assert verify_shards(out) == []
    members_start = 512  # first member's data: a flipped PNG byte still parses as a tar
    flip_byte(out / "shard-000001.tar", members_start + 40)
    faults = verify_shards(out)
    assert faults[0].startswith("shard-000001.tar: sha256")
    assert any(f.startswith("shard-000001.tar: img") and "decode" in f for f in faults), faults
    (out / "shard-000002.tar").rename(out / "shard-000009.tar")
    faults = verify_shards(out)
    assert "shard-000002.tar: missing" in faults and "shard-000009.tar: not listed in the manifest" in faults


def test_summary(shards):
    out, manifest = shards
    summary = summarize_shards(out, examples=3)
    assert summary["shards"] == 3 and summary["samples"] == 12 and summary["sources"] == 6
    assert summary["unique_seeds"] == 12 and summary["hr_sizes"] == [(32, 32)] and summary["lr_sizes"] == [(8, 8)]
    assert summary["degraders"] == [("blur-bilinear", "")] and len(summary["examples"]) == 3
    assert summary["manifest"] == manifest


def test_png_codec_is_lossless():
    from degrader.shards import decode_png

    a = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert encode_png(a) == encode_png(a)
    assert np.array_equal(decode_png(encode_png(a)).permute(1, 2, 0).numpy(), a)


def test_warn_mode_skips_a_sample_that_does_not_decode(tmp_path):
    good = encode_png(np.zeros((8, 8, 3), np.uint8))
    writer = ShardWriter(tmp_path, samples_per_shard=10)
    for i, lr in enumerate([good[:8] + b"\0" * 30, good]):
        writer.write(
            f"s{i}",
            {"hr.png": encode_png(np.zeros((32, 32, 3), np.uint8)), "lr.png": lr, "seed.txt": b"1", "json": b"{}"},
        )  # noqa: E501
    writer.finish_shard()
    with pytest.raises(ShardError, match="shard-000000.tar: s0: cannot decode"):
        list(ShardDataset(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [s["key"] for s in ShardDataset(tmp_path, on_error="warn")] == ["s1"]
    assert any("s0" in str(w.message) for w in caught)
