"""Bad shards, built in the test, each ending in one clean `ShardError` (or a named fault from `verify_shards`):
damaged manifests, a huge tar size field, missing or special shard files, bad json and seed members, duplicate
members and keys, 16-bit gray PNGs, brace patterns naming missing shards."""

import io
import json
import os
import re
import shutil
import signal
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from degrader.errors import UserError
from degrader.shards import (
    MANIFEST,
    ShardDataset,
    ShardError,
    ShardMapDataset,
    ShardWriter,
    decode_png,
    encode_png,
    index_shard,
    shard_urls,
    summarize_shards,
    verify_shards,
)

HR, LR = encode_png(np.full((16, 16, 3), 200, np.uint8)), encode_png(np.full((4, 4, 3), 50, np.uint8))


def members(seed=1, **changes):
    meta = {"seed": seed, "scale": 4, "hr_size": [16, 16], "lr_size": [4, 4], "degrader": "bicubic", "source": "a"}
    out = {"hr.png": HR, "lr.png": LR, "seed.txt": str(seed).encode(), "json": json.dumps(meta).encode()}
    return {**out, **changes}


def write_shards(root, per_shard=(2, 2), **changes):
    """Shards of `per_shard` samples (the first sample of the first shard takes `changes`) and a manifest."""
    root.mkdir(parents=True, exist_ok=True)
    writer, entries = ShardWriter(root, samples_per_shard=max(per_shard)), []
    for s, count in enumerate(per_shard):
        for i in range(count):
            entry = writer.write(f"s{s}x{i}", members(**(changes if s == i == 0 else {})))
        entries.append(entry or writer.finish_shard())
    manifest = {"format": "degrader-shards", "version": "0", "config": {"crop": "center", "per_image": 1, "seed": 0}}
    (root / MANIFEST).write_text(json.dumps({**manifest, "shards": entries, "skipped": []}))
    return root


def write_tar(path, named):
    """A tar of (member name, bytes) in order, whatever they are: for layouts ShardWriter never makes."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in named:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def every_reader_fails(source, match):
    """The four readers each raise one ShardError matching `match` (verify may report it as a fault instead)."""
    with pytest.raises(ShardError, match=match):
        list(ShardDataset(source))
    with pytest.raises(ShardError, match=match):
        ShardMapDataset(source)
    with pytest.raises(ShardError, match=match):
        summarize_shards(source)
    try:
        faults = verify_shards(source)
    except ShardError as e:
        assert e.args[0].count("\n") == 0
    else:
        assert len(faults) >= 1 and any(_matches(match, f) for f in faults), faults


def _matches(pattern, text):
    import re

    return re.search(pattern, text) is not None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.pop("shards"), '"shards" is missing'),
        (lambda m: m.update(shards={"name": "shard-000000.tar"}), '"shards" is missing or not a list'),
        (lambda m: m.pop("config"), '"config" is missing'),
        (lambda m: m["shards"][0].update(name="../shard-000000.tar"), "shard entry 0 has no plain file name"),
        (lambda m: m["shards"][1].update(samples="2"), r"shard entry 1 \(shard-000001.tar\) needs a sample count"),
        (lambda m: m["shards"].append(7), "shard entry 2 has no plain file name"),
    ],
)
def test_manifest_edge_cases_are_one_line_errors(tmp_path, change, match):
    root = write_shards(tmp_path / "s")
    manifest = json.loads((root / MANIFEST).read_text())
    change(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))
    every_reader_fails(root, f"{MANIFEST}: {match}")


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '"degrader-shards"', "{not json", "[" * 100_000, "\udcff"],
    ids=["list", "str", "not-json", "deep", "not-utf8"],
)
def test_manifest_that_is_not_an_object_or_not_json(tmp_path, text):
    root = write_shards(tmp_path / "s")
    (root / MANIFEST).write_bytes(text.encode("utf-8", "surrogateescape"))
    every_reader_fails(root, f"{MANIFEST}(:| is not)")


def set_size_field(path, field):
    """Rewrite the first header's size field and fix its checksum, so only the size is wrong."""
    data = bytearray(path.read_bytes())
    data[124:136] = field
    data[148:156] = b" " * 8
    data[148:156] = f"{sum(data[:512]):06o}\0 ".encode()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("field", "match"),
    [(b"\x80" + (2**87).to_bytes(11, "big"), "size field of .* bytes is damaged"), (b"\xff" * 12, "bad number")],
)
def test_huge_or_negative_base256_size_field(tmp_path, field, match):
    root = write_shards(tmp_path / "s")
    set_size_field(root / "shard-000000.tar", field)
    every_reader_fails(root / "shard-000000.tar", match)
    assert any(_matches(match, f) for f in verify_shards(root))


