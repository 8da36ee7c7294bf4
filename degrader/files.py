"""Small file-system helpers: atomic writes, checksums and run directories."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from degrader.errors import UserError

# Files that mark a directory as one of ours (a run, an export), which --overwrite may clear.
OURS = ("config.json", "manifest.json", ".export-state.json")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds.

    A crash or Ctrl-C inside the block leaves any earlier `path` untouched and no half-written file
    under the final name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual permissions
        os.replace(tmp, path)
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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an output path that would lose earlier results; writes nothing (for plans and dry runs)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} is a file; give a directory path.")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise UserError(f"{option} {out} is not empty; pass --resume to continue it or --overwrite to replace it.")
    if overwrite and not resume and out.exists() and any(out.iterdir()) and not any((out / m).exists() for m in OURS):
        raise UserError(f"{option} {out} holds files this tool did not write; --overwrite only replaces its own runs.")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"{option} {out} is not writable; choose another directory.")
    return out


def prepare_out_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False, option: str = "--out") -> Path:
    """Create or check an output directory before a long run writes to it.

    A non-empty directory is refused unless `resume` (keep and continue) or `overwrite` (clear it) is set,
    so that no earlier result is lost by accident.
    """
    out = check_out_dir(out, resume=resume, overwrite=overwrite, option=option)
    if out.exists() and overwrite and not resume:
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{option} {out} is not writable ({e.strerror}); choose another directory.") from None
    return out
