r"""S2DTW: smooth and skippable soft-DTW alignment of captions to frames (pure numpy).

An alternative monotonic aligner after VT-TWINS -- D. Ko, J. Choi, H. K. Choi, K.-W. On,
B. Roh, H. J. Kim, "Video-Text Representation Learning via Differentiable Weak Temporal
Alignment", CVPR 2022 (official code: github.com/KoDohwan/VT-TWINS, ``soft_dtw.py``,
``SoftDTW._negative_dot_product``). This is an independent numpy re-implementation for
*inference*: given a similarity matrix between ``m`` captions (in time order) and ``T``
frames it returns a soft, monotonic alignment plan plus a per-caption "skip" mass.
(The official code builds the cost for square video-by-text batches with video on the
rows; here it is ``(m, T)`` with captions on the rows. Both the smoothing and the
interleaving are symmetric under transposition, so only the naming changes.)

The method has three parts.

1. **Local neighbourhood smoothing** of the cost. With ``c[i, j] = -sim[i, j]``
   (unitless), each cell gets the soft-min of the costs of its left, upper and
   upper-left (diagonal) neighbours added:

   .. math::

       \tilde c_{i,j} = c_{i,j} + \min{}^{\gamma}(c_{i,j-1},\; c_{i-1,j},\; c_{i-1,j-1})
                      = -s_{i,j} - \max{}^{\gamma}(s_{i,j-1},\; s_{i-1,j},\; s_{i-1,j-1}),

   with :math:`\min^\gamma(x) = -\gamma \log\sum_k e^{-x_k/\gamma}` and
   :math:`\max^\gamma = -\min^\gamma(-\cdot)`. Neighbours outside the matrix are absent
   (cost :math:`+\infty`); the first cell ``(0, 0)``, which has none, uses three virtual
   neighbours of cost 0 exactly as the official code does, so
   :math:`\tilde c_{0,0} = -s_{0,0} - \gamma\log 3`.

2. **Skip cells.** The smoothed ``(m, T)`` matrix is interleaved with constant cells of
   cost ``skip_cost`` (0.5 in the paper's code): every real row is preceded and followed
   by a skip row and every real column by a skip column, giving a ``(2m+1, 2T+1)`` matrix
   ``C`` with ``C[2i+1, 2j+1] = \tilde c[i, j]`` and ``skip_cost`` everywhere else. A
   monotonic path can then step over a caption (cross row ``2i+1`` on a skip column) or a
   frame (cross column ``2j+1`` on a skip row) without visiting its real cell.

3. **Soft-DTW** (Cuturi & Blondel, ICML 2017) on ``C`` with moves right, down and
   diagonal:

   .. math::

       R_{0,0} = 0,\quad R_{p,0} = R_{0,q} = +\infty,\quad
       R_{p,q} = C_{p-1,q-1} + \min{}^{\gamma}(R_{p-1,q-1}, R_{p-1,q}, R_{p,q-1}),

   value :math:`R_{n,k}`, and the expected alignment :math:`E = \partial R_{n,k}/\partial C`
   from the backward recursion of Cuturi & Blondel (2017, Alg. 2) / Mensch & Blondel
   (ICML 2018): :math:`E_{p,q}` is the probability that the Gibbs distribution over
   monotonic paths, :math:`P(A) \propto \exp(-\langle A, C\rangle/\gamma)`, visits
   cell ``(p, q)``.

:func:`s2dtw_plan` maps ``E`` back to an ``(m, T)`` plan and a per-caption skip probability
(see its docstring for the exact row mapping and normalisation).

Both recursions run over anti-diagonals (every cell of one anti-diagonal depends only on the
two previous ones), stored in a skewed layout so that each anti-diagonal is one contiguous
numpy slice; the Python loop is over the ``n + k - 1`` anti-diagonals only.

Everything is float64. ``gamma`` is the soft-min temperature in cost units (0.1 in the
paper for both the smoothing and the soft-DTW).
"""

from __future__ import annotations

import numpy as np

__all__ = ["soft_min", "s2dtw_cost", "soft_dtw_alignment", "s2dtw_plan"]

