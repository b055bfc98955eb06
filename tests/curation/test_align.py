"""Tests for curation.align: the method switchboard on the synthetic world."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from curation import align, similarity, spans, timeline
from curation.align import METHODS, AlignParams, align_video
from curation.synth.features import make_corpus


def _s2dtw_available() -> bool:
    try:
        import curation.s2dtw  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(6, 0)


def _run(v, params, prompt_value=None):
    return align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, prompt_value)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_outputs_valid_scores(corpus, method):
    if method == "s2dtw" and not _s2dtw_available():
        pytest.skip("curation.s2dtw cannot be imported")
    params = AlignParams(method=method)
    for v in corpus[:3]:
        m, video_s = len(v.texts), v.frames.shape[0] / v.fps
        res = _run(v, params)
        assert (res.shown_at_centre is None) == (method != "posterior")  # only posterior has a segment model
        for field in (f for f in res if f is not None):
            assert field.shape == (m,) and np.all(np.isfinite(field))
        assert np.all(res.start_s <= res.end_s)
        assert np.all(res.start_s >= 0.0) and np.all(res.end_s <= video_s + 1e-9)
        for field in (res.alignability, res.bucket_mass, res.concentration, res.shown_at_centre):
            if field is None:
                continue
            assert np.all((field >= 0.0) & (field <= 1.0 + 1e-12))
        assert np.all(np.abs(res.similarity) <= 1.0 + 1e-9)
        # span keeps the ASR duration (at least min_span_s)
        dur = np.minimum(np.maximum(v.asr_end_s - v.asr_start_s, params.min_span_s), video_s)
        np.testing.assert_allclose(res.end_s - res.start_s, dur, atol=1e-9)


def test_alignable_captions_score_higher_than_chatter(corpus):
    params = AlignParams()
    al, ch = [], []
    for v in corpus:
        res = _run(v, params)
        al.append(res.alignability[v.alignable])
        ch.append(res.alignability[~v.alignable])
    assert np.concatenate(al).mean() > np.concatenate(ch).mean() + 0.05


def test_deterministic(corpus):
    v = corpus[1]
    a, b = _run(v, AlignParams()), _run(v, AlignParams())
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("field,value", [("method", "dtw"), ("prompt_mode", "global")])
def test_params_reject_unknown_choices(field, value):
    with pytest.raises(ValueError, match=f"align.{field}") as err:
        AlignParams(**{field: value})
    assert repr(value) in str(err.value)


def test_run_mode_needs_and_uses_run_value(corpus):
    v = corpus[2]
    with pytest.raises(ValueError):
        _run(v, AlignParams(method="norton", prompt_mode="run"))
    run = _run(v, AlignParams(method="norton", prompt_mode="run"), prompt_value=0.45)
    fixed = _run(v, AlignParams(method="norton", prompt_mode="fixed", prompt_value=0.45))
    for x, y in zip(run, fixed):
        np.testing.assert_array_equal(x, y)


def test_fixed_mode_uses_params_prompt_value(corpus):
    v = corpus[0]
    masses = [_run(v, AlignParams(method="norton", prompt_mode="fixed", prompt_value=p), prompt_value=0.99).bucket_mass.mean()
              for p in (0.2, 0.4, 0.6, 0.8)]
    # a more attractive bucket absorbs more mass; the run-level value is ignored in fixed mode
    assert np.all(np.diff(masses) > 0.01), masses


def test_video_mode_is_quantile_of_paired_similarity(corpus):
    v = corpus[3]
    params = AlignParams(method="norton", prompt_quantile=0.4)
    sim = align.prepared_similarity(v.caption_emb, v.frames, params, v.fps)
    p = float(np.quantile(timeline.paired_similarity(sim, v.asr_start_s, v.asr_end_s, v.fps), 0.4))
    fixed = _run(v, dataclasses.replace(params, prompt_mode="fixed", prompt_value=p))
    for x, y in zip(_run(v, params), fixed):
        if x is None or y is None:
            assert x is y
            continue
        np.testing.assert_allclose(x, y, atol=1e-12)


def test_asr_method_keeps_asr_spans(corpus):
    v = corpus[4]
    res = _run(v, AlignParams(method="asr", min_span_s=0.0))
    np.testing.assert_allclose(res.start_s, v.asr_start_s, atol=1e-9)
    np.testing.assert_allclose(res.end_s, v.asr_end_s, atol=1e-9)
    np.testing.assert_array_equal(res.bucket_mass, 0.0)


def test_smoothing_window_is_in_seconds():
    # caption == frame 20 exactly, orthogonal to every other frame: raw cosine is an impulse.
    fps, t, smooth_s = 2.0, 40, 8.0
    frames = np.zeros((t, 2))
    frames[:, 1] = 1.0
    frames[20] = [1.0, 0.0]
    caption = np.array([[1.0, 0.0]])
    params = AlignParams(ncl=False, minmax=False, smooth_s=smooth_s)
    got = align.prepared_similarity(caption, frames, params, fps)
    # the mean over smooth_s seconds = smooth_s * fps = 16 frames around frame 20
    expected = spans.temporal_mean(similarity.cosine_similarity(caption, frames), smooth_s, fps)
    assert abs(expected[0, 20] - 1.0 / (smooth_s * fps)) < 1e-12
    centre = timeline.frame_centres_s(t, fps)[20]
    res = align_video(caption, frames, np.array([centre - 0.05]), np.array([centre + 0.05]), fps,
                      dataclasses.replace(params, method="asr", min_span_s=0.1))
    assert abs(got[0, 20] - 1.0 / (smooth_s * fps)) < 1e-12
    assert abs(res.alignability[0] - 1.0 / (smooth_s * fps)) < 1e-12, (got[0, 20], res.alignability)


def test_relative_ncl_temperature_does_not_depend_on_the_cosine_band():
    """With ``ncl_relative`` the prepared similarity of a squeezed, shifted cosine matrix (a
    CLIP's narrow band) is that of the original; the absolute temperature's is not."""
    rng = np.random.default_rng(0)
    cos = rng.normal(0.0, 0.1, (12, 90))
    rel = AlignParams(method="norton", ncl_relative=True, ncl_temperature=1.0)
    np.testing.assert_allclose(align.prepare(0.2 * cos + 0.7, rel, 1.0), align.prepare(cos, rel, 1.0), atol=1e-9)
    absolute = AlignParams(method="norton", ncl_relative=False, ncl_temperature=0.05)
    assert np.abs(align.prepare(0.2 * cos + 0.7, absolute, 1.0) - align.prepare(cos, absolute, 1.0)).max() > 1e-3


def test_posterior_needs_a_window():
    with pytest.raises(ValueError, match="align.window_s"):
        AlignParams(method="posterior", window_s=None)


def test_posterior_improves_on_asr_times_and_ranks_alignable_captions_first(corpus):
    """On the project's world, with the run calibrated over the corpus as a pipeline run does."""
    from curation.evaluate import EvalVideo, score_method

    videos = [EvalVideo.of_synth(v) for v in corpus]
    new = score_method("posterior", videos, AlignParams())
    asr = score_method("asr", videos, AlignParams(method="asr"))
    assert new.r_at_1 > asr.r_at_1 + 10 and new.auc > 75


def test_score_method_measures_the_weight_against_alignable_and_hit(corpus):
    """The weight fields of score_method recomputed by hand from align_video's outputs."""
    from curation.evaluate import EvalVideo, evidence_of, run_calibration, score_method
    from curation.metrics import brier_score, expected_calibration_error, hits
    from curation.spans import confidence_weight, shown_weight

    videos = [EvalVideo.of_synth(v) for v in corpus]
    params = AlignParams()
    got = score_method("posterior", videos, params)
    assert params.weight == "shown"
    evidence = evidence_of(videos, params)
    calib = run_calibration(videos, params, evidence)
    results = [align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, None, calib, e)
               for v, e in zip(videos, evidence)]
    a = np.concatenate([r.alignability for r in results])
    kept = a >= params.min_alignability
    weight = shown_weight(a, np.concatenate([r.shown_at_centre for r in results]), kept)
    legacy = confidence_weight(a, np.concatenate([r.concentration for r in results]), kept)
    hit = np.concatenate([hits((r.start_s + r.end_s) / 2, v.true_start_s, v.true_end_s, v.alignable.astype(bool))
                          for r, v in zip(results, videos)])
    assert got.weight_ece == expected_calibration_error(weight[kept], hit[kept])
    assert got.weight_brier == brier_score(weight[kept], hit[kept])
    assert got.legacy_ece == expected_calibration_error(legacy[kept], hit[kept])
    assert got.legacy_brier == brier_score(legacy[kept], hit[kept])
    assert got.weight_ece_all == expected_calibration_error(weight, hit)
    assert got.hit_share == 100.0 * hit[kept].mean() and 0 < got.hit_share < 100
    assert got.weight_mean == 100.0 * weight[kept].mean()
    # the truth of this world is the step that shows a caption: the shown event is the hit event
    assert (got.shown_ece, got.shown_brier, got.shown_share) == (got.weight_ece, got.weight_brier, got.hit_share)


