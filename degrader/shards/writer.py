"""`ShardWriter`: samples into byte-reproducible `shard-NNNNNN.tar` files, each complete under its final name."""

from __future__ import annotations

import io
import os
import tarfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from degrader.files import atomic_path, sha256_file
from degrader.shards.format import MEMBERS, shard_name


class ShardWriter:
    """Write samples into `shard-NNNNNN.tar` files of `samples_per_shard` samples each, byte-reproducibly.

    Every header field that could vary between runs (mtime, owner, mode) is fixed. A shard is written under a
    temporary name and renamed when complete, so a final shard name always holds a complete shard.
    """

    def __init__(self, out_dir: str | Path, samples_per_shard: int, *, first_shard: int = 0, rank: int | None = None):
        self.out_dir, self.rank = Path(out_dir), rank  # rank: one of several exporting processes (`shard_name`)
        self.samples_per_shard = samples_per_shard
        self.index = first_shard  # number of the shard being written
        self.count = 0  # samples in it so far
        self._stack: ExitStack | None = None
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None

    def write(self, key: str, members: dict[str, bytes]) -> dict[str, Any] | None:
        """Append one sample (`members` maps each of MEMBERS to bytes). Returns the shard entry when one completes."""
        if self._tar is None:
            self._stack = ExitStack()
            self._tmp = self._stack.enter_context(atomic_path(self.out_dir / shard_name(self.index, self.rank)))
            f = self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115 (closed in finish_shard)
            self._tar = tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        for ext in MEMBERS:
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        return self.finish_shard() if self.count >= self.samples_per_shard else None

    def finish_shard(self) -> dict[str, Any] | None:
        """Close the current shard, give it its final name, and return {"name", "samples", "sha256"}."""
        if self._tar is None or self._stack is None or self._tmp is None:
            return None
        self._tar.close()  # writes the end-of-archive blocks
        self._tar.fileobj.flush()
        os.fsync(self._tar.fileobj.fileno())
        entry = {"name": shard_name(self.index, self.rank), "samples": self.count, "sha256": sha256_file(self._tmp)}
        self._stack.close()  # closes the file, then renames it into place
        self._tar, self._stack, self._tmp = None, None, None
        self.index, self.count = self.index + 1, 0
        return entry

    def abort(self) -> None:
        """Drop the shard being written (its temporary file is removed)."""
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._tar, self._stack, self._tmp = None, None, None
