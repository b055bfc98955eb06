"""The posterior aligner's pieces: segment evidence, the offset-prior EM, the time rule."""

import numpy as np
import pytest

from curation import timing

W = 60.0


def _planted_offsets(rng, n, mu, sigma, rho):
    outlier = rng.random(n) < rho
    return np.where(outlier, rng.uniform(-W, W, n), rng.normal(mu, sigma, n)).clip(-W, W)


def _grid():
    return np.arange(-int(W), int(W) + 1, dtype=np.float64)


@pytest.mark.parametrize("evidence", ["peaked", "flat-steps", "long-flat-steps"])
def test_fit_recovers_a_planted_offset_distribution(evidence):
    """mu within 0.5 s, sigma within 15%, outlier share within 0.05 (issue 14, point 5). The long
    steps (20-120 s, the outside study's corpora) censor each offset to an interval many sigmas
    wide: EM crept towards the optimum there and stopped with a prior twice too wide."""
    rng = np.random.default_rng(7)
    mu, sigma, rho, n = 2.5, 6.0, 0.2, 4000
    d = _planted_offsets(rng, n, mu, sigma, rho)
    grid = _grid()
    if evidence == "peaked":  # each caption's evidence is a 3-s run around its true offset
        lo, hi = d - 1.5, d + 1.5
    else:  # the caption is somewhere in a step of 4-12 s (20-120 s) that contains its true offset
        length = rng.uniform(4, 12, n) if evidence == "flat-steps" else rng.uniform(20, 120, n)
        lo = d - rng.uniform(0, 1, n) * length
        hi = lo + length
    on_prob = ((grid[None, :] >= lo[:, None]) & (grid[None, :] <= hi[:, None])).astype(float)
    on_prob += 1e-3  # a little evidence everywhere, as noise leaves
    prior = timing.fit_offset_prior(on_prob, grid, np.ones(n), W)
    assert abs(prior.mu_s - mu) < 0.5
    assert abs(prior.sigma_s - sigma) / sigma < 0.15
    assert abs(prior.outlier_share - rho) < 0.05


def test_fit_without_usable_evidence_keeps_the_asr_times():
    """Captions whose weights are ~0 (nothing visible) leave the prior at mu = 0."""
    rng = np.random.default_rng(1)
    on_prob = rng.random((500, len(_grid())))
    prior = timing.fit_offset_prior(on_prob, _grid(), np.full(500, 1e-4), W)
    assert abs(prior.mu_s) < 0.1


def _evidence(on_prob_row: np.ndarray, asr_centre_s: float, n_frames: int = 400) -> timing.Evidence:
    offset_s, frame, valid = timing.offset_grid(np.array([asr_centre_s]), n_frames, 1.0, W)
    return timing.Evidence(offset_s, frame, valid, on_prob_row[None, :] * valid, np.zeros(1), np.zeros(1),
                           valid / valid.sum())


def test_flat_evidence_keeps_asr_plus_mu():
    """The caption's step covers 100-180 s evenly; its ASR time 140 s is inside: the span
    centre goes to ASR + mu, not anywhere in the step."""
    asr, mu = 140.5, 3.0
    offsets = _grid()
    on = ((asr + offsets >= 100) & (asr + offsets < 180)).astype(float)
    on /= on.sum()
    prior = timing.OffsetPrior(mu, 8.0, 0.2, W)
    centre, mass, _ = timing.posterior_centre_s(_evidence(on, asr), prior, np.ones(1), np.array([3.0]), 1.0)
    assert abs(centre[0] - (asr + mu)) <= 1.0
    assert 0 < mass[0] <= 1


def test_asr_time_outside_the_evidence_moves_to_the_nearest_evidenced_frames():
    asr = 140.5
    offsets = _grid()
    on = ((asr + offsets >= 160) & (asr + offsets < 200)).astype(float)
    on /= on.sum()
    prior = timing.OffsetPrior(0.0, 8.0, 0.2, W)
    centre, _, _ = timing.posterior_centre_s(_evidence(on, asr), prior, np.ones(1), np.array([3.0]), 1.0)
    assert 160 <= centre[0] <= 164  # inside the evidence, at its end nearest the ASR time


def test_an_invisible_caption_keeps_its_prior_mode():
    asr = 140.5
    on = np.zeros(len(_grid()))
    on[100] = 1.0  # a spike of evidence 39 s away
    prior = timing.OffsetPrior(-2.0, 5.0, 0.2, W)
    centre, _, _ = timing.posterior_centre_s(_evidence(on, asr), prior, np.zeros(1), np.array([3.0]), 1.0)
    assert abs(centre[0] - (asr - 2.0)) <= 1.0


