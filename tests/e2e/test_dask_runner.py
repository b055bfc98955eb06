"""The pipeline on a real distributed engine: Beam's DaskRunner against a local
``dask.distributed`` cluster (a scheduler and two one-thread workers, each its own process),
driven by the ``nccurate`` console script as a user runs it. Every output must be the
DirectRunner's: shard bytes, ``shardindex.json``, index rows, failures and summary counts.

Feature mode runs the default aligner (``posterior``: its decoy pool and calibration are side
inputs), video mode the random-init ``nccurate-tiny`` encoder with the old default aligner
(``configs/norton-v0.yaml``: random-init embeddings carry no signal for ``posterior`` to keep). Both corpora hold bad manifest rows, so the
failures tables are not empty. Every subprocess has a timeout: a hang fails the test instead of
blocking CI. A cheap check without a cluster looks, in the graph of every mode, for what Beam
2.77's DaskRunner runs wrongly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests.videos import NORTON_V0

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NCCURATE = os.path.join(os.path.dirname(sys.executable), "nccurate")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUN_TIMEOUT_S = 240
CLUSTER_START_S = 60
CLUSTER_STOP_S = 30

#: Bad manifest rows (one failure row each): a line that is not JSON and an invalid video_id (in
#: the corpus' own mode: a manifest that mixes modes is split by ``beam.Partition``, whose
#: outputs Beam 2.77's DaskRunner does not keep apart).
BAD_ROWS = {"features": ["not json", json.dumps({"video_id": "bad id!", "features": "x.npy", "captions": "x.json"})],
            "video": ["not json", json.dumps({"video_id": "bad id!", "video": "x.mp4", "captions": "x.json"})]}
FEATURE_SETTINGS = ("output.samples_per_shard=10", "max_failure_ratio=1.0")
VIDEO_SETTINGS = (*NORTON_V0, "model.name=nccurate-tiny", "model.pretrained=null", "clips.size=48", "clips.fps=4",
                  "output.samples_per_shard=4", "max_failure_ratio=1.0")
#: summary.json fields that differ between two runs of the same inputs by design.
VOLATILE = ("timings", "output")


# ----------------------------------------------------------------------------- the graph


def _dask_unsupported(directory, modes: tuple[str, ...], resume: bool = False) -> list[str]:
    """Labels of the transforms that Beam 2.77's DaskRunner runs wrongly, in the graph that
    ``nccurate run`` builds for a manifest of ``modes`` (nothing runs): a ``ParDo`` with
    several outputs (``with_outputs``, ``beam.Partition``: every consumer gets all of them), a
    ``beam.io.Read`` (not translated: no elements) and ``BatchElements`` (its last batch is
    emitted from ``finish_bundle``, which the runner drops)."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor
    from apache_beam.runners.direct.direct_runner import DirectRunner

    from pipeline.config import load_config
    from pipeline.transforms.graph import RunPlan, build_graph

    rows = {"features": {"video_id": "f", "features": "f.npy", "fps": 1.0, "captions": "f.json"},
            "video": {"video_id": "v", "video": "v.mp4", "captions": "v.vtt"}}
    manifest = os.path.join(str(directory), "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(rows[mode]) + "\n" for mode in modes))
    found = []

    class Find(PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, beam.BatchElements):
                found.append(node.full_label)

        def visit_transform(self, node):
            transform = node.transform
            if isinstance(transform, beam.ParDo) and len(node.outputs) > 1 or isinstance(transform, beam.io.Read):
                found.append(node.full_label)

    p = beam.Pipeline(runner=DirectRunner())
    build_graph(p, RunPlan(manifest, os.path.join(str(directory), "out"), load_config(None, list(VIDEO_SETTINGS)), 0.0,
                           frozenset(modes), "0" * 64, resume=resume))
    p.visit(Find())
    return found


@pytest.mark.parametrize("modes, resume", [
    (("features",), False), (("features",), True),
    (("video",), False), (("video",), True), (("features", "video"), False)])
def test_the_graph_holds_nothing_the_dask_runner_runs_wrongly(modes, resume, tmp_path):
    assert _dask_unsupported(tmp_path, modes, resume) == []


# ----------------------------------------------------------------------------- the cluster


def _cli(module: str, *args: str, log: str) -> subprocess.Popen:
    """``python -m <dask CLI module> args`` in a new session, so that it and every process it
    starts (nannies, workers) form a process group of their own; output to ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(cli: subprocess.Popen, timeout_s: float) -> list[int]:
    """SIGTERM a ``_cli`` command (it shuts down what it started) and wait up to ``timeout_s``
    for its whole process group to exit; returns the pids still alive then, killed."""
    import psutil

    cli.terminate()
    try:
        cli.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    group = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == cli.pid:
                group.append(proc)
        except (OSError, psutil.Error):
            pass  # gone meanwhile
    _, alive = psutil.wait_procs(group, timeout=timeout_s)
    for proc in alive:
        proc.kill()
    cli.poll()
    return [proc.pid for proc in alive]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A local dask.distributed cluster in separate processes: ``dask scheduler`` and ``dask
    worker`` (2 worker processes x 1 thread, under nannies); yields the scheduler's address.
    Teardown stops the worker command (it stops its nannies and workers), then the scheduler, and
    fails when any process they started is still alive after ``CLUSTER_STOP_S``."""
    from distributed import Client

    root = tmp_path_factory.mktemp("dask")
    scheduler_file = str(root / "scheduler.json")
    scheduler = _cli("distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--dashboard-address", "127.0.0.1:0", "--scheduler-file", scheduler_file,
                     "--idle-timeout", "900", log=str(root / "scheduler.log"))
    worker = None
    try:
        deadline = time.monotonic() + CLUSTER_START_S
        while not os.path.exists(scheduler_file):
            assert scheduler.poll() is None, (root / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.2)
        worker = _cli("distributed.cli.dask_worker", "--scheduler-file", scheduler_file, "--nworkers", "2",
                      "--nthreads", "1", "--memory-limit", "0", "--dashboard-address", "127.0.0.1:0",
                      "--local-directory", str(root / "workers"), "--death-timeout", "60",
                      log=str(root / "workers.log"))
        with open(scheduler_file, encoding="utf-8") as handle:
            address = json.load(handle)["address"]
        with Client(address, timeout=CLUSTER_START_S) as client:
            client.wait_for_workers(2, timeout=CLUSTER_START_S)
            assert sum(client.nthreads().values()) == 2
        yield address
    finally:
        leaked = [pid for cli in (worker, scheduler) if cli is not None for pid in _stop(cli, CLUSTER_STOP_S)]
        assert not leaked, f"dask processes still alive {CLUSTER_STOP_S} s after SIGTERM (killed): {leaked}"


# ----------------------------------------------------------------------------- runs


def _nccurate_run(manifest: str, output: str, settings, beam_args=()) -> float:
    """``nccurate run`` as a user runs it; returns its wall time in seconds."""
    cmd = [NCCURATE, "run", "--manifest", manifest, "--output", output,
           *(arg for kv in settings for arg in ("--set", kv)), *beam_args]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-4000:]}"
    return time.monotonic() - started


