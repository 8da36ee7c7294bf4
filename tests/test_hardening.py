"""Issue 10, lost data and damaged run files: --overwrite, --resume, full and read-only disks (fit, export)."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import cli.options
import degrader.checkpoint
from cli.degrade import degrade
from degrader.errors import UserError
from degrader.export import ExportConfig, export_shards, plan_export
from degrader.files import atomic_path, clear_ours, is_ours, prepare_out_dir, write_json
from degrader.gan import LossConfig
from degrader.train import FitConfig, fit, plan_fit

TINY = dict(hr_size=32, batch_size=2, workers=0, log_every=1, device="cpu", loss=LossConfig(d_steps=1))


def tiny(hr: Path, lr: Path, out: Path, **kw) -> FitConfig:
    return FitConfig(hr=str(hr), lr=str(lr), out=str(out), **{"steps": 2, **TINY, **kw})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(*args) -> Result:
    return CliRunner().invoke(degrade, [str(a) for a in args])


def assert_clean_error(result: Result, *words: str) -> str:
    """Exit code 1 (or 2, a usage error), one 'Error: ...' line naming `words`, no traceback."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def hugging_face_folder(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    (path / "model.safetensors").write_bytes(b"weights")
    (path / "README.md").write_text("my model")
    return path


# ---------------------------------------------------------------------------------------------- --overwrite


