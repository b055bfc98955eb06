"""Caption–frame similarity: cosine, min-max scaling and NCL normalisation.

Notation: m captions, T frames, D embedding dimensions.
"""

from __future__ import annotations

import numpy as np

from curation.blas import one_thread


def l2_normalise(x: np.ndarray, eps: float = 1e-12, dtype=np.float64) -> np.ndarray:
    """Rows of ``x: (n, D)`` scaled to unit L2 norm (all-zero rows stay zero), in ``dtype``."""
    x = np.array(x, dtype=dtype)  # one copy, scaled in place: no (n, D) temporaries
    norm = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    x /= np.maximum(norm, eps)
    return x


def cosine_similarity(caption_emb: np.ndarray, frame_emb: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``sim: (m, T)`` with ``sim[i, t] = <c_i/|c_i|, f_t/|f_t|>`` in [-1, 1], computed in
    ``dtype`` (float32 halves the cost where 1e-7 relative precision is plenty) and returned
    as float64. The product runs on one BLAS thread, so its bits do not depend on the runner
    (:mod:`curation.blas`)."""
    captions = l2_normalise(caption_emb, dtype=dtype)
    frames = np.asarray(frame_emb, dtype=dtype)
    # the frames' norms divide the (m, T) product, not the (T, D) frames: no copy of the frames
    norm = np.maximum(np.sqrt(np.einsum("td,td->t", frames, frames)), 1e-12)
    with one_thread():
        out = captions @ frames.T
    out /= norm[None, :]
    return out.astype(np.float64, copy=False)


def mean_cosine_over_runs(caption_emb: np.ndarray, frame_emb: np.ndarray, first: np.ndarray,
                          stop: np.ndarray) -> np.ndarray:
    """``(m,)``: caption i's mean cosine over frames ``first[i] <= t < stop[i]`` (each run non-
    empty), computed on those frames only: O(m L D) for runs of at most L frames, not the (m, T)
    matrix."""
    first, stop = np.asarray(first, dtype=np.int64), np.asarray(stop, dtype=np.int64)
    length = stop - first
    cells = first[:, None] + np.arange(int(length.max()))[None, :]   # (m, L)
    inside = cells < stop[:, None]
    frames = l2_normalise(np.asarray(frame_emb)[np.minimum(cells, stop[:, None] - 1)])  # (m, L, D)
    cosine = np.einsum("md,mld->ml", l2_normalise(caption_emb), frames)
    return (cosine * inside).sum(axis=1) / length


def minmax_scale(sim: np.ndarray) -> np.ndarray:
    """Affine map of the whole matrix onto [0, 1]; a constant matrix maps to zeros."""
    lo, hi = float(np.min(sim)), float(np.max(sim))
    if hi - lo < 1e-12:
        return np.zeros_like(sim, dtype=np.float64)
    return (np.asarray(sim, dtype=np.float64) - lo) / (hi - lo)


def ncl_normalise(sim: np.ndarray, temperature: float = 0.05, n_iter: int = 20) -> np.ndarray:
    """NCL (Park et al., EMNLP 2022) hub removal by Sinkhorn–Knopp biases.

    With ``K = exp(sim / tau)`` find row scalings ``u: (m,)`` and column scalings ``v: (T,)``
    such that ``P = diag(u) K diag(v)`` has every row summing to 1/m and every column to 1/T:
    every caption and every frame then carries the same total retrieval probability, so a frame
    or caption that is similar to everything (a hub) is down-weighted. Returns the bias-corrected
    scores ``tau * log P = sim + tau * (log u_i + log v_t)``, shape (m, T). ``P`` is exactly the
    entropic OT plan with uniform marginals, so this reuses :func:`curation.ot.log_sinkhorn`.
    """
    from curation.ot import log_sinkhorn

    sim = np.asarray(sim, dtype=np.float64)
    m, t = sim.shape
    plan = log_sinkhorn(sim, np.full(m, 1.0 / m), np.full(t, 1.0 / t), temperature, n_iter)
    return temperature * np.log(np.maximum(plan, 1e-300))
