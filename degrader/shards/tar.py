"""Strict tar reading for shards: headers, members as a stream, an index of member offsets.

`tarfile` stops quietly at a corrupt header; shards are training data, so every problem here raises a
`ShardError` naming the shard and the last member read instead. Nothing here knows the sample format.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from webdataset.gopen import gopen

from degrader.errors import ShardError


def open_url(url: str) -> IO[bytes]:
    """Open a local shard file or any URL WebDataset's `gopen` understands (including `pipe:` commands).

    Raises:
        ShardError: a local path that is missing, unreadable, or not a regular file (a folder, a FIFO).
    """
    if url.startswith("pipe:") or "://" in url:
        return gopen(url, "rb")
    try:
        if not stat.S_ISREG(os.stat(url).st_mode):  # opening a FIFO would block forever
            raise ShardError(f"{url}: not a shard file (a folder or a special file); give .tar files.")
        return open(url, "rb")  # noqa: SIM115 (the caller closes it)
    except OSError as e:
        raise ShardError(f"{url}: cannot read ({e.strerror or e}); check the path or re-export the shards.") from None


MAX_MEMBER = 1 << 31  # bytes; no image of a shard comes near it, so a larger size field is damage


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _octal(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if text.strip(b"01234567"):
        raise ValueError("bad number in a tar header")
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> tuple[str, int, bytes]:
    """(name, size, typeflag) of a 512-byte tar header; raises ValueError on a bad checksum."""
    stored = _octal(block[148:156])
    if stored != sum(block[:148]) + 256 + sum(block[156:]):  # the checksum field counts as spaces
        raise ValueError("bad tar header checksum")
    name = block[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") if block[257:262] == b"ustar" else ""
    return (f"{prefix}/{name}" if prefix else name), _octal(block[124:136]), block[156:157]


def read_header(stream: IO[bytes], url: str | Path, last: str) -> tuple[str, int, bytes] | None:
    """The next member's (name, size, type), or None at the end-of-archive marker. `last` names the member
    before, for the error message when the header is damaged or missing."""
    block = _read_exact(stream, 512)
    if block == bytes(512):
        return None
    if not block:
        raise ShardError(f"{url}: after {last}: truncated (no end-of-archive marker); re-export this shard.")
    if len(block) < 512:
        raise ShardError(f"{url}: after {last}: truncated in a header; re-export this shard.")
    try:
        name, size, kind = parse_header(block)
    except ValueError as e:
        raise ShardError(f"{url}: after {last}: {e}; the shard is corrupt, re-export it.") from None
    if size > MAX_MEMBER:
        raise ShardError(f"{url}: {name}: size field of {size} bytes is damaged; the shard is corrupt, re-export it.")
    return name, size, kind


def iter_tar(stream: IO[bytes], url: str) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) of the regular files in a tar stream, strictly.

    Unlike `tarfile` (which stops quietly at a corrupt header), a bad header, a short member or a missing
    end-of-archive marker raises a `ShardError` naming the shard and the last member read.
    """
    last, long_name = "(start of shard)", None
    while (header := read_header(stream, url, last)) is not None:
        name, size, kind = header
        data = _read_exact(stream, size)
        if len(data) < size:
            raise ShardError(f"{url}: {name}: truncated member; re-export this shard.")
        _read_exact(stream, -size % 512)  # padding to the next block
        if kind == b"L":  # GNU long name for the next member
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":  # PAX extended header; only `path` matters here
            for record in data.decode("utf-8", "replace").splitlines():
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
        elif kind in (b"0", b"\0"):
            last, long_name = (long_name or name), None
            yield last, data
        else:
            long_name = None  # directories, links and global headers carry no sample data


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name, the rest is the extension."""
    folder, slash, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return f"{folder}{slash}{key}", ext  # "/x.png" keeps its "/": an absolute name is refused, not made relative


def member_fault(key: str, ext: str, sample: Any, keys: Any) -> str | None:
    """Why member `key.ext` cannot join `sample` (the members of `key` read so far; empty for a new sample)
    in a shard whose samples so far had `keys`; None when it can."""
    if ext.startswith("__"):
        return f"member name {key}.{ext} is reserved"
    if key.startswith("/") or ".." in key.split("/") or "\\" in key or "\0" in key:
        return f"member name {key}.{ext} is not a plain relative name (a key must not lead out of the shard)"
    if not sample and key in keys:
        return "a second sample with this key"
    if ext in sample:
        return f"two {ext} members"
    return None


def index_shard(path: str | Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """List the samples of a local shard from its tar headers alone (seeking over the data).

    Returns [(key, {extension: (offset, size)})] in shard order.

    Raises:
        ShardError: a header is corrupt or a member is cut short.
    """
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    keys: set[str] = set()
    last = "(start of shard)"
    with open_url(str(path)) as f:
        total, offset = os.fstat(f.fileno()).st_size, 0
        while (header := read_header(f, path, last)) is not None:
            name, size, kind = header
            if offset + 512 + size > total:
                raise ShardError(f"{path}: {name}: truncated member; re-export this shard.")
            if kind in (b"0", b"\0"):
                key, ext = split_name(name)
                new = not samples or samples[-1][0] != key
                if fault := member_fault(key, ext, {} if new else samples[-1][1], keys):
                    raise ShardError(f"{path}: {key}: {fault}; re-export this shard.")
                if new:
                    samples.append((key, {}))
                    keys.add(key)
                samples[-1][1][ext] = (offset + 512, size)
                last = name
            elif kind in (b"L", b"x"):
                raise ShardError(f"{path}: {name}: long member names are not indexed; use ShardDataset instead.")
            offset += 512 + size + (-size % 512)
            f.seek(offset)
    return samples
