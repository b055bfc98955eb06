"""Pieces of ``nccurate bench memory`` that run in seconds (the command itself is a benchmark):
the /proc sampler, the long video and its captions, the child run's config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from curation.synth.captions import howto_captions
from pipeline.bench.proctree import (
    TreeRssSampler,
    read_proc_table,
    run_measured,
    tree_pids,
    tree_rss,
)
from pipeline.bench.runs import KEEP_ALL, run_command, write_run_config
from pipeline.errors import ArgumentError
from pipeline.synth.long_video import long_video_planes, write_inputs

#: A child that allocates ~60 MB, touches it, says so and sleeps.
_HOLD = "import sys, time; b = bytearray(60 * 10**6); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(30)"


def _hold_child():
    proc = subprocess.Popen([sys.executable, "-c", _HOLD], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_tree_pids_walks_descendants_only():
    table = {1: (0, 10), 2: (1, 20), 3: (2, 30), 4: (1, 40), 5: (0, 50)}
    assert sorted(tree_pids(table, 2)) == [2, 3]
    assert sorted(tree_pids(table, 1)) == [1, 2, 3, 4]
    assert tree_pids(table, 99) == []


def test_sampler_sums_rss_of_a_real_process_tree():
    child = _hold_child()
    try:
        table = read_proc_table()
        assert table[child.pid][0] == os.getpid() and table[child.pid][1] > 60 * 10**6
        rss = tree_rss(os.getpid())  # this test process and its child
        assert rss[child.pid] > 60 * 10**6 and rss[os.getpid()] > 0
        sampler = TreeRssSampler(os.getpid())
        total = sampler.sample()
        assert sampler.timeline[-1][1] == total and total >= rss[child.pid] + 10**6
        assert sampler.peak_hwm_bytes >= 60 * 10**6
        assert "python" in sampler.processes[child.pid]["label"]
    finally:
        child.kill()
        child.wait()


def test_run_measured_sees_a_grandchild(tmp_path):
    script = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_HOLD.replace('30', '1.5')!r}])"
    code, wall_s, sampler = run_measured([sys.executable, "-c", script], str(tmp_path / "log"), interval_s=0.05)
    assert code == 0 and wall_s >= 1.5 and sampler.samples > 5
    assert max(n for _, _, n in sampler.timeline) == 2  # the child and its grandchild
    assert sampler.peak_hwm_bytes > 60 * 10**6 and sampler.peak_tree_bytes > 60 * 10**6


def test_captions_cover_the_duration_in_howto100m_form():
    caps = howto_captions(3600.0)
    start, end = np.array(caps["start"]), np.array(caps["end"])
    assert len(caps["text"]) == len(start) == len(end) == 600
    assert start[0] < 6.0 and end[-1] > 3600.0 - 6.0 and end.max() <= 3600.0
    assert np.all(np.diff(start) > 0) and np.all(end > start)
    assert all(len(t.split()) >= 4 for t in caps["text"])
    assert howto_captions(3600.0) == caps  # deterministic
    assert len(howto_captions(3.0)["text"]) == 1


def test_planes_are_yuv420_frames():
    frames = [f.copy() for f in long_video_planes(2.0, 64, 36, 5)]
    assert len(frames) == 10 and frames[0].shape == (54, 64) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])


def test_inputs_written_once_and_reused(tmp_path):
    import av

    logs = []
    first = write_inputs(str(tmp_path), 4.0, 64, 36, 5, logs.append)
    mtime = os.path.getmtime(first["video"])
    time.sleep(0.01)
    second = write_inputs(str(tmp_path), 4.0, 64, 36, 5, logs.append)
    assert first["generated"] and not second["generated"] and os.path.getmtime(second["video"]) == mtime
    assert second["generation_s"] == first["generation_s"]
    with av.open(first["video"]) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    assert len(packets) == 20 and sum(p.is_keyframe for p in packets) == 2  # a keyframe every 2 s
    row = json.loads(open(first["manifest"], encoding="utf-8").read())
    assert os.path.exists(tmp_path / row["video"]) and os.path.exists(tmp_path / row["captions"])


def test_planes_refuse_odd_sizes_naming_them():
    with pytest.raises(ArgumentError, match="63x36"):
        next(long_video_planes(1.0, 63, 36, 5))


def test_child_config_is_the_config_with_the_bench_settings_on_top(tmp_path):
    from pipeline.config import load_config

    user = load_config(None, ["align.min_alignability=0.7", "clips.size=48"])
    path = str(tmp_path / "child.yaml")
    merged = write_run_config(user, ("model.name=nccurate-tiny", "model.pretrained=null", *KEEP_ALL), path)
    assert load_config(path) == merged  # the child reads back exactly what the bench measures with
    assert merged.align.min_alignability == 0.0 and merged.clips.size == 48 and merged.model.pretrained is None
    cmd = run_command("m.jsonl", "out", path, ["--direct_num_workers=2"])
    assert cmd[1:4] == ["-m", "pipeline.cli", "run"] and cmd[cmd.index("--config") + 1] == path
    assert cmd[-1] == "--direct_num_workers=2" and "--overwrite" in cmd
