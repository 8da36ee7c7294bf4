"""`export_shards` with writer processes: the bytes of a plain serial writer, shards written by several processes
at once, and a writer's failure reported and cleaned up like the main process's own."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import degrader.shards.writer
from degrader.checkpoint import load_degrader
from degrader.crops import HRCrops
from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from degrader.files import sha256_file
from degrader.images import scan_images
from degrader.shards import MEMBERS, ShardWriter, encode_png, index_shard, sample_key, sample_seed, to_uint8
from tests.test_export import files, make_images

PER_SHARD = 3


@pytest.fixture(scope="module")
def hr(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("data") / "hr", n=7, size=(36, 44))


def config(hr, out, **kw):
    base = dict(degrader="blur-bilinear", hr=str(hr), out=str(out), per_image=2, samples_per_shard=PER_SHARD)
    return ExportConfig(**{**base, "hr_size": 32, "batch_size": 4, "workers": 0, **kw})


def plain_export(hr: Path, out: Path) -> list[dict]:
    """The export as one loop in one process, as it was written before the writer processes (the reference)."""
    degrader = load_degrader("blur-bilinear", None, "cpu")
    scan = scan_images(hr, min_size=32)
    crops = HRCrops(scan.paths, scan.root, 32, "center", 0)
    common = {"scale": 4, "degrader": "blur-bilinear", "degrader_sha256": "", "version": degrader_version()}
    out.mkdir()
    writer, entries, samples = ShardWriter(out, PER_SHARD), [], []
    for i in range(len(crops)):
        _, image_id, items, _ = crops[i]
        for k in range(2):
            samples.append((image_id, items[0][1], items[0][2], k, sample_seed(0, image_id, k)))
    for at in range(0, len(samples), 4):  # batches of 4 within blocks of 4 // 2 images, as export forms them
        batch = samples[at : at + 4]
        hr_batch = torch.stack([torch.from_numpy(s[1]).permute(2, 0, 1) for s in batch]).float().div_(255)
        lr = to_uint8(degrader.degrade(hr_batch, [s[4] for s in batch]))
        for (image_id, a, hr_png, k, seed), lr_one in zip(batch, lr, strict=True):
            meta = {"seed": seed, "source": image_id, "crop": 0, "box": None, "k": k, **common}
            meta.update(hr_size=list(a.shape[:2]), lr_size=list(lr_one.shape[:2]))
            members = {"hr.png": hr_png, "lr.png": encode_png(lr_one), "seed.txt": str(seed).encode()}
            members["json"] = json.dumps(meta, sort_keys=True).encode()
            entry = writer.write(sample_key(image_id, 0, k), members)
            entries += [entry] if entry else []
    return entries + [e for e in [writer.finish_shard()] if e]


def degrader_version() -> str:
    from degrader import __version__

    return __version__


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_writer_processes_write_the_bytes_of_a_plain_serial_loop(hr, tmp_path):
    entries = plain_export(hr, tmp_path / "plain")
    assert len(entries) == 5  # 14 pairs, 3 a shard: chunks end mid-batch
    for workers in (0, 2, 3):
        manifest = export_shards(plan_export(config(hr, tmp_path / f"w{workers}", workers=workers)))
        assert manifest["shards"] == entries
        shards = {k: v for k, v in files(tmp_path / f"w{workers}").items() if k != "manifest.json"}
        assert shards == files(tmp_path / "plain")
    assert files(tmp_path / "w0") == files(tmp_path / "w2") == files(tmp_path / "w3")


def test_shards_are_written_by_several_processes_not_the_main_one(hr, tmp_path, monkeypatch):
    log = tmp_path / "pids.txt"
    write = ShardWriter.write

    def logged(self, key, members):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {self.index}\n")
        return write(self, key, members)

    monkeypatch.setattr(degrader.shards.writer.ShardWriter, "write", logged)  # the writers fork after this
    export_shards(plan_export(config(hr, tmp_path / "out", workers=2)))
    pids = {int(line.split()[0]): set() for line in log.read_text().splitlines()}
    for line in log.read_text().splitlines():
        pid, shard = map(int, line.split())
        pids[pid].add(shard)
    assert os.getpid() not in pids and len(pids) == 2
    assert sorted(pids.values(), key=min) == [{0, 2, 4}, {1, 3}]  # shard s to writer s % 2


def test_a_writer_process_on_a_full_disk(hr, tmp_path, monkeypatch):
    out = tmp_path / "out"
    replace = os.replace

    def rename(src, dst):
        if Path(dst).name == "shard-000001.tar":
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", rename)  # inherited by the writer processes
    with pytest.raises(UserError, match=f"no space left on device writing {out / 'shard-000001.tar'}"):
        export_shards(plan_export(config(hr, out, workers=2)))
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]  # every writer dropped the shard it had begun
    state = json.loads((out / ".export-state.json").read_text())
    assert [s["name"] for s in state["shards"]] == ["shard-000000.tar"]
    monkeypatch.setattr(os, "replace", replace)
    export_shards(plan_export(config(hr, out, workers=2, resume=True)))
    export_shards(plan_export(config(hr, tmp_path / "ref")))
    assert files(out) == files(tmp_path / "ref")


def test_a_crash_in_the_main_process_stops_the_writers_cleanly(hr, tmp_path):
    out = tmp_path / "out"

    def crash(step, total, logs):
        if step >= 7:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        export_shards(plan_export(config(hr, out, workers=2)), crash)
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    state = json.loads((out / ".export-state.json").read_text())
    assert [s["name"] for s in state["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    for entry in state["shards"]:
        assert sha256_file(out / entry["name"]) == entry["sha256"]
    export_shards(plan_export(config(hr, out, workers=2, resume=True)))
    export_shards(plan_export(config(hr, tmp_path / "ref")))
    assert files(out) == files(tmp_path / "ref")


def test_in_flight_limit_keeps_memory_flat():
    from degrader.export_workers import MEMORY, in_flight_limit

    assert in_flight_limit(2, 1000, 32, 64) == 2032  # a shard per writer: every writer busy
    big = in_flight_limit(16, 1000, 32, 512)  # 16 shards of 512 px pairs would need 13 GB
    assert big * 512 * 512 * 3 <= MEMORY and big >= 64
    assert in_flight_limit(1, 1, 8, 4096) == 16  # never below two batches


def tarfile_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A shard as `tarfile` writes it with ShardWriter's fixed fields (how ShardWriter wrote shards before)."""
    import io
    import tarfile

    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("records", [1, 7, 40])
