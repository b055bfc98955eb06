"""Caption timing as a posterior: segment evidence near the ASR time times a run-level offset prior.

Notation: m captions, T frames at ``fps``; ``sim: (m, T)`` caption-frame cosine similarity;
``asr_centre_s: (m,)``. Every caption is looked at on its own *offset
grid*: the K = 2 * round(window_s * fps) + 1 frames around its ASR centre frame, at offsets
``d_k = (k - K // 2) / fps`` seconds (true time minus ASR time).

1. **Evidence** (:func:`segment_evidence`). ``sim`` is the plain cosine; :func:`polish`
   turns it into z by a median polish (frame medians, then caption medians removed; one noise
   scale per video). Single-segment model: the caption is shown nowhere in its grid, or on one
   run of n frames, whose likelihood ratio against "nowhere" is

       LR(run) = exp(c * h * (sum_run z - n * h / 2))

   with ``h`` the caption's on-level and ``c = (1 - a) / (1 + a)`` discounting frame noise whose
   lag-1 autocorrelation ``a`` is estimated from the video's rows, so correlated frames do not
   count as independent evidence.

   * ``llr[i]`` = log of the mean LR over runs with lengths on a geometric ladder 2 ... K (each
     length equally likely, each start equally likely) at ``h = delta``, the mean z of the
     caption's best run (largest ``sum z / sqrt(n)``): the Bayes factor for "shown somewhere on
     its grid", calibrated against decoys (captions of other videos, ``curation.calibration``)
     into the weight of the caption's evidence in its timing and in the prior's fit.
   * ``glr[i]`` = the same mean with each run at its own on-level (its mean z: the generalised
     likelihood ratio ``exp(c max(sum_run z, 0)^2 / (2 n))``), over the runs inside the video,
     and ``locus[i, k]`` = where the caption's moment lies by it (each run's share spread evenly
     over its cells). With the run's offset prior, :func:`prior_llr` turns them into the Bayes
     factor for "shown where this run's narration is usually shown": the statistic alignability
     is calibrated on.
   * ``on_prob[i, k]`` = P(cell k lies in the run | there is one), over *every* run of the grid,
     each equally likely, runs that begin before or end after the grid seen through it
     (:func:`run_coverage`: exact in O(K) per caption, since log LR is a difference of two
     cumulative terms), with ``h`` re-estimated by two EM steps from ``delta``: flat across an
     evenly shown step up to its edges, whatever its length, peaked where the footage singles a
     moment out, and flat over the whole grid where the footage says nothing.
2. **Prior** over offsets, learnt from the run (:func:`fit_offset_prior`, maximum likelihood):
   ``pi(d) = (1 - rho) N(d; mu, sigma^2) + rho / (2 W)``.
3. **Time** (:func:`posterior_centre_s`): the span centre is the argmax, over windows of the
   caption's own duration, of ``p(d) = (1 - v) pi(d) + v on_prob(d) pi(d) / Z``, ``v`` the
   caption's alignability. Flat evidence keeps the prior's mode (ASR + mu); evidence away from the
   ASR time moves the caption to the evidenced frames nearest to it; peaked evidence to the peak.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

#: Ratio of the run-length ladder of the segment model.
LENGTH_RATIO = 1.5


class OffsetPrior(NamedTuple):
    """``pi(d) = (1 - outlier_share) N(d; mu_s, sigma_s^2) + outlier_share / (2 window_s)`` per
    second, ``d`` = true time minus ASR time in seconds, 0 outside ±``window_s``."""

    mu_s: float
    sigma_s: float
    outlier_share: float
    window_s: float

    def gaussian(self, offset_s: np.ndarray) -> np.ndarray:
        """The Gaussian part ``(1 - rho) N(d; mu, sigma^2)`` per second at ``offset_s``."""
        d = np.asarray(offset_s, dtype=np.float64)
        return (1.0 - self.outlier_share) * np.exp(-0.5 * ((d - self.mu_s) / self.sigma_s) ** 2) / (
            self.sigma_s * np.sqrt(2 * np.pi))

    def density(self, offset_s: np.ndarray) -> np.ndarray:
        """``pi(d)`` per second at ``offset_s`` (any shape)."""
        d = np.asarray(offset_s, dtype=np.float64)
        dens = self.gaussian(d) + self.outlier_share / (2.0 * self.window_s)
        return np.where(np.abs(d) <= self.window_s, dens, 0.0)


#: Captions below this alignability are left out of the prior's fit (their weight would add nothing).
MIN_FIT_WEIGHT = 0.01

#: What the prior fit's pseudo-captions (``fit_offset_prior``'s ``prior_count``) hold
#: it to when a run has no usable evidence: the ASR times as they are.
START_OUTLIER_SHARE = 0.2


def start_prior(window_s: float) -> OffsetPrior:
    return OffsetPrior(0.0, window_s / 4.0, START_OUTLIER_SHARE, window_s)


class Evidence(NamedTuple):
    """Per-caption segment evidence on the offset grid (module docstring, step 1)."""

    offset_s: np.ndarray   # (K,) seconds, true minus ASR centre
    frame: np.ndarray      # (m, K) int frame index of each grid cell (clipped into the video)
    valid: np.ndarray      # (m, K) bool, the cell lies inside the video
    on_prob: np.ndarray    # (m, K) P(cell in the caption's run | it has one); 0 where not valid
    llr: np.ndarray        # (m,) log Bayes factor "shown on some run" / "shown nowhere"
    glr: np.ndarray        # (m,) the same, each run at its own on-level (generalised likelihood ratio)
    locus: np.ndarray      # (m, K) where the caption's moment lies under glr's runs (sums to 1)
    frame_median: np.ndarray | None = None  # (T,) the polish's frame medians (None for decoys)
    scale: float = 1.0     # the polish's noise scale
    discount: float = 1.0  # the noise discount c used


def run_lengths(k: int, ratio: float = LENGTH_RATIO) -> list[int]:
    """Run lengths of the segment model, frames: a geometric ladder from 2 up to ``k``."""
    out, x = [], 2.0
    while round(x) <= k:
        if not out or round(x) != out[-1]:
            out.append(int(round(x)))
        x *= ratio
    return out or [max(k, 1)]


def offset_grid(asr_centre_s: np.ndarray, n_frames: int, fps: float, window_s: float):
    """``(offset_s: (K,), frame: (m, K) int, valid: (m, K) bool)``: each caption's grid is the
    frame holding its ASR centre and ``round(window_s * fps)`` frames either side."""
    half = int(round(window_s * fps))
    steps = np.arange(-half, half + 1)
    centre = np.floor(np.asarray(asr_centre_s, dtype=np.float64) * fps).astype(int)
    frame = centre[:, None] + steps[None, :]
    valid = (frame >= 0) & (frame < n_frames)
    return steps / fps, np.clip(frame, 0, n_frames - 1), valid


#: Longest axis :func:`median` sorts (longer ones are partitioned): on many short rows numpy's
#: vectorised sort beats its partition, whose branches mispredict on fresh data (README,
#: "Throughput (feature mode)").
SORT_MAX = 1024


def median(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.median(x, axis)`` for finite ``x``, the same values: axes of at most ``SORT_MAX``
    sorted, longer ones by one partition, at both middles where the axis is contiguous in memory,
    else at the upper middle, the lower middle of an even count being the largest value left of
    it."""
    x = np.asarray(x, dtype=np.float64)
    x = x.ravel() if axis is None else np.moveaxis(x, axis, -1)
    n = x.shape[-1]
    k = n // 2
    if 2 <= n <= SORT_MAX:
        part = np.sort(x, axis=-1)
        return part[..., k] if n % 2 else (part[..., k - 1] + part[..., k]) / 2.0
    if n >= 2 and x.strides[-1] == x.itemsize:
        part = np.partition(x, [k - 1, k], axis=-1)
        return part[..., k] if n % 2 else (part[..., k - 1] + part[..., k]) / 2.0
    part = np.partition(x, k, axis=-1)
    upper = part[..., k]
    if n % 2:
        return upper
    return (part[..., :k].max(axis=-1) + upper) / 2.0


