"""Run-level calibration of the ``posterior`` aligner, estimated from the run itself.

Two things are learnt from a sample of the run's captions: the ``SAMPLE_SIZE`` captions (and
as many decoys) with the smallest hashes of ``video_id/caption_idx``. Per-video statistics
merge exactly in any order and are immune to a runner delivering an element twice (merges keep
each hash once), so every runner gives the same result. The run's ``SAMPLE_SIZE`` smallest
keys travel with the decoy pool (:meth:`DecoyPool.sample_bound`), so a video scores decoys and
keeps statistics only for its captions that can be in the sample: on a run of more than
``SAMPLE_SIZE`` captions most videos score none, and the sample is the same:

* **Alignability** (``P(the caption is shown near its ASR time)``). Each caption's evidence
  statistic x (``curation.timing``) is counted in a fixed-bin histogram, and so is
  the same statistic of a *decoy*: a caption of another video of the run, scored on this
  video's footage on the same grid (``curation.timing.decoy_evidence``). The decoys come from a
  run-level pool (:class:`DecoyPool`: the ``POOL_SIZE`` captions with the smallest hashes of
  ``video_id/caption_idx``); they show what ``x`` looks like for a caption that is not about
  this footage, on this run's footage, noise and encoder.
  Over a block B of coarse bins (width 0.1 in ``asinh(x)``) with counts ``R_B`` (captions)
  and ``D_B`` (decoys, one per caption), the local false-discovery rate is

      lfdr_B = pi0 * (D_B + k) / (R_B + k),   pi0 = min(1, R(x < x_med) / D(x < x_med))

  where ``x_med`` is the decoys' median and ``pi0`` the share of captions that are not shown
  (Storey's estimate: below the decoys' median nearly every caption is chance), and ``k =
  PSEUDO_COUNT`` pseudo-captions at ratio 1 keep a handful of lucky captions from looking
  certain. The counts are pooled over the blocks of a non-increasing (isotonic) fit of the
  decoys' share to x first, so sparse bins borrow from their neighbours, and
  ``alignability = 1 - min(1, lfdr)``: the probability that a caption with that statistic is
  shown. A run whose footage says nothing about its captions has decoys like its captions:
  lfdr ~ 1, and every caption is dropped.
  This is done twice (:func:`estimate`): first on ``x = llr`` (the moment anywhere on the
  grid), which gives ``in_window`` = P(shown somewhere on the grid), the weight of a caption in the
  prior's fit and of its evidence in its timing; then, with the fitted prior, on ``x =
  curation.timing.prior_llr(glr, locus, prior)`` (the moment where this run's narration is
  usually shown), which gives the alignability written out. A caption whose evidence lies only
  far from its ASR time, where the run's captions are rarely shown, is less likely to be one
  that is shown; a decoy is as likely there as anywhere.
* **The offset prior** ``pi(d)`` (``curation.timing.fit_offset_prior``): a maximum-likelihood fit over the sampled
  captions, each weighted by its ``in_window`` probability.
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple, Sequence

import numpy as np

from curation import timing

#: Bins of ``asinh(llr)`` over [-6, 8] (llr from about -200 to 1500, 1/200 per bin).
X_RANGE = (-6.0, 8.0)
N_BINS = 2800
PSEUDO_COUNT = 3.0
COARSE = 20  # fine bins per coarse bin
SAMPLE_SIZE = 20000
POOL_SIZE = 256
TIE_BREAK = 1e-3


class DecoyPool(NamedTuple):
    """Caption embeddings of the run that serve as decoys (merged by :func:`merge_pools`), and
    the run's smallest caption keys, which bound its sample (:meth:`sample_bound`)."""

    keys: np.ndarray       # (n,) uint64 sample keys, ascending
    video_ids: tuple       # (n,) the video of each caption
    emb: np.ndarray        # (n, D) float32
    run_keys: np.ndarray   # (<= SAMPLE_SIZE,) uint64 the run's smallest caption keys, ascending

    def sample_bound(self) -> int:
        """The largest key the run's sample can hold: the ``SAMPLE_SIZE``-th smallest caption key
        of the run, or every key where the run has fewer captions. A caption above it is never
        in the sample, so its decoy need not be scored (on a large run, nearly every caption's)."""
        return int(self.run_keys[-1]) if len(self.run_keys) >= SAMPLE_SIZE else int(np.iinfo(np.uint64).max)


