"""Runs where the data lives (issue 17): manifest, inputs and output on a real object store — a
GCS emulator (fake-gcs-server) and an S3 server (moto), each its own process on loopback
(``tests/stores.py``) — give the same shards and shardindex bytes, index rows and counts as the
same run on local disk; on the DirectRunner and the DaskRunner, in feature and video mode, after a
SIGKILL and a rerun, and through a proxy that injects transient errors. The tools read the remote
output. Objects are read back with plain HTTP requests (``stores.get_object``), not nccurate's
storage layer."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.synth.feature_corpus import write_corpus
from tests import helpers, stores
from tests.videos import NORTON_V0, make_video

BUCKET = "nccurate-test"
FEATURES = ("max_failure_ratio=1.0",)
VIDEO = (*NORTON_V0, "model.name=nccurate-tiny", "model.pretrained=null", "max_failure_ratio=1.0",
         "clips.size=48", "clips.fps=4", "decode_timeout_s=60")
COUNTS = ("videos_in", "videos_ok", "videos_failed", "captions_in", "captions_kept", "captions_dropped",
          "samples_written", "failures")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["gcs", "s3"])
def store(request):
    """A running store server with a bucket; its env is in ``os.environ`` for the module."""
    server = stores.gcs_server() if request.param == "gcs" else stores.s3_server()
    with server as running, pytest.MonkeyPatch.context() as mp:
        stores.make_bucket(running, BUCKET)
        stores.apply_env(running, mp)
        yield running


def _upload_dir(local_dir: str, url: str) -> None:
    import fsspec

    for root, _, names in os.walk(local_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as src, fsspec.open(f"{url}/{os.path.relpath(path, local_dir)}", "wb") as dst:
                dst.write(src.read())


def _objects(store, prefix: str) -> dict[str, bytes]:
    """``{key relative to prefix: bytes}`` of every object under ``prefix``, read over plain HTTP."""
    import fsspec

    fs, inner = fsspec.core.url_to_fs(store.url(BUCKET, prefix))
    fs.invalidate_cache()
    keys = [k.split("/", 1)[1] for k in fs.find(inner)]
    return {k[len(prefix) + 1:]: stores.get_object(store, BUCKET, k) for k in keys}


def _index_rows(objects: dict[str, bytes]) -> list[dict]:
    import pyarrow.parquet as pq

    rows = [r for name, data in sorted(objects.items()) if name.startswith("index/")
            for r in pq.read_table(io.BytesIO(data)).to_pylist()]
    return sorted(rows, key=lambda r: (r["video_id"], r["caption_idx"]))


def assert_same_as_local(objects: dict[str, bytes], local) -> None:
    """The remote output's files against the local run's, read independently."""
    shards = {n: d for n, d in objects.items() if n.startswith("shards/")}
    assert sorted(shards) == [f"shards/{os.path.basename(f)}" for f in local.shard_files]
    for path in local.shard_files:
        with open(path, "rb") as handle:
            assert shards[f"shards/{os.path.basename(path)}"] == handle.read(), path
    assert objects["shardindex.json"] == local.shardindex_bytes
    assert _index_rows(objects) == local.index
    summary = json.loads(objects["summary.json"])
    assert {k: summary[k] for k in COUNTS} == {k: local.summary[k] for k in COUNTS}
    assert not any(n.startswith("_work/") for n in objects), "checkpoints are removed when the run completes"
    assert set(n.split("/")[0] for n in objects) <= {"shards", "index", "failures", "summary.json", "shardindex.json"}


@pytest.fixture(scope="module")
def feature_corpus(tmp_path_factory):
    """(local manifest, its folder, the local reference run)."""
    root = tmp_path_factory.mktemp("remote-features")
    manifest, _ = write_corpus(str(root / "in"), helpers.small_corpus(6, 7))
    return manifest, str(root / "in"), helpers.run_pipeline(manifest, str(root / "out"), FEATURES)


@pytest.fixture(scope="module")
def video_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-videos")
    (root / "in").mkdir()
    rng = np.random.default_rng(5)
    rows = []
    for i, duration in enumerate((24.0, 30.0)):
        make_video(str(root / "in" / f"v{i}.mp4"), duration, fps=8, size=(96, 64), pattern="noise")
        starts = np.sort(rng.uniform(0.0, duration - 5.0, 5)).round(2)
        caps = {"start": starts.tolist(), "end": (starts + 3.0).round(2).tolist(),
                "text": [f"caption {k} of video {i}" for k in range(5)]}
        (root / "in" / f"v{i}.json").write_text(json.dumps(caps))
        rows.append({"video_id": f"v{i}", "video": f"v{i}.mp4", "captions": f"v{i}.json"})
    rows.append({"video_id": "gone", "video": "gone.mp4", "captions": "v0.json"})
    (root / "in" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = str(root / "in" / "manifest.jsonl")
    return manifest, str(root / "in"), helpers.run_pipeline(manifest, str(root / "out"), VIDEO)


def _run(manifest: str, output: str, settings, overwrite: bool = False) -> dict:
    from pipeline.config import load_config
    from pipeline.run import run

    return run(manifest, output, load_config(None, list(settings)), overwrite=overwrite)


def _cli(*args: str, env_extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env_extra or {})})


# ----------------------------------------------------------------------------- runs


def _uploaded_and_run(store, corpus, prefix: str, output: str, settings) -> tuple[dict, object]:
    """A corpus uploaded under ``prefix`` and run with manifest and output on the store: (its
    summary, the local reference run)."""
    _, local_dir, local = corpus
    _upload_dir(local_dir, store.url(BUCKET, prefix))
    return _run(store.url(BUCKET, f"{prefix}/manifest.jsonl"), store.url(BUCKET, output), settings), local


@pytest.fixture(scope="module")
def feature_remote(store, feature_corpus):
    return _uploaded_and_run(store, feature_corpus, "features", "fout", FEATURES)


def test_feature_run_on_the_store_equals_the_local_run(store, feature_remote):
    summary, local = feature_remote
    assert summary["captions_kept"] > 0 and summary["manifest"] == store.url(BUCKET, "features/manifest.jsonl")
    assert_same_as_local(_objects(store, "fout"), local)


def test_rerunning_into_a_complete_remote_output_and_overwrite_keep_it(store, feature_remote):
    _, local = feature_remote
    output = store.url(BUCKET, "fout")
    _run(store.url(BUCKET, "features/manifest.jsonl"), output, FEATURES)  # complete: nothing to do
    assert_same_as_local(_objects(store, "fout"), local)
    _run(store.url(BUCKET, "features/manifest.jsonl"), output, FEATURES, overwrite=True)
    assert_same_as_local(_objects(store, "fout"), local)


def test_a_remote_output_holding_foreign_objects_is_refused_and_they_are_kept(store, feature_remote):
    import fsspec

    from pipeline.run import RunError

    with fsspec.open(store.url(BUCKET, "fout/notes.txt"), "wb") as handle:
        handle.write(b"mine")
    try:
        with pytest.raises(RunError, match="did not write"):
            _run(store.url(BUCKET, "features/manifest.jsonl"), store.url(BUCKET, "fout"), FEATURES, overwrite=True)
        assert stores.get_object(store, BUCKET, "fout/notes.txt") == b"mine"
    finally:
        fsspec.filesystem(store.scheme).rm_file(f"{BUCKET}/fout/notes.txt")


def test_inspect_report_and_train_read_the_remote_output(store, feature_remote, video_remote):
    inspected = _cli("inspect", store.url(BUCKET, "fout"))
    assert inspected.returncode == 0, inspected.stderr
    assert str(feature_remote[0]["captions_kept"]) in inspected.stdout
    reported = _cli("report", store.url(BUCKET, "vout"), "--videos", "2")
    assert reported.returncode == 0, reported.stderr
    page = stores.get_object(store, BUCKET, "vout/report/index.html")
    assert page is not None and b"nccurate report" in page
    trained = _cli("train", "--shards", store.url(BUCKET, "vout/shards/*.tar"), "--output", store.url(BUCKET, "model"),
                   "--set", "steps=2", "--set", "batch_size=4", "--set", "heldout_fraction=0.5")
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(stores.get_object(store, BUCKET, "model/metrics.json"))
    assert metrics["heldout"]["queries"] > 0 and stores.get_object(store, BUCKET, "model/model.pt")


@pytest.fixture(scope="module")
def video_remote(store, video_corpus):
    return _uploaded_and_run(store, video_corpus, "videos", "vout", VIDEO)


@pytest.mark.slow
def test_video_run_on_the_store_equals_the_local_run(store, video_remote):
    summary, local = video_remote
    assert summary["captions_kept"] > 0 and summary["videos_failed"] == 1
    objects = _objects(store, "vout")
    objects = {n: d for n, d in objects.items() if not n.startswith("report/")}  # the report test may run first
    assert_same_as_local(objects, local)
    failures = {f["video_id"]: f for f in local.failures}
    assert failures["gone"]["error_class"] == "missing_file"


def test_a_remote_video_over_max_bytes_fails_as_too_large(store, video_corpus, video_remote, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the decode child's temporary copies
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    summary = _run(store.url(BUCKET, "videos/manifest.jsonl"), store.url(BUCKET, "vbig"),
                   (*VIDEO, "decode.max_bytes=1000"))
    import pyarrow.parquet as pq

    failures = pq.read_table(io.BytesIO(stores.get_object(store, BUCKET, "vbig/failures/part-00000.parquet"))).to_pylist()
    classes = {f["video_id"]: f["error_class"] for f in failures}
    assert classes == {"v0": "too_large", "v1": "too_large", "gone": "missing_file"}
    assert summary["videos_failed"] == 3
    assert all(store.url(BUCKET, "videos/") in f["message"] for f in failures), failures
    assert not [n for n in os.listdir(tmp_path) if n.startswith("nccurate-")], "a local copy was left behind"


# ----------------------------------------------------------------------------- faults


def test_transient_store_errors_are_retried_and_the_outputs_are_identical(store, feature_corpus, feature_remote, monkeypatch):
    _, _, local = feature_corpus
    with stores.FlakyProxy(store, fail_every=4) as proxy:
        stores.apply_env(proxy.store, monkeypatch)
        _run(proxy.store.url(BUCKET, "features/manifest.jsonl"), proxy.store.url(BUCKET, "flaky"), FEATURES)
        assert proxy.faults >= 5, proxy.faults
    stores.apply_env(store, monkeypatch)  # straight to the server again
    assert_same_as_local(_objects(store, "flaky"), local)


def test_a_permanent_error_on_one_video_fails_only_that_video(store, feature_corpus, feature_remote, monkeypatch):
    _, _, local = feature_corpus
    victim = sorted({r["video_id"] for r in local.index})[1]
    with stores.FlakyProxy(store, fail_every=1, fail_status=403, match=lambda method, path: "features" in path and victim in path) as proxy:
        stores.apply_env(proxy.store, monkeypatch)
        summary = _run(proxy.store.url(BUCKET, "features/manifest.jsonl"), proxy.store.url(BUCKET, "denied"), FEATURES)
        assert proxy.failed > 0
    stores.apply_env(store, monkeypatch)
    import pyarrow.parquet as pq

    failures = pq.read_table(io.BytesIO(stores.get_object(store, BUCKET, "denied/failures/part-00000.parquet"))).to_pylist()
    assert failures and {(f["video_id"], f["error_class"]) for f in failures} == {(victim, "unreadable_file")}
    assert all(victim in f["message"] and "403" in f["message"] or "Forbidden" in f["message"] for f in failures)
    assert summary["videos_failed"] == 1 and summary["videos_ok"] == local.summary["videos_ok"] - 1


@pytest.mark.slow
def test_sigkill_with_a_remote_output_then_rerun_is_byte_identical(store, video_corpus, video_remote):
    _, _, local = video_corpus
    manifest, output = store.url(BUCKET, "videos/manifest.jsonl"), store.url(BUCKET, "killed")
    args = ["run", "--manifest", manifest, "--output", output, *[a for kv in VIDEO for a in ("--set", kv)]]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ))
    killed = False
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if any(n.startswith("_work/results/") for n in _objects(store, "killed")):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    assert killed, "the run finished before a result checkpoint appeared"
    assert stores.get_object(store, BUCKET, "killed/shardindex.json") is None
    rerun = _cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    # progress is read from the remote _work: restored results counted at the start, all at the end
    resumed = [int(n) for n in re.findall(r"(\d+) resumed", rerun.stderr)]
    assert resumed and resumed[0] >= 1, rerun.stderr
    assert re.search(r"progress: 3/3 videos .*done in", rerun.stderr), rerun.stderr
    assert_same_as_local(_objects(store, "killed"), local)


# ----------------------------------------------------------------------------- DaskRunner


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["features", "videos"])
def test_runs_on_the_dask_runner_with_a_remote_store_equal_local(store, mode, request, tmp_path):
    """A local dask.distributed cluster (scheduler and worker processes inherit the store's env)."""
    from distributed import Client, LocalCluster

    _, local = request.getfixturevalue("feature_remote" if mode == "features" else "video_remote")
    settings = FEATURES if mode == "features" else VIDEO
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      local_directory=str(tmp_path)) as cluster, Client(cluster):
        ran = _cli("run", "--manifest", store.url(BUCKET, f"{mode}/manifest.jsonl"), "--output",
                   store.url(BUCKET, f"dask-{mode}"), *[a for kv in settings for a in ("--set", kv)],
                   "--runner", DASK_RUNNER, f"--dask_client_address={cluster.scheduler_address}")
        assert ran.returncode == 0, ran.stderr[-3000:]
    assert_same_as_local(_objects(store, f"dask-{mode}"), local)