NO_FIFO = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


@pytest.mark.parametrize("kind", ["missing", "folder", pytest.param("fifo", marks=NO_FIFO)])
def test_listed_shard_missing_a_folder_or_a_fifo(tmp_path, kind):
    root = write_shards(tmp_path / "s")
    shard = root / "shard-000001.tar"
    shard.unlink()
    if kind == "folder":
        shard.mkdir()
    elif kind == "fifo":
        os.mkfifo(shard)
    match = "shard-000001.tar: cannot read" if kind == "missing" else "shard-000001.tar: not a shard file"
    signal.alarm(30)  # opening a FIFO blocks forever: a reader that does so ends the test run instead
    try:
        with pytest.raises(ShardError, match=match):
            list(ShardDataset(root))
        with pytest.raises(ShardError, match=match):
            ShardMapDataset(root)
        with pytest.warns(UserWarning, match=match):
            assert len(list(ShardDataset(root, on_error="warn"))) == 2  # the other shard still reads
        assert any(f.startswith("shard-000001.tar: missing") for f in verify_shards(root))
    finally:
        signal.alarm(0)


@pytest.mark.parametrize(
    ("changes", "fault"),
    [
        ({"json": b"{not json"}, "the json member is not JSON"),
        ({"json": b"[1, 2]"}, "the json member is not a JSON object"),
        ({"json": b'{"hr_size": 16}'}, "json field 'hr_size' is not"),
        ({"json": b'{"degrader": ["x"]}'}, "json field 'degrader' is not a string"),
    ],
)
def test_json_member_not_json_or_not_an_object(tmp_path, changes, fault):
    root = write_shards(tmp_path / "s", **changes)
    assert any(f.startswith("shard-000000.tar: s0x0: ") and fault in f for f in verify_shards(root))
    with pytest.raises(ShardError, match=f"shard-000000.tar: s0x0: {fault}"):
        summarize_shards(root)
    assert len(list(ShardDataset(root))) == 4  # training reads pixels and seed.txt, not the metadata


@pytest.mark.parametrize("seed", [b"seven", b"9" * 5000, b"-3", b"1_000", b"9223372036854775808"])
def test_seed_txt_text_or_too_many_digits(tmp_path, seed):
    root = write_shards(tmp_path / "s", **{"seed.txt": seed})
    match = "shard-000000.tar: s0x0: cannot decode \\(seed.txt is not a decimal seed below 2\\*\\*63"
    with pytest.raises(ShardError, match=match):
        list(ShardDataset(root))
    with pytest.raises(ShardError, match=match):
        ShardMapDataset(root)[0]
    with pytest.raises(ShardError, match="s0x0: seed.txt is not a decimal seed"):
        summarize_shards(root)
    assert any(f.startswith("shard-000000.tar: s0x0: cannot decode (seed.txt") for f in verify_shards(root))
    with pytest.warns(UserWarning, match="s0x0"):
        assert [s["key"] for s in ShardDataset(root, on_error="warn")][0] == "s0x1"


def sample_members(key, **changes):
    return [(f"{key}.{ext}", data) for ext, data in members(**changes).items()]


@pytest.mark.parametrize(
    ("named", "fault"),
    [
        (sample_members("a") + [("a.lr.png", HR)], "a: two lr.png members"),
        (sample_members("a") + sample_members("b") + sample_members("a"), "a: a second sample with this key"),
        (sample_members("a") + [("a.__key__", b"b")], "a: member name a.__key__ is reserved"),
    ],
)
def test_duplicate_members_and_keys_are_faults(tmp_path, named, fault):
    shard = write_tar(tmp_path / "x.tar", named)
    every_reader_fails(shard, f"x.tar: {fault}")
    with pytest.warns(UserWarning, match=fault):
        kept = [s["key"] for s in ShardDataset(shard, on_error="warn")]
    assert kept.count("a") <= 1 and kept.count("b") <= 1