def pool_candidates(video_id: str, caption_emb: np.ndarray) -> DecoyPool:
    """One video's candidates for the run's decoy pool: its captions with the smallest keys (and
    its smallest keys for the run's sample bound)."""
    keys = sample_keys(video_id, len(caption_emb))
    order = np.argsort(keys)
    pool = order[:POOL_SIZE]
    return DecoyPool(keys[pool], (video_id,) * len(pool), np.asarray(caption_emb, dtype=np.float32)[pool],
                     keys[order[:SAMPLE_SIZE]])


def merge_pools(parts: Sequence[DecoyPool | None]) -> DecoyPool | None:
    """The ``POOL_SIZE`` smallest keys of several pools, each once, and the ``SAMPLE_SIZE``
    smallest of their run keys; the same whatever the order of ``parts`` and however often one
    of them is repeated."""
    parts = [p for p in parts if p is not None and len(p.keys)]
    if not parts:
        return None
    dims = {p.emb.shape[1] for p in parts}
    dim = max(dims, key=lambda d: (sum(len(p.keys) for p in parts if p.emb.shape[1] == d), d))
    parts = [p for p in parts if p.emb.shape[1] == dim]  # a video of another width fails in Realign
    keys = np.concatenate([p.keys for p in parts])
    ids = sum((tuple(p.video_ids) for p in parts), ())
    emb = np.concatenate([p.emb for p in parts])
    _, first = np.unique(keys, return_index=True)  # each caption once, by key
    order = first[:POOL_SIZE]
    run_keys = np.unique(np.concatenate([p.run_keys for p in parts]))[:SAMPLE_SIZE]
    return DecoyPool(keys[order], tuple(ids[i] for i in order), emb[order], run_keys)


def run_pool(videos: Sequence[tuple[str, np.ndarray]]) -> DecoyPool | None:
    """The decoy pool of a run of ``(video_id, caption_emb)`` pairs, as a pipeline run merges it."""
    return merge_pools([pool_candidates(video_id, emb) for video_id, emb in videos])


def decoys_for(pool: DecoyPool | None, video_id: str, n_captions: int, dim: int) -> np.ndarray | None:
    """``(m, D)`` one decoy embedding per caption of ``video_id``: pool captions of other videos,
    in turn from a start the video's own hash picks; None when the pool has none of width D."""
    if pool is None or pool.emb.shape[1] != dim:
        return None
    others = np.flatnonzero(np.array([v != video_id for v in pool.video_ids], dtype=bool))
    if not len(others):
        return None
    start = int(sample_keys(video_id, 1)[0] % len(others))
    return pool.emb[others[(start + np.arange(n_captions)) % len(others)]]


class VideoStats(NamedTuple):
    """One video's share of the calibration, or several videos' merged (:func:`merge`)."""

    keys: np.ndarray          # (n,) uint64 sample keys of captions, ascending
    llr: np.ndarray           # (n,) float64 their evidence statistic
    on_prob: np.ndarray       # (n, 2W+1) float32 their evidence at whole-second offsets
    glr: np.ndarray           # (n,) float64 their generalised statistic
    locus: np.ndarray         # (n, 2W+1) float32 their timing.locus_per_second
    decoy_keys: np.ndarray    # (k,) uint64 keys of the captions whose grids decoys were scored on
    decoy_llr: np.ndarray     # (k,) float64 the decoys' statistic
    decoy_glr: np.ndarray     # (k,) float64 the decoys' generalised statistic
    decoy_locus: np.ndarray   # (k, 2W+1) float32 the decoys' timing.locus_per_second


