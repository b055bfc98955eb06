"""Tests for curation.s2dtw (S2DTW soft monotonic aligner, after VT-TWINS, CVPR 2022)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from curation.s2dtw import (
    _caption_skip_probability,
    _soft_dtw_tables,
    s2dtw_cost,
    s2dtw_plan,
    soft_dtw_alignment,
    soft_min,
)

GAMMA = 0.1


# ----------------------------------------------------------------------------- references


def _softmin_scalar(values: list[float], gamma: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.inf
    lo = min(finite)
    return lo - gamma * math.log(sum(math.exp(-(v - lo) / gamma) for v in finite))


def _reference_soft_dtw(cost: np.ndarray, gamma: float) -> float:
    """Plain double loop of Cuturi & Blondel (2017), Algorithm 1."""
    n, k = cost.shape
    r = [[math.inf] * (k + 1) for _ in range(n + 1)]
    r[0][0] = 0.0
    for p in range(1, n + 1):
        for q in range(1, k + 1):
            r[p][q] = float(cost[p - 1, q - 1]) + _softmin_scalar(
                [r[p - 1][q - 1], r[p - 1][q], r[p][q - 1]], gamma
            )
    return r[n][k]


def _all_paths(n: int, k: int):
    """Every monotonic path (moves right, down, diagonal) from (0, 0) to (n-1, k-1)."""

    def rec(p, q):
        if (p, q) == (n - 1, k - 1):
            yield [(p, q)]
            return
        for dp, dq in ((0, 1), (1, 0), (1, 1)):
            if p + dp < n and q + dq < k:
                for tail in rec(p + dp, q + dq):
                    yield [(p, q)] + tail

    return list(rec(0, 0))


def _gibbs(cost: np.ndarray, gamma: float):
    """Paths and their Gibbs probabilities P(A) ~ exp(-<A, C>/gamma), by enumeration."""
    paths = _all_paths(*cost.shape)
    energies = np.array([sum(cost[c] for c in path) for path in paths])
    logits = -(energies - energies.min()) / gamma
    probs = np.exp(logits) / np.exp(logits).sum()
    return paths, probs


def _planted_sim(rng, m=6, n_frames=60, background=(0.0, 0.2), match=(0.7, 0.9), bad=None, bad_range=None):
    """Caption i matches frames [i*b, (i+1)*b) with b = T // m; caption ``bad`` matches nothing."""
    sim = rng.uniform(*background, size=(m, n_frames))
    block = n_frames // m
    for i in range(m):
        if i != bad:
            sim[i, i * block : (i + 1) * block] = rng.uniform(*match, size=block)
    if bad is not None:
        sim[bad] = rng.uniform(*(bad_range or background), size=n_frames)
    return sim, block


# ----------------------------------------------------------------------------- soft_min


def test_soft_min_tends_to_hard_min_as_gamma_shrinks():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 100))
    hard = np.minimum(np.minimum(a, b), c)
    gaps = []
    for gamma in (1.0, 0.1, 0.01, 1e-3, 1e-4):
        soft = soft_min(a, b, c, gamma)
        assert np.all(soft <= hard + 1e-12)  # soft-min is below the min ...
        assert np.all(soft >= hard - gamma * math.log(3) - 1e-12)  # ... by at most gamma*log 3
        gaps.append(np.max(hard - soft))
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-3


def test_soft_min_is_stable_and_handles_inf():
    gamma = 0.1
    big = np.array([1e4, -1e4, 0.0])
    out = soft_min(big, big + 1.0, big + 2.0, gamma)
    assert np.all(np.isfinite(out))
    expected = big - gamma * np.log(1 + np.exp(-10.0) + np.exp(-20.0))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)
    inf = np.inf
    assert soft_min(np.array(inf), np.array(2.0), np.array(inf), gamma) == pytest.approx(2.0)
    assert soft_min(np.array(inf), np.array(inf), np.array(inf), gamma) == inf
    # equal arguments: min - gamma * log(3)
    assert soft_min(np.array(1.0), np.array(1.0), np.array(1.0), gamma) == pytest.approx(1.0 - gamma * math.log(3))


def test_soft_min_rejects_bad_gamma():
    with pytest.raises(ValueError):
        soft_min(np.zeros(2), np.zeros(2), np.zeros(2), 0.0)


# ----------------------------------------------------------------------------- s2dtw_cost


