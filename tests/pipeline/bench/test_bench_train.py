"""Pieces of ``nccurate bench train`` that run without training (the command itself is a benchmark)."""

from __future__ import annotations

import numpy as np

from models.train import Pairs, TrainConfig
from pipeline.bench.train import report, step_frames


def test_step_frames_spread_over_the_span():
    frames = np.arange(100)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # frame t holds value t
    picked = step_frames(frames, 10.0, 30.0, 4)
    assert picked[:, 0, 0, 0].tolist() == [12, 17, 22, 27]
    assert step_frames(frames, 98.0, 104.0, 2)[:, 0, 0, 0].tolist() == [99, 99]  # clamped to the last frame


def test_report_states_margins_per_seed():
    results = {"a": [{"r_at_1": 10.0, "r_at_5": 30.0}, {"r_at_1": 12.0, "r_at_5": 32.0}],
               "b": [{"r_at_1": 40.0, "r_at_5": 70.0}, {"r_at_1": 30.0, "r_at_5": 60.0}],
               "c": [{"r_at_1": 45.0, "r_at_5": 71.0}, {"r_at_1": 28.0, "r_at_5": 61.0}]}
    held = Pairs(np.zeros((3, 1, 1, 1, 3), np.uint8), ["x", "y", "z"], np.ones(3, np.float32), ["v1", "v1", "v2"])
    text = report(results, {}, 100, 40, held, (0, 1), TrainConfig(steps=10), 8)
    assert "| (c) realigned + filtered + confidence weights | 40 | 36.5 ± 12.0 |" in text
    assert "(c) - (b): R@1 +1.5 (per seed +5.0, -2.0; better in 1 of 2 seeds)" in text
    assert "(b) - (a): R@1 +24.0" in text and "3 captions of 2 other videos" in text


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