class RunCalibration(NamedTuple):
    """What the ``posterior`` aligner takes from the run (a side input)."""

    prior: timing.OffsetPrior
    alignability_by_bin: np.ndarray  # (N_BINS,) alignability of a statistic (:meth:`statistic`) in each bin
    sampled: int                     # captions in the sample
    decoys: int                      # decoys in the sample
    visible_share: float             # mean alignability over the sample
    in_window_by_bin: np.ndarray     # (N_BINS,) P(shown somewhere on its grid) of an llr in each bin

    def statistic(self, evidence: timing.Evidence) -> np.ndarray:
        """``(m,)`` the statistic alignability is calibrated on: the evidence's generalised Bayes
        factor with the caption's moment drawn from the run's offset prior (``curation.timing.prior_llr``)."""
        return timing.prior_llr(evidence.glr, timing.locus_per_second(evidence, self.prior.window_s), self.prior)

    def alignability(self, statistic: np.ndarray) -> np.ndarray:
        """``(m,)`` in [0, 1] for ``statistic: (m,)`` (:meth:`statistic`): the calibrated
        probability of its bin (:func:`calibrated`)."""
        return calibrated(self.alignability_by_bin, statistic)

    def in_window(self, llr: np.ndarray) -> np.ndarray:
        """``(m,)`` in [0, 1]: P(the caption is shown somewhere on its grid) for ``llr: (m,)``
        (``curation.timing.Evidence.llr``), calibrated as :meth:`alignability` but with the
        moment anywhere on the grid: what weighs the prior's fit and the evidence in the timing."""
        return calibrated(self.in_window_by_bin, llr)

    def describe(self) -> str:
        """The offset model in words ("narration leads the action by 2.5 s, spread 8.0 s, ...")."""
        p = self.prior
        lead = "leads" if p.mu_s >= 0 else "lags"
        return (f"narration {lead} the action by {abs(p.mu_s):.1f} s, spread {p.sigma_s:.1f} s, "
                f"{100 * p.outlier_share:.0f}% outliers (within ±{p.window_s:g} s); "
                f"{100 * self.visible_share:.0f}% of captions look visible")

    def to_dict(self) -> dict:
        """JSON-ready estimates for ``summary.json``."""
        p = self.prior
        return {"offset_mu_s": round(p.mu_s, 3), "offset_sigma_s": round(p.sigma_s, 3),
                "outlier_share": round(p.outlier_share, 4), "window_s": p.window_s,
                "visible_share": round(self.visible_share, 4), "sampled": self.sampled,
                "decoys": self.decoys, "description": self.describe()}


def calibrated(table: np.ndarray, statistic: np.ndarray) -> np.ndarray:
    """``(m,)``: the probability ``table`` gives ``statistic``'s bin (times 1 - ``TIE_BREAK``) plus
    ``TIE_BREAK`` times a logistic of ``asinh(statistic)``, so captions keep the order of their
    evidence where the calibrated probability is flat."""
    x = np.arcsinh(np.asarray(statistic, dtype=np.float64))
    return (1.0 - TIE_BREAK) * table[bin_of(statistic)] + TIE_BREAK / (1.0 + np.exp(-x))


def bin_of(llr: np.ndarray) -> np.ndarray:
    """Histogram bin of each statistic (clipped into the end bins)."""
    lo, hi = X_RANGE
    x = np.arcsinh(np.asarray(llr, dtype=np.float64))
    return np.clip(((x - lo) / (hi - lo) * N_BINS).astype(np.int64), 0, N_BINS - 1)


@functools.lru_cache(maxsize=1024)
def sample_keys(video_id: str, n_captions: int) -> np.ndarray:
    """``(n,)`` uint64 (read-only): the first 8 bytes of sha256(``video_id/caption_idx``) of each
    caption (cached: a video's calibration asks three times)."""
    keys = np.array([int.from_bytes(hashlib.sha256(f"{video_id}/{i}".encode()).digest()[:8], "big")
                     for i in range(n_captions)], dtype=np.uint64)
    keys.setflags(write=False)
    return keys


def video_stats(keys: np.ndarray, evidence: timing.Evidence, decoy: timing.Evidence, window_s: float) -> VideoStats:
    """A :class:`VideoStats` of captions with sample ``keys: (n,)`` (:func:`sample_keys`), their
    evidence and the evidence ``decoy`` of the decoys scored on their grids (one each:
    ``curation.timing.decoy_evidence``), all n rows."""
    f64 = functools.partial(np.asarray, dtype=np.float64)
    return _keep_smallest(VideoStats(keys, f64(evidence.llr), timing.on_prob_per_second(evidence, window_s),
                                     f64(evidence.glr), timing.locus_per_second(evidence, window_s), keys,
                                     f64(decoy.llr), f64(decoy.glr), timing.locus_per_second(decoy, window_s)))


def no_stats(window_s: float) -> VideoStats:
    """The :class:`VideoStats` of a video none of whose captions the run's sample can hold."""
    n = len(timing.second_offsets(window_s))
    keys, values, rows = np.zeros(0, np.uint64), np.zeros(0), np.zeros((0, n), np.float32)
    return VideoStats(keys, values, rows, values, rows, keys, values, values, rows)


def _smallest_unique(keys: np.ndarray) -> np.ndarray:
    """Indices of the ``SAMPLE_SIZE`` smallest distinct keys (the first copy of each)."""
    _, first = np.unique(keys, return_index=True)  # sorted by key
    return first[:SAMPLE_SIZE]