def test_segment_evidence_finds_a_planted_run_and_is_flat_inside_it():
    rng = np.random.default_rng(3)
    m, t = 20, 400
    sim = rng.normal(0.0, 1.0, (m, t))
    sim[0, 200:240] += 1.5  # caption 0 is shown evenly over 200-240 s
    ev = timing.segment_evidence(sim, np.full(m, 230.0), 1.0, W)
    near = (ev.frame[0] >= 195) & (ev.frame[0] < 245)  # noise blurs the edges a little
    assert ev.on_prob[0, near].sum() > 0.95 * ev.on_prob[0].sum()
    core = ev.on_prob[0, (ev.frame[0] >= 210) & (ev.frame[0] < 230)]  # 10 s from the edges
    assert core.min() > 0.8 * core.max()  # flat: no spurious peak inside an evenly shown step
    assert ev.llr[0] > np.max(ev.llr[1:]) + 5


def test_a_step_is_covered_to_its_edge_whatever_its_length():
    """A caption shown evenly over a step whose length is not on any ladder (60 s), its ASR time
    2 s before the step's end: the evidence must cover the ASR time as it covers the step's
    middle. (A 50% ladder of run lengths had runs of 51 and 77 s only, so the evidence fell off
    inside the edge and moved such captions away from a correct ASR time.)"""
    rng = np.random.default_rng(5)
    m, t = 20, 400
    sim = rng.normal(0.0, 1.0, (m, t))
    sim[0, 200:260] += 1.5
    ev = timing.segment_evidence(sim, np.full(m, 258.0), 1.0, W)
    at_asr = ev.on_prob[0, ev.frame[0] == 258][0]
    middle = ev.on_prob[0, (ev.frame[0] >= 225) & (ev.frame[0] < 240)].mean()
    assert at_asr > 0.8 * middle


def _all_runs_coverage(potential, is_start, is_end, open_left, open_right):
    """Brute force of ``timing._coverage``: every run of at most K cells on the whole timeline
    (beyond the grid only where it is open), one by one, seen through the grid."""
    m, k1 = potential.shape
    k = k1 - 1
    out = np.zeros((m, k))
    for i in range(m):
        seen = []
        for s in range(-k, k):
            for e in range(s + 1, s + k + 1):
                a, b = max(s, 0), min(e, k)
                if a >= b or (s < 0 and not open_left[i]) or (e > k and not open_right[i]):
                    continue
                if is_start[i, a] and is_end[i, b]:
                    seen.append((a, b))
        log_w = np.array([potential[i, b] - potential[i, a] for a, b in seen])
        w = np.exp(log_w - log_w.max())
        for (a, b), wi in zip(seen, w):
            out[i, a:b] += wi
        out[i] /= w.sum()
    return out


def _grid_runs(valid):
    k = valid.shape[1]
    idx = np.arange(k + 1)[None, :]
    first, stop = np.argmax(valid, axis=1)[:, None], (k - np.argmax(valid[:, ::-1], axis=1))[:, None]
    return (idx >= first) & (idx < stop), (idx > first) & (idx <= stop)


@pytest.mark.parametrize("scale", [1.0, 200.0])  # potentials in the linear domain / the log domain
def test_coverage_sums_every_run_exactly(scale):
    rng = np.random.default_rng(6)
    m, k = 6, 24
    z = rng.standard_normal((m, k)) + 2.0 * (rng.random((m, k)) < 0.3)
    valid = np.ones((m, k), bool)
    valid[1, :8] = False   # grids leaving the video at its start and at its end
    valid[2, 17:] = False
    open_left = np.array([True, False, True, False, True, False])   # runs may begin before the grid
    open_right = np.array([True, True, False, False, False, True])  # and end after it
    csum = np.concatenate([np.zeros((m, 1)), np.cumsum(np.where(valid, z, 0.0), axis=1)], axis=1)
    potential = scale * (csum - 0.7 * np.arange(k + 1))
    is_start, is_end = _grid_runs(valid)
    assert (np.ptp(potential, axis=1) > timing.LINEAR_RANGE).any() == (scale > 1.0)
    got = timing._coverage(potential, is_start, is_end, open_left, open_right)
    np.testing.assert_allclose(got, _all_runs_coverage(potential, is_start, is_end, open_left, open_right),
                               atol=1e-12)


