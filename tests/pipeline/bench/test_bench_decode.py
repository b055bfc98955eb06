"""``nccurate bench throughput --mode decode`` on a tiny B-frame video: one row per group length
and variant, the reference at ratio 1, the default's packets counted, and the picks of all
nccurate variants identical (a benchmark: the rates are not asserted)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.bench.decode import DigestSink, bench_throughput_decode


def test_digest_sink_hashes_frames_in_order():
    a, b = DigestSink(), DigestSink()
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    a.add(frames)
    b.add(frames[:1])
    b.add(frames[1:])
    assert a.digest.hexdigest() == b.digest.hexdigest() and a.count == b.count == 2
    b.add(frames[:1])
    assert a.digest.hexdigest() != b.digest.hexdigest()
    with pytest.raises(RuntimeError):
        b.keep_first(0)


def test_report_rows_and_identical_picks(tmp_path):
    from pipeline.config import load_config

    text = bench_throughput_decode(load_config(None, ["model.name=nccurate-tiny"]), str(tmp_path), duration_s=6.0,
                                   width=64, height=48, fps=8.0, rounds=1, gops_s=(2.0, 1.0), log=lambda _: None)
    rows = re.findall(r"^\| ([\d.]+) s \| ([a-zA-Z .:()]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| (.*) \|$", text, re.M)
    assert [(r[0], r[1]) for r in rows] == [(g, v) for g in ("2", "1") for v in
                                            ("plain PyAV", "sequential pass", "group tails skipped", "default",
                                             "approximate (decode.exact: false)")]
    assert all(r[4] == "1.00" for r in rows if r[1] == "plain PyAV")
    for r in rows:
        if r[1] == "default":
            done, total = map(int, re.fullmatch(r"(\d+) of (\d+)", r[5]).groups())
            assert total == 48 and 0 < done < total
    notes = re.findall(r"6 samples, picks identical to the sequential pass pixel for pixel: (\w+); (\d+) unreferenced "
                       r"pictures left out; approximate: (\d+)% of samples on another frame, PTS error mean ([\d.]+) ms, "
                       r"max ([\d.]+) ms", text)
    assert len(notes) == 2 and all(n[0] == "yes" and int(n[1]) > 0 for n in notes), text
    assert all(float(n[4]) <= 4 / 8 * 1e3 for n in notes)  # within one run of 3 B-frames at 8 fps