class Polish(NamedTuple):
    """A median polish of one video's ``sim: (m, T)`` (:func:`polish`)."""

    z: np.ndarray           # (m, T) standardised similarity
    frame_median: np.ndarray  # (T,) each frame's median over the captions
    scale: float            # the video's noise scale


def polish(sim: np.ndarray) -> Polish:
    """z of a similarity matrix by a median polish: minus each frame's median over the captions
    (a hub frame, similar to every caption, is no evidence for any), then minus each caption's
    median over the frames (its off level), over one noise scale for the whole video (1.4826
    times the median absolute value), so rows keep their strengths relative to one another: a
    caption that matches nothing fluctuates less than one whose concept is on screen. Invariant
    to an affine change of the cosines: an encoder's cosine band does not matter."""
    sim = np.asarray(sim, dtype=np.float64)
    frame_median = median(sim, axis=0)
    centred = sim - frame_median[None, :]
    centred = centred - median(centred, axis=1)[:, None]
    mad = float(median(np.abs(centred))) * 1.4826
    scale = mad if mad > 1e-12 else 1.0
    return Polish(centred / scale, frame_median, scale)


def noise_lag1(z: np.ndarray) -> float:
    """Median over rows of the lag-1 autocorrelation of ``z: (m, T)``, clipped to [0, 0.95]."""
    if z.shape[1] < 3:
        return 0.0
    num = (z[:, 1:] * z[:, :-1]).sum(axis=1)
    den = (z[:, 1:] ** 2).sum(axis=1)
    rows = num[den > 0] / den[den > 0]
    return float(np.clip(np.median(rows), 0.0, 0.95)) if rows.size else 0.0


