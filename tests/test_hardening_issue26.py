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
from tests.test_hardening_cli import TINY


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


@pytest.mark.parametrize("copies", [1, 20])
def test_tone_of_too_few_distinct_images_is_the_identity_with_a_warning(copies):
    import torch.nn.functional as F

    from degrader.tone import measure_tone
    from tests.test_tone import faces

    hr = faces(300, 0)
    lr = (1.4 * F.avg_pool2d(faces(1, 1), 4) - 0.2).clamp(0, 1).repeat(copies, 1, 1, 1)  # far from the HR's tone
    tone = measure_tone(hr, lr, 4)
    assert (tone.gain, tone.offset) == (1.0, 0.0)
    assert tone.warning == "tone auto: the LR set 1 distinct image, fewer than 8; the tone map is the identity."
    assert "not measured" in tone.describe()
    lr8 = (1.4 * F.avg_pool2d(faces(8, 1), 4) - 0.2).clamp(0, 1).repeat(3, 1, 1, 1)  # 8 distinct, 24 in all
    assert measure_tone(hr, lr8, 4).warning == ""


def test_fit_prints_the_tone_warning(tmp_path):
    hr = tmp_path / "hr"
    write_images(hr, 12, 64)
    lr = tmp_path / "lr"
    one = write_images(lr, 1, 16, seed=5)[0]
    for i in range(1, 20):
        (lr / f"{i:03d}.png").write_bytes(one.read_bytes())  # 20 copies of one image
    tiny = [*TINY, "--set=val_split=0"]
    result = run("fit", "--hr", hr, "--lr", lr, "--out", tmp_path / "run", *tiny, "--dry-run")
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # rich wraps long lines
    assert "warning: tone auto: the LR set 1 distinct image, fewer than 8; the tone map is the identity." in shown


@pytest.mark.parametrize("inside", ["--hr", "--lr", "--val-lr"])
def test_fit_refuses_an_out_inside_an_input_folder(tmp_path, inside):
    folders = {"--hr": tmp_path / "hr", "--lr": tmp_path / "lr", "--val-lr": tmp_path / "val"}
    write_images(folders["--hr"], 12, 64)
    write_images(folders["--lr"], 12, 16, seed=1)
    write_images(folders["--val-lr"], 8, 16, seed=2)
    out = folders[inside] / "runs" / "first"
    args = [x for option, folder in folders.items() for x in (option, folder)]
    result = run("fit", *args, "--out", out, *TINY, "--dry-run")
    assert_clean_error(result, f"--out {out} is inside {inside} {folders[inside]}", "choose an --out outside it")


@pytest.mark.parametrize("where", ["inside", "same"])
def test_export_refuses_an_out_inside_its_hr_folder(tiny_folders, where):
    hr, _ = tiny_folders
    out = hr / "shards" if where == "inside" else hr
    with pytest.raises(UserError, match=f"^--out {out} is inside --hr {hr}: later runs would read its outputs"):
        plan_export(ExportConfig(hr=str(hr), out=str(out), hr_size=32, workers=0))
    assert sorted(p.name for p in hr.iterdir()) == [f"{i:03d}.png" for i in range(6)]


def test_compare_refuses_a_pair_whose_hr_is_not_an_image(tmp_path):
    from sr.compare import CompareConfig, plan_compare

    hr, pairs = tmp_path / "hr", tmp_path / "pairs"
    write_images(hr, 4, 64)
    for i, path in enumerate(write_images(pairs, 3, 64, seed=3)):
        Image.open(path).resize((16, 16)).save(pairs / f"p{i}_LR.png")
        path.rename(pairs / f"p{i}_HR.png")
    write_images(tmp_path / "other", 1, 64)[0].rename(pairs / "overview.png")  # neither _HR nor _LR: no pair's part
    config = dict(hr=str(hr), degraders=["bicubic"], pairs=str(pairs), workers=0, device="cpu", hr_size=64)
    assert len(plan_compare(CompareConfig(out=str(tmp_path / "a"), **config)).pairs) == 3
    (pairs / "p1_HR.png").write_text("not an image")
    with pytest.raises(UserError, match=f"^--pairs: {pairs / 'p1_HR.png'}: not an image \\(and 1 more\\); fix or"):
        plan_compare(CompareConfig(out=str(tmp_path / "b"), **config))
