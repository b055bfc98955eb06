"""Tests for curation.similarity: cosine, L2 normalisation, min-max scaling, NCL hub removal."""

from __future__ import annotations

import math

import numpy as np

from curation.similarity import (
    cosine_similarity,
    l2_normalise,
    mean_cosine_over_runs,
    minmax_scale,
    ncl_normalise,
)


def test_cosine_matches_manual_and_is_bounded():
    rng = np.random.default_rng(0)
    c, f = rng.standard_normal((5, 16)) * 3.0, rng.standard_normal((9, 16))
    sim = cosine_similarity(c, f)
    assert sim.shape == (5, 9) and sim.dtype == np.float64
    for i in range(5):
        for t in range(9):
            dot = sum(float(x) * float(y) for x, y in zip(c[i], f[t]))
            manual = dot / (math.sqrt(sum(x * x for x in c[i])) * math.sqrt(sum(y * y for y in f[t])))
            assert abs(sim[i, t] - manual) < 1e-12
    assert np.all(np.abs(sim) <= 1.0 + 1e-12)
    # scale invariance and the extremes
    np.testing.assert_allclose(cosine_similarity(c * 7.0, f * 0.01), sim, atol=1e-12)
    np.testing.assert_allclose(np.diag(cosine_similarity(f, f)), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(cosine_similarity(f, -f)), -1.0, atol=1e-12)


def test_l2_normalise_unit_rows_and_zero_rows():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    x[2] = 0.0
    y = l2_normalise(x)
    assert y.dtype == np.float64
    norms = np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(np.delete(norms, 2), 1.0, atol=1e-12)
    assert np.all(y[2] == 0.0)
    assert np.all(cosine_similarity(x, x)[2] == 0.0)  # zero caption: similarity 0, not NaN


def test_minmax_scale():
    rng = np.random.default_rng(2)
    sim = rng.uniform(-0.7, 0.4, (8, 20))
    out = minmax_scale(sim)
    assert out.shape == sim.shape
    assert out.min() == 0.0 and abs(out.max() - 1.0) < 1e-12
    expected = (sim - sim.min()) / (sim.max() - sim.min())
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert np.all(minmax_scale(np.full((3, 4), 0.37)) == 0.0)


def _hub_problem():
    rng = np.random.default_rng(3)
    cap, frm = rng.standard_normal((30, 32)), rng.standard_normal((50, 32))
    sim = cosine_similarity(cap, frm)
    hub = 17
    hubbed = sim.copy()
    hubbed[:, hub] += 0.5
    return sim, hubbed, hub


def test_ncl_removes_hub_advantage():
    sim, hubbed, hub = _hub_problem()
    before = np.mean(hubbed.argmax(axis=1) == hub)
    assert before > 0.5  # the hub wins for most captions
    out = ncl_normalise(hubbed)
    assert out.shape == hubbed.shape and np.all(np.isfinite(out))
    after = np.mean(out.argmax(axis=1) == hub)
    assert after < 0.5 and after < before


def test_ncl_is_invariant_to_column_and_row_offsets():
    # P = diag(u) K diag(v) with fixed marginals is unchanged by adding a constant to a column or
    # a row of sim, so once Sinkhorn has converged the bias-corrected scores coincide.
    sim, hubbed, _ = _hub_problem()
    shifted = hubbed + np.linspace(-0.3, 0.3, sim.shape[0])[:, None]
    np.testing.assert_allclose(ncl_normalise(shifted, n_iter=500), ncl_normalise(sim, n_iter=500), atol=1e-6)


def test_ncl_marginals():
    sim, _, _ = _hub_problem()
    tau = 0.05
    p = np.exp(ncl_normalise(sim, tau, n_iter=300) / tau)
    m, t = sim.shape
    np.testing.assert_allclose(p.sum(axis=0), 1.0 / t, rtol=1e-9)
    np.testing.assert_allclose(p.sum(axis=1), 1.0 / m, rtol=1e-6)


def test_mean_cosine_over_runs_is_the_row_mean_of_the_cosine_matrix_over_each_run():
    rng = np.random.default_rng(1)
    captions, frames = rng.normal(size=(7, 16)), rng.normal(size=(30, 16))
    frames[4] = 0.0  # an all-zero frame has cosine 0 with everything
    first = np.array([0, 3, 10, 29, 2, 25, 0])
    stop = first + np.array([1, 2, 5, 1, 4, 5, 30])
    matrix = [float(np.mean([captions[i] @ frames[t] / (np.linalg.norm(captions[i]) * np.linalg.norm(frames[t]))
                             if t != 4 else 0.0 for t in range(a, b)])) for i, (a, b) in enumerate(zip(first, stop))]
    np.testing.assert_allclose(mean_cosine_over_runs(captions, frames, first, stop), matrix, atol=1e-12)
