"""Pieces of ``nccurate bench train`` that run without training (the command itself is a benchmark)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.train import report, step_frames


def test_step_frames_spread_over_the_span():
    frames = np.arange(100)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # frame t holds value t
    picked = step_frames(frames, 10.0, 30.0, 4)
    assert picked[:, 0, 0, 0].tolist() == [12, 17, 22, 27]
    assert step_frames(frames, 98.0, 104.0, 2)[:, 0, 0, 0].tolist() == [99, 99]  # clamped to the last frame


def _kept(pairs, precision, on_correct=0.9, ess=0.8):
    from pipeline.bench.train import KeptSet

    return KeptSet(pairs, 100, precision, on_correct, ess)


def test_report_states_every_condition_and_paired_margins_per_seed():
    r1 = {"a": [10.0, 12.0], "b": [40.0, 30.0], "c": [45.0, 28.0], "d": [50.0, 33.0], "e": [20.0, 25.0]}
    results = {k: [{"r_at_1": x, "r_at_5": x + 20} for x in v] for k, v in r1.items()}
    kept = {"asr": _kept(100, 0.1), "strict": _kept(40, 0.85), "permissive": _kept(70, 0.5, 0.7, 0.6)}
    text = report("demo", results, kept)
    assert "| (c) hard filter (default) + weights | 40 | 85% | 90% | 80% | 36.5 ± 12.0 |" in text
    assert "| (e) permissive filter (min_alignability 0), weight 1 | 70 | 50% | - | 100% | 22.5 ± 3.5 |" in text
    assert "- (c) - (b): R@1 +1.5 ± 4.9 (per seed +5.0, -2.0; better in 1 of 2 seeds)" in text
    assert "- (d) - (e): R@1 +19.0 ± 15.6 (per seed +30.0, +8.0; better in 2 of 2 seeds)" in text
    assert "- (b) - (a): R@1 +24.0" in text and "world demo: 100 training captions" in text


def test_score_kept_counts_hits_against_the_truth_and_refuses_a_mismatched_caption():
    from pipeline.bench.train import score_kept

    truth = {"v": [[1, 10.0, 20.0, "cut the onion"], [0, -1.0, -1.0, "hello"], [1, 30.0, 40.0, "stir"]]}

    def row(i, start, end, weight, kept=True, text=None):
        return {"video_id": "v", "caption_idx": i, "text": text or truth["v"][i][3], "start": start, "end": end,
                "weight": weight, "kept": kept}

    rows = [row(0, 12.0, 16.0, 0.8), row(1, 0.0, 4.0, 0.2), row(2, 50.0, 54.0, 0.5), row(2, 0, 1, 1.0, kept=False)]
    k = score_kept(rows, truth)
    assert (k.pairs, k.captions) == (3, 4)
    assert k.precision == pytest.approx(1 / 3)          # only caption 0 is alignable with its centre in the step
    assert k.weight_on_correct == pytest.approx(0.8 / 1.5)
    assert k.ess_fraction == pytest.approx(1.5 ** 2 / (0.64 + 0.04 + 0.25) / 3)
    with pytest.raises(ValueError, match="caption 0"):
        score_kept([row(0, 12.0, 16.0, 0.8, text="something else")], truth)


def test_demo_frames_through_h264_are_the_rendered_samples(tmp_path):
    """The H.264 check of the demo encoder: the same samples as models.train_demo.demo_frames
    (same grid, same resize/crop), up to the compression."""
    from curation.synth.video import make_video_plan
    from models.train_demo import demo_frames
    from pipeline.bench.train import demo_frames_h264

    plan = make_video_plan(0, 0)
    rendered = demo_frames(plan).astype(int)
    for backend in ("pyav", "decord"):
        decoded = demo_frames_h264(plan, str(tmp_path), backend).astype(int)
        assert decoded.shape == rendered.shape, backend
        err = np.abs(decoded - rendered).mean(axis=(1, 2, 3))
        assert err.max() < 6, (backend, err.max())
        # a one-sample shift of the grid would show: neighbours differ far more than the codec's error
        assert np.abs(decoded[1:] - rendered[:-1]).mean() > 2 * err.mean(), backend


def test_evaluate_demo_h264_scores_the_shipped_encoder_on_decoded_files():
    from models.train_demo import DEFAULT_OUT
    from pipeline.bench.train import evaluate_demo_h264

    result = evaluate_demo_h264(DEFAULT_OUT, "pyav", n_videos=1, verbose=False)
    assert result["frames"] == "h264/pyav" and result["videos"] == 1
    assert 0.0 <= result["r_at_1"] <= 100.0 and result["auc"] > 50.0