#: Default soft-min temperature (VT-TWINS uses 0.1 for both the smoothing and soft-DTW).
DEFAULT_GAMMA = 0.1
#: Default cost of an interleaved skip cell (``threshold`` in the official code).
DEFAULT_SKIP_COST = 0.5


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not np.isfinite(gamma) or gamma <= 0.0:
        raise ValueError(f"gamma must be a finite positive number, got {gamma!r}")
    return gamma


def soft_min(a: np.ndarray, b: np.ndarray, c: np.ndarray, gamma: float) -> np.ndarray:
    r"""Elementwise soft minimum of three arrays, :math:`-\gamma\log(e^{-a/\gamma}+e^{-b/\gamma}+e^{-c/\gamma})`.

    Computed stably as :math:`\mu - \gamma\log\sum_x e^{-(x-\mu)/\gamma}` with
    :math:`\mu = \min(a, b, c)`, so every exponent is ``<= 0``. ``+inf`` entries are
    allowed and simply drop out; where all three are ``+inf`` the result is ``+inf``.
    As ``gamma -> 0`` it tends to ``min(a, b, c)`` from below; it is never more than
    ``gamma * log(3)`` below it.

    Args:
        a, b, c: broadcast-compatible float arrays (same units as ``gamma``).
        gamma: temperature, > 0.

    Returns:
        float64 array of the broadcast shape.
    """
    gamma = _check_gamma(gamma)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    mu = np.minimum(np.minimum(a, b), c)
    finite = np.isfinite(mu)
    mu_safe = np.where(finite, mu, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        total = (
            np.exp((mu_safe - a) / gamma)
            + np.exp((mu_safe - b) / gamma)
            + np.exp((mu_safe - c) / gamma)
        )
        out = mu_safe - gamma * np.log(total)
    return np.where(finite, out, mu)


def s2dtw_cost(sim: np.ndarray, gamma: float = DEFAULT_GAMMA, skip_cost: float = DEFAULT_SKIP_COST) -> np.ndarray:
    r"""Interleaved, locally smoothed S2DTW cost matrix for a caption-by-frame similarity.

    Args:
        sim: ``(m, T)`` similarities between ``m`` captions (rows, time order) and ``T``
            frames (columns), typically cosine similarities in ``[0, 1]``; finite.
        gamma: temperature of the neighbourhood soft-min (0.1 in VT-TWINS).
        skip_cost: constant cost of every skip cell (0.5 in VT-TWINS).

    Returns:
        ``cost`` of shape ``(2m+1, 2T+1)``, float64:

        * ``cost[2i+1, 2j+1] = -sim[i, j] + soft_min(-sim[i, j-1], -sim[i-1, j],
          -sim[i-1, j-1])`` -- the real cell of caption ``i`` and frame ``j``; neighbours
          outside the matrix are dropped (``+inf``), and cell ``(0, 0)`` uses three
          virtual zero-cost neighbours (``-sim[0, 0] - gamma*log(3)``) as in the
          official code;
        * every other cell (even row or even column) ``= skip_cost``.

        So rows ``0, 2, ..., 2m`` and columns ``0, 2, ..., 2T`` are skip rows/columns, and
        ``cost[0, 0]`` and ``cost[-1, -1]`` are always skip cells.
    """
    gamma = _check_gamma(gamma)
    sim = _finite_matrix(sim, "sim")
    skip_cost = float(skip_cost)
    if not np.isfinite(skip_cost):
        raise ValueError(f"skip_cost must be finite, got {skip_cost!r}")

    m, n_frames = sim.shape
    cost = -sim
    left = np.full_like(cost, np.inf)
    up = np.full_like(cost, np.inf)
    diag = np.full_like(cost, np.inf)
    left[:, 1:] = cost[:, :-1]
    up[1:, :] = cost[:-1, :]
    diag[1:, 1:] = cost[:-1, :-1]
    left[0, 0] = up[0, 0] = diag[0, 0] = 0.0  # official-code convention for the first cell
    smoothed = cost + soft_min(left, up, diag, gamma)

    out = np.full((2 * m + 1, 2 * n_frames + 1), skip_cost, dtype=np.float64)
    out[1::2, 1::2] = smoothed
    return out


def _finite_matrix(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as a float64 non-empty 2-D finite matrix, else ValueError naming ``name``."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _skew_index(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays mapping a padded ``(n_rows, n_cols)`` matrix to its skewed layout.

    Padded cell ``(p, q)`` lives at ``skew[p + q, p]``; returns ``(d, p, q)`` for all cells.
    """
    p, q = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    return (p + q).ravel(), p.ravel(), q.ravel()


def _soft_dtw_tables(cost: np.ndarray, gamma: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Soft-DTW value, forward table and expected alignment; see :func:`soft_dtw_alignment`.

    Returns ``(value, R, E)`` where ``R[p, q]`` (shape ``(n, k)``) is the soft-min cost of
    all monotonic paths from ``(0, 0)`` to ``(p, q)`` inclusive (the padded table without its
    border) and ``E`` is the expected alignment.
    """
    gamma = _check_gamma(gamma)
    cost = _finite_matrix(cost, "cost")
    n, k = cost.shape

    # Skewed storage of the (n+2, k+2) padded tables: padded cell (p, q) -> [p + q, p], so
    # anti-diagonal d is the contiguous row slice [d, p_lo:p_hi+1].
    n_diag, width = n + k + 3, n + 2
    d_idx, p_idx, q_idx = _skew_index(n + 2, k + 2)
    cost_pad = np.zeros((n + 2, k + 2))
    cost_pad[1 : n + 1, 1 : k + 1] = cost
    c_sk = np.zeros((n_diag, width))
    c_sk[d_idx, p_idx] = cost_pad[p_idx, q_idx]
    r_sk = np.full((n_diag, width), np.inf)
    r_sk[0, 0] = 0.0

    inv_gamma = 1.0 / gamma
    for d in range(2, n + k + 1):
        lo, hi = max(1, d - k), min(n, d - 1)
        r_diag = r_sk[d - 2, lo - 1 : hi]  # R[p-1, q-1]
        r_up = r_sk[d - 1, lo - 1 : hi]  # R[p-1, q]
        r_left = r_sk[d - 1, lo : hi + 1]  # R[p, q-1]
        mu = np.minimum(np.minimum(r_diag, r_up), r_left)  # finite: every cell is reachable
        total = np.exp((mu - r_diag) * inv_gamma)
        total += np.exp((mu - r_up) * inv_gamma)
        total += np.exp((mu - r_left) * inv_gamma)
        r_sk[d, lo : hi + 1] = c_sk[d, lo : hi + 1] + mu - gamma * np.log(total)
    value = float(r_sk[n + k, n])

    # Backward: -inf outside the interior, except the virtual end cell (n+1, k+1).
    interior = np.zeros((n_diag, width), dtype=bool)
    interior[d_idx, p_idx] = (p_idx >= 1) & (p_idx <= n) & (q_idx >= 1) & (q_idx <= k)
    r_sk[~interior] = -np.inf
    r_sk[n + k + 2, n + 1] = value
    e_sk = np.zeros((n_diag, width))
    e_sk[n + k + 2, n + 1] = 1.0
    for d in range(n + k, 1, -1):
        lo, hi = max(1, d - k), min(n, d - 1)
        r_here = r_sk[d, lo : hi + 1]
        # successors: down (p+1, q), right (p, q+1), diagonal (p+1, q+1)
        acc = e_sk[d + 1, lo + 1 : hi + 2] * np.exp(
            (r_sk[d + 1, lo + 1 : hi + 2] - r_here - c_sk[d + 1, lo + 1 : hi + 2]) * inv_gamma
        )
        acc += e_sk[d + 1, lo : hi + 1] * np.exp(
            (r_sk[d + 1, lo : hi + 1] - r_here - c_sk[d + 1, lo : hi + 1]) * inv_gamma
        )
        acc += e_sk[d + 2, lo + 1 : hi + 2] * np.exp(
            (r_sk[d + 2, lo + 1 : hi + 2] - r_here - c_sk[d + 2, lo + 1 : hi + 2]) * inv_gamma
        )
        e_sk[d, lo : hi + 1] = acc

    p, q = np.meshgrid(np.arange(1, n + 1), np.arange(1, k + 1), indexing="ij")
    expected = np.clip(e_sk[p + q, p], 0.0, 1.0)
    r_table = r_sk[p + q, p]
    return value, r_table, expected


def soft_dtw_alignment(cost: np.ndarray, gamma: float = DEFAULT_GAMMA) -> tuple[float, np.ndarray]:
    r"""Soft-DTW value and expected alignment matrix of a cost matrix (moves right/down/diagonal).

    Forward (Cuturi & Blondel 2017, Alg. 1), on the ``(n+1, k+1)`` padded table:

    .. math::

        R_{0,0}=0,\; R_{p,0}=R_{0,q}=+\infty,\;
        R_{p,q} = C_{p-1,q-1} + \min{}^{\gamma}(R_{p-1,q-1}, R_{p-1,q}, R_{p,q-1}).

    Backward (Alg. 2; Mensch & Blondel 2018), with :math:`R_{n+1,\cdot} = R_{\cdot,k+1} =
    -\infty` except :math:`R_{n+1,k+1} = R_{n,k}`, :math:`C` zero-padded and
    :math:`E_{n+1,k+1} = 1`:

    .. math::

        E_{p,q} = \sum_{(p',q') \in \{(p+1,q), (p,q+1), (p+1,q+1)\}}
                  E_{p',q'}\, \exp\big((R_{p',q'} - R_{p,q} - C_{p'-1,q'-1})/\gamma\big).

    Each exponent is ``<= 0`` by construction (the soft-min is below each argument), so the
    backward pass is stable in the log domain; each factor is the conditional probability
    that a path through ``(p', q')`` arrived there from ``(p, q)``, and ``E_{p',q'}`` times it
    is the marginal probability of that edge.

    Args:
        cost: ``(n, k)`` finite cost matrix (any real values, same units as ``gamma``).
        gamma: temperature, > 0.

    Returns:
        ``(value, E)``: ``value = R[n, k]`` (float, cost units) and ``E = d value / d cost``,
        shape ``(n, k)``, entries in ``[0, 1]`` = probability that the soft path visits each
        cell; ``E[0, 0] = E[-1, -1] = 1`` and every row and column of ``E`` sums to ``>= 1``.
    """
    value, _, expected = _soft_dtw_tables(cost, gamma)
    return value, expected


def _caption_skip_probability(
    cost: np.ndarray, r_table: np.ndarray, expected: np.ndarray, gamma: float
) -> np.ndarray:
    r"""Probability that the soft path crosses each real row without visiting a real cell.

    The Gibbs distribution over monotonic paths factorises over cells, so the path is a
    Markov chain. A path meets real row ``r = 2i+1`` in one contiguous run of cells, and a
    run of two or more cells always contains a real (odd) column, so caption ``i`` is
    skipped iff the run is a single skip cell ``(r, q)``, ``q`` even: the path enters it
    from row ``r-1`` and leaves to row ``r+1``. With ``h_q`` the marginal of the
    horizontal edge ``(r, q-1) -> (r, q)``,

    .. math::

        h_q = E_{r,q}\,\exp\big((R_{r,q} - R_{r,q-1} - C_{r,q})/\gamma\big),\qquad
        P(\text{skip } i) = \sum_{q\ \text{even}}
            \frac{(E_{r,q} - h_q)\,(E_{r,q} - h_{q+1})}{E_{r,q}},

    using the conditional independence of the incoming and outgoing edge given the cell
    (``P(in_h and out_h) = h_q h_{q+1} / E_{r,q}``); ``h_0 = h_{2T+1} = 0``.
    """
    inv_gamma = 1.0 / gamma
    e_rows = expected[1::2]  # (m, 2T+1)
    r_rows = r_table[1::2]
    c_rows = cost[1::2]
    h_in = np.zeros_like(e_rows)
    h_in[:, 1:] = e_rows[:, 1:] * np.exp((r_rows[:, 1:] - r_rows[:, :-1] - c_rows[:, 1:]) * inv_gamma)
    h_out = np.zeros_like(e_rows)
    h_out[:, :-1] = h_in[:, 1:]
    e_skip, in_skip, out_skip = e_rows[:, 0::2], h_in[:, 0::2], h_out[:, 0::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        alone = np.where(
            e_skip > 0.0,
            np.clip(e_skip - in_skip, 0.0, None) * np.clip(e_skip - out_skip, 0.0, None) / e_skip,
            0.0,
        )
    return np.clip(alone.sum(axis=1), 0.0, 1.0)


def s2dtw_plan(
    sim: np.ndarray, gamma: float = DEFAULT_GAMMA, skip_cost: float = DEFAULT_SKIP_COST
) -> tuple[np.ndarray, np.ndarray]:
    r"""Soft monotonic caption-to-frame plan and per-caption skip mass from S2DTW.

    Builds ``C = s2dtw_cost(sim, gamma, skip_cost)`` (shape ``(2m+1, 2T+1)``), runs
    :func:`soft_dtw_alignment` on it with the same ``gamma`` and maps the expected alignment
    ``E`` back to captions:

    * **Rows -> captions.** Caption ``i`` owns exactly interleaved row ``2i+1`` (its real
      row); its real cells are ``E[2i+1, 2j+1]`` for frames ``j = 0..T-1``. The even rows
      ``0, 2, ..., 2m`` are skip rows between captions and belong to no caption; the even
      columns of row ``2i+1`` are its skip cells.
    * **Skip mass.** Every monotonic path meets row ``2i+1`` in exactly one contiguous run
      of cells, so the caption's total mass on its row, counted per path, is 1. The run either
      contains a real cell (the caption is matched to >= 1 frame) or is a single skip cell
      (the path steps over the caption). So

      .. math::

          \mathrm{skip\_mass}_i = 1 - P(\text{run in row } 2i{+}1 \text{ hits a real cell})
                                = P(\text{caption } i \text{ is skipped}),

      computed exactly from ``E`` and the forward table (see
      :func:`_caption_skip_probability`). This is the analogue of Norton's prompt-bucket
      mass. (Counting per *cell visit* instead -- real visits over all visits of the row --
      does not work: the skip cell between two consecutive matched frames is visited too,
      so every well-matched caption scores about 0.5 and a bad caption crossed at a single
      real cell scores lower, not higher.)
    * **Plan normalisation.** With ``real_i = sum_j E[2i+1, 2j+1]`` (expected number of
      frames matched to caption ``i``, can exceed 1),

      .. math::

          \mathrm{plan}_{i,j} = (1 - \mathrm{skip\_mass}_i)\,
                                \frac{E_{2i+1,\,2j+1}}{\mathrm{real}_i},

      i.e. the caption's expected-visit distribution over frames (the distribution given
      that it is matched, since skipping paths visit no real cell), scaled by the
      probability that it is matched. Each row sums to ``1 - skip_mass_i <= 1``; a row with
      no real mass at all (``real_i == 0``) is all zeros with ``skip_mass_i = 1``.

    Note on scale: a real cell only loses to skip cells when its smoothed cost exceeds
    ``skip_cost``, i.e. roughly ``sim[i, j] + softmax(neighbour sims) < -skip_cost``. With
    similarities in ``[0, 1]`` every real cell has cost ``<= 0 < skip_cost``, so paths
    almost never skip and ``skip_mass`` stays near 0; centre or shift the similarities
    (e.g. subtract a match threshold) if captions and frames should be skippable.

    Args:
        sim: ``(m, T)`` caption-by-frame similarities, captions and frames in time order.
        gamma: soft-min temperature for both the neighbourhood smoothing and soft-DTW.
        skip_cost: cost of each interleaved skip cell.

    Returns:
        ``(plan, skip_mass)``: ``plan`` float64 ``(m, T)``, entries in ``[0, 1]``, rows
        summing to ``1 - skip_mass``; ``skip_mass`` float64 ``(m,)`` in ``[0, 1]``.
    """
    gamma = _check_gamma(gamma)
    cost = s2dtw_cost(sim, gamma=gamma, skip_cost=skip_cost)
    _, r_table, expected = _soft_dtw_tables(cost, gamma)
    skip_mass = _caption_skip_probability(cost, r_table, expected, gamma)
    real = expected[1::2, 1::2]  # (m, T)
    real_total = real.sum(axis=1)
    matched = real_total > 0.0
    skip_mass = np.where(matched, skip_mass, 1.0)
    scale = np.divide(1.0 - skip_mass, real_total, out=np.zeros_like(real_total), where=matched)
    plan = real * scale[:, None]
    return plan, skip_mass
