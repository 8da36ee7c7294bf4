"""`degrade fit` through click: clean one-line errors for every bad input, dry runs, overwrite and resume."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.degrade import degrade
from degrader.checkpoint import DEGRADER_FILE, Degrader

TINY = ["--set=hr_size=32", "--batch-size", "2", "--set=loss.d_steps=1", "--set=workers=0", "--device", "cpu"]


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(degrade, [str(a) for a in args])


def fit_args(hr: Path, lr: Path, out: Path, steps: int = 2) -> list:
    return ["fit", "--hr", hr, "--lr", lr, "--out", out, "--steps", str(steps), *TINY]


def assert_clean_error(result: Result, *words: str) -> str:
    """Exit code != 0, one 'Error: ...' line that names `words`, no traceback. Returns that line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an unexpected exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_help():
    for args in (["--help"], ["fit", "--help"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert "fit" in result.output
    fit_help = run("fit", "--help").output
    for option in ("--hr", "--lr", "--out", "--preset", "--resume", "--overwrite", "--dry-run", "--config", "--set"):
        assert option in fit_help
    assert "[default: small]" in fit_help


def test_help_does_not_import_torch():
    code = (
        "import sys; from click.testing import CliRunner; from cli.degrade import degrade; "
        "r = CliRunner().invoke(degrade, ['fit', '--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_fit_writes_a_run_and_reports_it(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    result = run(*fit_args(hr, lr, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "6 HR images -> 6 real LR images, 32px -> 8px" in result.output
    assert str(tmp_path / "run" / DEGRADER_FILE) in re.sub(r"\s*\n\s*", "", result.output)
    assert Degrader.load(tmp_path / "run").step == 2


def test_dry_run_writes_nothing(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    before = snapshot(tmp_path)
    result = run(*fit_args(hr, lr, tmp_path / "run"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert not (tmp_path / "run").exists() and snapshot(tmp_path) == before


def test_missing_folder(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    assert_clean_error(run(*fit_args(tmp_path / "nope", lr, tmp_path / "run")), "--hr", "nope")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["empty", "text-only", "unreadable", "too-small"])
def test_folder_without_usable_images(tiny_folders, tmp_path, case, make_images):
    hr, lr = tiny_folders
    bad = tmp_path / case
    bad.mkdir()
    if case == "text-only":
        (bad / "readme.txt").write_text("hi")
    if case == "unreadable":
        (bad / "a.png").write_text("not a png")
        (bad / "b.jpg").write_bytes(os.urandom(300))
    if case == "too-small":
        make_images(bad, 2, 4)  # LR target is 8 px
    line = assert_clean_error(run(*fit_args(hr, bad, tmp_path / "run")), "--lr", str(bad))
    if case == "too-small":
        assert "at least 8x8" in line
    assert not (tmp_path / "run").exists()


def test_corrupt_files_are_skipped_with_a_warning(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    for name in ("bad1.png", "bad2.png", "bad3.png", "bad4.png"):
        (lr / name).write_text("junk")
    result = run(*fit_args(hr, lr, tmp_path / "run", steps=1))
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert "warning: --lr: skipped 4 files: bad1.png (not an image), bad2.png (not an image), bad3.png" in text
    assert "and 1 more" in text
    assert "6 HR images -> 6 real LR images" in text
    assert Degrader.load(tmp_path / "run").step == 1


def test_unwritable_output(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    blocker = tmp_path / "somefile"
    blocker.write_text("keep")
    assert_clean_error(run(*fit_args(hr, lr, blocker)), "--out", str(blocker), "is a file")
    assert_clean_error(run(*fit_args(hr, lr, blocker / "run")), "--out", str(blocker / "run"), "not writable")
    assert blocker.read_text() == "keep"
    if os.geteuid() != 0:  # root writes anywhere; the path under a file above covers it there
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert_clean_error(run(*fit_args(hr, lr, locked / "run")), "--out", "not writable")
        finally:
            locked.chmod(0o700)


def test_dry_run_refuses_an_output_under_a_file(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    (tmp_path / "somefile").write_text("keep")
    assert_clean_error(run(*fit_args(hr, lr, tmp_path / "somefile" / "run"), "--dry-run"), "--out")


def test_output_holding_another_run(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    assert run(*fit_args(hr, lr, out, steps=1)).exit_code == 0
    before = snapshot(out)
    for extra in ([], ["--dry-run"]):
        assert_clean_error(run(*fit_args(hr, lr, out, steps=2), *extra), "--out", str(out), "--resume", "--overwrite")
    assert snapshot(out) == before
    # --resume continues it; --overwrite replaces it.
    result = run(*fit_args(hr, lr, out, steps=2), "--resume")
    assert result.exit_code == 0, result.output
    assert Degrader.load(out).step == 2
    (out / "mine.txt").write_text("old")
    result = run(*fit_args(hr, lr, out, steps=1), "--overwrite")
    assert result.exit_code == 0, result.output
    assert Degrader.load(out).step == 1 and (out / "mine.txt").read_text() == "old"  # --overwrite keeps user files


def test_resume_with_other_settings(tiny_folders, tmp_path):
    hr, lr = tiny_folders
    out = tmp_path / "run"
    assert run(*fit_args(hr, lr, out, steps=1)).exit_code == 0
    before = snapshot(out)
    assert_clean_error(run(*fit_args(hr, lr, out, steps=2), "--resume", "--seed", "3"), "--resume", "seed")
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "args,option",
    [(["--set", "hr_size=48"], "hr_size"), (["--scale", "3"], "--scale"), (["--steps", "0"], "--steps")],
)
def test_bad_options(tiny_folders, tmp_path, args, option):
    hr, lr = tiny_folders
    assert_clean_error(run(*fit_args(hr, lr, tmp_path / "run"), *args), option)
    assert not (tmp_path / "run").exists()
