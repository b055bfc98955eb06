"""Tests for curation.metrics: R@1 with floor/ceil bounds and ROC-AUC against a pairwise count."""

from __future__ import annotations

import math

import numpy as np

from curation.metrics import brier_score, expected_calibration_error, hits, recall_at_1, reliability_bins, roc_auc


def test_recall_boundaries_are_floor_ceil_inclusive():
    # truth [2.3, 5.7] s -> accepted centres [2, 6]
    centre = np.array([2.0, 1.99, 6.0, 6.01, 4.0])
    start, end = np.full(5, 2.3), np.full(5, 5.7)
    hits = [recall_at_1(centre[i:i + 1], start[:1], end[:1], np.array([True])) for i in range(5)]
    assert hits == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert recall_at_1(centre, start, end, np.ones(5, bool)) == 3 / 5


def test_recall_ignores_unalignable_and_nan_without_alignable():
    centre = np.array([3.0, 100.0, 3.0])
    start, end = np.array([2.0, np.nan, 10.0]), np.array([4.0, np.nan, 12.0])
    assert recall_at_1(centre, start, end, np.array([True, False, True])) == 0.5
    assert recall_at_1(centre, start, end, np.array([True, False, False])) == 1.0
    assert math.isnan(recall_at_1(centre, start, end, np.zeros(3, bool)))


def _pairwise_auc(score, label):
    pos, neg = score[label], score[~label]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def test_roc_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        score = rng.integers(0, 5, n).astype(float)  # many ties
        label = rng.random(n) < 0.4
        label[0], label[1] = True, False
        rng.shuffle(label)
        assert abs(roc_auc(score, label) - _pairwise_auc(score, label)) < 1e-12
    score = rng.standard_normal(300)
    label = rng.random(300) < (1 / (1 + np.exp(-2 * score)))
    assert abs(roc_auc(score, label) - _pairwise_auc(score, label)) < 1e-12


def test_roc_auc_extremes():
    label = np.array([False, False, True, True, False, True])
    score = np.where(label, 1.0, 0.0) + np.arange(6) * 0.01
    assert roc_auc(score, label) == 1.0
    assert roc_auc(-score, label) == 0.0
    assert roc_auc(np.zeros(6), label) == 0.5
    assert math.isnan(roc_auc(score, np.ones(6, bool)))
    assert math.isnan(roc_auc(score, np.zeros(6, bool)))


def test_hits_are_false_for_unalignable_captions_and_match_recall():
    centre = np.array([3.0, 3.0, 9.0, 3.0])
    start, end = np.array([2.3, np.nan, 2.3, 2.3]), np.array([5.7, np.nan, 5.7, 5.7])
    alignable = np.array([True, False, True, True])
    assert hits(centre, start, end, alignable).tolist() == [True, False, False, True]
    assert recall_at_1(centre, start, end, alignable) == 2 / 3


def test_ece_and_brier_against_hand_computed_values():
    prob = np.array([0.05, 0.15, 0.15, 0.95, 1.0, 0.55])
    outcome = np.array([0, 1, 0, 1, 1, 0])
    # bins: [0,.1): {.05 -> 0}; [.1,.2): {.15,.15 -> 1,0}; [.5,.6): {.55 -> 0}; [.9,1]: {.95, 1.0 -> 1,1}
    expected = (1 * 0.05 + 2 * abs(0.15 - 0.5) + 1 * 0.55 + 2 * abs(0.975 - 1.0)) / 6
    assert math.isclose(expected_calibration_error(prob, outcome), expected)
    assert math.isclose(brier_score(prob, outcome), np.mean((prob - outcome) ** 2))
    bins = reliability_bins(prob, outcome)
    assert bins.count.tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2] and math.isnan(bins.frequency[2])
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_a_calibrated_forecaster_has_small_ece_and_a_constant_one_does_not_beat_it_on_brier():
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 1, 200_000)
    outcome = rng.uniform(0, 1, prob.size) < prob
    assert expected_calibration_error(prob, outcome) < 0.005
    assert expected_calibration_error(np.clip(prob + 0.2, 0, 1), outcome) > 0.1
    assert brier_score(prob, outcome) < brier_score(np.full(prob.size, outcome.mean()), outcome)


def test_keep_rules_count_precision_and_recall_by_hand():
    from curation.evaluate import keep_rules

    alignability = np.array([0.95, 0.8, 0.6, 0.4, 0.2, 0.1])
    weight = np.array([0.9, 0.3, 0.55, 0.1, 0.0, 0.6])
    alignable = np.array([True, True, False, True, False, False])
    hit = np.array([True, False, False, True, False, False])
    rules = {rule: (round(p, 9), round(r, 9)) for rule, p, r in keep_rules(alignability, weight, alignable, hit)}
    assert rules["alignability >= 0.3"] == (75.0, 100.0)       # kept 0-3: 3 of 4 alignable; all 3 alignable kept
    assert rules["alignability >= 0.7"] == (100.0, round(200 / 3, 9))    # kept 0, 1: both alignable; 2 of 3
    assert rules["alignability >= 0.9"] == (100.0, round(100 / 3, 9))
    assert rules["weight >= 0.5"] == (round(100 / 3, 9), 50.0)           # kept 0, 2, 5: one hit of 3; 1 of 2 hits
    nothing = dict((r, (p, q)) for r, p, q in keep_rules(np.zeros(3), np.zeros(3), np.ones(3, bool), np.ones(3, bool)))
    assert math.isnan(nothing["alignability >= 0.5"][0]) and nothing["alignability >= 0.5"][1] == 0.0
