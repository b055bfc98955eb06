"""Resume after a crash (``pipeline.outputs.checkpoint``): a run killed with SIGKILL, at whatever point,
finishes on the next ``nccurate run`` into the same directory without redoing finished videos,
and its shards, index content, failures and shardindex are byte-identical to an uninterrupted run.

Two kinds of test: real ``SIGKILL`` of a ``nccurate run`` child process in video mode (the kill
points are chosen by watching the checkpoints appear: mid-decode, mid-realign, mid-write), and
deterministic feature-mode crashes, made by keeping a finished run's checkpoints and deleting
a subset of them with the final files (as if the process had died after exactly those videos).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.outputs.checkpoint import load_frames
from pipeline.outputs.layout import WORK, OutputLayout
from pipeline.run import RunError, run
from pipeline.synth.feature_corpus import write_corpus
from tests import helpers
from tests.videos import NORTON_V0, make_video


def work_path(output: str, *parts: str) -> str:
    return OutputLayout(output).work(*parts)

VIDEO_MODEL = (*NORTON_V0, "model.name=nccurate-tiny", "model.pretrained=null", "max_failure_ratio=1.0", "clips.size=48",
               "clips.fps=4", "decode_timeout_s=20", "output.samples_per_shard=8")
FEATURE_OVERRIDES = ("output.samples_per_shard=10", "max_failure_ratio=1.0")


def assert_same_outputs(got, want) -> None:
    """Shards, shardindex (bytes), index rows and failures of two output directories agree."""
    assert [os.path.basename(f) for f in got.shard_files] == [os.path.basename(f) for f in want.shard_files]
    for a, b in zip(got.shard_files, want.shard_files):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), f"shard {os.path.basename(a)} differs"
    assert got.shardindex_bytes == want.shardindex_bytes
    assert got.index_table.equals(want.index_table), "index content differs"
    assert got.failures == want.failures
    for key in ("videos_in", "videos_ok", "videos_failed", "captions_in", "captions_kept", "captions_dropped",
                "samples_written", "failures"):
        assert got.summary[key] == want.summary[key], key


def complete_decodes(output: str) -> set[str]:
    """Ids of the videos whose frames checkpoint is complete (what a resume restores)."""
    directory = work_path(output, "frames")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    ids = {name[:-len(".pts.npz")] for name in names if name.endswith(".pts.npz")}
    return {video_id for video_id in ids if load_frames(output, video_id) is not None}


def _count(output: str, pattern: str) -> int:
    return len(glob.glob(work_path(output, pattern)))


# ------------------------------------------------------------------------------ video mode


@pytest.fixture(scope="module")
def video_corpus(tmp_path_factory):
    """Six short H.264 videos with json captions, a missing file and a text file named .mp4."""
    root = tmp_path_factory.mktemp("resume-videos")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(6):
        duration = 24.0 + 4 * i
        make_video(str(root / f"v{i}.mp4"), duration, fps=8, size=(96, 64), pattern="noise")
        starts = np.sort(rng.uniform(0.0, duration - 5.0, 5)).round(2)
        caps = {"start": starts.tolist(), "end": (starts + 3.0).round(2).tolist(),
                "text": [f"caption {k} of video {i}" for k in range(5)]}
        (root / f"v{i}.json").write_text(json.dumps(caps))
        rows.append({"video_id": f"v{i}", "video": f"v{i}.mp4", "captions": f"v{i}.json"})
    (root / "fake.mp4").write_text("not a video at all\n")
    for vid, video in (("gone", "gone.mp4"), ("fake", "fake.mp4")):
        (root / f"{vid}.json").write_text(json.dumps({"start": [1.0], "end": [3.0], "text": ["hello"]}))
        rows.append({"video_id": vid, "video": video, "captions": f"{vid}.json"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest)


@pytest.fixture(scope="module")
def video_reference(video_corpus, tmp_path_factory):
    return helpers.run_pipeline(video_corpus, str(tmp_path_factory.mktemp("ref") / "out"), VIDEO_MODEL)


def _run_and_kill(manifest: str, output: str, ready, timeout_s: float = 120.0) -> bool:
    """Start ``nccurate run`` in a child process and SIGKILL it as soon as ``ready()`` holds.
    Returns whether it was killed (False: it finished first)."""
    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "run", "--manifest", manifest,
           "--output", output, *[arg for kv in VIDEO_MODEL for arg in ("--set", kv)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        assert proc.poll() is not None, "the run did not finish in time"
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_at_three_points_then_resume_is_byte_identical(video_corpus, video_reference, tmp_path):
    out = str(tmp_path / "out")
    killed = [
        # mid-decode: two videos decoded and embedded
        _run_and_kill(video_corpus, out, lambda: len(complete_decodes(out)) >= 2),
        # mid-realign: a video's result written
        _run_and_kill(video_corpus, out, lambda: _count(out, "results/*.tar") >= 2),
        # writing the outputs: every result exists
        _run_and_kill(video_corpus, out, lambda: _count(out, "results/*.tar") >= 8
                      or os.path.exists(os.path.join(out, "shards"))),
    ]
    assert killed[0] and killed[1], "the first two kill points are reached before the run can end"
    assert not os.path.exists(os.path.join(out, "shardindex.json")), "a killed run never looks complete"
    results_before = _count(out, "results/*.tar")
    decodes_before = len((complete_decodes(out) | {os.path.basename(p)[:-len(".failure.json")]
                                                   for p in glob.glob(work_path(out, "frames/*.failure.json"))})
                         - {os.path.basename(p)[:-4] for p in glob.glob(work_path(out, "results/*.tar"))})
    messages = []
    summary = run(video_corpus, out, load_config(None, list(VIDEO_MODEL)), notify=messages.append)
    got = helpers.read_output(out)
    assert_same_outputs(got, video_reference)
    assert summary["resumed"] == {"videos": results_before, "decodes": decodes_before}
    assert results_before >= 2 and "resuming" in messages[0]
    assert not os.path.exists(os.path.join(out, WORK)), "a completed run removes its checkpoints"


def test_video_checkpoints_hold_embeddings_and_decode_failures(video_corpus, tmp_path):
    """After a finished decode stage every decodable video has its frames checkpoint and the
    undecodable one its failure (the missing file fails before decoding and has neither)."""
    out = str(tmp_path / "out")
    _run_and_kill(video_corpus, out, lambda: _count(out, "results/*.tar") >= 1)
    emb = complete_decodes(out)
    failed = {os.path.basename(p)[:-len(".failure.json")] for p in glob.glob(work_path(out, "frames/*.failure.json"))}
    assert emb == {f"v{i}" for i in range(6)}
    assert failed == {"fake", "gone"}
    with open(work_path(out, "frames", "fake.failure.json"), encoding="utf-8") as handle:
        assert json.load(handle)["error_class"] == "decode_error"


# ---------------------------------------------------------------------------- feature mode


@pytest.fixture(scope="module")
def feature_inputs(tmp_path_factory):
    corpus = helpers.small_corpus(10, 5)
    root = tmp_path_factory.mktemp("resume-features")
    manifest, _ = write_corpus(str(root), corpus, caption_format="json")
    with open(manifest, "a", encoding="utf-8") as handle:  # a failing video too
        handle.write(json.dumps({"video_id": "lost", "features": "nope.npy", "fps": 1.0, "captions": "nope.json",
                                 "caption_features": "nope.text.npy"}) + "\n")
    return manifest


def _finished_with_checkpoints(manifest, output, overrides, monkeypatch):
    """A complete run whose ``_work`` is kept (as if killed right before removing it)."""
    import pipeline.outputs.checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(pipeline.outputs.checkpoint, "remove_work", lambda _output: None)
        return helpers.run_pipeline(manifest, output, overrides)


@pytest.mark.parametrize("aligner", [(), ("align.method=norton", "align.prompt_mode=run")], ids=["posterior", "norton-run"])
def test_crash_after_any_subset_of_videos_resumes_identically(feature_inputs, tmp_path, monkeypatch,
                                                              aligner):
    """Both run-level side inputs (posterior's calibration and decoy pool; norton's run-level
    prompt) are rebuilt from the checkpoints of the videos that finished."""
    overrides = (*FEATURE_OVERRIDES, *aligner)
    reference = _finished_with_checkpoints(feature_inputs, str(tmp_path / "ref"), overrides, monkeypatch)
    results = sorted(glob.glob(work_path(reference.path, "results/*.tar")))
    assert len(results) == 11, "every video, the failed one included, has a result checkpoint"
    rng = np.random.default_rng(0)
    for trial, n_done in enumerate((0, 4, 11)):
        out = str(tmp_path / f"crash{trial}")
        shutil.copytree(reference.path, out)
        for name in ("summary.json", "shardindex.json"):  # died before the end ...
            os.remove(os.path.join(out, name))
        with open(os.path.join(out, "shards", os.path.basename(reference.shard_files[0])), "r+b") as handle:
            handle.truncate(100)  # ... while writing a shard ...
        open(os.path.join(out, "index", "part-00000.parquet.tmp-1"), "wb").close()  # ... and an index file
        keep = set(rng.choice(len(results), n_done, replace=False).tolist())
        for i, path in enumerate(results):
            if i not in keep:
                os.remove(path.replace(reference.path, out))
        summary = run(feature_inputs, out, load_config(None, list(overrides)))
        got = helpers.read_output(out)
        assert_same_outputs(got, reference)
        assert summary["resumed"]["videos"] == n_done
        assert not glob.glob(os.path.join(out, "index", "*.tmp-*"))


def test_unfinished_run_of_another_config_is_refused_then_overwritten(feature_inputs, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    _finished_with_checkpoints(feature_inputs, out, FEATURE_OVERRIDES, monkeypatch)
    os.remove(os.path.join(out, "shardindex.json"))
    other = load_config(None, [*FEATURE_OVERRIDES, "align.eps=0.2"])
    with pytest.raises(RunError, match="unfinished run of another manifest, configuration"):
        run(feature_inputs, out, other)
    assert glob.glob(work_path(out, "results/*.tar")), "a refused run keeps the checkpoints"
    summary = run(feature_inputs, out, other, overwrite=True)
    assert summary["resumed"] == {"videos": 0, "decodes": 0}
    assert summary["config_hash"] == other.hash()


def test_a_changed_manifest_does_not_resume(feature_inputs, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    _finished_with_checkpoints(feature_inputs, out, FEATURE_OVERRIDES, monkeypatch)
    os.remove(os.path.join(out, "shardindex.json"))
    changed = str(tmp_path / "manifest.jsonl")
    with open(feature_inputs, encoding="utf-8") as src, open(changed, "w", encoding="utf-8") as dst:
        dst.write("".join(src.readlines()[:-1]))
    for name in os.listdir(os.path.dirname(feature_inputs)):
        if name != "manifest.jsonl" and not os.path.exists(tmp_path / name):
            os.symlink(os.path.join(os.path.dirname(feature_inputs), name), tmp_path / name)
    with pytest.raises(RunError, match="unfinished run of another manifest"):
        run(changed, out, load_config(None, list(FEATURE_OVERRIDES)))


def test_checkpoints_can_be_turned_off(feature_inputs, tmp_path, monkeypatch):
    """``checkpoints: false`` writes no per-video checkpoint (only the run's identity) and the
    same index and samples as a checkpointed run (the samples' json differs in config_hash)."""
    on = _finished_with_checkpoints(feature_inputs, str(tmp_path / "on"), FEATURE_OVERRIDES, monkeypatch)
    off = _finished_with_checkpoints(feature_inputs, str(tmp_path / "off"), (*FEATURE_OVERRIDES, "checkpoints=false"),
                                     monkeypatch)
    assert glob.glob(work_path(on.path, "results", "*.tar"))
    assert os.listdir(work_path(off.path)) == ["run.json"]
    assert off.index_table.equals(on.index_table)
    assert [(s["__key__"], s["npy"], s["txt"]) for s in off.samples] == [(s["__key__"], s["npy"], s["txt"]) for s in on.samples]