def _with_bad_rows(manifest: str, mode: str) -> str:
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write("".join(row + "\n" for row in BAD_ROWS[mode]))
    return manifest


def _direct_and_dask(manifest, root, settings, address):
    """(DirectRunner output, DaskRunner output) of ``manifest``, each with its ``wall_s``."""
    outs = []
    for name, beam_args in (("direct", ()), ("dask", ("--runner", DASK_RUNNER, f"--dask_client_address={address}"))):
        wall_s = _nccurate_run(manifest, str(root / name), settings, beam_args)
        out = helpers.read_output(str(root / name))
        out.wall_s = wall_s
        with open(manifest, encoding="utf-8") as handle:
            out.manifest_rows = sum(1 for line in handle if line.strip())
        outs.append(out)
    print(f"\n{os.path.basename(str(root))}: DirectRunner {outs[0].wall_s:.1f} s, DaskRunner {outs[1].wall_s:.1f} s")
    return tuple(outs)


@pytest.fixture(scope="module")
def features(dask_cluster, tmp_path_factory):
    """Feature mode: 4 synthetic videos (json and vtt captions) + the bad rows, prompt_mode=run."""
    from pipeline.synth.feature_corpus import write_corpus

    root = tmp_path_factory.mktemp("features")
    manifest, _ = write_corpus(str(root / "inputs"), helpers.small_corpus(8, 11), caption_format=("json", "vtt"))
    return _direct_and_dask(_with_bad_rows(manifest, "features"), root, FEATURE_SETTINGS, dask_cluster)