def test_a_key_in_two_shards_is_a_fault(tmp_path):
    root = write_shards(tmp_path / "s")
    shutil.copy(root / "shard-000000.tar", tmp_path / "copy.tar")
    with pytest.raises(ShardError, match="copy.tar: s0x0: also in .*shard-000000.tar"):
        ShardMapDataset([root / "shard-000000.tar", tmp_path / "copy.tar"])
    faults = verify_shards([str(root / "shard-000000.tar"), str(tmp_path / "copy.tar")])
    assert any("copy.tar: s0x0: duplicate key" in f for f in faults)


def test_16_bit_gray_png_decodes_scaled_not_clipped_and_verify_names_it(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, 0)  # (4, 4)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")  # mode I;16
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")  # really stored as 16-bit
    decoded = decode_png(buf.getvalue())
    assert decoded.shape == (3, 4, 4) and decoded[:, 0].tolist() == [[0, 1, 128, 255]] * 3
    root = write_shards(tmp_path / "s", **{"lr.png": buf.getvalue()})
    lq = next(iter(ShardDataset(root)))["lq"]
    assert torch.allclose(lq.mean(), torch.tensor((0 + 1 + 128 + 255) / 4 / 255))
    fault = "shard-000000.tar: s0x0: lr.png is not an 8-bit RGB PNG (bit depth 16, colour type 0)"
    assert verify_shards(root) == [fault]  # the readers take it; the exporter never writes it


def test_brace_pattern_naming_a_missing_shard_is_an_error(tmp_path):
    root = write_shards(tmp_path / "s", per_shard=(2, 2, 1))
    assert len(shard_urls(f"{root}/shard-{{000000..000002}}.tar")) == 3
    pattern = f"{root}/shard-{{000000..000004}}.tar"
    for read in (shard_urls, ShardMapDataset, ShardDataset, verify_shards):
        with pytest.raises(UserError, match=r"shard-000003.tar \(and 1 more\), named by .* is not a shard file"):
            read(pattern)
    with pytest.raises(UserError, match="no shards match"):
        shard_urls(f"{root}/shard-{{000007..000009}}.tar")


def test_counts_are_checked_against_the_manifest(tmp_path):
    root = write_shards(tmp_path / "s")
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["shards"][1]["samples"] = 5  # promises 5, holds 2
    (root / MANIFEST).write_text(json.dumps(manifest))
    dataset = ShardDataset(root)
    assert len(dataset) == 7
    with pytest.raises(ShardError, match="shard-000001.tar: holds 2 samples, the manifest says 5"):
        list(dataset)
    with pytest.raises(ShardError, match="shard-000001.tar: holds 2 samples, the manifest says 5"):
        ShardMapDataset(root)
    with pytest.warns(UserWarning, match="holds 2 samples"):
        assert len(list(ShardDataset(root, on_error="warn"))) == 4
    assert "shard-000001.tar: holds 2 samples, the manifest says 5" in verify_shards(root)


@pytest.mark.parametrize(
    ("lr", "match"),
    [
        (encode_png(np.zeros((32, 32, 3), np.uint8)), "HR 16x16 is not a whole multiple of LR 32x32"),
        (encode_png(np.zeros((3, 3, 3), np.uint8)), "HR 16x16 is not a whole multiple of LR 3x3"),
        (encode_png(np.zeros((4, 8, 3), np.uint8)), "HR 16x16 is not a whole multiple of LR 4x8"),
    ],
    ids=["lr-larger", "not-a-divisor", "two-scales"],
)
def test_lr_of_a_size_no_scale_explains(tmp_path, lr, match):
    root = write_shards(tmp_path / "s", **{"lr.png": lr})
    with pytest.raises(ShardError, match=f"s0x0: {match}"):
        list(ShardDataset(root))
    with pytest.raises(ShardError, match=f"s0x0: {match}"):
        ShardMapDataset(root, gt_size=8)[0]
    assert any(f.startswith(f"shard-000000.tar: s0x0: {match}") for f in verify_shards(root))


def test_a_crop_larger_than_a_sample_names_the_sample(tmp_path):
    meta = {"seed": 1, "scale": 8, "hr_size": [16, 16], "lr_size": [2, 2], "degrader": "bicubic", "source": "a"}
    lr = encode_png(np.zeros((2, 2, 3), np.uint8))  # x8, not x4, and its json says so
    root = write_shards(tmp_path / "s", **{"lr.png": lr, "json": json.dumps(meta).encode()})
    assert ShardMapDataset(root, gt_size=12)[1]["gt"].shape == (3, 12, 12)
    with pytest.raises(UserError, match=r"shard-000000.tar/s0x0.lr.png: gt_size 12 must be a multiple of 8"):
        ShardMapDataset(root, gt_size=12)[0]


