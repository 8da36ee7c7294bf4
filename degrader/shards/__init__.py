"""Paired WebDataset shards: the format, the writer, an iterable and a map-style reader, and checks.

One module per concept, all names importable from here (as webdataset's own `__init__` does):
`format` (names, keys, seeds, manifest, PNG codec), `tar` (strict parsing, index), `sample` (decoding,
aligned augmentation), `writer`, `iterable` (`ShardDataset` as chained steps), `mapped` (`ShardMapDataset`)
and `verify`; `ShardError` comes from `degrader.errors`.
"""

from degrader.errors import ShardError
from degrader.shards.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MEMBERS,
    PNG_LEVEL,
    check_complete,
    decode_png,
    encode_png,
    is_shard_name,
    manifest_counts,
    manifest_problem,
    manifest_shards,
    read_manifest,
    sample_key,
    sample_seed,
    shard_name,
    shard_urls,
    to_uint8,
)
from degrader.shards.iterable import (
    Handler,
    ShardDataset,
    augment,
    decode,
    dist_info,
    error_handler,
    passes,
    reraise_exception,
    shard_list,
    shuffle,
    split_by_node,
    split_by_worker,
    tar_samples,
    warn_and_continue,
    worker_info,
)
from degrader.shards.mapped import ShardMapDataset
from degrader.shards.sample import decode_sample, paired_augment, parse_meta, parse_seed
from degrader.shards.tar import index_shard, iter_tar, member_fault, open_url, split_name
from degrader.shards.verify import check_sample, summarize_shards, verify_shards
from degrader.shards.writer import ShardWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MEMBERS",
    "PNG_LEVEL",
    "Handler",
    "ShardDataset",
    "ShardError",
    "ShardMapDataset",
    "ShardWriter",
    "augment",
    "check_complete",
    "check_sample",
    "decode",
    "decode_png",
    "decode_sample",
    "dist_info",
    "encode_png",
    "error_handler",
    "index_shard",
    "is_shard_name",
    "iter_tar",
    "manifest_counts",
    "manifest_problem",
    "manifest_shards",
    "member_fault",
    "open_url",
    "paired_augment",
    "parse_meta",
    "parse_seed",
    "passes",
    "read_manifest",
    "reraise_exception",
    "sample_key",
    "sample_seed",
    "shard_list",
    "shard_name",
    "shard_urls",
    "shuffle",
    "split_by_node",
    "split_by_worker",
    "split_name",
    "summarize_shards",
    "tar_samples",
    "to_uint8",
    "verify_shards",
    "warn_and_continue",
    "worker_info",
]
