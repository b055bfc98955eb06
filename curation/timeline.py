"""Frame times, timestamp pairing and the temporal prior around ASR times.

Frame ``t`` of features sampled at ``fps`` covers ``[t/fps, (t+1)/fps)``; its time is the centre
``(t + 0.5) / fps`` seconds.
"""

from __future__ import annotations

import numpy as np


def frame_centres_s(n_frames: int, fps: float) -> np.ndarray:
    """``(T,)`` centre time of every frame, seconds."""
    return (np.arange(n_frames, dtype=np.float64) + 0.5) / fps


def span_frame_mask(start_s: np.ndarray, end_s: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """``(m, T)`` bool: frame centre inside ``[start_s, end_s]``; an empty row gets its nearest frame.

    A caption whose span covers no frame centre (short, or past the video's end) is paired with
    the frame nearest to its span centre, so every caption has at least one paired frame.
    """
    centres = frame_centres_s(n_frames, fps)
    start_s = np.asarray(start_s, dtype=np.float64)[:, None]
    end_s = np.asarray(end_s, dtype=np.float64)[:, None]
    mask = (centres[None, :] >= start_s) & (centres[None, :] <= end_s)
    empty = ~mask.any(axis=1)
    if empty.any():
        mid = ((start_s + end_s) / 2.0)[empty, 0]
        nearest = np.clip(np.round(mid * fps - 0.5).astype(int), 0, n_frames - 1)
        mask[np.flatnonzero(empty), nearest] = True
    return mask


def paired_similarity(sim: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, fps: float) -> np.ndarray:
    """``(m,)`` mean similarity of each caption to the frames of its own ASR span (Norton's
    timestamp-paired caption/clip similarity)."""
    mask = span_frame_mask(start_s, end_s, sim.shape[1], fps)
    return (sim * mask).sum(axis=1) / mask.sum(axis=1)


def temporal_penalty(
    asr_centre_s: np.ndarray,
    n_frames: int,
    fps: float,
    window_s: float | None,
    prior_sigma_s: float | None,
    prior_weight: float,
) -> np.ndarray:
    """``(m, T)`` additive log-prior on similarities around each caption's ASR centre.

    ``d = |t_centre - asr_centre_s|`` (seconds). Cells with ``d > window_s`` are ``-inf``
    (forbidden); inside, ``-prior_weight * (d / prior_sigma_s)²``. ``None`` disables a term.
    The ASR centre is clipped into the video so captions past the end still have candidates.
    """
    centres = frame_centres_s(n_frames, fps)
    duration_s = n_frames / fps
    asr = np.clip(np.asarray(asr_centre_s, dtype=np.float64), 0.0, duration_s)[:, None]
    dist_s = np.abs(centres[None, :] - asr)
    penalty = np.zeros_like(dist_s)
    if prior_sigma_s is not None and prior_weight > 0:
        penalty -= prior_weight * (dist_s / prior_sigma_s) ** 2
    if window_s is not None:
        # keep at least the nearest frame so no row is entirely forbidden
        nearest = dist_s <= dist_s.min(axis=1, keepdims=True)
        penalty[(dist_s > window_s) & ~nearest] = -np.inf
    return penalty
