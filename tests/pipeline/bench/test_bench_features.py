"""``nccurate bench throughput --mode features`` on a handful of videos: it runs end to end, times
the bare work in every round beside the whole runs, and prints ratios that parse."""

import re

import pytest


@pytest.mark.slow
def test_feature_bench_prints_the_efficiency_of_interleaved_rounds():
    from pipeline.bench.features import bench_throughput_features
    from pipeline.config import load_config

    text = bench_throughput_features(load_config(None, []), n_videos=6, rounds=1)
    assert "| every stage back to back (the bare per-video work; median of 2, interleaved) |" in text
    eff = re.search(r"end to end = (\d+\.\d+) \((\d+\.\d+) without checkpoints; (\d+\.\d+) for the first run", text)
    assert eff and all(0.0 < float(x) < 5.0 for x in eff.groups())
    ratio = re.search(r"ratio (\d+\.\d+) \((\d+\.\d+) without the once-a-run estimate\)", text)
    assert ratio and 0.0 < float(ratio.group(2)) <= float(ratio.group(1))
    assert re.search(r"kept \d+ of \d+ captions", text)
