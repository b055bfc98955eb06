"""Tests for curation.ot: log-domain / scaling Sinkhorn against POT, Norton's prompt bucket."""

from __future__ import annotations

import warnings

import numpy as np
import ot as pot  # POT; the project's module is curation.ot
import pytest

from curation import ot as cot
from curation.ot import bucket_marginals, log_sinkhorn, norton_bucket_plan, plain_plan


def _problem(seed: int, n: int = 7, k: int = 11):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, k)
    return rng, a / a.sum(), b / b.sum()


def _pot(score, a, b, eps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pot.sinkhorn(a, b, -score, eps, method="sinkhorn_log", numItermax=5000, stopThr=1e-12)


def _forbid(monkeypatch, name):
    def boom(*args, **kwargs):
        raise AssertionError(f"{name} must not be used for this problem")

    monkeypatch.setattr(cot, name, boom)


@pytest.mark.parametrize("seed", range(4))
def test_scaling_path_matches_pot(seed, monkeypatch):
    rng, a, b = _problem(seed)
    score = rng.uniform(0.0, 1.0, (7, 11))  # range / eps = 10 < 600
    _forbid(monkeypatch, "_sinkhorn_log")
    q = log_sinkhorn(score, a, b, 0.1, 5000)
    np.testing.assert_allclose(q, _pot(score, a, b, 0.1), atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=1), a, atol=1e-9)
    np.testing.assert_allclose(q.sum(axis=0), b, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_log_path_matches_pot(seed, monkeypatch):
    # Moderate random scores plus a few very low cells: range / eps = 820 > 600 forces the log path,
    # while the problem stays well conditioned enough for 5000 iterations to converge.
    rng, a, b = _problem(seed)
    score = rng.uniform(0.0, 1.0, (7, 11))
    score[rng.integers(7, size=3), rng.integers(11, size=3)] = -40.0
    _forbid(monkeypatch, "_sinkhorn_scaling")
    q = log_sinkhorn(score, a, b, 0.05, 5000)
    np.testing.assert_allclose(q, _pot(score, a, b, 0.05), atol=1e-6)
    np.testing.assert_allclose(q.sum(axis=1), a, atol=1e-9)


def test_log_path_small_eps_matches_pot(monkeypatch):
    # the brief's case: eps = 0.001 and scores in [0, 1] (range 1000 eps)
    rng, a, b = _problem(0)
    score = rng.uniform(0.0, 1.0, (7, 11))
    _forbid(monkeypatch, "_sinkhorn_scaling")
    q = log_sinkhorn(score, a, b, 0.001, 5000)
    np.testing.assert_allclose(q.sum(axis=1), a, atol=1e-9)  # converged
    np.testing.assert_allclose(q, _pot(score, a, b, 0.001), atol=1e-6)


def test_scaling_and_log_iterates_agree():
    rng, a, b = _problem(11, 9, 13)
    score = rng.uniform(-1.0, 2.0, (9, 13))
    score[2, 5] = -np.inf
    for n_iter in (1, 3, 50):
        ql = cot._sinkhorn_log(score, a, b, 0.07, n_iter)
        qs = cot._sinkhorn_scaling(score, a, b, 0.07, n_iter)
        np.testing.assert_allclose(ql, qs, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("eps", [0.1, 0.001])  # scaling and log path
def test_forbidden_cells_get_zero_mass(eps):
    rng, a, b = _problem(3, 6, 8)
    score = rng.uniform(0.0, 1.0, (6, 8))
    forbidden = rng.random((6, 8)) < 0.3
    forbidden[np.arange(6), np.arange(6)] = False  # keep every row and column feasible
    forbidden[:, 6:] = False
    score[forbidden] = -np.inf
    q = log_sinkhorn(score, a, b, eps, 200)
    assert np.all(np.isfinite(q))
    assert np.all(q[forbidden] == 0.0)
    plan = norton_bucket_plan(score, 0.3).plan
    assert np.all(plan[forbidden] == 0.0)


def test_bucket_marginals_values():
    for m, t in [(1, 1), (3, 10), (60, 400)]:
        a, b = bucket_marginals(m, t)
        assert a.shape == (m + 1,) and b.shape == (t + 1,)
        assert a.sum() == pytest.approx(1.0) and b.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(a[:m], 1.0 / (m + t))
        np.testing.assert_allclose(b[:t], 1.0 / (m + t))
        assert a[m] == pytest.approx(t / (m + t)) and b[t] == pytest.approx(m / (m + t))


@pytest.mark.parametrize("seed", range(3))
def test_bucket_plan_rows_and_columns(seed):
    rng = np.random.default_rng(seed)
    m, t = 12, 30
    sim = rng.uniform(0.0, 1.0, (m, t))
    res = norton_bucket_plan(sim, prompt_value=0.5)
    assert res.plan.shape == (m, t) and res.bucket_mass.shape == (m,)
    assert np.all(res.plan >= 0.0)
    np.testing.assert_allclose(res.plan.sum(axis=1) + res.bucket_mass, 1.0, atol=1e-12)
    assert np.all((res.bucket_mass >= 0.0) & (res.bucket_mass <= 1.0))
    # each real frame carries total mass 1/(m+T), shared with the dustbin row
    assert np.all(res.plan.sum(axis=0) <= 1.0 + 1e-3)


def _planted(seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(8)
    sim = np.full((8, 8), 0.1)
    sim[np.arange(8), perm] = 0.9
    return perm, sim + rng.uniform(-0.02, 0.02, sim.shape)


@pytest.mark.parametrize("seed", range(5))
def test_planted_permutation_recovered(seed):
    perm, sim = _planted(seed)
    q = plain_plan(sim)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(q.argmax(axis=1), perm)
    res = norton_bucket_plan(sim, prompt_value=0.3)
    np.testing.assert_array_equal(res.plan.argmax(axis=1), perm)


def test_prompt_bucket_absorbs_unrelated_captions():
    t, n_real, block = 40, 6, 6
    sim = np.full((n_real + 3, t), 0.2)
    for i in range(n_real):
        sim[i] = 0.2
        sim[i, i * block:(i + 1) * block] = 1.0
    sim[n_real:] = 0.0  # unrelated to every frame: the global minimum
    res = norton_bucket_plan(sim, prompt_value=0.5)
    assert np.all(res.bucket_mass[n_real:] > 0.5), res.bucket_mass
    assert np.all(res.bucket_mass[:n_real] < 0.5), res.bucket_mass
    # matched captions put their real mass on their own block
    own = [res.plan[i, i * block:(i + 1) * block].sum() / res.plan[i].sum() for i in range(n_real)]
    assert min(own) > 0.9
