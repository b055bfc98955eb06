"""``nccurate bench throughput --mode encoder`` on the tiny model: a row per backend × precision
and thread count with a rate, a ratio and the closeness to torch fp32 (a benchmark: the rates are
not asserted), the baseline rows at ratio 1 and cosine 1, bf16 timed exactly where the CPU has
bf16 units, and a setting whose packages are absent listed as not timed."""

from __future__ import annotations

import os
import re

import pytest

from pipeline.bench.encoder import SETTINGS, bench_throughput_encoder, runnable_settings

ROW = re.compile(r"^\| (\w+) \| (fp32|bf16|int8) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \|$", re.M)


def test_runnable_settings_leave_out_bf16_without_units_and_missing_backends():
    timed, skipped = runnable_settings(False, lambda b: ["openvino"] if b == "openvino" else [])
    assert timed == [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert skipped == ["torch bf16: this CPU has no bf16 units (it would run fp32)",
                       "openvino fp32: openvino not installed",
                       "openvino bf16: this CPU has no bf16 units (it would run fp32)"]
    assert runnable_settings(True, lambda b: [])[0] == list(SETTINGS)


@pytest.mark.slow
@pytest.mark.own_process
def test_report_rows_per_setting_and_threads(monkeypatch):
    import torch

    import models.backends as backends_module
    import models.encoder as encoder_module

    pytest.importorskip("onnxruntime"), pytest.importorskip("onnxscript")
    threads = torch.get_num_threads()
    for has_bf16 in (True, False):
        monkeypatch.setattr(encoder_module, "cpu_has_bf16", lambda: has_bf16)
        monkeypatch.setattr(backends_module, "missing_packages", lambda b: ["openvino"] if b == "openvino" else [])
        text = bench_throughput_encoder("nccurate-tiny", batch=8, rounds=2, log=lambda _: None)
        rows = ROW.findall(text)
        cores = sorted({1, os.cpu_count() or 1})
        want = [(b, p, str(t)) for t in cores for b, p in runnable_settings(has_bf16, backends_module.missing_packages)[0]]
        assert [r[:3] for r in rows] == want, text
        for backend, precision, _, rate, ratio, cos_frames, cos_texts in rows:
            assert float(rate) > 0
            if (backend, precision) == ("torch", "fp32"):
                assert (ratio, cos_frames, cos_texts) == ("1.00", "1.00000", "1.00000")
            else:
                assert float(cos_frames) >= 0.999 and float(cos_texts) >= 0.999
        assert "openvino fp32: openvino not installed" in text
        assert ("no bf16 units" in text) is (not has_bf16)
    assert torch.get_num_threads() == threads
