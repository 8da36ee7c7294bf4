"""`export_shards` and its CLI: reproducibility, kill-and-resume, crop modes, learned degraders, bad inputs."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from degrader.shards import ShardDataset, index_shard, sample_seed, to_uint8

ROOT = Path(__file__).resolve().parents[1]


def make_images(root, n=6, size=(40, 48)):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def hr(tmp_path_factory):
    root = make_images(tmp_path_factory.mktemp("data") / "hr")
    (root / "sub").mkdir()
    Image.fromarray(np.full((50, 36, 3), 200, np.uint8)).save(root / "sub" / "tall.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "tiny.png")
    return root


def config(hr, out, **kw):
    base = dict(degrader="blur-bilinear", hr=str(hr), out=str(out), per_image=2, samples_per_shard=5, hr_size=32)
    return ExportConfig(**{**base, "workers": 0, "batch_size": 2, **kw})


def files(out):
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())}


@pytest.fixture(scope="module")
def reference(hr, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    steps = []
    manifest = export_shards(plan_export(config(hr, out)), lambda step, total, logs: steps.append((step, total)))
    return out, manifest, steps


def test_manifest_and_progress(reference):
    out, manifest, steps = reference
    assert sorted(files(out)) == ["manifest.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["totals"] == {"images": 7, "crops": 7, "samples": 14, "shards": 3, "skipped": 2}
    assert [(s["name"], s["samples"]) for s in manifest["shards"]][-1] == ("shard-000002.tar", 4)
    assert {s["path"]: s["reason"][:8] for s in manifest["skipped"]} == {
        "broken.png": "not an i",
        "tiny.png": "too smal",
    }
    assert manifest["degrader"] == {"name": "blur-bilinear", "sha256": "", "scale": 4, "hr_size": None}
    assert manifest["config"]["per_image"] == 2 and manifest["config"]["crop"] == "center"
    assert "workers" not in manifest["config"] and manifest["version"]
    assert [s for s, _ in steps] == sorted(s for s, _ in steps) and steps[-1] == (14, 14)
    keys = [s["key"] for s in ShardDataset(out)]
    assert keys[-2:] == [k.replace("k000", f"k00{i}") for i, k in enumerate([keys[-2]] * 2)]  # sub/tall.jpg last


def test_same_command_twice_and_worker_count_give_identical_bytes(hr, reference, tmp_path):
    export_shards(plan_export(config(hr, tmp_path / "a", workers=2, batch_size=3)))
    export_shards(plan_export(config(hr, tmp_path / "b", workers=1, batch_size=5)))
    assert files(tmp_path / "a") == files(tmp_path / "b") == files(reference[0])


KILL_SCRIPT = """
import os, signal, sys
from degrader.export import ExportConfig, export_shards, plan_export
kill_at = int(sys.argv[1])
def on_progress(step, total, logs):
    if step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
config = ExportConfig(degrader="blur-bilinear", hr=sys.argv[2], out=sys.argv[3], per_image=2, samples_per_shard=5,
                      hr_size=32, workers=int(sys.argv[5]), batch_size=2, resume=sys.argv[4] == "resume")
export_shards(plan_export(config), on_progress)
"""


def killed_run(hr, out, kill_at, resume, workers):
    """Kill -9 an export once it reports `kill_at` pairs written; the shards its progress file records."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    fresh = "resume" if resume else "fresh"
    args = [sys.executable, "-c", KILL_SCRIPT, str(kill_at), str(hr), str(out), fresh, str(workers)]
    proc = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    for shard in Path(out).glob("shard-*.tar"):  # a final name always holds a complete shard
        assert len(index_shard(shard)) == 5
    assert not (Path(out) / "manifest.json").exists()
    recorded = [s["name"] for s in json.loads((Path(out) / ".export-state.json").read_text())["shards"]]
    assert {p.name for p in Path(out).glob("shard-*.tar")} >= set(recorded)  # recorded only once renamed
    return recorded