def test_shard_writer_writes_the_bytes_tarfile_writes(tmp_path, records):
    rng = np.random.default_rng(records)
    keys = ["a", "faces_0001-3f2a9c81d0e4-c0000-k002", "x" * 91, "é-ünïcode", "d" * 60 + "/" + "y" * 70]  # 5: prefix
    samples = []
    for i in range(records):
        sizes = rng.choice([0, 1, 511, 512, 513, 1024, 5000, 70000], size=4)
        members = {
            ext: rng.integers(0, 256, n, dtype=np.uint8).tobytes() for ext, n in zip(MEMBERS, sizes, strict=True)
        }
        samples.append((keys[i % len(keys)], members))  # x * 91: a 100-byte name
    writer = ShardWriter(tmp_path, samples_per_shard=records)
    entry = None
    for key, members in samples:
        entry = writer.write(key, members)
    tarfile_shard(tmp_path / "reference.tar", samples)
    written = (tmp_path / "shard-000000.tar").read_bytes()
    assert written == (tmp_path / "reference.tar").read_bytes()
    assert len(written) % 10240 == 0 and entry["sha256"] == sha256_file(tmp_path / "shard-000000.tar")


def test_png_level_changes_the_bytes_not_the_pixels(tmp_path):
    import webdataset as wds
    from PIL import Image

    from degrader.shards import ShardDataset

    hr = tmp_path / "hr"
    hr.mkdir()
    ramp = np.linspace(0, 255, 48)[None, :, None] * np.ones((40, 1, 3))  # smooth: compresses, as photos do
    for i in range(7):
        Image.fromarray((ramp * (i + 1) / 7).astype(np.uint8)).save(hr / f"{i}.png")

    default = export_shards(plan_export(config(hr, tmp_path / "l3", workers=2)))
    stored = export_shards(plan_export(config(hr, tmp_path / "l0", workers=2, png_level=0)))
    assert "png_level" not in default["config"] and stored["config"]["png_level"] == 0  # default: as before
    size = lambda out: sum(m[1] for p in out.glob("shard-*.tar") for _, s in index_shard(p) for m in s.values())  # noqa: E731
    assert size(tmp_path / "l0") > 2 * size(tmp_path / "l3")
    for a, b in zip(ShardDataset(tmp_path / "l3"), ShardDataset(tmp_path / "l0"), strict=True):
        assert a["key"] == b["key"] and a["lq"].equal(b["lq"]) and a["gt"].equal(b["gt"])
    urls = [str(tmp_path / "l0" / s["name"]) for s in stored["shards"]]
    stock = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))  # stock WebDataset reads it
    assert len(stock) == 14 and stock[0]["lr.png"].shape == (8, 8, 3)
    with pytest.raises(UserError, match="png_level 10"):
        plan_export(config(hr, tmp_path / "bad", png_level=10))


def test_export_shards_cli_takes_the_png_level(tmp_path, hr):
    from click.testing import CliRunner

    from cli.degrade import degrade

    args = ["export-shards", "--degrader", "bicubic", "--hr", str(hr), "--hr-size", "32", "--workers", "0"]
    result = CliRunner().invoke(degrade, [*args, "--out", str(tmp_path / "l0"), "--png-level", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "l0" / "manifest.json").read_text())["config"]["png_level"] == 0
    bad = CliRunner().invoke(degrade, [*args, "--out", str(tmp_path / "bad"), "--png-level", "10"])
    assert bad.exit_code == 2 and "--png-level" in bad.output and "Traceback" not in bad.output