def noise_discount(z: np.ndarray) -> float:
    """``c = (1 - a) / (1 + a)`` for ``a`` = :func:`noise_lag1` of ``z``: the inverse of the
    variance inflation of a mean of AR(1) noise."""
    a = noise_lag1(z)
    return (1.0 - a) / (1.0 + a)


@functools.lru_cache(maxsize=16)
def _ladder(k: int):
    """Every run of the segment model on a grid of ``k`` cells, flattened over lengths (for each
    length n of :func:`run_lengths`, the runs starting at 0 ... k - n): ``(start: (J,), end:
    (J,), length: (J,) float32, log_prior: (J,) float32, lengths)``. Each length is equally
    likely, and each start of a length."""
    lengths = tuple(run_lengths(k))
    start = np.concatenate([np.arange(k - n + 1) for n in lengths])
    length = np.concatenate([np.full(k - n + 1, n) for n in lengths])
    log_prior = np.concatenate([np.full(k - n + 1, -np.log(len(lengths) * (k - n + 1))) for n in lengths])
    return start, start + length, length.astype(np.float32), log_prior.astype(np.float32), lengths


def _ladder_blocks(lengths: tuple, k: int):
    """``(n, block)`` for each length n of :func:`_ladder`'s runs on ``k`` cells: ``block`` the
    slice of its runs (starting at 0 ... k - n) along the flattened run axis."""
    offset = 0
    for n in lengths:
        yield n, slice(offset, offset + k - n + 1)
        offset += k - n + 1


def _valid_stretch(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, stop)``, each ``(n,)``: the cells ``first <= k < stop`` of each row of ``valid:
    (n, K)`` (one contiguous stretch per row: a grid's cells inside the video); an empty
    stretch ``stop == first`` for a row with none."""
    first = np.argmax(valid, axis=1)
    return first, np.where(valid.any(axis=1), valid.shape[1] - np.argmax(valid[:, ::-1], axis=1), first)


def _run_sums(csum: np.ndarray, lengths: tuple) -> np.ndarray:
    """``(m, J)``: ``csum[:, e] - csum[:, s]`` for every run [s, e) of :func:`_ladder` (``csum:
    (m, K + 1)``), by slices of ``csum``, one per length."""
    m, k1 = csum.shape
    out = np.empty((m, sum(k1 - n for n in lengths)), csum.dtype)
    for n, block in _ladder_blocks(lengths, k1 - 1):
        np.subtract(csum[:, n:], csum[:, :k1 - n], out=out[:, block])
    return out


def segment_evidence(sim: np.ndarray, asr_centre_s: np.ndarray, fps: float, window_s: float,
                     with_on_prob: bool = True, zrow: np.ndarray | None = None,
                     discount: float | None = None) -> Evidence:
    """Evidence of every caption on its offset grid (module docstring, step 1). With
    ``with_on_prob=False`` only ``llr``, ``glr`` and ``locus`` are computed (``on_prob`` is
    zeros). ``zrow`` and ``discount``, when given, are :func:`polish` ``.z`` and
    :func:`noise_discount` of ``sim``."""
    m, n_frames = sim.shape
    offset_s, frame, valid = offset_grid(asr_centre_s, n_frames, fps, window_s)
    own = polish(sim) if zrow is None else None
    zrow = own.z if zrow is None else zrow
    c = noise_discount(zrow) if discount is None else discount
    z = np.where(valid, np.take_along_axis(zrow, frame, axis=1), 0.0)
    k = z.shape[1]
    start, end, length, log_prior, lengths = _ladder(k)
    csum = np.concatenate([np.zeros((m, 1)), np.cumsum(z, axis=1)], axis=1)
    # the (m, J) arrays over every run in float32 (sums of at most K z's: 1e-7 relative is plenty)
    total = _run_sums(csum.astype(np.float32), lengths)       # (m, J) sum of z over each run
    # runs leaving the video get -inf; only captions whose grid leaves the video have such runs
    edge = np.flatnonzero(~valid.all(axis=1))
    # a run leaves the video where it starts before the row's valid stretch or ends after it
    first, stop = _valid_stretch(valid[edge])
    outside = (start[None, :] < first[:, None]) | (end[None, :] > stop[:, None])  # (edge, J)
    score = total / np.sqrt(length)
    score[edge] = np.where(outside, -np.inf, score[edge])
    best = np.argmax(score, axis=1)
    rows = np.arange(m)
    delta = np.maximum((csum[rows, end[best]] - csum[rows, start[best]]) / length[best], 0.0)[:, None]
    log_lr = total - (length * (delta / 2.0)).astype(np.float32)
    log_lr *= (c * delta).astype(np.float32)
    log_lr += log_prior
    # each run at its own on-level (its mean z, at least 0): the generalised likelihood ratio,
    # c (sum z)^2 / (2 n) = c score^2 / 2
    log_glr = np.maximum(score, np.float32(0.0))
    log_glr *= log_glr
    log_glr *= np.float32(c / 2.0)
    log_glr += log_prior
    log_lr[edge] = np.where(outside, -np.inf, log_lr[edge])
    log_glr[edge] = np.where(outside, -np.inf, log_glr[edge])
    llr = _log_sum_exp(log_lr)[0]
    glr, weight = _log_sum_exp(log_glr)
    # over the runs inside the video (in llr, those leaving it count as LR 0)
    glr[edge] -= np.log(np.maximum((np.exp(log_prior.astype(np.float64))[None, :] * ~outside).sum(axis=1), 1e-300))
    locus = _run_locus(weight, lengths, k) * valid
    locus /= np.maximum(locus.sum(axis=1, keepdims=True), 1e-300)
    on_prob = np.zeros((m, k))
    if with_on_prob:
        on_prob = run_coverage(z, valid, c, delta[:, 0], frame[:, 0] > 0, frame[:, -1] < n_frames - 1)
    return Evidence(offset_s, frame.astype(np.int32), valid, np.clip(on_prob, 0.0, 1.0), llr, glr, locus,
                    None if own is None else own.frame_median, 1.0 if own is None else own.scale, c)


def _log_sum_exp(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log sum_j exp(log_w[:, j]): (m,), exp(log_w - its row max): (m, J))``, overwriting
    ``log_w`` with the latter (a row of -inf only: -690 and zeros)."""
    top = log_w.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0).astype(log_w.dtype)
    log_w -= top
    weight = np.exp(log_w, out=log_w)
    total = weight.sum(axis=1, dtype=np.float64)
    return np.log(np.maximum(total, 1e-300)) + top[:, 0], weight