@pytest.mark.parametrize("workers", [1, 2])  # 2: two writer processes write shards 0 and 1 at once
def test_killed_at_several_points_then_resumed_equals_uninterrupted(hr, reference, tmp_path, workers):
    out = tmp_path / "out"
    # The writers may run ahead of the progress reports: a shard not yet recorded may be complete on disk, and a
    # resume writes it again.
    assert killed_run(hr, out, 3, False, workers) == []  # inside the first shard: nothing recorded yet
    assert killed_run(hr, out, 9, True, workers) == ["shard-000000.tar"]  # inside the second shard
    assert killed_run(hr, out, 14, True, workers) == ["shard-000000.tar", "shard-000001.tar"]  # the last one not yet
    assert not (out / "shard-000002.tar").exists()  # the last, short shard is closed only after every report
    with pytest.raises(UserError, match="not empty"):
        export_shards(plan_export(config(hr, out)))
    manifest = export_shards(plan_export(config(hr, out, resume=True, workers=workers)))
    assert files(out) == files(reference[0]) and manifest == reference[1]
    assert (
        export_shards(plan_export(config(hr, out, resume=True))) == manifest
    )  # resuming a finished export changes nothing
    assert files(out) == files(reference[0])
    with pytest.raises(UserError, match="other options"):
        export_shards(plan_export(config(hr, out, resume=True, seed=1)))


def test_crash_then_resume_redoes_a_damaged_shard(hr, reference, tmp_path):
    out = tmp_path / "out"

    def crash(step, total, logs):
        if step >= 12:
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        export_shards(plan_export(config(hr, out)), crash)
    assert sorted(p.name for p in out.iterdir()) == [".export-state.json", "shard-000000.tar", "shard-000001.tar"]
    shard = out / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1000] + bytes(1000))  # changed after it was recorded as complete
    export_shards(plan_export(config(hr, out, resume=True)))
    assert files(out) == files(reference[0])


def test_lr_regenerates_from_seed_with_a_learned_degrader(hr, tmp_path):
    from degrader.checkpoint import Degrader
    from degrader.files import sha256_file
    from degrader.model import HighToLowConfig, HighToLowGenerator
    from degrader.presets import PRESETS

    checkpoint = tmp_path / "tiny.safetensors"
    Degrader(HighToLowGenerator(HighToLowConfig(hr_size=32, scale=4, **PRESETS["small"].network()))).save(checkpoint)
    manifest = export_shards(
        plan_export(ExportConfig(degrader=str(checkpoint), hr=str(hr), out=str(tmp_path / "out"), workers=0))
    )
    assert manifest["degrader"]["sha256"] == sha256_file(checkpoint) and manifest["config"]["hr_size"] == 32
    degrader = Degrader.load(checkpoint)
    samples = list(ShardDataset(tmp_path / "out"))
    assert len(samples) == 7 and all(s["lq"].shape == (3, 8, 8) for s in samples)
    for s in samples:
        assert np.array_equal(to_uint8(degrader.degrade(s["gt"][None], [s["seed"]])), to_uint8(s["lq"][None]))
    with pytest.raises(UserError, match="--hr-size"):
        plan_export(ExportConfig(degrader=str(checkpoint), hr=str(hr), out=str(tmp_path / "x"), hr_size=64))


