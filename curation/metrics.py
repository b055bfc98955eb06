"""Alignment evaluation, TAN / HTM-Align protocol.

* R@1: over alignable captions, a hit when the predicted centre (seconds) lies in
  ``[floor(true_start_s), ceil(true_end_s)]``.
* Alignability: ROC-AUC of a score against the 0/1 alignable labels over all captions.
"""

from __future__ import annotations

import numpy as np


def recall_at_1(centre_s: np.ndarray, true_start_s: np.ndarray, true_end_s: np.ndarray,
                alignable: np.ndarray) -> float:
    """Hit rate in [0, 1] over captions with ``alignable`` true; NaN if there are none."""
    sel = np.asarray(alignable, dtype=bool)
    if not sel.any():
        return float("nan")
    c = np.asarray(centre_s, dtype=np.float64)[sel]
    hit = (c >= np.floor(np.asarray(true_start_s)[sel])) & (c <= np.ceil(np.asarray(true_end_s)[sel]))
    return float(hit.mean())


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
