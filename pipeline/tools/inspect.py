"""``nccurate inspect OUT``: a finished run's counts, outcomes, failure classes, score
histograms and sample captions, as text; and :func:`read_run`, the reader ``nccurate report``
shares.

Totals come from ``summary.json``; everything else from the files a user gets
(``index/*.parquet``, ``failures/*.parquet``), read with pyarrow. The index stays a pyarrow
table and is computed on column by column (numpy, ``pyarrow.compute``), never as one Python
dict a row, so a run of millions of captions is inspected in seconds.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from curation.report_data import finite_values, histogram, shift_s, symmetric_edges, top_k_indices, unit_edges
from pipeline.errors import OutputError  # noqa: F401 (re-exported)

#: Examples shown per failure class, and sample captions shown per outcome (kept, dropped).
EXAMPLES_PER_CLASS, SAMPLES_PER_OUTCOME = 2, 3
BAR_WIDTH = 40
SUMMARY_KEYS = ("videos_in", "videos_ok", "videos_failed", "captions_in", "captions_kept", "captions_dropped",
                "samples_written", "shards")


@dataclass(frozen=True)
class RunOutput:
    """What ``nccurate inspect``/``report`` read of an output directory."""

    path: str
    summary: dict
    index: object          # pyarrow.Table of every index file, in file-name order
    failures: list[dict]   # every failures row: video_id, stage, error_class, message

    def column(self, name: str) -> np.ndarray:
        """``(n,)`` numpy array of an index column (float nulls become NaN)."""
        return self.index.column(name).to_numpy(zero_copy_only=False)


def read_parquet(pattern: str, schema):
    """Every file matching ``pattern`` as one table (an empty one of ``schema`` when none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(path) for path in sorted(glob.glob(pattern))]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_run(output: str) -> RunOutput:
    """Read ``output``; :class:`OutputError` naming it when it holds no ``summary.json``."""
    path = os.path.join(output, "summary.json")
    if not os.path.isfile(path):
        raise OutputError(f"{output}: not an nccurate output (no summary.json); give the --output of a finished run")
    try:
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    missing = [key for key in SUMMARY_KEYS if key not in summary] if isinstance(summary, dict) else SUMMARY_KEYS
    if missing:
        raise OutputError(f"{path}: not an nccurate summary (no {', '.join(missing)})")
    from pipeline.results import FAILURE_SCHEMA, INDEX_SCHEMA

    index = read_parquet(os.path.join(output, "index", "*.parquet"), INDEX_SCHEMA)
    failures = read_parquet(os.path.join(output, "failures", "*.parquet"), FAILURE_SCHEMA).to_pylist()
    return RunOutput(os.path.abspath(output), summary, index, failures)


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


def one_line(text: str, width: int = 70) -> str:
    """``text`` with control characters shown as spaces, cut to ``width`` characters."""
    flat = "".join(c if c.isprintable() else " " for c in str(text))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def ascii_bars(counts: np.ndarray, edges: np.ndarray, unit: str = "", width: int = BAR_WIDTH) -> list[str]:
    """One line a bin: its range, a bar of '#' scaled to the largest bin, its count."""
    top = max(int(np.max(counts)), 1) if len(counts) else 1
    digits = 0 if np.allclose(edges, np.round(edges)) else 2
    return [f"  {lo:7.{digits}f} .. {hi:7.{digits}f}{unit} |{'#' * round(width * int(n) / top):<{width}} {int(n)}"
            for lo, hi, n in zip(edges[:-1], edges[1:], counts)]


def _histogram_block(title: str, values, edges: np.ndarray, unit: str = "") -> list[str]:
    n = len(finite_values(values))
    if n == 0:
        return [f"{title}: no values"]
    return [f"{title} (n={n})", *ascii_bars(histogram(values, edges), edges, unit)]


def _span(a, b) -> str:
    return "-" if a is None else f"{a:.1f}-{b:.1f} s"


def sample_lines(run: RunOutput, per_outcome: int = SAMPLES_PER_OUTCOME) -> list[str]:
    """The highest-weight kept captions and the realigned dropped ones with the lowest
    alignability, each with its ASR span -> realigned span."""
    kept = run.column("kept")
    weight = np.where(kept, run.column("weight"), np.nan)
    alignability = np.where(kept, np.nan, run.column("alignability"))
    picked = np.concatenate([top_k_indices(weight, per_outcome), top_k_indices(alignability, per_outcome, largest=False)])
    rows = run.index.take(picked).to_pylist()
    labels = [f"{r['video_id']}#{r['caption_idx']}" for r in rows]
    pad = max(map(len, labels), default=0)
    lines = []
    for label, r in zip(labels, rows):
        status = f"kept w={r['weight']:.2f}" if r["kept"] else f"{r['drop_reason']} a={r['alignability']:.2f}"
        lines.append(f"  {label:<{pad}}  {status:<18} ASR {_span(r['asr_start'], r['asr_end']):>15}"
                     f" -> {_span(r['start'], r['end']):>15}  {one_line(r['text'], 60)!r}")
    return lines


def inspect_text(output: str) -> str:
    """The whole ``nccurate inspect`` printout of ``output``."""
    run = read_run(output)
    s, n_rows = run.summary, run.index.num_rows
    cfg = s.get("config", {})
    model = cfg.get("model", {})
    lines = [
        f"nccurate output {run.path}",
        f"  config {s.get('config_hash')}   method {cfg.get('align', {}).get('method')}   "
        f"model {model.get('name')} ({model.get('pretrained')})   reconciled {s.get('reconciled')}",
        f"videos    {s['videos_in']} in, {s['videos_ok']} ok, {s['videos_failed']} failed",
        f"captions  {s['captions_in']} in, {s['captions_kept']} kept, {sum(s['captions_dropped'].values())} dropped",
        f"samples   {s['samples_written']} in {s['shards']} shard(s)",
        *([f"timing    {s['calibration']['description']} (learnt from {s['calibration']['sampled']} captions)"]
          if s.get("calibration") else []),
        "",
        "captions by outcome (index)",
    ]
    lines += [f"  {reason:<14} {n:7d}  {100 * n / max(n_rows, 1):5.1f}%" for reason, n in outcome_counts(run).items()]
    examples = failure_examples(run.failures)
    lines += ["", "failure classes" + ("" if examples else ": none")]
    for cls, (n, messages) in examples.items():
        lines.append(f"  {cls:<20} {n:5d}")
        lines += [f"      e.g. {one_line(m, 110)}" for m in messages]
    kept, shifts = run.column("kept"), shift_s(run.column("asr_start"), run.column("start"))
    lines += ["", *_histogram_block("alignability, realigned captions", run.column("alignability"), unit_edges()),
              "", *_histogram_block("weight, kept captions", run.column("weight")[kept], unit_edges()),
              "", *_histogram_block("shift = realigned start - ASR start, seconds", shifts, symmetric_edges(shifts), " s"),
              "", "sample captions (ASR span -> realigned span)", *sample_lines(run)]
    return "\n".join(lines)