def _keep_smallest(stats: VideoStats) -> VideoStats:
    c, d = _smallest_unique(stats.keys), _smallest_unique(stats.decoy_keys)
    return VideoStats(*(getattr(stats, f)[d if f.startswith("decoy_") else c] for f in VideoStats._fields))


def merge(parts: Sequence[VideoStats | None]) -> VideoStats | None:
    """The sample of several videos' stats: the smallest keys, each once; the same whatever the
    order of ``parts`` and however often one of them is repeated. None for no parts."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return _keep_smallest(VideoStats(*(np.concatenate([getattr(p, f) for p in parts]) for f in VideoStats._fields)))


def _isotonic_blocks(y: np.ndarray, w: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: the blocks of the weighted least-squares non-increasing fit to
    ``y`` (pool adjacent violators; zero-weight entries join their neighbours)."""
    blocks: list[list[float]] = []  # [mean, weight, start, stop]
    for i, (yi, wi) in enumerate(zip(y, w)):
        blocks.append([float(yi), float(wi), i, i + 1])
        while len(blocks) > 1 and (blocks[-1][1] == 0 or blocks[-2][1] == 0 or blocks[-2][0] < blocks[-1][0]):
            m2, w2, _, stop = blocks.pop()
            m1, w1, start, _ = blocks.pop()
            wt = w1 + w2
            blocks.append([(m1 * w1 + m2 * w2) / wt if wt > 0 else 0.0, wt, start, stop])
    return [(int(b[2]), int(b[3])) for b in blocks]


def alignability_table(real_counts: np.ndarray, decoy_counts: np.ndarray) -> np.ndarray:
    """``(N_BINS,)`` alignability of each bin (module docstring): the decoys' share is fitted
    non-increasing in x by isotonic regression, and each block of the fit gets
    ``lfdr = pi0 (D + k) / (R + k)`` from its summed counts."""
    real = real_counts.reshape(-1, COARSE).sum(axis=1).astype(np.float64)
    decoy = decoy_counts.reshape(-1, COARSE).sum(axis=1).astype(np.float64)
    decoy *= real.sum() / max(decoy.sum(), 1.0)  # a sample may hold a few more of one kind
    cum_decoy = np.cumsum(decoy)
    below = int(np.searchsorted(cum_decoy, cum_decoy[-1] / 2.0))  # coarse bin of the decoys' median
    pi0 = min(1.0, (real[:below].sum() + PSEUDO_COUNT) / (decoy[:below].sum() + PSEUDO_COUNT))
    total = real + decoy
    share = np.divide(decoy, total, out=np.zeros_like(total), where=total > 0)
    lfdr = np.ones_like(real)
    for start, stop in _isotonic_blocks(share, total):
        lfdr[start:stop] = pi0 * (decoy[start:stop].sum() + PSEUDO_COUNT) / (real[start:stop].sum() + PSEUDO_COUNT)
    lfdr = np.minimum.accumulate(lfdr)  # the pseudo-counts may bend the fit: keep it non-increasing
    return np.repeat(1.0 - np.minimum(1.0, lfdr), COARSE)


def estimate(stats: VideoStats | None, window_s: float) -> RunCalibration:
    """The run's calibration from its merged stats; a run with none keeps ASR times and drops
    every caption (alignability 0, the start prior)."""
    if stats is None or len(stats.keys) == 0:
        return RunCalibration(timing.start_prior(window_s), np.zeros(N_BINS), 0, 0, 0.0, np.zeros(N_BINS))
    counts = lambda x: np.bincount(bin_of(x), minlength=N_BINS)  # noqa: E731
    # first with the moment anywhere on the grid: the prior's weights; then with the prior
    in_window = alignability_table(counts(stats.llr), counts(stats.decoy_llr))
    prior = timing.fit_offset_prior(stats.on_prob, timing.second_offsets(window_s), in_window[bin_of(stats.llr)],
                                    window_s)
    real, decoy = (timing.prior_llr(glr, locus, prior) for glr, locus in
                   ((stats.glr, stats.locus), (stats.decoy_glr, stats.decoy_locus)))
    table = alignability_table(counts(real), counts(decoy))
    return RunCalibration(prior, table, int(len(stats.keys)), int(len(stats.decoy_keys)),
                          float(table[bin_of(real)].mean()), in_window)