def read_everything(root):
    """Every reader over `root`; returns the keys streamed, or raises."""
    keys = [s["key"] for s in ShardDataset(root)]
    mapped = ShardMapDataset(root, gt_size=8)
    assert [mapped[(i, 0)]["key"] for i in range(len(mapped))] == keys
    summarize_shards(root, examples=1)
    return keys


def test_fuzz_every_read_ends_in_a_clean_error_or_the_right_samples(tmp_path):
    rng = np.random.default_rng(0)
    clean = write_shards(tmp_path / "clean", per_shard=(2,))
    originals = {name: (clean / name).read_bytes() for name in ("shard-000000.tar", MANIFEST)}
    expected = read_everything(clean)
    outcomes = {"error": 0, "read": 0}
    signal.alarm(120)  # a hang ends the test run instead of blocking it
    try:
        for _ in range(200):
            for name, original in originals.items():
                (clean / name).write_bytes(original)
            target = MANIFEST if rng.random() < 0.2 else "shard-000000.tar"
            data = bytearray(originals[target])
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            if rng.random() < 0.1:
                data = data[: int(rng.integers(0, len(data)))]
            (clean / target).write_bytes(bytes(data))
            try:
                keys = read_everything(clean)
            except UserError as e:  # ShardError included: one line naming the shard or manifest
                assert "\n" not in str(e) and ("shard-000000.tar" in str(e) or MANIFEST in str(e)), str(e)
                outcomes["error"] += 1
            else:
                assert keys == expected  # what reads is the samples written (bytes in unused header fields)
                outcomes["read"] += 1
            try:
                faults = verify_shards(clean)
            except UserError as e:
                assert "\n" not in str(e) and target == MANIFEST, str(e)
            else:
                changed = target != MANIFEST and bytes(data) != originals[target]  # a byte may be set to itself
                assert faults or not changed  # the manifest's sha256 catches every change to the shard
    finally:
        signal.alarm(0)
    assert outcomes["error"] > 80 and outcomes["read"] > 0, outcomes


def test_a_changed_shard_is_refused_when_checksums_are_checked(tmp_path):
    root = write_shards(tmp_path / "s")
    assert len(ShardMapDataset(root, check_sha256=True)) == 4
    offset, size = index_shard(root / "shard-000001.tar")[0][1]["hr.png"]
    assert size % 512
    data = bytearray((root / "shard-000001.tar").read_bytes())
    data[offset + size] ^= 1  # in the padding after a member: the tar still reads the same, its bytes differ
    (root / "shard-000001.tar").write_bytes(bytes(data))
    assert len(ShardMapDataset(root)) == 4
    with pytest.raises(ShardError, match="shard-000001.tar: sha256 does not match the manifest"):
        ShardMapDataset(root, check_sha256=True)


# ------------------------------------------------------------------------------- issue 26: silent wrong results


def flip(path, ext, at, bit=1, key_index=0):
    """Flip one bit of member `ext` of the `key_index`-th sample of a shard, at byte `at` of it (negative: from
    its end); the tar itself still reads."""
    offset, size = index_shard(path)[key_index][1][ext]
    data = bytearray(path.read_bytes())
    data[offset + (at % size)] ^= bit
    path.write_bytes(bytes(data))


def every_reader_refuses_sample(root, match, **options):
    with pytest.raises(ShardError, match=match):
        list(ShardDataset(root, **options))
    with pytest.raises(ShardError, match=match):
        mapped = ShardMapDataset(root, **options)
        [mapped[i] for i in range(len(mapped))]


def test_a_bit_flip_that_still_decodes_is_refused(tmp_path):
    root = write_shards(tmp_path / "s")
    shard = root / "shard-000000.tar"
    flip(shard, "hr.png", -1)  # in the IEND chunk's CRC: PIL decodes the image as before
    offset, size = index_shard(shard)[0][1]["hr.png"]
    assert Image.open(io.BytesIO(shard.read_bytes()[offset : offset + size])).load() is not None
    every_reader_refuses_sample(root, "shard-000000.tar: s0x0: cannot decode \\(hr.png: PNG chunk IEND fails its CRC")
    assert any("s0x0: cannot decode (hr.png: PNG chunk IEND fails its CRC" in f for f in verify_shards(root))

    root = write_shards(tmp_path / "t")
    flip(root / "shard-000000.tar", "seed.txt", 0, bit=2)  # seed 1 -> 3: a valid seed, not the sample's
    every_reader_refuses_sample(root, "shard-000000.tar: s0x0: seed.txt 3 differs from the json seed 1")

    root = write_shards(tmp_path / "u")
    flip(root / "shard-000000.tar", "json", -3)  # in the "source" text: only the checksum can tell
    assert len(list(ShardDataset(root))) == 4  # the cheap checks cannot see it
    every_reader_refuses_sample(root, "shard-000000.tar: sha256 does not match the manifest", check_sha256=True)
    with pytest.warns(UserWarning, match="sha256 does not match"):
        assert [s["key"] for s in ShardDataset(root, check_sha256=True, on_error="warn")] == ["s1x0", "s1x1"]