def test_grid_and_random_crops(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (70, 100, 3), dtype=np.uint8)).save(hr / "big.png")
    manifest = export_shards(plan_export(config(hr, tmp_path / "grid", crop="grid", per_image=1, degrader="bicubic")))
    assert manifest["totals"]["crops"] == 6  # 2 rows x 3 columns of 32 px
    source = np.asarray(Image.open(hr / "big.png"))
    for s in ShardDataset(tmp_path / "grid"):
        c = int(s["key"].split("-c")[1][:4])
        top, left = 3 + 32 * (c // 3), 2 + 32 * (c % 3)  # the grid is centred: 70 - 64 = 6, 100 - 96 = 4
        assert np.array_equal(to_uint8(s["gt"][None])[0], source[top : top + 32, left : left + 32])
        assert s["seed"] == sample_seed(0, f"big.png#{c}", 0)
    export_shards(plan_export(config(hr, tmp_path / "r1", crop="random", per_image=3)))
    export_shards(plan_export(config(hr, tmp_path / "r2", crop="random", per_image=3, workers=1)))
    assert files(tmp_path / "r1") == files(tmp_path / "r2")
    crops = [s["gt"] for s in ShardDataset(tmp_path / "r1")]
    assert len(crops) == 3 and all(c.equal(crops[0]) for c in crops)  # K variants share the crop


def test_bad_inputs(hr, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(UserError, match="--out .* not empty"):
        export_shards(plan_export(config(hr, tmp_path / "full")))
    with pytest.raises(UserError, match="holds files this tool did not write"):
        export_shards(plan_export(config(hr, tmp_path / "full", resume=True)))
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="--hr .* does not exist"):
        export_shards(plan_export(config(tmp_path / "missing", tmp_path / "o1")))
    with pytest.raises(UserError, match="--degrader lanczos"):
        export_shards(plan_export(config(hr, tmp_path / "o2", degrader="lanczos")))
    with pytest.raises(UserError, match="--crop"):
        export_shards(plan_export(config(hr, tmp_path / "o3", crop="middle")))
    with pytest.raises(UserError, match="divisible"):
        export_shards(plan_export(config(hr, tmp_path / "o4", hr_size=30)))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_cli_export_inspect_verify(hr, tmp_path):
    from cli.export import export_shards as export_cmd
    from cli.export import inspect, verify

    runner = CliRunner()
    out = tmp_path / "out"
    args = ["--degrader", "bilinear", "--hr", str(hr), "--out", str(out), "--hr-size", "32", "--workers", "0"]
    result = runner.invoke(export_cmd, [*args, "--dry-run"])
    assert result.exit_code == 0 and "7 images" in result.output and not out.exists()
    result = runner.invoke(export_cmd, args)
    assert result.exit_code == 0, result.output
    assert "wrote 7 pairs in 1 shards" in result.output
    result = runner.invoke(export_cmd, args)
    assert result.exit_code == 1 and "not empty" in result.output and "Traceback" not in result.output
    result = runner.invoke(inspect, [str(out), "--contact-sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0 and "samples" in result.output and "bilinear" in result.output
    assert Image.open(tmp_path / "sheet.png").size[0] > 7 * 32  # 7 samples, LR enlarged to the HR row
    assert runner.invoke(verify, [str(out)]).exit_code == 0
    shard = out / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = runner.invoke(verify, [str(out)])
    assert result.exit_code == 1 and "shard-000000.tar" in result.output
    result = runner.invoke(export_cmd, ["--degrader", "nope", "--hr", str(hr), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "--degrader nope" in result.output


def test_cli_help_does_not_import_torch():
    code = "import sys, cli.export; assert 'torch' not in sys.modules, 'torch imported'"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_several_random_crops_from_one_decode(tmp_path, monkeypatch):
    import degrader.crops

    hr = tmp_path / "hr"
    hr.mkdir()
    source = np.random.default_rng(3).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    Image.fromarray(source).save(hr / "big.png")
    decodes = []
    load_rgb = degrader.crops.load_rgb
    monkeypatch.setattr(degrader.crops, "load_rgb", lambda p: decodes.append(p) or load_rgb(p))
    plan = plan_export(config(hr, tmp_path / "r4", crop="random", crops_per_image=4, per_image=2))
    assert plan.crops == 4 and plan.samples == 8
    manifest = export_shards(plan)
    assert len(decodes) == 1 and manifest["totals"]["crops"] == 4
    samples = list(ShardDataset(tmp_path / "r4"))
    gts = {int(s["key"].split("-c")[1][:4]): to_uint8(s["gt"][None])[0] for s in samples}
    windows = np.lib.stride_tricks.sliding_window_view(source, (32, 32, 3))[..., 0, :, :, :]  # (39, 69, 32, 32, 3)
    for gt in gts.values():  # each crop is a native-resolution window of the photo
        assert (windows == gt).all(axis=(-3, -2, -1)).any()
    assert len({gt.tobytes() for gt in gts.values()}) == 4
    assert {s["seed"] for s in samples} == {sample_seed(0, f"big.png{'' if c == 0 else f'#{c}'}", k)
                                            for c in range(4) for k in range(2)}  # fmt: skip
    # The first crop is the one an export of one random crop per image takes, seeds included.
    one = export_shards(plan_export(config(hr, tmp_path / "r1", crop="random", per_image=2)))
    assert "crops_per_image" not in one["config"] and manifest["config"]["crops_per_image"] == 4
    first = list(ShardDataset(tmp_path / "r1"))
    assert np.array_equal(to_uint8(first[0]["gt"][None])[0], gts[0])
    assert {s["seed"] for s in first} == {s["seed"] for s in samples if "-c0000" in s["key"]}
    with pytest.raises(UserError, match="--crops-per-image"):
        plan_export(config(hr, tmp_path / "g", crop="grid", crops_per_image=2))
