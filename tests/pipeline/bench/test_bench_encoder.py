"""``nccurate bench throughput --mode encoder`` on the tiny model: a row per precision and thread
count with a rate, a ratio and the closeness to fp32 (a benchmark: the rates are not asserted),
the fp32 rows at ratio 1 and cosine 1, and bf16 timed exactly where the CPU has bf16 units."""

from __future__ import annotations

import re

import numpy as np

from pipeline.bench.encoder import bench_frames, bench_throughput_encoder


def test_frames_are_seeded_blocks():
    frames = bench_frames(3, 20, seed=4)
    assert frames.shape == (3, 20, 20, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, bench_frames(3, 20, seed=4))
    assert not np.array_equal(frames, bench_frames(3, 20, seed=5))
    np.testing.assert_array_equal(frames[:, :8, :8], np.broadcast_to(frames[:, :1, :1], (3, 8, 8, 3)))
    assert len(np.unique(frames[0, ::8, ::8, 0])) > 1


def test_report_rows_per_precision_and_threads(monkeypatch):
    import os

    import torch

    import models.encoder as encoder_module

    threads = torch.get_num_threads()
    for has_bf16 in (True, False):
        monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: has_bf16)
        text = bench_throughput_encoder("nccurate-tiny", batch=8, rounds=2, log=lambda _: None)
        rows = re.findall(r"^\| (fp32|bf16) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \|$", text, re.M)
        cores = sorted({1, os.cpu_count() or 1})
        want = [(p, str(t)) for t in cores for p in (("fp32", "bf16") if has_bf16 else ("fp32",))]
        assert [(r[0], r[1]) for r in rows] == want, text
        for precision, _, rate, ratio, cos_frames, cos_texts in rows:
            assert float(rate) > 0
            if precision == "fp32":
                assert (ratio, cos_frames, cos_texts) == ("1.00", "1.00000", "1.00000")
            else:
                assert float(cos_frames) >= 0.999 and float(cos_texts) >= 0.999
        assert ("no bf16 units" in text) is (not has_bf16)
    assert torch.get_num_threads() == threads
