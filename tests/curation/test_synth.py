"""Tests for curation.synth.features: determinism, shapes and the ground truth of the synthetic world."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from curation.synth.features import WorldParams, make_corpus


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(10, 7)


def _assert_same(v, w):
    for field in dataclasses.fields(v):
        a, b = getattr(v, field.name), getattr(w, field.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_deterministic_and_independent_of_corpus_size(corpus):
    again = make_corpus(3, 7)
    for v, w in zip(corpus[:3], again):
        _assert_same(v, w)
    other = make_corpus(1, 8)[0]
    assert not np.array_equal(other.frames[:5], corpus[0].frames[:5])
    assert len({v.video_id for v in corpus}) == 10


def test_shapes_and_types(corpus):
    p = WorldParams()
    for v in corpus:
        t, m = v.frames.shape[0], v.caption_emb.shape[0]
        assert v.frames.shape == (t, p.dim) and v.frames.dtype == np.float32
        assert v.caption_emb.shape == (m, p.dim) and v.caption_emb.dtype == np.float32
        assert p.duration_s[0] <= t / v.fps < p.duration_s[1]
        assert len(v.texts) == m
        for arr in (v.asr_start_s, v.asr_end_s, v.alignable, v.true_start_s, v.true_end_s):
            assert arr.shape == (m,)
        assert np.all(np.isfinite(v.frames)) and np.all(np.isfinite(v.caption_emb))


def test_captions_sorted_and_spans_valid(corpus):
    for v in corpus:
        video_s = v.frames.shape[0] / v.fps
        assert np.all(np.diff(v.asr_start_s) >= 0)
        assert np.all(v.asr_end_s >= v.asr_start_s)
        assert np.all(v.asr_start_s >= 0) and np.all(v.asr_end_s <= video_s)
        a = v.alignable
        assert np.all(np.isfinite(v.true_start_s[a])) and np.all(np.isnan(v.true_start_s[~a]))
        assert np.all(v.true_start_s[a] >= 0) and np.all(v.true_end_s[a] <= video_s)
        assert np.all(v.true_end_s[a] > v.true_start_s[a])


def test_alignable_fraction(corpus):
    frac = np.concatenate([v.alignable for v in corpus]).mean()
    assert abs(frac - WorldParams().alignable_fraction) <= 0.1
    low = make_corpus(4, 7, WorldParams(alignable_fraction=0.1))
    assert abs(np.concatenate([v.alignable for v in low]).mean() - 0.1) <= 0.1


@pytest.mark.parametrize("truth", ["step", "moment"])
def test_the_shown_span_is_the_step_that_holds_the_truth(truth, corpus):
    """shown_* is the step whose frames show the caption's concept: the truth itself when the
    truth is the step, a longer span around it when the truth is the sentence's moment; and the
    frames inside it are closer to the caption's step concept than those outside."""
    videos = corpus if truth == "step" else make_corpus(6, 7, WorldParams(truth="moment", step_s=(20, 60)))
    longer = 0
    for v in videos:
        a = v.alignable
        assert np.all(np.isnan(v.shown_start_s[~a])) and np.all(np.isnan(v.shown_end_s[~a]))
        assert np.all(v.shown_start_s[a] <= v.true_start_s[a]) and np.all(v.shown_end_s[a] >= v.true_end_s[a])
        if truth == "step":
            np.testing.assert_array_equal(v.shown_start_s[a], v.true_start_s[a])
            np.testing.assert_array_equal(v.shown_end_s[a], v.true_end_s[a])
        longer += int(np.sum(v.shown_end_s[a] - v.shown_start_s[a] > v.true_end_s[a] - v.true_start_s[a] + 1))
        t = (np.arange(v.frames.shape[0]) + 0.5) / v.fps
        j = int(np.flatnonzero(a)[0])
        inside = (t >= v.shown_start_s[j]) & (t < v.shown_end_s[j])
        cos = v.frames @ v.caption_emb[j] / np.linalg.norm(v.frames, axis=1) / np.linalg.norm(v.caption_emb[j])
        assert cos[inside].mean() > cos[~inside].mean()
    assert (longer > 0) == (truth == "moment")
