"""The output directory's data files: the index and failures parquet tables and the shards.

A table's parquet schema is derived from the record type its rows are (``arrow_schema``), so
one declaration (``pipeline.results.IndexRow``, ``curation.records.Failure``) serves pyarrow
and Python. Every file goes through :func:`pipeline.storage.atomic.open_atomic`, so a reader
never sees a partial file, even after a power cut.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing

from pipeline.storage.atomic import open_atomic
from pipeline.outputs.layout import OutputLayout, part_name
from pipeline.outputs.shards import (
    ShardInfo,
    key_parts,
    shuffled_order,
    write_tar_shard,
)

#: Python field type -> arrow type name (``pa.<name>()``); ``X | None`` columns are nullable ``X``.
ARROW_TYPES = {str: "string", int: "int32", float: "float64", bool: "bool_"}


@functools.lru_cache(maxsize=None)
def arrow_schema(record_type: type):
    """The ``pa.Schema`` of a NamedTuple or dataclass of ``str``/``int``/``float``/``bool``
    fields (each optionally ``| None``), columns in field order; every column is nullable."""
    import pyarrow as pa

    fields = []
    for name, hint in typing.get_type_hints(record_type).items():
        if isinstance(hint, types.UnionType):
            (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        fields.append(pa.field(name, getattr(pa, ARROW_TYPES[hint])()))
    return pa.schema(fields)


def as_dict(record) -> dict:
    """A NamedTuple or dataclass record as ``{field: value}``."""
    return record._asdict() if hasattr(record, "_asdict") else dataclasses.asdict(record)


def write_parquet(path: str, rows: list, record_type: type) -> int:
    """Rows (records of ``record_type``, or dicts with its fields; already ordered) -> one
    parquet file; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([row if isinstance(row, dict) else as_dict(row) for row in rows],
                                 schema=arrow_schema(record_type))
    with open_atomic(path) as handle:
        pq.write_table(table, handle, compression="zstd")
    return table.num_rows


def write_index_file(output: str, file_idx: int, rows: list) -> tuple[str, int, int]:
    """``OUT/index/part-NNNNN.parquet`` of ``IndexRow``s sorted by (video_id, caption_idx);
    returns (name, rows, kept)."""
    from pipeline.results import IndexRow, sort_index_rows

    n = write_parquet(OutputLayout(output).index_part(file_idx), sort_index_rows(rows), IndexRow)
    return part_name(file_idx), n, sum(1 for r in rows if r.kept)


def write_failures(output: str, failures: list[dict]) -> int:
    """``OUT/failures/part-00000.parquet`` (written even when empty, so readers always find it)."""
    from curation.records import Failure

    ordered = sorted(failures, key=lambda f: (f["video_id"], f["stage"], f["error_class"], f["message"]))
    return write_parquet(OutputLayout(output).failures_part, ordered, Failure)


def order_shard_samples(samples: list[dict], layout: str, seed: int) -> list[dict]:
    """Final member order of one shard: ``grouped`` by (key stem, caption_idx), parsed back from
    the key (:func:`~pipeline.outputs.shards.key_parts`), and ``shuffled`` by a seeded hash of the key."""
    by_key = sorted(samples, key=lambda s: key_parts(s["__key__"]))
    if layout == "grouped":
        return by_key
    order = shuffled_order([s["__key__"] for s in by_key], seed)
    return [by_key[i] for i in order]


def write_shard(output: str, shard_idx: int, samples: list[dict], layout: str, seed: int) -> ShardInfo:
    return write_tar_shard(OutputLayout(output).shard(shard_idx), order_shard_samples(samples, layout, seed))
