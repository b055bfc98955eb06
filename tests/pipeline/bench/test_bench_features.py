"""``nccurate bench throughput --mode features`` on a small corpus: it runs both pipelines and
prints every stage, the bare per-video work and the efficiency (a benchmark: the rates are not
asserted, only that they exist and add up)."""

from __future__ import annotations

import re


def test_bench_prints_every_stage_the_bare_work_and_the_efficiency():
    from pipeline.bench.features import bench_throughput_features
    from pipeline.config import load_config

    text = bench_throughput_features(load_config(), n_videos=12)
    rates = dict(re.findall(r"^\| (.+?) \| (\d+\.\d) \|$", text, flags=re.M))
    stages = ["load features (.npy)", "parse captions + caption features",
              "calibration pass (evidence, decoys; the run-level estimate once)",
              "realign (posterior: similarity, evidence or OT, spans, rows)", "build shard samples",
              "write shard tars", "write index parquet"]
    assert all(float(rates[s]) > 0 for s in stages), rates
    # the bare work is the stages back to back: its time is the sum of theirs (to rounding)
    bare_s = sum(1.0 / float(rates[s]) for s in stages)
    assert abs(1.0 / float(rates["every stage back to back (the bare per-video work)"]) - bare_s) < 0.05 * bare_s
    e2e = float(rates["whole pipeline, DirectRunner (defaults), checkpoints on"])
    e2e_off = float(rates["whole pipeline, --set checkpoints=false"])
    cold = float(rates["whole pipeline, the first run in this process (checkpoints on)"])
    efficiency = re.search(r"pipeline efficiency = bare per-video work / end to end = (\d+\.\d\d) \((\d+\.\d\d) "
                           r"without checkpoints; (\d+\.\d\d) for the first run in a fresh process\)", text)
    assert efficiency, text
    for got, rate in zip(efficiency.groups(), (e2e, e2e_off, cold)):
        assert abs(float(got) - rate * bare_s) < 0.02 + 0.05 * rate * bare_s
    assert "medians of 2 interleaved runs each" in text
    assert re.search(r"kept \d+ of \d+ captions", text)
