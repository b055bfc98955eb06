"""Unit tests of the remaining Beam composites in ``pipeline/transforms/`` on the DirectRunner:
``WriteShards``, ``WriteIndex``, ``Finalize`` (write.py), ``Resume`` (resume.py), and the
run-level estimates ``AttachEvidence``, ``DecoyPool``, ``RunCalibration``, ``RunPromptValue``
(realign.py). As in ``test_composites.py``: exact outputs (``assert_that``/``equal_to``, or the
files written read back independently with pyarrow / tarfile / json) and counters; expected
values come from the inputs made here or from the plain functions the composites wrap
(``pipeline.results``, ``pipeline.outputs``, ``curation.calibration``/``align``/``prompt``),
never from a run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tarfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from curation.records import CaptionSet, FrameFeatures, VideoInputs, VideoRef
from pipeline.config import load_config
from pipeline.transforms import stage
from tests.pipeline.transforms.test_composites import _run, counter, counters

# ----------------------------------------------------------------------------- helpers

PROVENANCE = {"model": "test", "config_hash": "0" * 8}


def _config(*overrides):
    return load_config(None, list(overrides))


def _same(a, b) -> bool:
    """Deep equality of nested tuples / lists / dicts / NamedTuples / dataclasses / arrays
    (arrays: same dtype, shape and values, NaN equal to NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a) is type(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def only(expected):
    """A matcher: the PCollection is exactly one element, deeply equal (:func:`_same`) to ``expected``."""

    def match(actual):
        if len(actual) != 1 or not _same(actual[0], expected):
            raise BeamAssertException(f"{actual!r} != [{expected!r}]")

    return match


def same_elements(expected):
    """A matcher: the PCollection's elements are ``expected`` (any order), compared with :func:`_same`."""

    def match(actual):
        left = list(actual)
        for want in expected:
            hit = next((i for i, got in enumerate(left) if _same(got, want)), None)
            if hit is None:
                raise BeamAssertException(f"missing {want!r} in {actual!r}")
            left.pop(hit)
        if left:
            raise BeamAssertException(f"unexpected {left!r}")

    return match


def labelled(pcolls: dict):
    """``{label: PCollection}`` -> one PCollection of ``(label, element)``: one ``assert_that``
    for several outputs (each ``assert_that`` adds stages, slow on the DirectRunner)."""
    return [pc | f"Label[{label}]" >> beam.Map(lambda x, label: (label, x), label)
            for label, pc in pcolls.items()] | f"Labelled[{','.join(pcolls)}]" >> beam.Flatten()


@pytest.fixture(scope="module")
def corpus():
    """Three small synthetic videos (dim 32, 40-60 s, 7-8 captions each)."""
    from curation.synth.features import WorldParams, make_corpus

    return make_corpus(3, 0, WorldParams(dim=32, duration_s=(40, 60)))


def _inputs(video, video_id=None) -> VideoInputs:
    vid = video_id or video.video_id
    captions = CaptionSet(vid, tuple(video.asr_start_s.tolist()), tuple(video.asr_end_s.tolist()), video.texts,
                          video.caption_emb)
    return VideoInputs(vid, FrameFeatures(vid, video.fps, video.frames), captions)


def _failed_load(video, video_id="v_nofeatures") -> VideoInputs:
    """A video whose features failed to load (its captions parsed): ``video_failed`` rows."""
    failure = {"video_id": video_id, "stage": "features", "error_class": "missing_file",
               "message": "features file not found: /nowhere.npy"}
    captions = CaptionSet(video_id, tuple(video.asr_start_s.tolist()), tuple(video.asr_end_s.tolist()), video.texts,
                          video.caption_emb)
    return VideoInputs(video_id, None, captions, (failure,))


@pytest.fixture(scope="module")
def results(corpus):
    """``realign_video`` (method norton: every caption kept; npy samples in feature mode) of the
    three videos and of one failed load."""
    from pipeline.results import realign_video

    config = _config("align.method=norton")
    videos = [_inputs(v) for v in corpus] + [_failed_load(corpus[0])]
    out = [realign_video(v, config.align, PROVENANCE, config.clips) for v in videos]
    assert sum(r.outcome.captions_kept for r in out) == sum(len(v.texts) for v in corpus) >= 20
    assert out[-1].outcome.captions_kept == 0 and {r.drop_reason for r in out[-1].rows} == {"video_failed"}
    return out


# ----------------------------------------------------------------------------- WriteShards


def _tar_members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _expected_shards(samples, layout, seed, n_shards, directory):
    """Independently: each sample's shard (``shard_index_of``), the shard's order (grouped: by
    (video_id, caption_idx); shuffled: by sha256 of ``seed:key``), written by the plain
    ``write_tar_shard`` under ``directory``; ``{shard file name: ShardInfo}``."""
    from pipeline.outputs.shards import write_tar_shard
    from pipeline.results import shard_index_of

    by_shard: dict[int, list] = {}
    for s in samples:
        by_shard.setdefault(shard_index_of(s["__key__"], layout, seed, n_shards), []).append(s)
    infos = {}
    for idx, members in by_shard.items():
        if layout == "grouped":
            members = sorted(members, key=lambda s: (s["__key__"].rsplit("_", 1)[0], int(s["__key__"].rsplit("_", 1)[1])))
        else:
            members = sorted(members, key=lambda s: hashlib.sha256(f"{seed}:{s['__key__']}".encode()).hexdigest())
        info = write_tar_shard(os.path.join(directory, f"shard-{idx:06d}.tar"), members)
        infos[info.url] = info
    return infos


@pytest.mark.parametrize("layout", ["grouped", "shuffled"])
def test_write_shards_files_equal_the_plain_writer(tmp_path, results, layout):
    from pipeline.transforms.write import WriteShards

    seed, n_shards = 7, 3
    per_video = [list(r.samples) for r in results if r.samples]
    every = [s for part in per_video for s in part]
    expected = _expected_shards(every, layout, seed, n_shards, str(tmp_path / "expected"))
    assert len(expected) >= 2  # the samples really are split
    shards_of: dict[str, set] = {}
    for info in expected.values():
        for member, _ in _tar_members(tmp_path / "expected" / info.url):
            shards_of.setdefault(member.rsplit("_", 1)[0], set()).add(info.url)
    # grouped: a video's samples stay in one shard; shuffled: some video is spread
    assert (max(len(s) for s in shards_of.values()) == 1) == (layout == "grouped")
    out_dir = str(tmp_path / "out")
    shuffled = list(per_video)
    random.Random(2).shuffle(shuffled)

    p = BeamTestPipeline()
    n = p | "N" >> beam.Create([n_shards])
    shards = p | beam.Create(shuffled) | WriteShards(out_dir, layout, seed, n)
    assert_that(shards, equal_to(list(expected.values())))
    _run(p)

    written = sorted(os.listdir(os.path.join(out_dir, "shards")))
    assert written == sorted(expected)
    for name in written:
        got = _tar_members(os.path.join(out_dir, "shards", name))
        want = _tar_members(tmp_path / "expected" / name)
        assert [m for m, _ in got] == [m for m, _ in want]
        assert got == want
        with open(os.path.join(out_dir, "shards", name), "rb") as a, open(tmp_path / "expected" / name, "rb") as b:
            assert a.read() == b.read()
    # every sample once, members as the samples hold them
    members = {m: data for name in written for m, data in _tar_members(os.path.join(out_dir, "shards", name))}
    assert members == {f"{s['__key__']}.{ext}": s[ext] for s in every for ext in s if ext != "__key__"}


# ----------------------------------------------------------------------------- WriteIndex


def test_write_index_files_hold_the_rows(tmp_path, results):
    import pyarrow.parquet as pq

    from pipeline.outputs.layout import shard_name
    from pipeline.results import index_file_of, shard_index_of
    from pipeline.transforms.write import WriteIndex

    seed, n_shards, n_files, layout = 3, 4, 3, "grouped"
    per_video = [list(r.rows) for r in results]
    # expected, from the inputs: each row with its shard, in the file index_file_of names, by (video, caption)
    files: dict[int, list[dict]] = {}
    for rows in per_video:
        for row in rows:
            shard = shard_name(shard_index_of(row.key, layout, seed, n_shards)) if row.kept else None
            files.setdefault(index_file_of(row.video_id, n_files), []).append({**row._asdict(), "shard": shard})
    for rows in files.values():
        rows.sort(key=lambda r: (r["video_id"], r["caption_idx"]))
    assert len(files) >= 2
    expected_out = [(f"part-{i:05d}.parquet", len(rows), sum(r["kept"] for r in rows)) for i, rows in files.items()]
    out_dir = str(tmp_path / "out")

    p = BeamTestPipeline()
    n = p | "N" >> beam.Create([n_shards])
    written = p | beam.Create(list(reversed(per_video))) | WriteIndex(out_dir, n_files, layout, seed, n)
    assert_that(written, equal_to(expected_out))
    _run(p)

    assert sorted(os.listdir(os.path.join(out_dir, "index"))) == sorted(f"part-{i:05d}.parquet" for i in files)
    for i, rows in files.items():
        table = pq.read_table(os.path.join(out_dir, "index", f"part-{i:05d}.parquet"))
        assert table.column_names == list(rows[0])
        assert table.to_pylist() == rows
    n_rows = sum(len(r) for r in per_video)
    assert sum(n for _, n, _ in expected_out) == n_rows


# ----------------------------------------------------------------------------- Finalize


def _records(output):
    from pipeline.outputs.summary import RunRecords

    return RunRecords(output, "/in/manifest.jsonl", "ab" * 32, {"seed": 0}, "cafe1234", 1000.0)


def _run_inputs(results):
    """What ``Finalize`` reads, made from ``results`` (and one failed manifest row)."""
    from pipeline.outputs.shards import ShardInfo

    stats: dict[str, int] = {}
    for r in results:
        for k, v in r.outcome.counts().items():
            stats[k] = stats.get(k, 0) + v
    n_kept = sum(r.outcome.captions_kept for r in results)
    n_rows = sum(len(r.rows) for r in results)
    shards = [ShardInfo("shard-000001.tar", n_kept - 5, 4096, "1" * 32), ShardInfo("shard-000000.tar", 5, 2048, "0" * 32)]
    index_files = [("part-00001.parquet", n_rows - 7, n_kept - 7), ("part-00000.parquet", 7, 7)]
    manifest_failure = {"video_id": "", "stage": "manifest", "error_class": "bad_manifest_row", "message": "not JSON"}
    failures = [dataclasses.asdict(f) for r in results for f in r.failures] + [manifest_failure]
    return dict(stats=[stats], manifest_rows=[len(results) + 1], shards=shards, index_files=index_files,
                failures=failures)


def _finalize(output, run_inputs):
    from pipeline.transforms.write import Finalize

    p = BeamTestPipeline()
    pcs = {name: p | f"Create[{name}]" >> beam.Create(values) for name, values in run_inputs.items()}
    out = p | Finalize(_records(output), **pcs)
    return p, out


def test_finalize_writes_summary_and_shardindex(tmp_path, results):
    import pyarrow.parquet as pq

    output = str(tmp_path / "out")
    inputs = _run_inputs(results)
    n_kept = sum(r.outcome.captions_kept for r in results)
    n_rows = sum(len(r.rows) for r in results)
    n_failed_rows = len(results[-1].rows)
    p, out = _finalize(output, inputs)
    assert_that(out | beam.Map(lambda s: (s["videos_in"], s["captions_kept"], s["reconciled"])),
                equal_to([(5, n_kept, True)]))
    _run(p)

    with open(os.path.join(output, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert {k: summary[k] for k in ("videos_in", "videos_ok", "videos_failed", "captions_in", "captions_kept",
                                    "captions_dropped", "samples_written", "shards", "failures", "reconciled",
                                    "problems", "manifest", "manifest_sha256", "output", "config", "config_hash",
                                    "prompt_value_run", "calibration", "resumed")} == {
        "videos_in": 5, "videos_ok": 3, "videos_failed": 2,  # the failed load and the failed manifest row
        "captions_in": n_rows, "captions_kept": n_kept, "captions_dropped": {"video_failed": n_failed_rows},
        "samples_written": n_kept, "shards": 2,
        "failures": {"bad_manifest_row": 1, "missing_file": 1}, "reconciled": True, "problems": [],
        "manifest": "/in/manifest.jsonl", "manifest_sha256": "ab" * 32, "output": output, "config": {"seed": 0},
        "config_hash": "cafe1234", "prompt_value_run": None, "calibration": None,
        "resumed": {"videos": 0, "decodes": 0},
    }
    assert summary["failure_ratio"] == pytest.approx(1 - 3 / 5)
    assert summary["timings"]["started_at"] == 1000.0
    with open(os.path.join(output, "shardindex.json"), encoding="utf-8") as handle:
        assert json.load(handle) == {
            "__kind__": "wids-shard-index-v1", "wids_version": 1,
            "shardlist": [  # sorted by url, each relative to the index's folder
                {"url": "shards/shard-000000.tar", "nsamples": 5, "filesize": 2048, "md5sum": "0" * 32},
                {"url": "shards/shard-000001.tar", "nsamples": n_kept - 5, "filesize": 4096, "md5sum": "1" * 32},
            ]}
    failures = pq.read_table(os.path.join(output, "failures", "part-00000.parquet")).to_pylist()
    assert failures == sorted(inputs["failures"], key=lambda f: (f["video_id"], f["stage"], f["error_class"]))


def test_finalize_of_no_inputs_writes_empty_records(tmp_path):
    output = str(tmp_path / "out")
    p, _ = _finalize(output, dict(stats=[], manifest_rows=[], shards=[], index_files=[], failures=[]))
    _run(p)
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert (summary["videos_in"], summary["captions_in"], summary["shards"], summary["reconciled"]) == (0, 0, 0, True)
    with open(os.path.join(output, "shardindex.json"), encoding="utf-8") as handle:
        assert json.load(handle)["shardlist"] == []


@pytest.mark.parametrize("broken", ["index_rows", "shard_samples"])
def test_finalize_that_does_not_reconcile_fails_without_shardindex(tmp_path, results, broken):
    from pipeline.errors import AccountingError

    output = str(tmp_path / "out")
    inputs = _run_inputs(results)
    if broken == "index_rows":
        name, n, kept = inputs["index_files"][1]
        inputs["index_files"][1] = (name, n + 1, kept)  # one index row more than captions_in
    else:
        info = inputs["shards"][1]
        inputs["shards"][1] = dataclasses.replace(info, nsamples=info.nsamples - 1)
    p, _ = _finalize(output, inputs)
    with pytest.raises(Exception) as raised:
        _run(p)
    chain, error = [], raised.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, AccountingError) for e in chain) or "AccountingError" in str(raised.value)
    assert not os.path.exists(os.path.join(output, "shardindex.json"))
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    assert summary["reconciled"] is False
    want = ("index rows = captions_in" if broken == "index_rows" else "shardindex nsamples = captions_kept")
    assert [problem.split(":")[0] for problem in summary["problems"]] == [want]


# ----------------------------------------------------------------------------- Resume


def _ref(video_id):
    return VideoRef(video_id=video_id, captions=f"/data/{video_id}.json", features=f"/data/{video_id}.npy", fps=1.0,
                    caption_features=f"/data/{video_id}.text.npy")


def test_resume_restores_the_checkpointed_video(tmp_path, corpus, results):
    from pipeline.outputs.checkpoint import save_result
    from pipeline.results import prompt_histogram
    from pipeline.transforms.resume import Resume

    output = str(tmp_path / "out")
    saved = results[0]
    params = _config("align.method=norton", "align.prompt_mode=run").align
    histogram = prompt_histogram(_inputs(corpus[0]), params)
    assert histogram is not None and histogram.sum() > 0
    save_result(output, saved, histogram)
    done, todo = _ref(saved.video_id), _ref(corpus[1].video_id)

    p = BeamTestPipeline()
    out = p | beam.Create([todo, done]) | Resume(output)
    tags = ["todo", "rows", stage.SAMPLES, stage.OUTCOMES, stage.FAILURES, stage.HISTOGRAMS, stage.CALIBRATIONS,
            stage.DECOYS]
    assert_that(labelled({tag: out[tag] for tag in tags}), same_elements([
        ("todo", todo), ("rows", list(saved.rows)), (stage.SAMPLES, list(saved.samples)),
        (stage.OUTCOMES, {**saved.outcome.counts(), "videos_resumed": 1}), (stage.HISTOGRAMS, histogram),
    ]))  # no failures, calibrations or decoys
    result = _run(p)
    assert counters(result, "resume") == {stage.VIDEOS: 1}


def test_resume_of_posterior_needs_the_calibration_checkpoint(tmp_path, corpus, results):
    from curation.align import calibration_stats
    from curation.calibration import DecoyPool as Pool
    from curation.calibration import pool_candidates
    from pipeline.outputs.checkpoint import save_calibration, save_result
    from pipeline.transforms.resume import Resume

    output = str(tmp_path / "out")
    failed = results[-1]  # a failed video: restored without calibration (it has none)
    ok, v = results[0], corpus[0]
    save_result(output, ok)
    save_result(output, failed)
    refs = [_ref(ok.video_id), _ref(failed.video_id), _ref(corpus[1].video_id)]

    tags = ["todo", "rows", stage.SAMPLES, stage.FAILURES, stage.OUTCOMES, stage.CALIBRATIONS, stage.DECOYS]
    p = BeamTestPipeline()
    out = p | beam.Create(refs) | Resume(output, calibrated=True)
    assert_that(labelled({tag: out[tag] for tag in tags}), same_elements(
        [("todo", refs[0]), ("todo", refs[2]),  # ok's calibration checkpoint is missing: to do again
         ("rows", list(failed.rows)), (stage.OUTCOMES, {**failed.outcome.counts(), "videos_resumed": 1})]
        + [(stage.FAILURES, dataclasses.asdict(f)) for f in failed.failures]))
    assert counter(_run(p), "resume", stage.VIDEOS) == 1

    params = _config().align
    stats = calibration_stats(v.video_id, v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params)
    candidates = pool_candidates(v.video_id, v.caption_emb)
    save_calibration(output, v.video_id, stats, candidates)
    p = BeamTestPipeline()
    out = p | beam.Create(refs) | Resume(output, calibrated=True)
    assert_that(labelled({tag: out[tag] for tag in tags}), same_elements(
        [("todo", refs[2]), ("rows", list(ok.rows)), ("rows", list(failed.rows)),
         (stage.SAMPLES, list(ok.samples)), (stage.OUTCOMES, {**ok.outcome.counts(), "videos_resumed": 1}),
         (stage.OUTCOMES, {**failed.outcome.counts(), "videos_resumed": 1}), (stage.CALIBRATIONS, stats),
         (stage.DECOYS, Pool(candidates.keys, candidates.video_ids, candidates.emb, candidates.run_keys))]
        + [(stage.FAILURES, dataclasses.asdict(f)) for f in failed.failures]))
    assert counter(_run(p), "resume", stage.VIDEOS) == 2


# ----------------------------------------------------------------------------- run-level estimates


@pytest.fixture(scope="module")
def posterior_inputs(corpus):
    """The three videos plus one failed load and one of mismatched widths (neither usable)."""
    mismatch = dataclasses.replace(_inputs(corpus[1], "v_mismatch"))
    mismatch = dataclasses.replace(
        mismatch, captions=dataclasses.replace(mismatch.captions, emb=corpus[1].caption_emb[:, :16].copy()))
    return [_inputs(v) for v in corpus] + [_failed_load(corpus[2]), mismatch]


def _in_process_calibration(corpus, params, extra_stats=()):
    from curation import calibration
    from curation.align import calibration_stats

    pool = calibration.merge_pools([calibration.pool_candidates(v.video_id, v.caption_emb) for v in corpus])
    stats = [calibration_stats(v.video_id, v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, pool)
             for v in corpus]
    return pool, stats, calibration.estimate(calibration.merge(stats + list(extra_stats)), params.window_s)


def test_attach_evidence_equals_caption_evidence(corpus, posterior_inputs):
    from curation.align import caption_evidence
    from pipeline.transforms.realign import AttachEvidence

    params = _config().align
    expected = [dataclasses.replace(_inputs(v), evidence=caption_evidence(
        v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params)) for v in corpus]
    expected += posterior_inputs[3:]  # not usable: unchanged, no evidence
    p = BeamTestPipeline()
    out = p | beam.Create(posterior_inputs[::-1]) | AttachEvidence(params)
    assert_that(out, same_elements(expected))
    _run(p)


def test_decoy_pool_and_run_calibration_equal_the_in_process_estimates(corpus, posterior_inputs):
    from pipeline.transforms.realign import AttachEvidence, DecoyPool, RunCalibration

    params = _config().align
    pool, _, expected = _in_process_calibration(corpus, params)
    assert expected.sampled == sum(len(v.texts) for v in corpus) and expected.decoys > 0
    orders = [posterior_inputs, [posterior_inputs[i] for i in (2, 4, 0, 3, 1)]]

    p = BeamTestPipeline()
    outputs = {}
    for n, order in enumerate(orders):
        inputs = p | f"Create{n}" >> beam.Create(order) | f"Evidence{n}" >> AttachEvidence(params)
        outputs[f"pool{n}"] = inputs | f"Pool{n}" >> DecoyPool()
        outputs[f"calibration{n}"] = inputs | f"Calibration{n}" >> RunCalibration(params, outputs[f"pool{n}"])
    assert_that(labelled(outputs), same_elements(
        [(f"pool{n}", pool) for n in range(len(orders))] + [(f"calibration{n}", expected) for n in range(len(orders))]))
    _run(p)


def test_run_calibration_with_restored_and_checkpoints(tmp_path, corpus, posterior_inputs):
    """Two videos fresh, the third's stats (and pool candidates) restored: the same estimates as
    all three in process; each fresh video's stats are checkpointed."""
    from curation.calibration import pool_candidates
    from pipeline.outputs.checkpoint import load_calibration
    from pipeline.transforms.realign import AttachEvidence, DecoyPool, RunCalibration

    params = _config().align
    pool, stats, expected = _in_process_calibration(corpus, params)
    output = str(tmp_path / "out")
    fresh = [posterior_inputs[0], posterior_inputs[2], posterior_inputs[3]]

    p = BeamTestPipeline()
    inputs = p | beam.Create(fresh) | AttachEvidence(params)
    restored_pool = p | "RestoredPool" >> beam.Create([pool_candidates(corpus[1].video_id, corpus[1].caption_emb)])
    restored_stats = p | "RestoredStats" >> beam.Create([stats[1]])
    decoys = inputs | DecoyPool(restored_pool)
    calibration = inputs | RunCalibration(params, decoys, restored_stats, output)
    assert_that(labelled({"pool": decoys, "calibration": calibration}),
                same_elements([("pool", pool), ("calibration", expected)]))
    _run(p)

    for i in (0, 2):
        got_stats, got_pool = load_calibration(output, corpus[i].video_id)
        assert _same(got_stats, stats[i])
        assert _same(got_pool, pool_candidates(corpus[i].video_id, corpus[i].caption_emb))
    assert load_calibration(output, corpus[1].video_id) is None
    assert sorted(os.listdir(os.path.join(output, "_work", "calibration"))) == sorted(
        f"{corpus[i].video_id}.npz" for i in (0, 2))


def test_run_prompt_value_equals_histogram_quantile(corpus, posterior_inputs):
    from curation.prompt import histogram_quantile, paired_histogram
    from pipeline.transforms.realign import RunPromptValue

    params = _config("align.method=norton", "align.prompt_mode=run").align
    hists = [paired_histogram(FrameFeatures(v.video_id, v.fps, v.frames),
                              _inputs(v).captions, params) for v in corpus]
    expected_all = histogram_quantile(hists[0] + hists[1] + hists[2], params.prompt_quantile, params)
    expected_two = histogram_quantile(hists[0] + hists[2], params.prompt_quantile, params)
    assert expected_all != params.prompt_value

    p = BeamTestPipeline()
    values = {n: p | f"Create{n}" >> beam.Create(order) | f"Prompt{n}" >> RunPromptValue(params)
              for n, order in enumerate([posterior_inputs, posterior_inputs[::-1]])}
    fresh = p | "Fresh" >> beam.Create([posterior_inputs[i] for i in (0, 2, 3, 4)])
    values["two"] = fresh | "Two" >> RunPromptValue(params)
    restored = p | "Restored" >> beam.Create([hists[1]])
    values["restored"] = fresh | "WithRestored" >> RunPromptValue(params, restored)
    values["none"] = p | "Unusable" >> beam.Create(posterior_inputs[3:]) | "None" >> RunPromptValue(params)
    assert_that(labelled({str(k): v for k, v in values.items()}), equal_to(
        [("0", expected_all), ("1", expected_all), ("two", expected_two), ("restored", expected_all),
         ("none", params.prompt_value)]))
    _run(p)
