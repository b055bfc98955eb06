"""From a soft alignment to per-caption spans, alignability and confidence weights.

Notation: m captions, T frames at ``fps``; ``plan: (m, T)`` non-negative mass of each caption on
each frame (rows need not sum to 1); durations in seconds.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from curation.timeline import frame_centres_s, span_frame_mask


def box_smooth(rows: np.ndarray, width_frames: np.ndarray) -> np.ndarray:
    """``(m, T)``: each row summed over a centred window of ``width_frames[i]`` frames (>= 1),
    truncated at the ends (cumulative sums, O(m T))."""
    m, t = rows.shape
    csum = np.concatenate([np.zeros((m, 1)), np.cumsum(rows, axis=1)], axis=1)
    width = np.maximum(np.asarray(width_frames, dtype=int), 1)[:, None]
    idx = np.arange(t)[None, :]
    lo = np.clip(idx - (width - 1) // 2, 0, t)
    hi = np.clip(idx + width // 2 + 1, 0, t)
    return np.take_along_axis(csum, hi, axis=1) - np.take_along_axis(csum, lo, axis=1)


def temporal_mean(sim: np.ndarray, width_s: float, fps: float) -> np.ndarray:
    """``(m, T)``: each row averaged over a centred window of ``width_s`` seconds (truncated at the
    video's ends, so edge cells average fewer frames). ``width_s`` <= one frame is the identity."""
    width = int(round(width_s * fps))
    if width <= 1:
        return np.asarray(sim, dtype=np.float64)
    widths = np.full(sim.shape[0], width)
    counts = box_smooth(np.ones((1, sim.shape[1])), widths[:1])
    return box_smooth(np.asarray(sim, dtype=np.float64), widths) / counts


def peak_centre_s(score: np.ndarray, duration_s: np.ndarray, fps: float) -> np.ndarray:
    """``(m,)`` centre time (s) of the window of each caption's own duration that holds the most
    ``score``: argmax of the box-smoothed row (first maximum, so ties are deterministic)."""
    width = np.maximum(np.round(np.asarray(duration_s) * fps), 1)
    smoothed = box_smooth(score, width)
    return frame_centres_s(score.shape[1], fps)[np.argmax(smoothed, axis=1)]


def span_around(centre_s: np.ndarray, duration_s: np.ndarray, video_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(start_s, end_s)``: spans of the given durations centred on ``centre_s``, shifted (not
    shrunk) to lie inside ``[0, video_s]``; a duration longer than the video is cut to it."""
    dur = np.minimum(np.asarray(duration_s, dtype=np.float64), video_s)
    start = np.clip(np.asarray(centre_s, dtype=np.float64) - dur / 2.0, 0.0, video_s - dur)
    return start, start + dur


def mass_in_span(plan: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, fps: float) -> np.ndarray:
    """``(m,)`` fraction of each row's mass on its span's frames (as :func:`span_frame_mask`
    pairs them: the nearest frame when no centre is inside); 0 for a row without mass."""
    inside = span_frame_mask(start_s, end_s, plan.shape[1], fps)
    total = plan.sum(axis=1)
    return np.where(total > 0, (plan * inside).sum(axis=1) / np.maximum(total, 1e-300), 0.0)


class CaptionScores(NamedTuple):
    """Per-caption outcome of an aligner; every field is ``(m,)``."""

    start_s: np.ndarray      # realigned span start, seconds
    end_s: np.ndarray        # realigned span end, seconds
    alignability: np.ndarray  # in [0, 1], larger = more likely visible
    bucket_mass: np.ndarray  # in [0, 1], mass sent to the prompt bucket / skip cells (0 if none)
    similarity: np.ndarray   # mean raw similarity over the realigned span
    concentration: np.ndarray  # in [0, 1], fraction of the caption's plan mass inside its span
    # in [0, 1], P(the span's centre lies in the run of frames that show the caption | it is shown):
    # the posterior method's segment model (None for the methods without one)
    shown_at_centre: np.ndarray | None = None


#: ``align.weight``: ``shown`` (:func:`shown_weight`, where the aligner has a segment model, else
#: ``legacy``) or ``legacy`` (:func:`confidence_weight`, the default until ``align.weight``
#: existed).
WEIGHTS = ("shown", "legacy")


def confidence_weight(alignability: np.ndarray, concentration: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The ``legacy`` Cali-NCE confidence, ``(m,)`` in [0, 1].

    ``weight = alignability * concentration`` for kept captions and 0 for dropped ones:
    the probability that the caption is visible at all, times how much of its alignment mass
    falls inside the span we cut. Monotone non-decreasing in both pieces of evidence.
    (Cali-NCE, Zhao et al. CVPRW 2023, publishes no formula; this is ours.)
    """
    w = np.clip(alignability, 0.0, 1.0) * np.clip(concentration, 0.0, 1.0)
    return np.where(kept, w, 0.0)


def shown_weight(alignability: np.ndarray, shown_at_centre: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The ``shown`` confidence, ``(m,)`` in [0, 1]: for kept captions

        P(the caption is shown, and the centre of its cut span lies where it is shown)
          = P(shown) * P(centre in the shown run | shown) = alignability * shown_at_centre,

    0 for dropped ones. It is a probability under the posterior aligner's own model (alignability
    calibrated on the run against decoys; the segment model's run posterior, the offset prior
    learnt from the run), so it is calibrated where the footage shows a caption on one run of
    frames and the truth of a caption is that run. Monotone non-decreasing in both terms."""
    w = np.clip(alignability, 0.0, 1.0) * np.clip(shown_at_centre, 0.0, 1.0)
    return np.where(kept, w, 0.0)


def caption_weight(scores: CaptionScores, kept: np.ndarray, kind: str = "shown") -> np.ndarray:
    """The configured weight (``align.weight``, :data:`WEIGHTS`) of an aligner's ``scores``:
    :func:`shown_weight` when asked for and the aligner gives ``shown_at_centre``, else
    :func:`confidence_weight`."""
    if kind not in WEIGHTS:
        raise ValueError(f"align.weight: {kind!r} is not one of {list(WEIGHTS)}")
    if kind == "shown" and scores.shown_at_centre is not None:
        return shown_weight(scores.alignability, scores.shown_at_centre, kept)
    return confidence_weight(scores.alignability, scores.concentration, kept)