def test_overwrite_refuses_a_folder_that_is_not_ours(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    folder = hugging_face_folder(tmp_path / "bert")
    before = snapshot(folder)
    for flag in ("overwrite", "resume"):
        with pytest.raises(UserError, match=f"--out {folder} holds files this tool did not write.*--{flag}"):
            fit(plan_fit(tiny(hr, lr, folder, **{flag: True})))
        with pytest.raises(UserError, match="holds files this tool did not write"):
            plan_export(ExportConfig(hr=str(hr), out=str(folder), hr_size=32, **{flag: True}))
    assert snapshot(folder) == before  # nothing written, nothing removed, config.json untouched


def test_overwrite_keeps_the_users_files_in_our_own_run(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    fit(plan_fit(tiny(hr, lr, out, sample_every=1)))
    assert is_ours(out)
    (out / "NOTES.md").write_text("lr 1e-4 was too high")
    (out / "samples" / "favourite.png").write_bytes(b"mine")
    (out / "plots").mkdir()
    (out / "plots" / "loss.png").write_bytes(b"mine too")
    fit(plan_fit(tiny(hr, lr, out, steps=1, overwrite=True)))
    files = snapshot(out)
    assert files["NOTES.md"] == b"lr 1e-4 was too high"
    assert files["samples/favourite.png"] == b"mine" and files["plots/loss.png"] == b"mine too"
    # The earlier run's grids are gone (removed, not left to mix with the new run's); the new run's are there.
    assert sorted(k for k in files if k.startswith("samples/step-")) == ["samples/step-000001.png"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]


def test_export_overwrite_keeps_the_users_files(tiny_folders, tmp_path):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=4)
    export_shards(plan_export(ExportConfig(**config)))
    assert is_ours(out)
    (out / "NOTES.md").write_text("for the ablation")
    export_shards(plan_export(ExportConfig(**config, per_image=2, overwrite=True)))
    names = sorted(snapshot(out))
    assert names == ["NOTES.md", "manifest.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]


def test_clear_ours_removes_only_known_names(tmp_path):
    out = tmp_path / "run"
    (out / "samples").mkdir(parents=True)
    ours = ["config.json", "state.safetensors", "log.jsonl", "samples/step-000010.png", ".config.json.abc.tmp"]
    theirs = ["config.yaml", "samples/step-10.jpg", "shard-000000.tar.bak", "sub/config.json"]
    for name in ours + theirs:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    clear_ours(out)
    assert sorted(snapshot(out)) == sorted(theirs)


# -------------------------------------------------------------------------------------------------- --resume


def test_resume_without_the_state_refuses_and_keeps_the_trained_model(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    fit(plan_fit(tiny(hr, lr, out)))
    (out / "state.safetensors").unlink()
    before = snapshot(out)
    with pytest.raises(UserError, match=f"--resume: {out / 'state.safetensors'} is missing"):
        fit(plan_fit(tiny(hr, lr, out, steps=4, resume=True)))
    assert snapshot(out) == before


def test_resume_of_an_empty_or_new_folder_refuses(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    (tmp_path / "empty").mkdir()
    for name in ("empty", "new"):
        with pytest.raises(UserError, match=f"--resume: --out {tmp_path / name} holds no run to continue"):
            plan_fit(tiny(hr, lr, tmp_path / name, resume=True))
    assert not (tmp_path / "new").exists()


def test_resume_after_a_partial_last_log_line(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    straight = fit(plan_fit(tiny(hr, lr, tmp_path / "straight", steps=4)))
    fit(plan_fit(tiny(hr, lr, out, steps=2)))
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 3, "g_lo')  # killed while appending
    result = fit(plan_fit(tiny(hr, lr, out, steps=4, resume=True)))
    assert result.step == 4
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (out / "degrader.safetensors").read_bytes() == (straight.out / "degrader.safetensors").read_bytes()


def test_resume_with_a_damaged_config_is_one_line(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    fit(plan_fit(tiny(hr, lr, out)))
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[:-20])
    before = snapshot(out)
    with pytest.raises(UserError, match=f"^{out / 'config.json'} is damaged \\(not a JSON object\\); choose a new"):
        fit(plan_fit(tiny(hr, lr, out, steps=4, resume=True)))
    assert snapshot(out) == before


@pytest.mark.parametrize("name", ["manifest.json", ".export-state.json"])
def test_export_resume_with_a_damaged_manifest_or_state_is_one_line(tiny_folders, tmp_path, name):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=4)
    export_shards(plan_export(ExportConfig(**config)))
    if name == ".export-state.json":
        (out / "manifest.json").rename(out / name)  # as if killed before the manifest was written
    (out / name).write_text((out / name).read_text()[:50])
    before = snapshot(out)
    with pytest.raises(UserError, match=f"^{out / name} is damaged"):
        export_shards(plan_export(ExportConfig(**config, resume=True)))
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------- full and read-only disks


def full_disk_after(monkeypatch, module, name: str, calls: int) -> None:
    """`module.name` (a writer) works `calls` times, then fails as a full disk does."""
    real, count = getattr(module, name), [0]

    def write(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, write)


def test_fit_on_a_full_disk_keeps_the_previous_checkpoint(tiny_folders, tmp_path, monkeypatch):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    fit(plan_fit(tiny(hr, lr, out, steps=2, checkpoint_every=2)))
    before = {k: v for k, v in snapshot(out).items() if k.endswith(".safetensors")}
    full_disk_after(monkeypatch, degrader.checkpoint, "save_file", 0)
    with pytest.raises(UserError, match=f"^no space left on device writing {out / 'degrader.safetensors'}; free"):
        fit(plan_fit(tiny(hr, lr, out, steps=4, checkpoint_every=2, resume=True)))
    after = snapshot(out)
    assert {k: after[k] for k in before} == before
    assert not [k for k in after if k.endswith(".tmp")]


def test_fit_on_a_full_disk_through_the_cli(tiny_folders, tmp_path, monkeypatch):
    hr, lr = tiny_folders
    full_disk_after(monkeypatch, degrader.checkpoint, "save_file", 0)
    args = ["--set=hr_size=32", "--batch-size", "2", "--set=loss.d_steps=1", "--set=workers=0", "--device", "cpu"]
    result = run("fit", "--hr", hr, "--lr", lr, "--out", tmp_path / "run", "--steps", "1", *args)
    assert_clean_error(result, "no space left on device writing", "degrader.safetensors")


def second_shard_does_not_fit(monkeypatch) -> None:
    """Renaming shard-000001.tar into place fails as on a full disk."""
    replace = os.replace

    def rename(src, dst):
        if Path(dst).name == "shard-000001.tar":
            raise OSError(errno.ENOSPC, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", rename)


def test_export_on_a_full_disk(tiny_folders, tmp_path, monkeypatch):
    hr, _ = tiny_folders
    out = tmp_path / "shards"
    config = dict(hr=str(hr), out=str(out), hr_size=32, workers=0, samples_per_shard=2)
    second_shard_does_not_fit(monkeypatch)
    with pytest.raises(UserError, match=f"no space left on device writing {out / 'shard-000001.tar'}"):
        export_shards(plan_export(ExportConfig(**config)))
    assert sorted(snapshot(out)) == [".export-state.json", "shard-000000.tar"]


def test_atomic_path_on_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if (folder / "probe").touch() is None:  # running as root: permissions do not apply
            pytest.skip("permissions are not enforced for this user")
    except PermissionError:
        pass
    try:
        with pytest.raises(UserError, match=f"^cannot write {folder / 'a.json'} \\(Permission denied\\); choose"):
            write_json(folder / "a.json", {})
        with pytest.raises(UserError, match="is not writable"):
            prepare_out_dir(folder / "run")
    finally:
        folder.chmod(0o755)


def test_atomic_path_passes_other_errors_through(tmp_path):
    with pytest.raises(ValueError, match="mine"), atomic_path(tmp_path / "x"):
        raise ValueError("mine")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- sr train


def pair_shards(root: Path, bad: dict[int, tuple[int, int]]) -> Path:
    """4 x4 samples (LR 8 px, HR 32 px) in 2 shards; sample i in `bad` gets an LR of size (w, h) instead."""
    import numpy as np

    from degrader.shards import ShardWriter, encode_png

    root.mkdir(parents=True)
    writer = ShardWriter(root, samples_per_shard=2)
    for i in range(4):
        w, h = bad.get(i, (8, 8))
        members = {
            "hr.png": encode_png(np.full((32, 32, 3), 40 * i, np.uint8)),
            "lr.png": encode_png(np.full((h, w, 3), 40 * i, np.uint8)),
            "seed.txt": str(i).encode(),
            "json": json.dumps({"seed": i, "source": f"{i}.png"}).encode(),
        }
        writer.write(f"k{i}", members)
    writer.finish_shard()
    return root


@pytest.mark.parametrize("size", [(4, 4), (16, 16), (8, 4)], ids=["x8", "larger-than-hr", "two-scales"])
def test_sr_train_names_a_sample_of_the_wrong_size_before_training(tmp_path, size):
    from sr.train import SRTrainConfig, plan_train

    root = pair_shards(tmp_path / "shards", {3: size})
    out = tmp_path / "run"
    with pytest.raises(UserError, match=f"--shards {root}: 1 samples are not x4 pairs .* e.g. .*shard-000001.tar: k3"):
        plan_train(SRTrainConfig(out=str(out), shards=str(root), device="cpu", workers=0))
    assert not out.exists()
    plan = plan_train(SRTrainConfig(out=str(out), shards=str(pair_shards(tmp_path / "good", {})), device="cpu"))
    assert (plan.model.scale, plan.model.lr_size) == (4, 8)


def test_sr_train_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from sr.train import SRTrainConfig, plan_train, train

    shards = str(pair_shards(tmp_path / "shards", {}))
    kw = dict(shards=shards, device="cpu", workers=0, batch_size=2, pixel_only=True, preset="small", log_every=1)
    out = tmp_path / "run"
    train(plan_train(SRTrainConfig(out=str(out), steps=1, **kw)))
    before = {k: v for k, v in snapshot(out).items() if k.endswith(".safetensors")}
    full_disk_after(monkeypatch, degrader.checkpoint, "save_file", 0)
    with pytest.raises(UserError, match=f"^no space left on device writing {out / 'sr.safetensors'}"):
        train(plan_train(SRTrainConfig(out=str(out), steps=2, resume=True, **kw)))
    after = snapshot(out)
    assert {k: after[k] for k in before} == before and not [k for k in after if k.endswith(".tmp")]


def test_fit_on_a_full_disk_while_logging(tiny_folders, tmp_path, monkeypatch):
    hr, lr = tiny_folders
    out = tmp_path / "run"

    real_open = open

    def open_log(path, mode="r", *args, **kwargs):
        if str(path).endswith("log.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_log)
    with pytest.raises(UserError, match=f"^no space left on device writing {out / 'log.jsonl'}"):
        fit(plan_fit(tiny(hr, lr, out)))


# -------------------------------------------------------------------------------------------- skipped inputs


def test_export_where_every_image_fails_to_decode_exits_non_zero(tiny_folders, tmp_path, monkeypatch):
    import degrader.crops

    hr, _ = tiny_folders

    def broken(path):
        raise UserError(f"{path}: cannot decode (broken data stream)")

    monkeypatch.setattr(degrader.crops, "load_rgb", broken)  # passes the scan, fails in the decoder
    out = tmp_path / "shards"
    args = ["--degrader", "bicubic", "--hr", hr, "--out", out, "--hr-size", "32", "--workers", "0"]
    result = run("export-shards", *args)
    assert_clean_error(result, f"--hr {hr}: no image could be used (6 skipped, e.g. 000.png: cannot decode", "wrote no")
    assert len(json.loads((out / "manifest.json").read_text())["skipped"]) == 6


def test_fit_lists_every_skipped_file_in_the_run_directory(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    for i in range(5):
        (hr / f"broken-{i}.png").write_bytes(b"not a png")
    (lr / "empty.png").write_bytes(b"")
    out = tmp_path / "run"
    args = ["--set=hr_size=32", "--batch-size", "2", "--set=loss.d_steps=1", "--set=workers=0", "--device", "cpu"]
    result = run("fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", "1", *args)
    assert result.exit_code == 0, result.output
    listed = [line.split("\t") for line in (out / "skipped.txt").read_text().splitlines()]
    assert [(option, Path(path).name) for option, path, _ in listed] == [
        *[("--hr", f"broken-{i}.png") for i in range(5)],
        ("--lr", "empty.png"),
    ]
    text = result.output.replace("\n", "")
    assert "skipped 5 files" in text and "and 2 more" in text and f"all of them in {out / 'skipped.txt'}" in text
    # A dry run writes nothing and names every file.
    dry = run("fit", "--hr", hr, "--lr", lr, "--out", tmp_path / "dry", "--dry-run", *args)
    assert dry.exit_code == 0 and all(f"broken-{i}.png" in dry.output for i in range(5))
    assert not (tmp_path / "dry").exists()


def test_sr_train_lists_every_skipped_file(tmp_path):
    from sr.train import SRTrainConfig, plan_train, train
    from tests.conftest import write_images

    hr = tmp_path / "hr"
    write_images(hr, 4, 32)
    for i in range(4):
        (hr / f"broken-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    kw = dict(degrader="bicubic", hr=str(hr), lr_size=8, device="cpu", workers=0, batch_size=2, pixel_only=True)
    result = train(plan_train(SRTrainConfig(out=str(tmp_path / "run"), steps=1, **kw)))
    listed = (result.out / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["--hr", str(hr / f"broken-{i}.png")] for i in range(4)]


def test_files_that_fail_to_decode_during_training_join_the_list(tiny_folders, tmp_path, monkeypatch):
    import degrader.images
    from cli.options import report

    hr, lr = tiny_folders
    real = degrader.images.load_rgb

    def load_rgb(path):
        if Path(path).name in ("002.png", "004.png") and Path(path).parent == hr:
            raise degrader.images.BadImageError(f"{path}: cannot decode (broken data stream)")  # passes the scan
        return real(path)

    monkeypatch.setattr(degrader.images, "load_rgb", load_rgb)
    result = fit(plan_fit(tiny(hr, lr, tmp_path / "run", steps=3, batch_size=3)))
    lines = [line.split("\t") for line in (result.out / "skipped.txt").read_text().splitlines()]
    named = sorted({(option, Path(path).name) for option, path, _ in lines})
    assert named == [("--hr", "002.png"), ("--hr", "004.png")]
    assert all(why == f"cannot decode (broken data stream) {degrader.images.LATE}" for _, _, why in lines)
    printed = io.StringIO()  # what the CLI says at the end of the run
    monkeypatch.setattr(cli.options, "console", Console(file=printed, width=400))
    report(result, ["degrader.safetensors"])
    assert "2 files passed the scan but failed to decode during training" in printed.getvalue()


def test_sr_train_refuses_a_changed_shard_unless_no_verify(tiny_folders, tmp_path):
    from sr.train import SRTrainConfig, plan_train

    root = tmp_path / "shards"
    export_shards(plan_export(ExportConfig(hr=str(tiny_folders[0]), out=str(root), hr_size=32, samples_per_shard=2)))
    with open(root / "shard-000001.tar", "ab") as f:
        f.write(bytes(512))  # still a readable tar with the same samples, but not the bytes the manifest lists
    config = dict(out=str(tmp_path / "run"), shards=str(root), device="cpu", workers=0)
    with pytest.raises(UserError, match=r"shard-000001.tar: sha256 does not match the manifest"):
        plan_train(SRTrainConfig(**config))
    assert len(plan_train(SRTrainConfig(**config, verify=False)).shards) == 6
    from cli.sr import sr

    args = ["train", "--shards", str(root), "--out", str(tmp_path / "run"), "--dry-run"]
    assert_clean_error(CliRunner().invoke(sr, args), "shard-000001.tar: sha256 does not match the manifest")
    result = CliRunner().invoke(sr, [*args, "--set", "verify=false"])
    assert result.exit_code == 0 and "6 pairs from 3 shards" in result.output.replace("\n", " "), result.output