def test_score_method_measures_the_weight_against_the_shown_step_where_the_truth_is_a_moment():
    """Where the truth is the sentence's moment inside a step, the shown event ("alignable and the
    centre inside the step") is recomputed by hand and differs from the hit event."""
    from curation.evaluate import EvalVideo, evidence_of, run_calibration, score_method
    from curation.metrics import brier_score, expected_calibration_error, hits
    from curation.spans import caption_weight
    from curation.synth.features import WorldParams, make_corpus

    videos = [EvalVideo.of_synth(v) for v in make_corpus(30, 4, WorldParams(truth="moment", step_s=(20, 60)))]
    params = AlignParams()
    got = score_method("posterior", videos, params)
    evidence = evidence_of(videos, params)
    calib = run_calibration(videos, params, evidence)
    results = [align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, None, calib, e)
               for v, e in zip(videos, evidence)]
    kept = np.concatenate([r.alignability for r in results]) >= params.min_alignability
    weight = np.where(kept, np.concatenate([caption_weight(r, np.ones(len(r.start_s), bool)) for r in results]), 0.0)
    shown = np.concatenate([hits((r.start_s + r.end_s) / 2, v.shown_start_s, v.shown_end_s, v.alignable)
                            for r, v in zip(results, videos)])
    assert got.shown_ece == expected_calibration_error(weight[kept], shown[kept])
    assert got.shown_brier == brier_score(weight[kept], shown[kept])
    assert got.shown_share == 100.0 * shown[kept].mean() > got.hit_share + 20


