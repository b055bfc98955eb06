"""Progress of a run (``pipeline.progress``): the line text and ETA math, when a line is written
on a terminal and in a log, the poller of result checkpoints, and ``nccurate run``'s stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

from pipeline.outputs.checkpoint import result_file, save_result
from pipeline.progress import (
    DONE,
    STOPPED,
    Progress,
    ResultPoller,
    StreamProgress,
    eta_s,
    format_duration,
    format_progress,
    plain_line_due,
    rate_per_s,
)
from tests import helpers

# ----------------------------------------------------------------------------- pure functions


def test_rate_and_eta_count_only_this_attempts_videos():
    assert rate_per_s(10, 5.0) == 2.0
    assert eta_s(10, 30, 5.0) == 10.0                  # 20 left at 2/s
    assert rate_per_s(50, 5.0, resumed=40) == 2.0      # the 40 restored videos took no time
    assert eta_s(50, 60, 5.0, resumed=40) == 5.0
    assert rate_per_s(0, 5.0) is None and eta_s(0, 10, 5.0) is None
    assert rate_per_s(40, 5.0, resumed=40) is None     # nothing done yet in this attempt
    assert rate_per_s(3, 0.0) is None
    assert eta_s(12, 10, 4.0) == 0.0                   # never negative


@pytest.mark.parametrize("seconds, text", [(None, "?"), (0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (185, "3m05s"),
                                           (7380, "2h03m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_line_names_done_total_failed_rate_eta():
    line = format_progress(120, 500, 3, 10.0)
    assert line == "progress: 120/500 videos (24%), 3 failed, 12.0 videos/s, ETA 32s"
    assert format_progress(0, 500, 0, 1.0) == "progress: 0/500 videos (0%), 0 failed, ? videos/s, ETA ?"
    resumed = format_progress(60, 100, 1, 10.0, resumed=40)
    assert resumed == "progress: 60/100 videos (60%), 1 failed, 2.0 videos/s, ETA 20s, 40 resumed"


def test_final_and_stopped_lines_give_the_elapsed_time():
    assert format_progress(500, 500, 3, 61.0, state=DONE) == \
        "progress: 500/500 videos (100%), 3 failed, 8.2 videos/s, done in 1m01s"
    assert format_progress(7, 500, 0, 3.5, state=STOPPED).endswith("0 failed, 2.0 videos/s, stopped after 4s")
    assert format_progress(0, 0, 0, 1.0, state=DONE).startswith("progress: 0/0 videos (100%)")


def test_without_checkpoints_the_start_line_says_there_is_no_live_progress():
    line = format_progress(0, 500, 0, 0.0, live=False)
    assert "500 videos" in line and "checkpoints: true" in line
    assert format_progress(500, 500, 2, 50.0, state=DONE, live=False).startswith("progress: 500/500 videos")


def test_plain_lines_wait_for_the_interval_then_a_step_of_progress_or_the_heartbeat():
    due = dict(total=1000, interval_s=10.0, step=0.05, heartbeat_s=300.0)
    assert not plain_line_due(9.9, 0.0, 900, 0, **due)          # too soon, whatever the progress
    assert plain_line_due(10.0, 0.0, 50, 0, **due)              # 5 % more after 10 s
    assert not plain_line_due(60.0, 0.0, 49, 0, **due)          # less than 5 %, no heartbeat yet
    assert plain_line_due(300.0, 0.0, 0, 0, **due)              # heartbeat
    assert plain_line_due(10.0, 0.0, 1, 0, total=4, interval_s=10.0, step=0.05, heartbeat_s=300.0)  # >= 1 video


# ----------------------------------------------------------------------------- rendering


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def snap(done, total=100, failed=0, elapsed=1.0, **kwargs):
    return Progress(done, total, failed, elapsed, **kwargs)


def test_plain_rendering_writes_whole_lines_at_a_modest_cadence():
    stream, clock = io.StringIO(), Clock()
    render = StreamProgress(stream, tty=False, clock=clock)
    render(snap(0))                                   # the first line always
    for second in range(1, 101):                      # one video a second for 100 s
        clock.now = float(second)
        render(snap(second - 1, elapsed=second))
    render(snap(100, failed=2, elapsed=100.0, state=DONE))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 2 < len(lines) <= 2 + 100 / 10            # at most one line per 10 s, plus first and last
    assert lines[-1].startswith("progress: 100/100 videos (100%), 2 failed")


def test_tty_rendering_rewrites_one_line_at_most_four_times_a_second():
    stream, clock = io.StringIO(), Clock()
    render = StreamProgress(stream, tty=True, clock=clock)
    for i in range(100):                              # 100 snapshots in 1 s
        clock.now = i / 100
        render(snap(i, elapsed=clock.now + 0.01))
    render(snap(100, elapsed=1.0, state=DONE))
    text = stream.getvalue()
    assert 3 <= text.count("\r") <= 6 and text.count("\n") == 1 and text.endswith("\n")
    previous, last = text.split("\r")[-2:]
    assert last.startswith("progress: 100/100 videos") and len(last) > len(previous)  # padded over the old line


# ----------------------------------------------------------------------------- the poller


def write_result(output: str, video_id: str, failed: bool) -> None:
    """A result checkpoint as ``Realign`` writes it (``pipeline.outputs.checkpoint.save_result``)."""
    from curation.records import Failure
    from pipeline.results import IndexRow, Outcome, VideoResult

    row = IndexRow(video_id, 0, "now take the red circle", 0.0, 1.0, None, None, None, None, None, None, None,
                   0.0, not failed, "video_failed" if failed else None, None, None)
    samples = () if failed else ({"__key__": f"{video_id}_00000", "npy": b"\x93NUMPY" + bytes(200), "txt": b"x"},)
    failures = (Failure(video_id, "features", "missing_file", "m"),) if failed else ()
    outcome = Outcome(not failed, 1, int(not failed), (("video_failed", 1),) if failed else ())
    save_result(output, VideoResult(video_id, (row,), samples, failures, outcome))


def test_poller_counts_results_and_failures_and_resumed(tmp_path):
    out = str(tmp_path)
    write_result(out, "a", failed=False)
    write_result(out, "b", failed=True)               # left by an earlier attempt
    seen, clock = [], Clock()
    poller = ResultPoller(os.path.dirname(result_file(out, "a")), 5, seen.append, poll_s=60, clock=clock)
    poller.start()                                    # the thread waits 60 s: the polls below are by hand
    assert (seen[0].done, seen[0].resumed, seen[0].total) == (2, 2, 5) and "2 resumed" in seen[0].line()
    assert poller.poll().failed == 1                  # outcomes are read by the polls
    write_result(out, "c", failed=True)
    write_result(out, "d", failed=False)
    with open(result_file(out, "e") + ".tmp-123", "wb"):  # a checkpoint being written is not counted
        pass
    clock.now = 2.0
    now = poller.poll()
    assert (now.done, now.failed, now.resumed, now.elapsed_s) == (4, 2, 2, 2.0)
    assert now.line() == "progress: 4/5 videos (80%), 2 failed, 1.0 videos/s, ETA 1s, 2 resumed"
    poller.stop()
    assert (seen[-1].state, seen[-1].done, seen[-1].failed) == (STOPPED, 4, 2) and len(seen) == 2


def test_a_large_resume_reads_outcomes_over_several_polls(tmp_path):
    out = str(tmp_path)
    for i in range(3):
        write_result(out, f"v{i}", failed=True)
    poller = ResultPoller(os.path.dirname(result_file(out, "v0")), 10, lambda _: None, poll_s=60, read_budget_s=0.0)
    poller.start()
    assert [(p.done, p.failed) for p in (poller.poll(), poller.poll(), poller.poll(), poller.poll())] == \
        [(3, 1), (3, 2), (3, 3), (3, 3)]
    poller.stop()


def test_poller_thread_reports_while_running_and_never_after_stop(tmp_path):
    out = str(tmp_path)
    seen = []
    poller = ResultPoller(os.path.dirname(result_file(out, "a")), 3, seen.append, poll_s=0.01)
    poller.start()
    for video_id in ("a", "b"):
        write_result(out, video_id, failed=video_id == "b")
    deadline = time.monotonic() + 5
    while not any(s.done == 2 for s in seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(s.done == 2 and s.failed == 1 for s in seen)
    summary = {"videos_in": 3, "videos_failed": 2, "resumed": {"videos": 0}}
    poller.stop(summary)
    final = seen[-1]
    assert (final.done, final.total, final.failed, final.state) == (3, 3, 2, DONE)  # the summary's counts
    n = len(seen)
    time.sleep(0.05)
    assert len(seen) == n and not any(s.state != "running" for s in seen[:-1])


def test_without_checkpoints_only_a_start_and_an_end(tmp_path):
    seen = []
    poller = ResultPoller(None, 4, seen.append)
    poller.start()
    poller.stop()
    assert [(s.state, s.live) for s in seen] == [("running", False), (STOPPED, False)]


def test_run_stops_the_poller_when_the_pipeline_fails(tmp_path, monkeypatch):
    import threading

    from pipeline.config import load_config
    from pipeline.run import run
    from pipeline.synth.feature_corpus import write_corpus

    class Broken(Exception):
        pass

    def broken_graph(*_, **__):
        raise Broken

    monkeypatch.setattr("pipeline.transforms.graph.build_graph", broken_graph)
    manifest, _ = write_corpus(str(tmp_path / "in"), helpers.small_corpus(2, 0))
    seen = []
    with pytest.raises(Broken):
        run(manifest, str(tmp_path / "out"), load_config(None), progress=seen.append)
    assert [(s.state, s.done, s.total) for s in seen] == [("running", 0, 2), (STOPPED, 0, 2)]
    assert not any(t.name == "nccurate-progress" for t in threading.enumerate())


# ----------------------------------------------------------------------------- nccurate run


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four good feature-mode videos, one whose features are missing (a failed video with a
    result checkpoint) and one with an invalid id (failed in the manifest stage: no checkpoint)."""
    from pipeline.synth.feature_corpus import write_corpus

    path, _ = write_corpus(str(tmp_path_factory.mktemp("progress_in")), helpers.small_corpus(4, 5))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"video_id": "gone", "features": "data/gone.npy", "fps": 1, "captions": "data/gone.json",
                                 "caption_features": "data/gone.text.npy"}) + "\n")
        handle.write(json.dumps({"video_id": "bad/id", "features": "x.npy", "fps": 1, "captions": "x.json"}) + "\n")
    return path


def nccurate_run(manifest: str, output: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline.cli", "run", "--manifest", manifest, "--output", output,
               "--set", "max_failure_ratio=1.0", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))


def test_run_prints_plain_progress_lines_to_a_log(manifest, tmp_path):
    done = nccurate_run(manifest, str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["videos_in"], summary["videos_failed"]) == (6, 2)
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress:")]
    assert "\r" not in done.stderr and len(lines) >= 2, done.stderr
    assert lines[0].startswith("progress: 0/6 videos")
    assert lines[-1].startswith(f"progress: 6/6 videos (100%), {summary['videos_failed']} failed, ")
    assert "done in" in lines[-1]
    assert done.stdout.startswith("videos: 4 ok, 2 failed of 6")     # the summary line, after the progress


def test_quiet_run_prints_no_progress(manifest, tmp_path):
    done = nccurate_run(manifest, str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "progress:" not in done.stderr and "videos: 4 ok" in done.stdout