# ----------------------------------------------------------------------------- model weights


def test_pretrained_weights_from_the_store_load_like_the_local_file(store, tmp_path, monkeypatch):
    import fsspec

    from models.encoder import EncoderSpec, load_encoder

    asset = os.path.join(os.path.dirname(__file__), "..", "..", "models", "assets", "nccurate-demo-tiny.pt")
    uri = store.url(BUCKET, "weights/nccurate-demo-tiny.pt")
    with open(asset, "rb") as src, fsspec.open(uri, "wb") as dst:
        dst.write(src.read())
    monkeypatch.setenv("NCCURATE_CACHE", str(tmp_path / "cache"))
    texts = ["pour the batter", "thanks for watching"]
    remote = load_encoder(EncoderSpec(name="nccurate-tiny", pretrained=uri)).encode_texts(texts)
    local = load_encoder(EncoderSpec(name="nccurate-tiny", pretrained=os.path.abspath(asset))).encode_texts(texts)
    assert np.array_equal(remote, local)
    copies = [os.path.join(root, n) for root, _, names in os.walk(tmp_path / "cache") for n in names]
    assert len(copies) == 1 and open(copies[0], "rb").read() == open(asset, "rb").read()
    with pytest.raises(ValueError, match="cannot be read"):
        load_encoder(EncoderSpec(name="nccurate-tiny", pretrained=store.url(BUCKET, "weights/missing.pt")))