@pytest.fixture(scope="module")
def videos(dask_cluster, tmp_path_factory):
    """Video mode: a short H.264 video, a missing video file and the bad rows, random-init
    nccurate-tiny."""
    from curation.synth.video import VideoParams
    from pipeline.synth.video_corpus import write_video_corpus

    root = tmp_path_factory.mktemp("videos")
    manifest, _ = write_video_corpus(str(root / "inputs"), 1, 7, ("vtt",), VideoParams(duration_s=(20, 24)))
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"video_id": "lost", "video": "data/lost.mp4", "captions": "data/lost.vtt"}) + "\n")
    return _direct_and_dask(_with_bad_rows(manifest, "video"), root, VIDEO_SETTINGS, dask_cluster)


BOTH = pytest.mark.parametrize("mode", ["features", "videos"])


@pytest.fixture
def runs(request, mode):
    return request.getfixturevalue(mode)


# ----------------------------------------------------------------------------- checks


@BOTH
def test_shards_and_shardindex_are_byte_identical(runs):
    direct, dask = runs
    assert direct.shard_files, "no shards: nothing was compared"
    assert [os.path.basename(f) for f in dask.shard_files] == [os.path.basename(f) for f in direct.shard_files]
    for a, b in zip(direct.shard_files, dask.shard_files):
        assert helpers.md5_of(a) == helpers.md5_of(b), os.path.basename(a)
    assert dask.shardindex_bytes == direct.shardindex_bytes


@BOTH
def test_index_rows_are_identical(runs):
    direct, dask = runs
    assert [os.path.basename(f) for f in dask.index_files] == [os.path.basename(f) for f in direct.index_files]
    assert dask.index == direct.index  # every column, rows sorted by (video_id, caption_idx)


@BOTH
def test_failures_are_identical_and_not_empty(runs):
    direct, dask = runs
    key = lambda f: (f["video_id"], f["stage"], f["error_class"], f["message"])  # noqa: E731
    assert len(direct.failures) >= 2
    assert sorted(dask.failures, key=key) == sorted(direct.failures, key=key)


@BOTH
def test_summaries_agree_and_count_the_manifest(runs):
    direct, dask = runs
    stable = lambda out: {k: v for k, v in out.summary.items() if k not in VOLATILE}  # noqa: E731
    assert stable(dask) == stable(direct)
    for out in runs:
        s = out.summary
        assert s["reconciled"] and s["problems"] == []
        assert s["videos_in"] == out.manifest_rows
        assert s["videos_failed"] >= 2 and s["videos_ok"] > 0
        assert len(out.index) == s["captions_in"]
        assert sum(r["kept"] for r in out.index) == s["captions_kept"] == s["samples_written"] == len(out.samples)


def test_the_run_level_calibration_was_used(features):
    """Feature mode runs the default aligner, whose decoy pool and calibration are side inputs
    (Beam 2.77's DaskRunner delivers side-input elements more than once): the same estimates."""
    direct, dask = features
    assert direct.summary["calibration"]["sampled"] == direct.summary["captions_in"] > 0
    assert dask.summary["calibration"] == direct.summary["calibration"]
    assert direct.summary["captions_kept"] > 0