def _run_locus(weight: np.ndarray, lengths: tuple, k: int) -> np.ndarray:
    """``(m, K)``: the sum over the runs covering each cell of ``weight / length``, ``weight:
    (m, J)`` over the runs of :func:`_ladder` (of ``lengths``): where the caption's moment lies
    if its run is drawn with probability ``weight`` and the moment is any of the run's cells
    alike. Each run adds its share at its start and takes it away at its end, and a cumulative
    sum over the cells adds the shares up."""
    step = np.zeros((weight.shape[0], k + 1))
    for n, block in _ladder_blocks(lengths, k):
        share = weight[:, block] * (1.0 / n)
        step[:, :k - n + 1] += share
        step[:, n:] -= share
    return np.maximum(np.cumsum(step, axis=1)[:, :k], 0.0)  # round-off below 0


#: EM updates of each caption's on-level in :func:`run_coverage`.
ON_LEVEL_EM_STEPS = 2

#: Rows whose boundary potentials span at most this many nats are summed in the linear domain:
#: each factor lies within e^±300 of 1 and a run's weight, their product, within e^±600, so sums
#: over the grid's runs stay far from float64's e^±709; the rest are summed in the log domain.
LINEAR_RANGE = 600.0


def run_coverage(z: np.ndarray, valid: np.ndarray, discount: float, on_level: np.ndarray,
                 open_left: np.ndarray | None = None, open_right: np.ndarray | None = None,
                 em_steps: int = ON_LEVEL_EM_STEPS) -> np.ndarray:
    """``(m, K)`` P(cell k lies in the caption's run | it has one), over *every* run of the grid.

    ``z: (m, K)`` standardised similarity on each caption's grid, ``valid: (m, K)`` (one
    contiguous stretch per row), ``on_level: (m,)`` the starting on-level (the best run's mean z),
    ``open_left`` / ``open_right: (m,)`` the grids that do not begin / end with the video, where
    a run may begin before (end after) the grid (:func:`_coverage`).
    Every run ``[s, e)`` of valid cells is equally likely, and its likelihood ratio against
    "nowhere" is ``exp(c h (sum_run z - n h / 2))`` = ``exp(A[e] - A[s])`` with
    ``A[j] = c h (sum_{t<j} z_t - j h / 2)``: separable in its two ends, so the coverage of cell
    t, ``sum_{s <= t < e} exp(A[e] - A[s])``, is a product of a prefix sum over starts and a
    suffix sum over ends (O(K) per caption, every length, no ladder). The on-level h is then
    re-estimated by EM (``em_steps`` times): h = the coverage-weighted mean z, the maximiser of
    the expected log-likelihood. The best run's mean, where it starts, is biased upwards (it is
    the maximum over runs), which makes the model cut a flat step short at a dip of noise. The
    steps are few on purpose: run to convergence, EM takes the on-level of a weakly shown caption
    to 0 (under a prior spread over every run, its evidence is below "nowhere"), so its timing
    would ignore the footage altogether."""
    z = np.asarray(z, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    m, k = z.shape
    csum = np.concatenate([np.zeros((m, 1)), np.cumsum(np.where(valid, z, 0.0), axis=1)], axis=1)
    idx = np.arange(k + 1)[None, :]
    first, stop = (x[:, None] for x in _valid_stretch(valid))
    is_start = (idx >= first) & (idx < stop)
    is_end = (idx > first) & (idx <= stop)
    h = np.maximum(np.asarray(on_level, dtype=np.float64), 0.0)[:, None]
    for step in range(em_steps + 1):
        potential = discount * h * (csum - h * idx / 2.0)          # (m, K + 1) A[j]
        on_prob = _coverage(potential, is_start, is_end, open_left, open_right) * valid
        if step < em_steps:
            h = np.maximum((on_prob * z).sum(axis=1) / np.maximum(on_prob.sum(axis=1), 1e-300), 0.0)[:, None]
    return on_prob


def _coverage(potential: np.ndarray, is_start: np.ndarray, is_end: np.ndarray,
              open_left: np.ndarray | None = None, open_right: np.ndarray | None = None):
    """``(m, K)``: the sum over runs [s, e) covering cell t of ``mult(s, e) exp(A[e] - A[s])``,
    over the sum over all runs, for ``potential`` A: (m, K + 1) and the allowed starts and ends
    (m, K + 1).

    ``open_left`` / ``open_right: (m,)`` bool mark grids whose first / last cell is not the
    video's: there a run may begin before the grid (end after it), and the grid sees only its
    part. Over runs of at most K cells on the whole timeline, each equally likely, the part
    [0, e) is seen for K - e + 1 of them and [s, K) for s + 1, so ``mult(s, e) = 1 + [s = 0]
    (K - e) + [e = K] s`` on such grids (1 elsewhere): with no evidence every cell is then
    covered alike, where runs confined to the grid would cover its middle most."""
    m, k1 = potential.shape
    k = k1 - 1
    idx = np.arange(k1, dtype=np.float64)[None, :]
    left = np.zeros((m, 1), bool) if open_left is None else np.asarray(open_left, bool)[:, None]
    right = np.zeros((m, 1), bool) if open_right is None else np.asarray(open_right, bool)[:, None]
    out = np.zeros((m, k))
    # the range over every boundary bounds the range over the allowed ones (outside the video z
    # is 0, so A there only continues its slope): a row that fits is safe in the linear domain
    hi, lo = potential.max(axis=1, keepdims=True), potential.min(axis=1, keepdims=True)
    linear = (hi - lo)[:, 0] <= LINEAR_RANGE
    # every row linear (the usual case): views, not copies, of the rows
    parts = ((slice(None), True),) if linear.all() else [(rows, lin) for rows, lin in ((linear, True), (~linear, False))
                                                         if rows.any()]
    for rows, lin in parts:
        a, mid = potential[rows], (hi + lo)[rows] / 2.0
        starts, ends, l, r = is_start[rows], is_end[rows], left[rows], right[rows]
        if lin:  # sums of exp, the shifts cancelling in each product
            y, x = np.exp(mid - a) * starts, np.exp(a - mid) * ends   # exp(-A[s]), exp(A[e]), shifted
            acc, mul, add, red = functools.partial(np.cumsum, axis=1), np.multiply, np.add, np.sum
            times = mul      # a term times a count
            zero = 0.0
        else:    # the same sums of logs
            y, x = np.where(starts, mid - a, -np.inf), np.where(ends, a - mid, -np.inf)
            acc, mul, add, red = functools.partial(np.logaddexp.accumulate, axis=1), np.add, np.logaddexp, np.logaddexp.reduce

            def times(term, count):
                with np.errstate(divide="ignore"):
                    return term + np.log(count)
            zero = -np.inf
        before = acc(y)                                     # over starts s <= j
        after = acc(x[:, ::-1])[:, ::-1]                    # over ends e >= j
        cov = mul(before[:, :-1], after[:, 1:])
        total = red(mul(x[:, 1:], before[:, :-1]), axis=1)
        # runs beginning before the grid: start 0 with K - e more ways; ending after it: e = K, s more
        if l.any():
            after_w = acc(times(x, k - idx)[:, ::-1])[:, ::-1]
            cov = add(cov, np.where(l, mul(y[:, :1], after_w[:, 1:]), zero))
            total = add(total, np.where(l[:, 0], mul(y[:, 0], after_w[:, 1]), zero))
        if r.any():
            before_w = acc(times(y, idx))
            cov = add(cov, np.where(r, mul(x[:, -1:], before_w[:, :-1]), zero))
            total = add(total, np.where(r[:, 0], mul(x[:, -1], before_w[:, -2]), zero))
        if lin:
            out[rows] = cov / np.maximum(total, 1e-300)[:, None]
        else:
            out[rows] = np.exp(np.minimum(cov - total[:, None], 0.0))
    return np.clip(out, 0.0, 1.0)


def evidence_rows(evidence: Evidence, rows: np.ndarray) -> Evidence:
    """``evidence`` of the captions ``rows`` (indices) only."""
    return evidence._replace(**{f: getattr(evidence, f)[rows] for f in ("frame", "valid", "on_prob", "llr", "glr", "locus")})


def decoy_evidence(evidence: Evidence, sim: np.ndarray, decoy_sim: np.ndarray | None, asr_centre_s: np.ndarray,
                   fps: float, window_s: float, rows: np.ndarray | None = None) -> Evidence:
    """:func:`segment_evidence` (without ``on_prob``) of *decoy* captions, one on the grid of each
    caption ``rows`` (indices into the m captions; all when None), in that order: ``decoy_sim:
    (len(rows), T)`` holds the cosines of captions of other videos against this video's frames,
    standardised as this video's own rows ``sim: (m, T)`` were for ``evidence`` (their frame
    medians and noise scale, each decoy row's own median; the same noise discount); ``asr_centre_s:
    (m,)``. A decoy is a caption that is not about this footage: its statistic is what chance gives
    on this footage, noise and encoder. Without decoys (``decoy_sim`` None: a run of one video)
    the video's own rows serve, half a video away (frames rolled by T // 2)."""
    rows = np.arange(len(asr_centre_s)) if rows is None else np.asarray(rows, dtype=np.int64)
    if decoy_sim is None:
        z = polish(sim).z
        z = np.roll(z, z.shape[1] // 2, axis=1)[rows]
    else:
        centred = np.asarray(decoy_sim, dtype=np.float64) - evidence.frame_median[None, :]
        z = (centred - median(centred, axis=1)[:, None]) / evidence.scale
    centre = np.asarray(asr_centre_s, dtype=np.float64)[rows]
    return segment_evidence(z, centre, fps, window_s, False, zrow=z, discount=evidence.discount)


def second_offsets(window_s: float) -> np.ndarray:
    """``(2 W + 1,)`` the whole-second offsets -W .. W (W = round(window_s)): the common grid on
    which a run's captions are pooled for the prior's fit, whatever each video's fps."""
    half = int(round(window_s))
    return np.arange(-half, half + 1, dtype=np.float64)


def _per_second(evidence: Evidence, values: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(m, 2 W + 1)`` float32 ``values: (m, K)`` on the evidence's grid at :func:`second_offsets`,
    nearest grid cell, and ``(m, 2 W + 1)`` whether that cell lies in the video."""
    cell = np.clip(np.searchsorted(evidence.offset_s, second_offsets(window_s)), 0, len(evidence.offset_s) - 1)
    return values[:, cell].astype(np.float32), evidence.valid[:, cell]


def on_prob_per_second(evidence: Evidence, window_s: float) -> np.ndarray:
    """``(m, 2 W + 1)`` float32 ``on_prob`` at :func:`second_offsets`, nearest grid cell."""
    return _per_second(evidence, evidence.on_prob, window_s)[0]


def locus_per_second(evidence: Evidence, window_s: float) -> np.ndarray:
    """``(m, 2 W + 1)`` float32 ``locus`` at :func:`second_offsets` (nearest grid cell), summing to
    1 over each row's seconds inside the video, NaN outside it."""
    locus, valid = _per_second(evidence, evidence.locus, window_s)
    locus = locus / np.maximum(locus.sum(axis=1, keepdims=True), np.float32(1e-30))
    return np.where(valid, locus, np.float32(np.nan))


def prior_llr(glr: np.ndarray, locus_s: np.ndarray, prior: OffsetPrior) -> np.ndarray:
    """``(m,)`` the Bayes factor ``glr`` with the caption's moment drawn from the offset prior
    instead of uniformly over its grid: ``glr + log(n sum_d pi(d) locus(d))``, ``locus_s: (m, 2 W
    + 1)`` from :func:`locus_per_second`, ``pi`` the prior's density renormalised over the ``n``
    seconds inside the video (a uniform prior gives back ``glr``). A caption shown where the run's
    captions are usually shown gains, one shown only far from its ASR time loses: the statistic
    alignability is calibrated on (``curation.calibration``)."""
    inside = ~np.isnan(locus_s)
    locus = np.where(inside, locus_s, 0.0).astype(np.float64)
    pi = prior.density(second_offsets(prior.window_s))[None, :] * inside
    pi /= np.maximum(pi.sum(axis=1, keepdims=True), 1e-300)
    ratio = inside.sum(axis=1) * np.einsum("ik,ik->i", pi, locus, optimize=False)
    return np.asarray(glr, dtype=np.float64) + np.log(np.maximum(ratio, 1e-300))


def _prior_theta(prior: OffsetPrior) -> np.ndarray:
    """``(3,)`` unconstrained parameters ``(mu, log sigma, logit rho)`` of a prior."""
    rho = prior.outlier_share
    return np.array([prior.mu_s, np.log(prior.sigma_s), np.log(rho / (1.0 - rho))])


def _theta_prior(theta: np.ndarray, window_s: float) -> OffsetPrior:
    mu, log_sigma, logit_rho = (float(x) for x in theta)
    return OffsetPrior(mu, float(np.exp(log_sigma)), float(1.0 / (1.0 + np.exp(-logit_rho))), window_s)


def _negative_log_likelihood(theta: np.ndarray, r: np.ndarray, w: np.ndarray, d: np.ndarray, anchor: np.ndarray,
                             window_s: float, with_gradient: bool = True) -> tuple[float, np.ndarray | None]:
    """``(-L, -dL/dtheta)`` of :func:`fit_offset_prior`'s objective at ``theta`` (``_prior_theta``);
    the gradient None unless ``with_gradient``."""
    prior = _theta_prior(theta, window_s)
    gauss = prior.gaussian(d)                                    # (K,) (1 - rho) N(d; mu, sigma^2)
    pi = np.maximum(gauss + prior.outlier_share / (2.0 * window_s), 1e-300)
    # einsum, not BLAS: the same bits with any thread count
    per_caption = np.maximum(np.einsum("ik,k->i", r, pi, optimize=False), 1e-300)
    value = float(np.dot(w, np.log(per_caption)) + np.dot(anchor, np.log(pi)))
    if not with_gradient:
        return -value, None
    g = np.einsum("i,ik->k", w / per_caption, r, optimize=False) + anchor / pi    # dL/dpi
    u = (d - prior.mu_s) / prior.sigma_s
    rho = prior.outlier_share
    grad = np.array([np.dot(g, gauss * u / prior.sigma_s),
                     np.dot(g, gauss * (u * u - 1.0)),
                     np.dot(g, rho * (1.0 / (2.0 * window_s) - gauss / (1.0 - rho)) * (1.0 - rho))])
    return -value, -grad


def _grid_negative_log_likelihood(thetas: np.ndarray, r: np.ndarray, w: np.ndarray, d: np.ndarray,
                                  anchor: np.ndarray, window_s: float) -> np.ndarray:
    """``(G,)`` :func:`_negative_log_likelihood`'s value at each of ``thetas: (G, 3)``, the
    captions' sums for every point in one matrix product (the fit's grid search: ~0.1 ms a point
    one at a time, mostly the (n, K) pass each makes)."""
    pi = np.empty((len(thetas), len(d)))
    for g, theta in enumerate(thetas):
        prior = _theta_prior(theta, window_s)
        pi[g] = prior.gaussian(d) + prior.outlier_share / (2.0 * window_s)
    np.maximum(pi, 1e-300, out=pi)
    log_pi = np.log(pi)
    per_caption = np.maximum(r @ pi.T, 1e-300)                  # (n, G)
    return -(w @ np.log(per_caption) + log_pi @ anchor)


#: Bounds of the fit: sigma from half a second (the grid's resolution) to the window, rho in
#: [1e-3, 0.999].
SIGMA_MIN_S = 0.5
RHO_RANGE = (1e-3, 0.999)


def fit_offset_prior(on_prob: np.ndarray, offset_s: np.ndarray, weight: np.ndarray, window_s: float,
                     prior_count: float = 20.0) -> OffsetPrior:
    """Maximum-likelihood :class:`OffsetPrior` from captions' evidence ``on_prob: (n, K)`` on the
    common grid ``offset_s: (K,)`` (seconds, 1 s apart), caption i weighted by ``weight[i]`` (its
    alignability). The evidence of a caption is a likelihood of its true offset (a caption shown
    evenly over a long step says only "somewhere in this step": an interval-censored offset), so
    the run's log-likelihood is

        L(mu, sigma, rho) = sum_i w_i log sum_k on_prob_i(d_k) pi(d_k) + C sum_k pi0(d_k) log pi(d_k),

    maximised directly (L-BFGS on ``(mu, log sigma, logit rho)`` with the analytic gradient,
    from the best point of a coarse grid over mu and sigma): EM on interval-censored data creeps
    towards the optimum by tiny steps when the intervals are long, and stopped early it returns
    a prior several times too wide. The second term is ``C = prior_count`` pseudo-captions
    distributed as :func:`start_prior` (``pi0`` its density on the grid), which hold the fit to
    mu 0, sigma W / 4, 20% outliers when a run has no usable evidence; with hundreds of visible
    captions they do not matter. Finally mu is set to 0 unless it lies two standard errors from
    0 (from the observed information, so an interval-censored sample counts for what it tells): a
    bias the sample cannot tell from zero is not applied.
    """
    from curation.blas import one_thread

    with one_thread():  # L-BFGS and the dot products: the same bits on every runner (curation.blas)
        return _fit_offset_prior(on_prob, offset_s, weight, window_s, prior_count)


def _fit_offset_prior(on_prob, offset_s, weight, window_s: float, prior_count: float) -> OffsetPrior:
    from scipy.optimize import minimize

    start = start_prior(window_s)
    r = np.asarray(on_prob, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    d = np.asarray(offset_s, dtype=np.float64)
    keep = (r.sum(axis=1) > 0) & (w >= MIN_FIT_WEIGHT)  # the rest would add nothing but time
    r, w = r[keep], w[keep]
    anchor = start.density(d)
    anchor = prior_count * anchor / anchor.sum()
    args = (r, w, d, anchor, window_s)
    bounds = [(-window_s, window_s), (np.log(SIGMA_MIN_S), np.log(window_s)),
              tuple(np.log(np.array(RHO_RANGE) / (1.0 - np.array(RHO_RANGE))))]
    # a coarse grid first (the likelihood of long intervals is flat in places, and may have
    # several modes), then the local optimum from its best point
    grid = [np.array([mu, np.log(sigma), np.log(0.2 / 0.8)])
            for sigma in (2.0, 5.0, 12.0, window_s / 4.0) for mu in np.arange(-window_s / 2, window_s / 2 + 1e-9, 2.0)]
    grid.append(_prior_theta(start))
    theta0 = grid[int(np.argmin(_grid_negative_log_likelihood(np.array(grid), *args)))]
    result = minimize(_negative_log_likelihood, theta0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": 200, "ftol": 1e-12, "gtol": 1e-8})
    prior = _theta_prior(result.x, window_s)
    # a bias is only applied when it is two standard errors from 0 (else it may be the sample's
    # noise): a run whose evidence cannot place its captions keeps its ASR times unshifted
    significant = abs(prior.mu_s) > 2.0 * _mu_standard_error(result.x, args)
    return prior if significant else prior._replace(mu_s=0.0)


def _mu_standard_error(theta: np.ndarray, args: tuple, step: float = 1e-4) -> float:
    """Standard error of mu at the optimum ``theta``: the square root of the mu entry of the inverse
    observed information (the Hessian of -L, by central differences of the analytic gradient)."""
    hessian = np.empty((3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = step
        hessian[:, j] = (_negative_log_likelihood(theta + e, *args)[1] - _negative_log_likelihood(theta - e, *args)[1]) / (2 * step)
    hessian = (hessian + hessian.T) / 2.0
    try:
        cov = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return float("inf")
    var = cov[0, 0]
    return float(np.sqrt(var)) if np.isfinite(var) and var > 0 else float("inf")


class Centres(NamedTuple):
    """:func:`posterior_centre_s`'s result, each ``(m,)``."""

    centre_s: np.ndarray   # span centres, seconds
    mass: np.ndarray       # the posterior mass in the caption's window around its centre
    on_prob: np.ndarray    # P(the centre cell lies in the caption's run | it has one)


def posterior_centre_s(evidence: Evidence, prior: OffsetPrior, visible: np.ndarray, duration_s: np.ndarray,
                       fps: float) -> Centres:
    """Span centres, seconds, the argmax of the posterior box-summed over each caption's own
    duration (module docstring, step 3; ties go to the cell nearest the prior's mode), the
    posterior mass in that window (each row's sums to 1) and the evidence's ``on_prob`` at the
    centre cell. ``visible: (m,)`` in [0, 1] is each caption's alignability."""
    from curation.spans import box_smooth

    pi = prior.density(evidence.offset_s)[None, :] * evidence.valid
    pi_norm = pi / np.maximum(pi.sum(axis=1, keepdims=True), 1e-300)
    joint = evidence.on_prob * pi
    z = joint.sum(axis=1, keepdims=True)
    with_evidence = np.where(z > 0, joint / np.maximum(z, 1e-300), pi_norm)
    v = np.clip(np.asarray(visible, dtype=np.float64), 0.0, 1.0)[:, None]
    post = (1.0 - v) * pi_norm + v * with_evidence
    width = np.maximum(np.round(np.asarray(duration_s) * fps), 1)
    smoothed = box_smooth(post, width)
    best = smoothed.max(axis=1, keepdims=True)
    near = np.abs(evidence.offset_s - prior.mu_s)[None, :]
    k = np.argmin(np.where(smoothed >= best * (1 - 1e-9), near, np.inf), axis=1)
    rows = np.arange(len(k))
    return Centres((evidence.frame[rows, k] + 0.5) / fps, smoothed[rows, k], evidence.on_prob[rows, k])
