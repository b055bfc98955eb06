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
