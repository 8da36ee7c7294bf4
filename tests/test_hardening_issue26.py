"""Issue 26, lost files and silent wrong results: each hostile input built here, each outcome checked exactly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result
from PIL import Image

import degrader.synthetic
from cli.degrade import degrade
from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from tests.test_hardening import assert_clean_error, second_shard_does_not_fit, snapshot


def run(*args) -> Result:
    return CliRunner().invoke(degrade, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------- lost files


def test_demo_removes_only_what_an_earlier_demo_wrote(tmp_path, monkeypatch):
    out = tmp_path / "X"
    (out / "data").mkdir(parents=True)
    (out / "data" / "demo.json").write_text("{}")  # an earlier demo's marker
    (out / "degrader" / "samples").mkdir(parents=True)
    (out / "degrader" / "samples" / "step-1.png").write_bytes(b"old")
    (out / "sr-results.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    (out / "photos").mkdir()
    (out / "photos" / "holiday.jpg").write_bytes(b"mine too")

    def stop(root, seed):
        assert not root.exists()  # the earlier demo's data was cleared before new data is written
        raise UserError("stopped here")

    monkeypatch.setattr(degrader.synthetic, "write_demo_data", stop)
    assert_clean_error(run("demo", out, "--steps", "1"), "stopped here")
    assert snapshot(out) == {"notes.txt": b"mine", "photos/holiday.jpg": b"mine too"}


def test_demo_refuses_a_folder_without_an_earlier_demo(tmp_path):
    out = tmp_path / "X"
    (out / "data").mkdir(parents=True)
    (out / "data" / "faces.png").write_bytes(b"mine")
    assert_clean_error(run("demo", out), f"{out} is not empty and holds no earlier demo")
    assert snapshot(out) == {"data/faces.png": b"mine"}


def test_export_resume_deletes_only_its_own_shard_names(tiny_folders, tmp_path, monkeypatch):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=2)
    with monkeypatch.context() as patch:
        second_shard_does_not_fit(patch)
        with pytest.raises(UserError, match="no space left"):
            export_shards(plan_export(ExportConfig(**config)))
    users = {"shard-notes.txt": b"notes", "shard-000000-backup.tar": b"backup", ".shard-notes.tmp": b"hidden"}
    users |= {"shard-r0001-000000.tar": b"another export's", "shard-000000.tar.bak": b"bak"}
    for name, data in users.items():
        (out / name).write_bytes(data)
    (out / "shard-000007.tar").write_bytes(b"a shard past the resume point")  # ours: rewritten or removed
    (out / ".shard-000001.tar.a1b2_c3.tmp").write_bytes(b"half-written")  # ours: an atomic_path temporary
    manifest = export_shards(plan_export(ExportConfig(**config, resume=True)))
    assert [s["name"] for s in manifest["shards"]] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    files = snapshot(out)
    assert {name: files.get(name) for name in users} == users
    assert "shard-000007.tar" not in files and ".shard-000001.tar.a1b2_c3.tmp" not in files


def test_overwrite_keeps_shard_like_names_of_the_user(tiny_folders, tmp_path):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=4)
    export_shards(plan_export(ExportConfig(**config)))
    (out / "shard-000000-backup.tar").write_bytes(b"backup")
    export_shards(plan_export(ExportConfig(**config, overwrite=True)))
    assert (out / "shard-000000-backup.tar").read_bytes() == b"backup"


def test_sample_refuses_an_existing_out_without_overwrite(tiny_folders, tmp_path):
    hr, _ = tiny_folders
    target = tmp_path / "existing.png"
    target.write_bytes(b"a user's picture")
    args = ["sample", "--degrader", "bicubic", "--hr", hr, "--out", target, "--n", "2", "--seeds", "1"]
    assert_clean_error(run(*args, "--hr-size", "32"), f"--out {target} exists", "--overwrite")
    assert target.read_bytes() == b"a user's picture"
    result = run(*args, "--hr-size", "32", "--overwrite")
    assert result.exit_code == 0, result.output
    assert Image.open(target).format == "PNG"
