"""Checking and describing shards: `verify_shards` (what `degrade verify` runs) and `summarize_shards` (inspect)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from degrader.errors import ShardError
from degrader.files import sha256_file
from degrader.shards.format import MANIFEST, png_header, read_manifest, shard_urls
from degrader.shards.iterable import tar_samples
from degrader.shards.sample import decode_sample, parse_meta, parse_seed


def verify_shards(source: str | Path | Sequence[str | Path]) -> list[str]:
    """Check paired shards: every checksum and count against the manifest, and every sample decoded.

    Returns a list of faults, each naming the shard (and the key where there is one); empty when all is well.
    A source without a manifest (a glob, a list) is checked by decoding alone.
    """
    faults: list[str] = []
    directory = Path(source) if isinstance(source, (str, Path)) and Path(source).is_dir() else None
    expected: dict[str, dict[str, Any]] = {}
    promised = None
    if directory is not None and (directory / MANIFEST).is_file():
        manifest = read_manifest(directory)
        promised = manifest["config"]
        expected = {str(directory / s["name"]): s for s in manifest["shards"]}
        listed = {s["name"] for s in manifest["shards"]}
        faults += [
            f"{p.name}: not listed in the manifest" for p in sorted(directory.glob("*.tar")) if p.name not in listed
        ]
        urls = list(expected)
    else:
        urls = shard_urls(source)
    seen: set[str] = set()
    for url in urls:
        name = Path(url).name if directory is not None else url
        if url in expected:
            if not Path(url).is_file():
                faults.append(f"{name}: missing")
                continue
            if sha256_file(url) != expected[url]["sha256"]:
                faults.append(f"{name}: sha256 does not match the manifest (the file changed)")
        count = 0
        try:
            for raw in tar_samples([url]):
                count += 1
                problem = check_sample(raw, promised)
                if raw["__key__"] in seen:
                    problem = problem or "duplicate key"
                seen.add(raw["__key__"])
                if problem:
                    faults.append(f"{name}: {raw['__key__']}: {problem}")
        except ShardError as e:
            faults.append(f"{name}: {str(e).removeprefix(url + ': ')}")
            continue
        if url in expected and count != expected[url]["samples"]:
            faults.append(f"{name}: holds {count} samples, the manifest says {expected[url]['samples']}")
    return faults


def check_sample(raw: dict[str, Any], promised: dict[str, Any] | None = None) -> str | None:
    """Check one raw sample strictly: both images 8-bit RGB PNGs (what the exporter writes; the readers also
    take other PNGs), decoded, their sizes and seed agreeing with the json and with `promised` (the manifest's
    config), the json well formed. Returns the problem, or None."""
    for ext in ("hr.png", "lr.png"):
        try:
            depth, colour = png_header(raw[ext])[2:]
        except ValueError:
            continue  # decode_sample names it
        if (depth, colour) != (8, 2):
            return f"{ext} is not an 8-bit RGB PNG (bit depth {depth}, colour type {colour})"
    try:
        sample = decode_sample(raw, promised=promised)
        meta = parse_meta(raw)
    except ShardError as e:
        return str(e).split(": ", 2)[-1]
    if meta.get("seed") != sample["seed"]:
        return f"seed.txt {sample['seed']} differs from the json seed {meta.get('seed')}"
    return None


def summarize_shards(source: str | Path, examples: int = 0) -> dict[str, Any]:
    """Count and describe paired shards by reading every sample's metadata (what `degrade inspect` shows).

    Returns a dict with shards, samples, degrader, seed range, HR and LR sizes, scales, sources, the manifest
    (or None) and the first `examples` decoded samples (for a contact sheet).
    """
    manifest = read_manifest(source) if Path(source).is_dir() and (Path(source) / MANIFEST).is_file() else None
    urls = shard_urls(source)
    seeds: list[int] = []
    hr_sizes, lr_sizes, degraders, sources = set(), set(), set(), set()
    decoded: list[dict[str, Any]] = []
    for raw in tar_samples(urls):
        meta = parse_meta(raw)
        try:
            seeds.append(parse_seed(raw["seed.txt"]))
        except ValueError as e:
            raise ShardError(f"{raw['__url__']}: {raw['__key__']}: {e}; re-export the shard.") from None
        hr_sizes.add(tuple(meta.get("hr_size", ())))
        lr_sizes.add(tuple(meta.get("lr_size", ())))
        degraders.add((meta.get("degrader"), meta.get("degrader_sha256")))
        sources.add(meta.get("source"))
        if len(decoded) < examples:
            decoded.append(decode_sample(raw))
    return {
        "shards": len(urls),
        "samples": len(seeds),
        "seed_min": min(seeds, default=None),
        "seed_max": max(seeds, default=None),
        "unique_seeds": len(set(seeds)),
        "hr_sizes": sorted(hr_sizes),
        "lr_sizes": sorted(lr_sizes),
        "degraders": sorted(degraders, key=str),
        "sources": len(sources),
        "manifest": manifest,
        "examples": decoded,
    }
