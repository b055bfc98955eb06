"""Reading a finished output for the tools (``inspect``, ``report``, ``score``): ``summary.json``
checked, the index and failures tables read with pyarrow, and the tallies both printouts show.

The index stays a pyarrow table and is computed on column by column (numpy,
``pyarrow.compute``), never as one Python dict a row, so a run of millions of captions is read
in seconds.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from pipeline.errors import OutputError
from pipeline.outputs.layout import OutputLayout
from pipeline.storage import files

#: Examples kept per failure class.
EXAMPLES_PER_CLASS = 2
#: The totals every ``summary.json`` has; a file without them is not an nccurate summary.
SUMMARY_KEYS = ("videos_in", "videos_ok", "videos_failed", "captions_in", "captions_kept", "captions_dropped",
                "samples_written", "shards")


@dataclass(frozen=True)
class RunOutput:
    """What the tools read of an output directory."""

    path: str
    summary: dict
    index: object          # pyarrow.Table of every index file, in file-name order
    failures: list[dict]   # every failures row: video_id, stage, error_class, message

    def column(self, name: str) -> np.ndarray:
        """``(n,)`` numpy array of an index column (float nulls become NaN)."""
        return self.index.column(name).to_numpy(zero_copy_only=False)

    @property
    def layout(self) -> OutputLayout:
        """Its paths (the index's ``shard`` column is relative to ``layout.shards_dir``)."""
        return OutputLayout(self.path)


def read_parquet(pattern: str, schema):
    """Every file matching ``pattern`` as one table, in file-name order (an empty one of
    ``schema`` when none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(files.read_bytes(path))) for path in files.glob(pattern)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_index(output: str):
    """All of ``output/index/*.parquet`` as one pyarrow table, in file-name order."""
    from pipeline.results import INDEX_SCHEMA

    return read_parquet(OutputLayout(output).index_glob, INDEX_SCHEMA)


def read_failures(output: str) -> list[dict]:
    """Every row of ``output/failures/*.parquet``, in file-name order."""
    from pipeline.results import FAILURE_SCHEMA

    return read_parquet(OutputLayout(output).failures_glob, FAILURE_SCHEMA).to_pylist()


def read_summary(output: str) -> dict:
    """``output/summary.json``; :class:`OutputError` naming the file when it is absent, unreadable
    or lacks one of :data:`SUMMARY_KEYS`."""
    path = OutputLayout(output).summary
    try:
        data = files.read_bytes_or_none(path)
        if data is None:
            raise OutputError(f"{output}: not an nccurate output (no summary.json); give the --output of a finished run")
        summary = json.loads(data)
    except OutputError:
        raise
    except Exception as exc:  # OSError, bad JSON, a store refusing
        raise OutputError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    missing = [key for key in SUMMARY_KEYS if key not in summary] if isinstance(summary, dict) else SUMMARY_KEYS
    if missing:
        raise OutputError(f"{path}: not an nccurate summary (no {', '.join(missing)})")
    return summary


def read_run(output: str) -> RunOutput:
    """Read ``output``; :class:`OutputError` naming it when it holds no valid ``summary.json``."""
    summary = read_summary(output)
    return RunOutput(files.absolute(output), summary, read_index(output), read_failures(output))


def outcome_counts(run: RunOutput) -> dict[str, int]:
    """``{"kept": n, <drop_reason>: n, ...}`` over the index rows, kept first, then by count."""
    import pyarrow.compute as pc

    kept = run.column("kept")
    dropped = pc.value_counts(pc.filter(run.index.column("drop_reason"), ~kept)).to_pylist()
    ranked = sorted(((d["values"], d["counts"]) for d in dropped), key=lambda kv: (-kv[1], str(kv[0])))
    return {"kept": int(kept.sum()), **dict(ranked)}


def failure_examples(failures: list[dict], per_class: int = EXAMPLES_PER_CLASS) -> dict[str, tuple[int, list[str]]]:
    """``{error_class: (count, first per_class distinct messages)}``, most frequent class first."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for f in failures:
        by_class[f["error_class"]].append(f["message"])
    ranked = sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {cls: (len(msgs), list(dict.fromkeys(msgs))[:per_class]) for cls, msgs in ranked}