def test_s2dtw_cost_layout_and_smoothing():
    rng = np.random.default_rng(1)
    m, n_frames, gamma, skip = 3, 4, 0.1, 0.5
    sim = rng.uniform(0, 1, size=(m, n_frames))
    cost = s2dtw_cost(sim, gamma=gamma, skip_cost=skip)
    assert cost.shape == (2 * m + 1, 2 * n_frames + 1)
    skip_mask = np.ones(cost.shape, dtype=bool)
    skip_mask[1::2, 1::2] = False
    assert np.all(cost[skip_mask] == skip)
    for i in range(m):
        for j in range(n_frames):
            if (i, j) == (0, 0):
                neighbours = [0.0, 0.0, 0.0]  # official-code convention for the first cell
            else:
                neighbours = [
                    -sim[i, j - 1] if j > 0 else math.inf,
                    -sim[i - 1, j] if i > 0 else math.inf,
                    -sim[i - 1, j - 1] if i > 0 and j > 0 else math.inf,
                ]
            expected = -sim[i, j] + _softmin_scalar(neighbours, gamma)
            assert cost[2 * i + 1, 2 * j + 1] == pytest.approx(expected, abs=1e-12)
    assert cost[1, 1] == pytest.approx(-sim[0, 0] - gamma * math.log(3))


def test_s2dtw_cost_rejects_bad_input():
    with pytest.raises(ValueError):
        s2dtw_cost(np.zeros(5))
    with pytest.raises(ValueError):
        s2dtw_cost(np.array([[0.1, np.nan]]))


# ----------------------------------------------------------------------------- soft_dtw_alignment


@pytest.mark.parametrize("seed", range(5))
def test_soft_dtw_value_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    shape = [(5, 7), (7, 5), (1, 6), (6, 1), (4, 4)][seed]
    cost = rng.normal(size=shape)
    for gamma in (0.1, 1.0):
        value, _ = soft_dtw_alignment(cost, gamma)
        assert value == pytest.approx(_reference_soft_dtw(cost, gamma), abs=1e-8)


def test_soft_dtw_value_matches_reference_on_interleaved_cost():
    rng = np.random.default_rng(7)
    cost = s2dtw_cost(rng.uniform(0, 1, size=(3, 5)))
    value, _ = soft_dtw_alignment(cost, GAMMA)
    assert value == pytest.approx(_reference_soft_dtw(cost, GAMMA), abs=1e-8)


def test_expected_alignment_is_the_gradient():
    rng = np.random.default_rng(3)
    cost = rng.normal(size=(4, 6))
    gamma, eps = 0.5, 1e-6
    _, expected = soft_dtw_alignment(cost, gamma)
    numeric = np.zeros_like(cost)
    for idx in np.ndindex(cost.shape):
        plus, minus = cost.copy(), cost.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (soft_dtw_alignment(plus, gamma)[0] - soft_dtw_alignment(minus, gamma)[0]) / (2 * eps)
    np.testing.assert_allclose(expected, numeric, atol=1e-6)


def test_expected_alignment_matches_path_enumeration():
    rng = np.random.default_rng(4)
    cost = s2dtw_cost(rng.uniform(0, 1, size=(2, 2)))  # 5 x 5 interleaved, 321 paths
    paths, probs = _gibbs(cost, GAMMA)
    brute = np.zeros_like(cost)
    for path, prob in zip(paths, probs):
        for cell in path:
            brute[cell] += prob
    _, expected = soft_dtw_alignment(cost, GAMMA)
    np.testing.assert_allclose(expected, brute, atol=1e-10)


def test_expected_alignment_properties_on_interleaved_cost():
    rng = np.random.default_rng(5)
    cost = s2dtw_cost(rng.uniform(0, 1, size=(8, 30)))
    _, expected = soft_dtw_alignment(cost, GAMMA)
    assert expected.shape == cost.shape
    assert np.all(expected >= 0.0) and np.all(expected <= 1.0)
    # every path starts and ends on the corner skip cells
    assert expected[0, 0] == pytest.approx(1.0, abs=1e-9)
    assert expected[-1, -1] == pytest.approx(1.0, abs=1e-9)
    # every path visits each row and each column at least once
    assert np.all(expected.sum(axis=1) >= 1.0 - 1e-9)
    assert np.all(expected.sum(axis=0) >= 1.0 - 1e-9)


def test_soft_dtw_tends_to_hard_dtw():
    rng = np.random.default_rng(6)
    cost = rng.uniform(0, 1, size=(6, 9))
    hard = np.full((7, 10), np.inf)
    hard[0, 0] = 0.0
    for p in range(1, 7):
        for q in range(1, 10):
            hard[p, q] = cost[p - 1, q - 1] + min(hard[p - 1, q - 1], hard[p - 1, q], hard[p, q - 1])
    value, expected = soft_dtw_alignment(cost, 1e-4)
    assert value == pytest.approx(hard[6, 9], abs=1e-3)
    assert set(np.unique(np.round(expected, 3))) <= {0.0, 1.0}


def test_soft_dtw_is_stable_for_large_costs():
    rng = np.random.default_rng(8)
    cost = rng.normal(scale=1e3, size=(20, 30))
    value, expected = soft_dtw_alignment(cost, GAMMA)
    assert math.isfinite(value)
    assert np.all(np.isfinite(expected))
    assert np.all(expected >= 0.0) and np.all(expected <= 1.0)


