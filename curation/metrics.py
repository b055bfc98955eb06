"""Alignment evaluation, TAN / HTM-Align protocol.

* R@1: over alignable captions, a hit when the predicted centre (seconds) lies in
  ``[floor(true_start_s), ceil(true_end_s)]``.
* Alignability: ROC-AUC of a score against the 0/1 alignable labels over all captions.
* Calibration of a probability against 0/1 outcomes (e.g. a confidence weight against "alignable
  and an R@1 hit"): expected calibration error over equal-width bins, Brier score, and the
  reliability bins they are drawn from.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def hits(centre_s: np.ndarray, true_start_s: np.ndarray, true_end_s: np.ndarray, alignable: np.ndarray) -> np.ndarray:
    """``(m,)`` bool: caption i is alignable and its predicted centre lies in
    ``[floor(true_start_s), ceil(true_end_s)]`` (False for unalignable captions, whose truth is NaN)."""
    sel = np.asarray(alignable, dtype=bool)
    c = np.asarray(centre_s, dtype=np.float64)
    lo, hi = np.asarray(true_start_s, dtype=np.float64), np.asarray(true_end_s, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return sel & (c >= np.floor(np.where(sel, lo, 0.0))) & (c <= np.ceil(np.where(sel, hi, 0.0)))


def recall_at_1(centre_s: np.ndarray, true_start_s: np.ndarray, true_end_s: np.ndarray,
                alignable: np.ndarray) -> float:
    """Hit rate in [0, 1] over captions with ``alignable`` true; NaN if there are none."""
    sel = np.asarray(alignable, dtype=bool)
    if not sel.any():
        return float("nan")
    return float(hits(centre_s, true_start_s, true_end_s, sel)[sel].mean())


class ReliabilityBins(NamedTuple):
    """Equal-width bins of predicted probabilities: per bin ``(n_bins,)`` arrays."""

    edges: np.ndarray       # (n_bins + 1,) 0 ... 1
    mean_prob: np.ndarray   # mean predicted probability (NaN for an empty bin)
    frequency: np.ndarray   # observed share of positive outcomes (NaN for an empty bin)
    count: np.ndarray       # int, predictions in the bin


def reliability_bins(prob: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin ``prob: (n,)`` in [0, 1] into ``n_bins`` equal-width bins ``[k/n, (k+1)/n)`` (the last
    one closed at 1) and compare each bin's mean probability with its share of ``outcome``."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    outcome = np.asarray(outcome, dtype=np.float64)
    idx = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(idx, weights=prob, minlength=n_bins) / count
        frequency = np.bincount(idx, weights=outcome, minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), mean_prob, frequency, count)


def expected_calibration_error(prob: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> float:
    """ECE in [0, 1]: the count-weighted mean over :func:`reliability_bins` of
    ``|mean probability - observed frequency|``; NaN for no predictions."""
    bins = reliability_bins(prob, outcome, n_bins)
    n = int(bins.count.sum())
    if n == 0:
        return float("nan")
    full = bins.count > 0
    return float((bins.count[full] * np.abs(bins.mean_prob[full] - bins.frequency[full])).sum() / n)


def brier_score(prob: np.ndarray, outcome: np.ndarray) -> float:
    """Mean squared difference between ``prob`` and the 0/1 ``outcome``; NaN for no predictions."""
    prob, outcome = np.asarray(prob, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    return float(np.mean((prob - outcome) ** 2)) if prob.size else float("nan")


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve in [0, 1] (Mann–Whitney U with average ranks for ties);
    NaN when only one class is present."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over runs of tied scores (1-based)
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(score)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[label].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
