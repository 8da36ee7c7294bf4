"""Small file-system helpers: atomic writes, checksums and the output directories of runs and exports."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from degrader.errors import UserError

_D = "[0-9]"  # a digit, in WRITTEN's globs
# Everything this tool writes into a run or export directory, as globs relative to it. `--overwrite` removes
# these and nothing else, so files a user put there (notes, plots) survive.
WRITTEN = (
    *("config.json", "state.safetensors", "degrader.safetensors", "sr.safetensors", "log.jsonl", "skipped.txt"),
    "inputs.json",  # fit's image lists
    *("samples/step-*.png", "samples/.step-*.tmp"),  # sample grids and their temporaries
    *("best.safetensors", "report.html", "report-*.png"),  # fit's validation best and its run report
    *("manifest.json", ".export-state.json", f"shard-{_D * 6}.tar", f"shard-r{_D * 4}-{_D * 6}.tar"),  # exports
    ".shard-*.tmp",  # shards being written
    ".export-state-r*.json",  # each rank's progress in an export under torchrun
    *(".*.tmp", ".write-test"),  # atomic_path temporaries, the writability probe
)
OWN_MARKS = ("config.json", "manifest.json", ".export-state.json")  # what `is_ours` reads
RUN_KEYS = {"out", "steps", "seed", "checkpoint_every", "resume", "overwrite"}  # in every run's config.json
SHARDS_FORMAT = "degrader-shards"  # manifest.json "format" of an export (degrader.shards.FORMAT)


def write_error(path: str | Path, e: BaseException) -> UserError | None:
    """The one-line UserError for a failed write of `path`, when the cause is one a user can fix."""
    text = str(e)
    code = getattr(e, "errno", None)
    if code is None and (found := re.search(r"\(os error (\d+)\)", text)):  # safetensors reports errors as text
        code = int(found[1])
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text:
        return UserError(f"no space left on device writing {path}; free some space, then rerun (--resume continues).")
    if code == errno.EFBIG:
        return UserError(
            f"file too large writing {path} (a file-size limit: ulimit -f, or the file system's); raise it or write "
            "elsewhere, then rerun (--resume continues)."
        )
    if isinstance(e, OSError) or code is not None:  # read-only (EROFS, EACCES), a missing folder, ...
        return UserError(f"cannot write {path} ({os.strerror(code) if code else e}); choose a writable output path.")
    return None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds.

    A crash or Ctrl-C inside the block leaves any earlier `path` untouched and no half-written file
    under the final name. A full disk or a read-only folder becomes a one-line `UserError` naming `path`.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) or e from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual permissions
        os.replace(tmp, path)
    except Exception as e:  # OSError, or a library's own error (safetensors) for the same cause
        error = write_error(path, e)
        if error is None:
            raise
        raise error from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path, what: str, hint: str) -> Any:
    """The JSON in `path`; a damaged or unreadable file is a UserError naming it, `what` it is and `hint`."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not valid JSON"
        raise UserError(f"{path}: the {what} is damaged ({reason}); {hint}.") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def list_digest(root: str | Path, paths: list[Path]) -> str:
    """A short hex digest of the files `paths` under `root`: their relative names and sizes, in order. A run
    records it, so that a resume can tell that its input folder changed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{Path(path).relative_to(root).as_posix()}\0{Path(path).stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _json_dict(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_ours(out: str | Path) -> bool:
    """Whether `out` unmistakably holds a run or an export of this tool (not, say, a Hugging Face model folder).

    A run's config.json holds the fields every run config has; an export has a manifest.json of our format
    or the progress file of an unfinished export.
    """
    out = Path(out)
    if _json_dict(out / "config.json").keys() >= RUN_KEYS:
        return True
    if _json_dict(out / "manifest.json").get("format") == SHARDS_FORMAT:
        return True
    return {"config", "shards"} <= _json_dict(out / ".export-state.json").keys()


def written_files(out: str | Path) -> list[Path]:
    """The files in `out` that this tool wrote (the names of `WRITTEN`), deepest first."""
    out = Path(out)
    found = [p for p in out.rglob("*") if not p.is_dir() and _matches(p.relative_to(out).as_posix())]
    return sorted(found, key=lambda p: (-len(p.parts), p))


def _matches(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in WRITTEN)


def clear_ours(out: str | Path) -> None:
    """Remove what this tool wrote into `out` (see `WRITTEN`), and `samples/` if that leaves it empty."""
    out = Path(out)
    for path in written_files(out):
        path.unlink()
    samples = out / "samples"
    if samples.is_dir() and not any(samples.iterdir()):
        samples.rmdir()


def check_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an output path that would lose earlier results; writes nothing (for plans and dry runs).

    A non-empty directory needs `resume` or `overwrite`, and both touch only a directory that is
    unmistakably ours (`is_ours`). `resume` on an empty or new directory is refused: there is nothing to continue.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file; give a directory path.")
    filled = out.is_dir() and any(out.iterdir())
    field = option.lstrip("-").replace("-", "_")  # the config field behind the option, for library callers
    if filled and not (resume or overwrite):
        raise UserError(
            f"{option} {out} is not empty; pass --resume (resume=True) to continue it or --overwrite "
            f"(overwrite=True) to replace it, or choose another {option} ({field}=)."
        )
    for name in OWN_MARKS if filled else ():
        if (out / name).is_file() and not _json_dict(out / name):
            raise UserError(f"{out / name} is damaged (not a JSON object); choose a new or empty {option}.")
    if filled and not is_ours(out):
        flag = "--resume" if resume else "--overwrite"
        raise UserError(
            f"{option} {out} holds files this tool did not write (no run or export of ours there); "
            f"{flag} only touches its own runs, so choose a new or empty {option}."
        )
    if resume and not filled:
        raise UserError(
            f"--resume: {option} {out} holds no run to continue; drop --resume (resume=False) to start a new one."
        )
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{option} {out} is not writable; choose another directory.")
    return out


def check_out_outside(out: str | Path, inputs: dict[str, str | Path | None], option: str = "--out") -> None:
    """Refuse an output folder inside (or equal to) an input folder: the next run would read its grids,
    shards and reports as input images. `inputs` maps each input option to its folder (None: not given)."""
    where = Path(out).expanduser().resolve()
    for name, folder in inputs.items():
        if folder and where.is_relative_to(Path(folder).expanduser().resolve()):
            raise UserError(
                f"{option} {out} is inside {name} {folder}: later runs would read its outputs as input images; "
                f"choose an {option} outside it."
            )


def check_out_file(path: str | Path, *, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an output file that exists (unless `overwrite`) or is a folder; writes nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise UserError(f"{option} {path} exists; give a new name, or pass --overwrite to replace it.")
    return path


def prepare_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, option: str = "--out") -> Path:
    """Create or check an output directory before a long run writes to it.

    A non-empty directory is refused unless `resume` (keep and continue) or `overwrite` (remove what this
    tool wrote there, keep the rest) is set, so that no earlier result is lost by accident.
    """
    out = check_out_dir(out, resume=resume, overwrite=overwrite, option=option)
    try:
        if out.exists() and overwrite and not resume:
            clear_ours(out)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{option} {out} is not writable ({e.strerror}); choose another directory.") from None
    return out
