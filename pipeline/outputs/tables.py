"""Writing the output directory's data files: index/failures parquet and the shards.

Every file goes through :func:`pipeline.outputs.atomic.open_atomic`, so a reader never sees a
partial file, even after a power cut.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.results import FAILURE_SCHEMA, INDEX_SCHEMA, sort_index_rows
from pipeline.outputs.atomic import open_atomic
from pipeline.outputs.layout import OutputLayout, part_name
from pipeline.outputs.shards import ShardInfo, shuffled_order, write_tar_shard


def write_parquet(path: str, rows: list[dict], schema: pa.Schema) -> int:
    """Rows (already ordered) -> one parquet file; returns the row count."""
    table = pa.Table.from_pylist(rows, schema=schema)
    with open_atomic(path) as handle:
        pq.write_table(table, handle, compression="zstd")
    return table.num_rows


def write_index_file(output: str, file_idx: int, rows: list[dict]) -> tuple[str, int, int]:
    """``OUT/index/part-NNNNN.parquet`` sorted by (video_id, caption_idx); returns (name, rows, kept)."""
    n = write_parquet(OutputLayout(output).index_part(file_idx), sort_index_rows(rows), INDEX_SCHEMA)
    return part_name(file_idx), n, sum(1 for r in rows if r["kept"])


def write_failures(output: str, failures: list[dict]) -> int:
    """``OUT/failures/part-00000.parquet`` (written even when empty, so readers always find it)."""
    ordered = sorted(failures, key=lambda f: (f["video_id"], f["stage"], f["error_class"], f["message"]))
    return write_parquet(OutputLayout(output).failures_part, ordered, FAILURE_SCHEMA)


def order_shard_samples(samples: list[dict], layout: str, seed: int) -> list[dict]:
    """Final member order of one shard: ``grouped`` by (video_id, caption_idx), parsed back from
    the key ``{video_id}_{caption_idx:05d}``, and ``shuffled`` by a seeded hash of the key."""
    by_key = sorted(samples, key=lambda s: _video_and_index(s["__key__"]))
    if layout == "grouped":
        return by_key
    order = shuffled_order([s["__key__"] for s in by_key], seed)
    return [by_key[i] for i in order]


def _video_and_index(key: str) -> tuple[str, int]:
    video_id, idx = key.rsplit("_", 1)
    return video_id, int(idx)


def write_shard(output: str, shard_idx: int, samples: list[dict], layout: str, seed: int) -> ShardInfo:
    return write_tar_shard(OutputLayout(output).shard(shard_idx), order_shard_samples(samples, layout, seed))