def test_a_shard_copied_under_another_name_is_refused(tmp_path):
    root = write_shards(tmp_path / "s")
    shutil.copy(root / "shard-000000.tar", root / "shard-000001.tar")  # the manifest still lists the old one
    every_reader_refuses_sample(root, "shard-000001.tar: s0x0: also in .*shard-000000.tar; a shard is listed twice")
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["shards"][1]["sha256"] = manifest["shards"][0]["sha256"]  # a manifest made to agree
    (root / MANIFEST).write_text(json.dumps(manifest))
    every_reader_fails(root, r"shard entry 1 \(shard-000001.tar\) has the sha256 of shard-000000.tar")
    manifest["shards"][1] = manifest["shards"][0]
    (root / MANIFEST).write_text(json.dumps(manifest))
    every_reader_fails(root, r"shard entry 1 \(shard-000000.tar\) is listed twice")

    bare = write_shards(tmp_path / "bare")
    (bare / MANIFEST).unlink()
    shutil.copy(bare / "shard-000000.tar", bare / "shard-000000 copy.tar")  # a glob of the folder finds both
    with pytest.raises(ShardError, match="shard-000000.tar: s0x0: also in .*shard-000000 copy.tar"):
        list(ShardDataset(bare))
    with pytest.warns(UserWarning, match="also in"):
        assert len(list(ShardDataset(bare, on_error="warn"))) == 4


def test_an_lr_of_another_size_than_the_set_promises_is_refused(tmp_path):
    lr8 = encode_png(np.zeros((8, 8, 3), np.uint8))  # x2 of its 16x16 HR: a whole multiple, but not this set's x4
    root = write_shards(tmp_path / "s", **{"lr.png": lr8})
    every_reader_refuses_sample(root, "shard-000000.tar: s0x0: LR 8x8, but its json lr_size says 4x4")
    assert any("s0x0: LR 8x8, but its json lr_size says 4x4" in f for f in verify_shards(root))

    meta = {"seed": 1, "scale": 2, "hr_size": [16, 16], "lr_size": [8, 8], "degrader": "bicubic", "source": "a"}
    root = write_shards(tmp_path / "t", **{"lr.png": lr8, "json": json.dumps(meta).encode()})  # json agrees
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["config"].update(scale=4, hr_size=16)  # as every export records them
    (root / MANIFEST).write_text(json.dumps(manifest))
    every_reader_refuses_sample(root, "s0x0: HR 16x16 is not 4x LR 8x8 \\(the scale the manifest says\\)")
    manifest["config"].update(scale=2, hr_size=32)
    (root / MANIFEST).write_text(json.dumps(manifest))
    every_reader_refuses_sample(root, "s0x0: HR 16x16, but the manifest's hr_size is 32")


def test_verify_names_jpeg_bytes_in_a_png_member(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 200, 200)).save(buf, format="JPEG")
    root = write_shards(tmp_path / "s", **{"hr.png": buf.getvalue()})
    assert any("s0x0: cannot decode (hr.png: JPEG data, not a PNG)" in f for f in verify_shards(root))
    every_reader_refuses_sample(root, "s0x0: cannot decode \\(hr.png: JPEG data, not a PNG\\)")


@pytest.mark.parametrize("key", ["../../x", "/abs/x", "/x", "a/../../x"])
def test_member_names_leading_out_of_the_shard_are_refused(tmp_path, key):
    shard = write_tar(tmp_path / "x.tar", sample_members(key))
    fault = "is not a plain relative name"
    every_reader_fails(shard, f"x.tar: {re.escape(key)}: member name {re.escape(key)}.hr.png {fault}")
    assert any(fault in f for f in verify_shards([str(shard)]))
