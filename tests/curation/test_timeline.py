"""Tests for curation.timeline: frame times, span->frame pairing and the temporal prior."""

from __future__ import annotations

import numpy as np

from curation.timeline import (
    frame_centres_s,
    paired_similarity,
    span_frame_mask,
    temporal_penalty,
)


def test_frame_centres():
    np.testing.assert_allclose(frame_centres_s(4, 2.0), [0.25, 0.75, 1.25, 1.75])
    c = frame_centres_s(100, 3.0)
    assert c.shape == (100,)
    np.testing.assert_allclose(np.diff(c), 1.0 / 3.0)
    assert c[0] == 0.5 / 3.0 and abs(c[-1] - (100 - 0.5) / 3.0) < 1e-12


def _reference_mask(start, end, n, fps):
    centres = (np.arange(n) + 0.5) / fps
    mask = np.zeros((len(start), n), dtype=bool)
    for i, (s, e) in enumerate(zip(start, end)):
        mask[i] = (centres >= s) & (centres <= e)
        if not mask[i].any():
            mask[i, np.argmin(np.abs(centres - (s + e) / 2.0))] = True
    return mask


def test_span_frame_mask_against_reference():
    rng = np.random.default_rng(0)
    for fps in (1.0, 2.0, 0.5):
        n = 30
        start = rng.uniform(-5.0, n / fps + 10.0, 200)
        end = start + rng.choice([0.05, 0.3, 2.0, 7.0], size=200) / fps
        mask = span_frame_mask(start, end, n, fps)
        assert mask.shape == (200, n) and mask.dtype == bool
        np.testing.assert_array_equal(mask, _reference_mask(start, end, n, fps))
        assert np.all(mask.sum(axis=1) >= 1)


def test_span_frame_mask_edge_cases():
    # covers no centre -> nearest frame to the span centre (1.15 s is nearest to frame 1 at 1.5 s)
    mask = span_frame_mask(np.array([1.1]), np.array([1.2]), 10, 1.0)
    assert np.flatnonzero(mask[0]).tolist() == [1]
    # past the end of a 10 s video, and before its start
    mask = span_frame_mask(np.array([100.0, -9.0]), np.array([105.0, -8.0]), 10, 1.0)
    assert np.flatnonzero(mask[0]).tolist() == [9]
    assert np.flatnonzero(mask[1]).tolist() == [0]
    # inclusive bounds
    mask = span_frame_mask(np.array([1.5]), np.array([3.5]), 10, 1.0)
    assert np.flatnonzero(mask[0]).tolist() == [1, 2, 3]


def test_paired_similarity_is_mean_over_span():
    rng = np.random.default_rng(1)
    fps, n = 2.0, 40
    sim = rng.standard_normal((6, n))
    start = np.array([0.0, 3.2, 10.0, 19.9, 50.0, 7.01])
    end = np.array([1.0, 6.0, 10.1, 20.0, 55.0, 7.02])
    out = paired_similarity(sim, start, end, fps)
    ref = _reference_mask(start, end, n, fps)
    for i in range(6):
        assert abs(out[i] - sim[i, ref[i]].mean()) < 1e-12


def test_temporal_penalty_window_only():
    fps, n, window = 1.0, 50, 5.0
    asr = np.array([10.0, 0.0, 24.3])
    pen = temporal_penalty(asr, n, fps, window, None, 0.5)
    d = np.abs(frame_centres_s(n, fps)[None, :] - asr[:, None])
    assert pen.shape == (3, n)
    assert np.all(np.isneginf(pen[d > window]))
    assert np.all(pen[d <= window] == 0.0)


def test_temporal_penalty_quadratic():
    fps, n, sigma, w = 2.0, 40, 3.0, 0.7
    asr = np.array([4.0, 13.3])
    pen = temporal_penalty(asr, n, fps, None, sigma, w)
    d = np.abs(frame_centres_s(n, fps)[None, :] - asr[:, None])
    np.testing.assert_allclose(pen, -w * (d / sigma) ** 2, atol=1e-12)
    assert np.all(temporal_penalty(asr, n, fps, None, sigma, 0.0) == 0.0)
    both = temporal_penalty(asr, n, fps, 2.0, sigma, w)
    inside = d <= 2.0
    np.testing.assert_allclose(both[inside], -w * (d[inside] / sigma) ** 2, atol=1e-12)
    assert np.all(np.isneginf(both[~inside]))


def test_temporal_penalty_keeps_a_candidate_past_the_end():
    fps, n = 1.0, 20  # 20 s video
    asr = np.array([500.0, -300.0, 19.99])
    pen = temporal_penalty(asr, n, fps, 0.1, 2.0, 1.0)  # window narrower than half a frame
    finite = np.isfinite(pen)
    assert np.all(finite.sum(axis=1) >= 1)
    assert finite[0, n - 1] and finite[1, 0] and finite[2, n - 1]
