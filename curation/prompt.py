"""The run-level prompt value p: a quantile of timestamp-paired similarities over all videos,
computed from fixed-bin integer histograms so partial results merge exactly in any order.

Bins cover [0, 1] (the range of min-max scaled similarities) or [-1, 1] when ``minmax`` is off;
values outside are clipped into the end bins. Resolution: 1/``N_BINS`` of that range.
"""

from __future__ import annotations

import numpy as np

from curation.align import AlignParams, prepared_similarity, video_prompt_samples
from curation.records import CaptionSet, FrameFeatures

N_BINS = 4000


def histogram_range(params: AlignParams) -> tuple[float, float]:
    return (0.0, 1.0) if params.minmax else (-1.0, 1.0)


def paired_histogram(frames: FrameFeatures, captions: CaptionSet, params: AlignParams) -> np.ndarray:
    """``(N_BINS,)`` int64 counts of one video's timestamp-paired similarities."""
    sim = prepared_similarity(captions.emb, frames.emb, params, frames.fps)
    samples = video_prompt_samples(sim, np.array(captions.start_s), np.array(captions.end_s), frames.fps)
    lo, hi = histogram_range(params)
    counts, _ = np.histogram(np.clip(samples, lo, hi), bins=N_BINS, range=(lo, hi))
    return counts.astype(np.int64)


def histogram_quantile(counts: np.ndarray | None, quantile: float, params: AlignParams) -> float:
    """Centre of the bin holding the ``quantile`` of the counted values;
    ``params.prompt_value`` when nothing was counted (no video reached realignment)."""
    if counts is None or counts.sum() == 0:
        return params.prompt_value
    lo, hi = histogram_range(params)
    cum = np.cumsum(counts)
    idx = int(np.searchsorted(cum, quantile * cum[-1], side="left"))
    idx = min(idx, len(counts) - 1)
    return lo + (idx + 0.5) * (hi - lo) / len(counts)
