"""`ShardWriter`: samples into byte-reproducible `shard-NNNNNN.tar` files, each complete under its final name."""

from __future__ import annotations

import os
import tarfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from degrader.files import atomic_path, sha256_file
from degrader.shards.format import MEMBERS, shard_name

BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE
ENCODING = (tarfile.ENCODING, "surrogateescape")  # what `tarfile.open(mode="w")` encodes names with


def _info(name: str, size: int) -> tarfile.TarInfo:
    """A member's header fields: every one that could vary between runs (mtime, owner, mode) fixed."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
    return info


TEMPLATE = _info("", 0).tobuf(tarfile.USTAR_FORMAT, *ENCODING)  # the fixed fields, as tarfile writes them


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header `tarfile` writes for a member of these fields (`_info`), byte for byte.

    The fixed fields come from `tarfile` itself (TEMPLATE); only the name, size and checksum are filled in here,
    several times faster than `tarfile.addfile`. Names over 100 bytes and sizes of 8 GiB take tarfile's path.
    """
    encoded = name.encode(*ENCODING)
    if len(encoded) > 100 or size >= 8**11:
        return _info(name, size).tobuf(tarfile.USTAR_FORMAT, *ENCODING)
    header = bytearray(TEMPLATE)
    header[: len(encoded)] = encoded
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"        "  # the checksum counts its own field as spaces
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


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
        self._file: IO[bytes] | None = None
        self._tmp: Path | None = None
        self._offset = 0  # bytes written to the shard so far

    def write(self, key: str, members: dict[str, bytes]) -> dict[str, Any] | None:
        """Append one sample (`members` maps each of MEMBERS to bytes). Returns the shard entry when one completes."""
        if self._file is None:
            self._stack = ExitStack()
            self._tmp = self._stack.enter_context(atomic_path(self.out_dir / shard_name(self.index, self.rank)))
            self._file = self._stack.enter_context(open(self._tmp, "wb"))  # noqa: SIM115 (closed in finish_shard)
            self._offset = 0
        parts = []
        for ext in MEMBERS:
            data = members[ext]
            parts += [ustar_header(f"{key}.{ext}", len(data)), data, bytes(-len(data) % BLOCK)]
        block = b"".join(parts)
        self._file.write(block)
        self._offset += len(block)
        self.count += 1
        return self.finish_shard() if self.count >= self.samples_per_shard else None

    def finish_shard(self) -> dict[str, Any] | None:
        """Close the current shard, give it its final name, and return {"name", "samples", "sha256"}."""
        if self._file is None or self._stack is None or self._tmp is None:
            return None
        end = self._offset + 2 * BLOCK  # the end-of-archive blocks, then zeros to a whole record, as tarfile does
        self._file.write(bytes(2 * BLOCK + -end % RECORD))
        self._file.flush()
        os.fsync(self._file.fileno())
        entry = {"name": shard_name(self.index, self.rank), "samples": self.count, "sha256": sha256_file(self._tmp)}
        self._stack.close()  # closes the file, then renames it into place
        self._file, self._stack, self._tmp = None, None, None
        self.index, self.count = self.index + 1, 0
        return entry

    def abort(self) -> None:
        """Drop the shard being written (its temporary file is removed)."""
        if self._stack is not None:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._file, self._stack, self._tmp = None, None, None
