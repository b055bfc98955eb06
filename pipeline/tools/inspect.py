"""``nccurate inspect OUT``: a finished run's counts, outcomes, failure classes, score
histograms and sample captions, as text.

Totals come from ``summary.json``; everything else from the files a user gets
(``index/*.parquet``, ``failures/*.parquet``), read by :mod:`pipeline.tools.read`.
"""

from __future__ import annotations

import numpy as np

from curation.report_data import finite_values, histogram, shift_s, symmetric_edges, top_k_indices, unit_edges
from pipeline.tools.read import RunOutput, failure_examples, outcome_counts, read_run

#: Sample captions shown per outcome (kept, dropped).
SAMPLES_PER_OUTCOME = 3
BAR_WIDTH = 40


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
