"""Issue 26, lost files and silent wrong results: each hostile input built here, each outcome checked exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

import degrader.synthetic
from cli.degrade import degrade
from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from degrader.shards import MANIFEST
from tests.conftest import write_images
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


# ------------------------------------------------------------------------------------- silent wrong results


def test_apply_refuses_two_inputs_with_one_output_name(tmp_path):
    from degrader.apply import degrade_files
    from tests.test_apply import structured_degrader

    write_images(tmp_path / "one", 1, 16)  # one/000.png
    write_images(tmp_path / "two", 1, 16, seed=1)  # two/000.png: the same name in another folder
    Image.open(tmp_path / "one" / "000.png").save(tmp_path / "one" / "000.jpg")  # and 000.jpg beside 000.png
    deg, out = structured_degrader(), tmp_path / "out"
    with pytest.raises(UserError, match=f"^INPUTS {tmp_path / 'one' / '000.jpg'} and {tmp_path / 'one' / '000.png'} "):
        degrade_files(deg, [tmp_path / "one"], out)
    (tmp_path / "one" / "000.jpg").unlink()
    with pytest.raises(
        UserError, match=f"and {tmp_path / 'two' / '000.png'} would both be written to {out / '000.png'}"
    ):
        degrade_files(deg, [tmp_path / "one", tmp_path / "two"], out)
    assert not out.exists()
    written, _ = degrade_files(deg, [tmp_path / "one"], out)
    assert [p.name for p, _ in written] == ["000.png"]


def interrupted_export(hr: Path, out: Path, monkeypatch) -> dict:
    """An export of `hr` into `out` stopped after its first shard (a full disk), as --resume finds it."""
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=2)
    with monkeypatch.context() as patch:
        second_shard_does_not_fit(patch)
        with pytest.raises(UserError, match="no space left"):
            export_shards(plan_export(ExportConfig(**config)))
    return config


def test_export_resume_refuses_a_changed_hr_folder(tiny_folders, tmp_path, monkeypatch):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = interrupted_export(hr, out, monkeypatch)
    (hr / "005.png").unlink()  # an image deleted, another added: the same count, other images
    write_images(tmp_path / "new", 1, 64, seed=9)[0].rename(hr / "zzz.png")
    before = snapshot(out)
    with pytest.raises(UserError, match=f"^--resume: --hr {hr} changed since this export began"):
        export_shards(plan_export(ExportConfig(**config, resume=True)))
    assert snapshot(out) == before
    options = ["--hr-size", "32", "--samples-per-shard", "2", "--workers", "0", "--resume"]
    result = run("export-shards", "--degrader", "bicubic", "--hr", hr, "--out", out, *options)
    assert_clean_error(result, f"--hr {hr} changed since this export began")


@pytest.mark.parametrize("name", ["../victim.tar", "/tmp/victim.tar", "shard-000001.tar", "notes.txt", 7])
def test_export_resume_refuses_a_crafted_state_entry(tiny_folders, tmp_path, monkeypatch, name):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = interrupted_export(hr, out, monkeypatch)
    state = json.loads((out / ".export-state.json").read_text())
    state["shards"][0]["name"] = name
    (out / ".export-state.json").write_text(json.dumps(state))
    (tmp_path / "victim.tar").write_bytes(b"victim")
    with pytest.raises(UserError, match=r"\.export-state\.json: shard entry 0 .* is not this export's shard"):
        export_shards(plan_export(ExportConfig(**config, resume=True)))
    assert (tmp_path / "victim.tar").read_bytes() == b"victim" and not (out / MANIFEST).exists()
