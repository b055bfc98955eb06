"""Entropic optimal transport for caption realignment (Norton, Lin et al., ICLR 2024).

Notation: m captions, T frames, ``sim: (m, T)`` similarities (larger is better).

Norton's alignable prompt bucket augments ``sim`` with one extra row and one extra column whose
cells all equal the prompt value ``p`` and solves

    max_Q  <Q, S̄> + eps * H(Q)   s.t.  Q 1 = a,  Qᵀ 1 = b,
    a = [1/(m+T)] * m  ++ [T/(m+T)],     b = [1/(m+T)] * T  ++ [m/(m+T)]

(the "dustbin" marginals of the official code). ``(m+T) * Q`` gives every real caption row a
total mass of 1; the mass caption ``i`` sends to the extra column is its *unalignable* mass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from curation.blas import one_thread


#: Largest kernel dynamic range, in units of eps, that the scaling-domain iteration accepts
#: before falling back to the log domain (exp(600) is far inside float64's range).
_MAX_SCALING_RANGE = 600.0


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """Stable ``log(sum(exp(x), axis))``; slices that are all ``-inf`` give ``-inf``."""
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.log(np.sum(np.exp(x - peak), axis=axis)) + np.squeeze(peak, axis=axis)


def log_sinkhorn(
    score: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float, n_iter: int
) -> np.ndarray:
    """Entropic OT plan ``Q: (n, k)`` maximising ``<Q, score> + eps H(Q)`` with marginals a, b.

    Log-domain Sinkhorn: potentials ``f: (n,)``, ``g: (k,)`` start at 0 and alternate

        f = eps log a - eps LSE_t((score + g) / eps)
        g = eps log b - eps LSE_i((score + f) / eps)

    for ``n_iter`` rounds; ``Q = exp((score + f + g) / eps)``, so column marginals are exact
    and row marginals converge. Cells equal to ``-inf`` are forbidden (get zero mass).
    When the finite scores span less than ``600 * eps`` the same iterates are evaluated in the
    scaling domain (``u = a / K v``, ``v = b / Kᵀ u`` with ``K = exp((score - max) / eps)``),
    which is exact in float64 for that range and ~20x faster; otherwise in log domain.
    """
    score = np.asarray(score, dtype=np.float64)
    finite = score[np.isfinite(score)]
    if finite.size and (finite.max() - finite.min()) / eps < _MAX_SCALING_RANGE:
        return _sinkhorn_scaling(score, a, b, eps, n_iter)
    return _sinkhorn_log(score, a, b, eps, n_iter)


def _sinkhorn_log(score, a, b, eps, n_iter):
    f = np.zeros(score.shape[0])
    g = np.zeros(score.shape[1])
    log_a, log_b = np.log(a), np.log(b)
    z = score / eps
    for _ in range(n_iter):
        f = eps * (log_a - logsumexp(z + g[None, :] / eps, axis=1))
        g = eps * (log_b - logsumexp(z + f[:, None] / eps, axis=0))
    return np.exp(z + (f[:, None] + g[None, :]) / eps)


def _sinkhorn_scaling(score, a, b, eps, n_iter):
    top = np.max(score[np.isfinite(score)])
    kernel = np.exp((score - top) / eps)  # -inf cells -> 0
    v = np.ones(score.shape[1])
    u = np.ones(score.shape[0])
    with one_thread():  # the same bits on every runner (curation.blas)
        for _ in range(n_iter):
            u = a / (kernel @ v)
            v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


def bucket_marginals(m: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Norton's dustbin marginals ``a: (m+1,)`` and ``b: (t+1,)``, each summing to 1."""
    total = m + t
    a = np.full(m + 1, 1.0 / total)
    a[-1] = t / total
    b = np.full(t + 1, 1.0 / total)
    b[-1] = m / total
    return a, b


class BucketPlan(NamedTuple):
    """Result of :func:`norton_bucket_plan`.

    plan: (m, T) real-cell mass, scaled by (m+T) so each caption row plus its bucket mass is 1.
    bucket_mass: (m,) in [0, 1], mass each caption sends to the prompt bucket (unalignable).
    """

    plan: np.ndarray
    bucket_mass: np.ndarray


def norton_bucket_plan(
    sim: np.ndarray, prompt_value: float, eps: float = 0.1, n_iter: int = 50
) -> BucketPlan:
    """Norton's OT with the alignable prompt bucket on ``sim: (m, T)``.

    Builds ``S̄: (m+1, T+1)`` (extra row and column filled with ``prompt_value``), solves
    entropic OT with :func:`bucket_marginals` by :func:`log_sinkhorn`, multiplies by (m+T)
    and splits off the extra column. Rows are renormalised to sum exactly 1 with their bucket
    mass (Sinkhorn ends on a column update, so rows are within its convergence tolerance).
    """
    sim = np.asarray(sim, dtype=np.float64)
    m, t = sim.shape
    aug = np.full((m + 1, t + 1), float(prompt_value))
    aug[:m, :t] = sim
    a, b = bucket_marginals(m, t)
    q = log_sinkhorn(aug, a, b, eps, n_iter)[:m] * (m + t)
    q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    return BucketPlan(plan=q[:, :t], bucket_mass=np.clip(q[:, t], 0.0, 1.0))


def plain_plan(sim: np.ndarray, eps: float = 0.1, n_iter: int = 50) -> np.ndarray:
    """Balanced entropic OT without a bucket: uniform marginals, rows rescaled to sum 1, (m, T)."""
    sim = np.asarray(sim, dtype=np.float64)
    m, t = sim.shape
    q = log_sinkhorn(sim, np.full(m, 1.0 / m), np.full(t, 1.0 / t), eps, n_iter)
    return q / np.maximum(q.sum(axis=1, keepdims=True), 1e-300)