def test_without_evidence_every_cell_of_an_open_grid_is_covered_alike():
    """Runs seen through a window: with no evidence the grid's middle is no likelier than its
    edges (runs confined to the grid would cover the middle K/4 times as often as an edge cell),
    so a caption without evidence says nothing about its offset."""
    k = 40
    valid = np.ones((2, k), bool)
    is_start, is_end = _grid_runs(valid)
    got = timing._coverage(np.zeros((2, k + 1)), is_start, is_end, np.array([True, False]), np.array([True, False]))
    np.testing.assert_allclose(got[0], got[0].mean(), rtol=1e-12)
    assert got[1, k // 2] > 5 * got[1, 0]


def test_polish_is_invariant_to_the_encoders_cosine_band():
    rng = np.random.default_rng(0)
    cos = rng.normal(0.0, 0.05, (30, 200))
    np.testing.assert_allclose(timing.polish(0.3 * cos + 0.9).z, timing.polish(cos).z, atol=1e-9)


def test_glr_and_locus_sum_over_the_ladders_runs_inside_the_video():
    """Against every run of the ladder one by one: glr = log of the mean, over the runs inside
    the video, of exp(c max(sum z, 0)^2 / (2 n)) (each length equally likely, each start of a
    length), and locus = each run's share of it spread evenly over its cells."""
    rng = np.random.default_rng(5)
    sim = rng.normal(0.0, 1.0, (4, 40))
    sim[1, 20:26] += 2.0
    window = 10.0
    centre = np.array([2.0, 22.0, 30.0, 38.5])  # grids leaving the video at both ends
    ev = timing.segment_evidence(sim, centre, 1.0, window)
    z_rows, c = timing.polish(sim).z, timing.noise_discount(timing.polish(sim).z)
    k = len(ev.offset_s)
    lengths = timing.run_lengths(k)
    for i in range(len(centre)):
        z = np.where(ev.valid[i], z_rows[i, ev.frame[i]], 0.0)
        log_w, prior_in, locus = [], [], np.zeros(k)
        for n in lengths:
            for s in range(k - n + 1):
                if not ev.valid[i, s:s + n].all():
                    continue
                log_prior = -np.log(len(lengths) * (k - n + 1))
                log_w.append(c * max(z[s:s + n].sum(), 0.0) ** 2 / (2 * n) + log_prior)
                prior_in.append(log_prior)
                locus[s:s + n] += np.exp(log_w[-1]) / n
        expected = np.log(np.exp(log_w).sum()) - np.log(np.exp(prior_in).sum())
        assert ev.glr[i] == pytest.approx(expected, abs=1e-4)
        np.testing.assert_allclose(ev.locus[i], locus / locus.sum(), atol=1e-6)
    assert ev.glr[1] > ev.glr[[0, 2, 3]].max() + 3


def test_prior_llr_weighs_where_the_evidence_lies_by_the_offset_prior():
    """A uniform prior gives back glr; a caption shown at the prior's mode gains, the same
    evidence 40 s away loses."""
    offsets = timing.second_offsets(W)
    locus = np.zeros((3, len(offsets)), np.float32)
    locus[0, np.abs(offsets) <= 2] = 1.0            # shown at its ASR time
    locus[1, np.abs(offsets - 40) <= 2] = 1.0       # the same, 40 s later
    locus[2, :] = 1.0
    locus[2, offsets < -30] = np.nan                # a grid leaving the video: flat evidence
    locus /= np.nansum(locus, axis=1, keepdims=True)
    glr = np.array([5.0, 5.0, 1.0])
    uniform = timing.OffsetPrior(0.0, 8.0, 1.0, W)
    np.testing.assert_allclose(timing.prior_llr(glr, locus, uniform), glr, atol=1e-5)
    prior = timing.OffsetPrior(0.0, 5.0, 0.1, W)
    near, far, flat = timing.prior_llr(glr, locus, prior)
    assert near > 5.0 + 1.0 and far < 5.0 - 1.0
    assert flat == pytest.approx(1.0, abs=1e-5)  # flat evidence: the prior changes nothing


def test_correlated_noise_is_discounted():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((50, 500))
    smooth = np.empty_like(white)
    smooth[:, 0] = white[:, 0]
    for k in range(1, 500):
        smooth[:, k] = 0.8 * smooth[:, k - 1] + 0.6 * white[:, k]
    assert timing.noise_discount(white) > 0.9
    assert abs(timing.noise_discount(smooth) - 0.2 / 1.8) < 0.05


def test_a_caption_with_no_positive_evidence_gets_finite_scores():
    """A row below its median everywhere near the ASR time (best run mean <= 0) and grids that
    leave the video must not turn into NaN."""
    sim = np.zeros((3, 30))
    sim[0, :] = -1.0
    sim[0, 25:] = 1.0  # caption 0's only positive frames lie outside its grid
    ev = timing.segment_evidence(sim, np.array([2.0, 15.0, 29.5]), 1.0, 10.0)
    assert np.all(np.isfinite(ev.llr)) and np.all(np.isfinite(ev.on_prob))


def test_a_caption_whose_grid_lies_outside_the_video_has_no_run():
    """A caption timed well past the video's end (a bad captions file) has no run inside the
    video: the least evidence of all, an empty locus, no NaN."""
    sim = np.random.default_rng(6).normal(size=(3, 40))
    ev = timing.segment_evidence(sim, np.array([10.0, 95.0, 30.0]), 1.0, 10.0)
    assert np.all(np.isfinite(ev.llr)) and np.all(np.isfinite(ev.glr)) and np.all(np.isfinite(ev.on_prob))
    assert ev.llr[1] < min(ev.llr[0], ev.llr[2]) - 100 and ev.locus[1].sum() == 0 and ev.on_prob[1].sum() == 0


@pytest.mark.parametrize("shape", [(7, 10), (6, 9), (1, 4), (5, 1), (3, 1030), (2, 1025)])
def test_median_equals_numpys_median_on_every_axis(shape):
    from curation.timing import median

    x = np.random.default_rng(4).normal(size=shape)
    x[0, 0] = x[-1, -1]  # ties
    for axis in (None, 0, 1):
        np.testing.assert_array_equal(median(x, axis), np.median(x, axis=axis))