# ----------------------------------------------------------------------------- s2dtw_plan


def test_skip_probability_matches_path_enumeration():
    rng = np.random.default_rng(9)
    sim = rng.uniform(0.0, 0.3, size=(3, 3))
    sim[1] = rng.uniform(-1.2, -0.8, size=3)  # caption 1 dear enough to be skipped
    cost = s2dtw_cost(sim)  # 7 x 7 interleaved
    paths, probs = _gibbs(cost, GAMMA)
    brute = np.zeros(sim.shape[0])
    for path, prob in zip(paths, probs):
        for i in range(sim.shape[0]):
            if not any(p == 2 * i + 1 and q % 2 == 1 for p, q in path):
                brute[i] += prob
    _, r_table, expected = _soft_dtw_tables(cost, GAMMA)
    got = _caption_skip_probability(cost, r_table, expected, GAMMA)
    assert brute[1] > 0.5 and brute[0] < 0.01  # the check is not vacuous
    np.testing.assert_allclose(got, brute, atol=1e-10)
    _, skip_mass = s2dtw_plan(sim)
    np.testing.assert_allclose(skip_mass, brute, atol=1e-10)


def test_plan_shapes_ranges_and_row_normalisation():
    rng = np.random.default_rng(10)
    sim = rng.uniform(-0.5, 1.0, size=(7, 40))
    plan, skip_mass = s2dtw_plan(sim)
    assert plan.shape == (7, 40) and skip_mass.shape == (7,)
    assert np.all(plan >= 0.0) and np.all(plan <= 1.0)
    assert np.all(skip_mass >= 0.0) and np.all(skip_mass <= 1.0)
    np.testing.assert_allclose(plan.sum(axis=1), 1.0 - skip_mass, atol=1e-9)
    # plan rows are the real-row expected alignment, rescaled
    _, expected = soft_dtw_alignment(s2dtw_cost(sim), GAMMA)
    real = expected[1::2, 1::2]
    np.testing.assert_allclose(plan, real / real.sum(axis=1, keepdims=True) * (1.0 - skip_mass)[:, None], atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_planted_monotonic_alignment_is_recovered(seed):
    rng = np.random.default_rng(100 + seed)
    sim, block = _planted_sim(rng)
    plan, skip_mass = s2dtw_plan(sim)
    for i in range(sim.shape[0]):
        assert i * block <= int(np.argmax(plan[i])) < (i + 1) * block, (i, plan[i].round(3))
        # most of the caption's mass is inside its block
        assert plan[i, i * block : (i + 1) * block].sum() > 0.7 * plan[i].sum()
    assert np.all(skip_mass < 0.01)


@pytest.mark.parametrize("bad", [0, 3, 5])
def test_unmatched_caption_gets_more_skip_mass_centred_similarities(bad):
    # Similarities centred around 0 (background < 0): real cells of the unmatched caption
    # cost more than the skip cells, so the path steps over it.
    rng = np.random.default_rng(200 + bad)
    sim, block = _planted_sim(rng, background=(-0.6, -0.4), bad=bad)
    plan, skip_mass = s2dtw_plan(sim)
    good = np.delete(skip_mass, bad)
    assert skip_mass[bad] > 0.3
    assert skip_mass[bad] > good.max() + 0.3
    assert plan[bad].sum() < np.delete(plan.sum(axis=1), bad).min()
    for i in np.flatnonzero(np.arange(sim.shape[0]) != bad):
        assert i * block <= int(np.argmax(plan[i])) < (i + 1) * block


@pytest.mark.parametrize("bad", [0, 3, 5])
def test_unmatched_caption_gets_more_skip_mass_unit_interval_similarities(bad):
    # With similarities in [0, 1] every real cell is cheaper than a skip cell, so skip
    # masses are all small; the uniformly-low caption must still get the largest.
    rng = np.random.default_rng(300 + bad)
    sim, _ = _planted_sim(rng, bad=bad, bad_range=(0.0, 0.1))
    _, skip_mass = s2dtw_plan(sim)
    assert skip_mass[bad] > np.delete(skip_mass, bad).max()


def test_plan_timing_60_by_420(capsys):
    rng = np.random.default_rng(11)
    sim = rng.uniform(0, 1, size=(60, 420))
    s2dtw_plan(sim)  # warm-up
    start = time.perf_counter()
    plan, skip_mass = s2dtw_plan(sim)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\ns2dtw_plan 60x420 (interleaved 121x841): {elapsed * 1e3:.1f} ms")
    assert plan.shape == (60, 420) and skip_mass.shape == (60,)
    assert np.all(np.isfinite(plan)) and np.all(np.isfinite(skip_mass))
