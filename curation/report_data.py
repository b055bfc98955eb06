"""The numbers behind ``nccurate inspect`` and ``nccurate report``: histogram bins, the shift
of each caption between its ASR start and its realigned start, and the drawing data of one
video's alignment picture. Pure numpy: no file IO, no plotting.

Notation: n index rows (captions); m captions of one video; T frames at ``fps``; times in seconds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


def as_seconds(values) -> np.ndarray:
    """``(n,)`` float64 of ``values`` (a sequence or array; ``None`` becomes NaN)."""
    return np.asarray(values, dtype=np.float64).reshape(-1)


def finite_values(values) -> np.ndarray:
    """``(k,)`` float64: the entries of ``values`` that are finite numbers, in order; ``None``,
    NaN and inf are left out (captions of failed videos)."""
    arr = as_seconds(values)
    return arr[np.isfinite(arr)]


def histogram(values, edges: np.ndarray) -> np.ndarray:
    """``(len(edges) - 1,)`` int64 counts of the finite ``values`` in the bins ``edges`` (sorted);
    values outside ``[edges[0], edges[-1]]`` are clipped into the end bins, so the counts sum to
    the number of finite values."""
    v = finite_values(values)
    counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.int64)


def unit_edges(n_bins: int = 10) -> np.ndarray:
    """``(n_bins + 1,)`` equal bins over [0, 1], the range of alignability and weight."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= ``x`` (> 0); 1.0 for ``x`` <= 0."""
    if not x > 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(x))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * exp >= x * (1 - 1e-12):
            return step * exp
    return 10.0 * exp


def symmetric_edges(values_s, max_bins: int = 12) -> np.ndarray:
    """Bins of the shift histogram, seconds: ``k * w`` for ``k = -K .. K``, with the bin width
    ``w = nice_ceiling(max |value| / (max_bins / 2))`` and ``K = ceil(max |value| / w)`` (at most
    ``max_bins / 2``; 1 when there is no value), so 0 is an edge and the edges are round numbers."""
    v = finite_values(values_s)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    half_bins = max(max_bins // 2, 1)
    width = nice_ceiling(top / half_bins)
    k = max(math.ceil(top / width - 1e-9), 1)
    return np.arange(-k, k + 1) * width


def shift_s(asr_start_s, start_s) -> np.ndarray:
    """``(n,)`` float64 realigned start minus ASR start, seconds (positive: the caption moved
    later); NaN where the caption was not realigned (``start_s`` None or NaN)."""
    return as_seconds(start_s) - as_seconds(asr_start_s)


def top_k_indices(scores, k: int, largest: bool = True) -> np.ndarray:
    """``(<= k,)`` int indices of the ``k`` largest (or smallest) finite ``scores: (n,)``, best
    first, ties in index order. O(n) selection of the candidates, then a sort of those."""
    values = as_seconds(scores)
    idx = np.flatnonzero(np.isfinite(values))
    key = -values[idx] if largest else values[idx]
    if 0 < k < len(idx):
        keep = key <= np.partition(key, k - 1)[k - 1]
        idx, key = idx[keep], key[keep]
    return idx[np.lexsort((idx, key))[:max(k, 0)]]


def matrix_extent(n_captions: int, n_frames: int, fps: float) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of an ``(m, T)`` similarity image in axes units: x in
    seconds (frame t covers ``[t / fps, (t + 1) / fps)``), y in caption rows (row i centred on
    i, row 0 at the top)."""
    return 0.0, n_frames / fps, n_captions - 0.5, -0.5


class SpanBox(NamedTuple):
    """One caption's row of the alignment picture: x spans in seconds, y in caption rows."""

    row: int
    asr_start_s: float
    asr_end_s: float
    start_s: float | None   # realigned span; None when the caption was not realigned
    end_s: float | None
    kept: bool


def span_boxes(asr_start_s, asr_end_s, start_s, end_s, kept) -> list[SpanBox]:
    """One :class:`SpanBox` per caption, row ``i`` for the i-th caption (caption_idx order)."""
    return [SpanBox(i, float(a), float(b), None if s is None else float(s), None if e is None else float(e), bool(k))
            for i, (a, b, s, e, k) in enumerate(zip(asr_start_s, asr_end_s, start_s, end_s, kept))]


def bucket_mass_threshold(min_alignability: float) -> float:
    """Bucket mass above which a Norton caption is dropped: alignability = 1 - bucket_mass is
    kept when >= ``min_alignability``, so the threshold is ``1 - min_alignability``."""
    return 1.0 - min_alignability


def middle_index(n_frames: int) -> int:
    """Index of the middle frame of a clip of ``n_frames`` (>= 1) frames: ``n_frames // 2``."""
    return max(n_frames, 1) // 2