def test_an_embedded_subtitle_track_of_a_remote_video_gives_its_captions(store, tmp_path):
    """A manifest row without captions whose video (on the store) has a text track: the track is
    read from the decode child's bounded local copy, its captions equal the sidecar's, and what
    was made is written to OUT/captions on the store."""
    from pipeline.inputs.captions import parse_srt
    from tests.pipeline.media.test_subtitles import SRT, _mux

    local = tmp_path / "in"
    local.mkdir()
    make_video(str(tmp_path / "plain.mp4"), 10.0, fps=8, size=(64, 48), pattern="noise")
    (tmp_path / "a.srt").write_text(SRT, encoding="utf-8")
    _mux(str(tmp_path / "plain.mp4"), str(local / "talk.mkv"), [(str(tmp_path / "a.srt"), "eng", True)])
    (local / "manifest.jsonl").write_text(json.dumps({"video_id": "talk", "video": "talk.mkv"}) + "\n")
    _upload_dir(str(local), store.url(BUCKET, "embedded"))
    summary = _run(store.url(BUCKET, "embedded/manifest.jsonl"), store.url(BUCKET, "eout"), VIDEO)
    assert summary["videos_ok"] == 1 and summary["captions_in"] == len(parse_srt("a.srt", SRT.encode()))
    made = json.loads(stores.get_object(store, BUCKET, "eout/captions/talk.json"))
    expected = parse_srt("a.srt", SRT.encode())
    assert (made["start"], made["end"], made["text"]) == ([c.start_s for c in expected], [c.end_s for c in expected],
                                                        [c.text for c in expected])
    assert made["made_by"]["source"] == "embedded"