def test_the_ceiling_keeps_asr_plus_bias_inside_the_step_and_clips_to_it_outside():
    """ceiling_centre_s: an alignable caption whose shifted ASR centre lies in its step keeps it,
    one outside goes to the nearest position whose span fits the step, a step shorter than the
    span gives its centre, and a chatter caption keeps its ASR centre."""
    from curation.evaluate import EvalVideo, ceiling_centre_s, ceiling_score

    nan = np.nan
    asr_start = np.array([100.0, 10.0, 300.0, 50.0])
    asr_end = asr_start + 4.0
    video = EvalVideo(None, None, 1.0, asr_start, asr_end, np.array([True, True, True, False]),
                      np.array([103.0, 40.0, 200.0, nan]), np.array([106.0, 44.0, 202.0, nan]),
                      np.array([80.0, 30.0, 199.0, nan]), np.array([160.0, 90.0, 203.0, nan]))
    centre = ceiling_centre_s(video, bias_s=2.5)
    np.testing.assert_allclose(centre, [104.5, 32.0, 201.0, 52.0])
    score = ceiling_score([video])
    # the corpus's median true-minus-ASR offset is 2.5 s here (2.5, 30, -101): caption 0 hits
    # (104.5 in [103, 106]), caption 1 misses (32 not in [40, 44]), caption 2 hits (201 in [200, 202])
    assert score.r_at_1 == pytest.approx(100.0 * 2 / 3) and np.isnan(score.auc)
