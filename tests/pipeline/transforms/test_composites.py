"""Unit tests of the Beam composites in ``pipeline/transforms/`` on the DirectRunner: each
composite on a few hand-made inputs, its exact output elements (``assert_that``/``equal_to``)
and the counters it reports (read back from the pipeline result). Expected values come from
the inputs written here or from the plain functions the DoFns wrap, never from a run."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from curation.records import CaptionSet, FrameFeatures, VideoInputs, VideoRef
from curation.synth.features import WorldParams
from pipeline.config import load_config
from pipeline.storage.retry import RetryPolicy
from pipeline.transforms import stage
from pipeline.transforms.compat import manifest_splits
from pipeline.transforms.load import LoadInputs
from pipeline.transforms.read import ReadManifest
from pipeline.transforms.realign import Realign, SumCounts, _Merge, sum_arrays

# ----------------------------------------------------------------------------- helpers


def _run(p):
    """Run ``p`` (built without ``with``) to the end and return its result."""
    result = p.run()
    result.wait_until_finish()
    return result


def counters(result, namespace: str) -> dict[str, int]:
    """Every counter of ``namespace`` as ``{name: committed value}`` (summed over steps)."""
    found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    out: dict[str, int] = {}
    for metric in found:
        out[metric.key.metric.name] = out.get(metric.key.metric.name, 0) + metric.committed
    return out


def counter(result, namespace: str, name: str) -> int:
    """One counter, queried by name (0 when it was never reported)."""
    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    return sum(metric.committed for metric in found)


def _config():
    return load_config(None, [])


# ----------------------------------------------------------------------------- ReadManifest


def _feature_row(video_id, stem, fps=25.0, **extra):
    row = {"video_id": video_id, "features": f"data/{stem}.features.npy", "fps": fps,
           "captions": f"data/{stem}.json", "caption_features": f"data/{stem}.text.npy"}
    row.update(extra)
    return json.dumps(row)


def test_read_manifest_refs_failures_and_counters(tmp_path):
    base = str(tmp_path)
    abs_features = os.path.join(base, "elsewhere", "abs.features.npy")
    lines = [
        _feature_row("vid_a", "a"),
        "",                                                    # blank: skipped, not a row
        '{"video_id": "vid_broken", "features": ',             # not JSON
        _feature_row("vid_dup", "dup1"),
        _feature_row("vid_b", "b", fps=30, features=abs_features),  # int fps; absolute path kept
        "   ",                                                 # blank too
        _feature_row("vid_dup", "dup2"),
        json.dumps({"video_id": "vid_nofps", "features": "data/x.npy", "captions": "data/x.json",
                    "caption_features": "data/x.text.npy"}),  # feature mode needs fps
        _feature_row("bad id!", "c"),                          # not [A-Za-z0-9_-]
        _feature_row("vid_c", "c", fps=12.5),
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert len(manifest_splits(str(manifest))) >= 3  # rows cross split boundaries: each must be read once

    def ref(video_id, stem, fps, features=None):
        return VideoRef(video_id=video_id, captions=os.path.join(base, "data", f"{stem}.json"),
                        features=features or os.path.join(base, "data", f"{stem}.features.npy"), fps=fps,
                        caption_features=os.path.join(base, "data", f"{stem}.text.npy"))

    expected_refs = [ref("vid_a", "a", 25.0), ref("vid_b", "b", 30.0, abs_features), ref("vid_c", "c", 12.5)]
    expected_failures = [
        ("", "manifest", "bad_manifest_row"),
        ("vid_nofps", "manifest", "bad_manifest_row"),
        ("bad id!", "manifest", "invalid_video_id"),
        ("vid_dup", "manifest", "duplicate_video_id"),
        ("vid_dup", "manifest", "duplicate_video_id"),  # every row of a duplicated id fails
    ]
    n_rows = sum(1 for line in lines if line.strip())

    p = BeamTestPipeline()
    out = p | ReadManifest(str(manifest))
    assert_that(out["refs"], equal_to(expected_refs), label="Refs")
    triples = out[stage.FAILURES] | beam.Map(lambda f: (f["video_id"], f["stage"], f["error_class"]))
    assert_that(triples, equal_to(expected_failures), label="Failures")
    assert_that(out[stage.FAILURES] | "Keys" >> beam.Map(lambda f: sorted(f)),
                equal_to([["error_class", "message", "stage", "video_id"]] * len(expected_failures)),
                label="FailureFields")
    assert_that(out["rows"], equal_to([n_rows]), label="Rows")
    result = _run(p)

    assert counter(result, "manifest", stage.TOTAL) == n_rows == 8
    assert counters(result, "manifest") == {
        stage.TOTAL: 8,
        stage.OK: 5,  # vid_a, vid_b, vid_c and both vid_dup rows parse; the duplicates fail after
        stage.failed("bad_manifest_row"): 2,
        stage.failed("invalid_video_id"): 1,
        stage.failed("duplicate_video_id"): 2,
    }


def test_read_manifest_of_only_blank_lines_has_no_rows_count(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n  \n\n", encoding="utf-8")
    p = BeamTestPipeline()
    out = p | ReadManifest(str(manifest))
    assert_that(out["refs"], equal_to([]), label="Refs")
    assert_that(out[stage.FAILURES], equal_to([]), label="Failures")
    assert_that(out["rows"], equal_to([]), label="Rows")  # without_defaults: no element, not 0
    result = _run(p)
    assert counter(result, "manifest", stage.TOTAL) == 0


# ----------------------------------------------------------------------------- LoadInputs

DIM = 8


def _write_video(directory, video_id, n_frames, captions, caption_rows, frame_dim=DIM, seed=0):
    """Writes ``<id>.features.npy`` (float64, so the float32 cast is checked), a HowTo100M json
    and ``<id>.text.npy``; returns (ref, frames, caption_emb) as written."""
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((n_frames, frame_dim))
    caption_emb = rng.standard_normal((caption_rows, DIM)).astype(np.float32)
    stem = os.path.join(directory, video_id)
    np.save(stem + ".features.npy", frames)
    np.save(stem + ".text.npy", caption_emb)
    starts, ends, texts = zip(*captions)
    with open(stem + ".json", "w", encoding="utf-8") as handle:
        json.dump({"start": list(starts), "end": list(ends), "text": list(texts)}, handle)
    ref = VideoRef(video_id=video_id, captions=stem + ".json", features=stem + ".features.npy", fps=4.0,
                   caption_features=stem + ".text.npy")
    return ref, frames, caption_emb


def _rows(arr):
    return tuple(tuple(float(x) for x in row) for row in arr)


def _summary(video: VideoInputs):
    """A comparable digest of one VideoInputs: every field, arrays as nested tuples."""
    frames = None if video.frames is None else (
        video.frames.video_id, video.frames.fps, str(video.frames.emb.dtype), _rows(video.frames.emb))
    captions = None if video.captions is None else (
        video.captions.video_id, video.captions.start_s, video.captions.end_s, video.captions.text,
        str(video.captions.emb.dtype), _rows(video.captions.emb))
    failures = tuple((f["video_id"], f["stage"], f["error_class"]) for f in video.failures)
    return video.video_id, video.ok, frames, captions, failures


def test_load_inputs_outputs_and_failures(tmp_path):
    d = str(tmp_path)
    cues = [(0.0, 2.0, "cut the onion"), (2.5, 4.0, "  now   the garlic ")]
    good, good_frames, good_emb = _write_video(d, "v_good", 10, cues, 2, seed=1)
    missing, _, missing_emb = _write_video(d, "v_missing", 6, cues, 2, seed=2)
    os.remove(missing.features)
    short, short_frames, _ = _write_video(d, "v_rows", 5, cues, 3, seed=3)  # 3 caption rows, 2 captions
    narrow, _, narrow_emb = _write_video(d, "v_narrow", 5, cues, 2, frame_dim=6, seed=4)  # width 6 != 8

    caption_fields = ((0.0, 2.5), (2.0, 4.0), ("cut the onion", "now the garlic"))  # text normalised
    f32 = lambda a: a.astype(np.float32)
    expected = [
        ("v_good", True, ("v_good", 4.0, "float32", _rows(f32(good_frames))),
         ("v_good", *caption_fields, "float32", _rows(good_emb)), ()),
        ("v_missing", False, None, ("v_missing", *caption_fields, "float32", _rows(missing_emb)),
         (("v_missing", "features", "missing_file"),)),
        ("v_rows", False, ("v_rows", 4.0, "float32", _rows(f32(short_frames))), None,
         (("v_rows", "captions", "dim_mismatch"),)),
        ("v_narrow", False, None, ("v_narrow", *caption_fields, "float32", _rows(narrow_emb)),
         (("v_narrow", "features", "dim_mismatch"),)),
    ]

    p = BeamTestPipeline()
    loaded = (p | beam.Create([good, missing, short, narrow])
              | LoadInputs(DIM, RetryPolicy(attempts=1, backoff_s=0.0)))
    assert_that(loaded | beam.Map(_summary), equal_to(expected))
    result = _run(p)

    assert counters(result, "load") == {
        stage.TOTAL: 4, stage.OK: 1, stage.failed("missing_file"): 1, stage.failed("dim_mismatch"): 2,
    }


# ----------------------------------------------------------------------------- Realign


#: Small videos of D = 512 (at D = 64 a run's calibration finds no visible caption).
WORLD = WorldParams(duration_s=(120, 180))


@pytest.fixture(scope="module")
def run_calibration():
    """Method posterior's run-level calibration of a 16-video run holding ``realign_inputs``'
    video: a lone video calibrated on itself may keep none of its captions."""
    from curation.evaluate import EvalVideo, run_calibration as calibrate
    from curation.synth.features import make_corpus

    return calibrate([EvalVideo.of_synth(v) for v in make_corpus(16, 0, WORLD)], load_config(None, []).align)


@pytest.fixture(scope="module")
def realign_inputs():
    """Three VideoInputs: a synthetic video that keeps some captions and drops others, one whose
    features failed to load, and one whose caption features are of another width."""
    from curation.synth.features import make_corpus

    video = make_corpus(1, 0, WORLD)[0]

    def captions_of(vid, emb):
        return CaptionSet(vid, tuple(video.asr_start_s.tolist()), tuple(video.asr_end_s.tolist()), video.texts, emb)

    aligned = VideoInputs(video.video_id, FrameFeatures(video.video_id, video.fps, video.frames),
                          captions_of(video.video_id, video.caption_emb))
    load_failure = {"video_id": "v_nofeatures", "stage": "features", "error_class": "missing_file",
                    "message": "features file not found: /nowhere.npy"}
    failed_load = VideoInputs("v_nofeatures", None, captions_of("v_nofeatures", video.caption_emb), (load_failure,))
    mismatch = VideoInputs("v_mismatch", FrameFeatures("v_mismatch", video.fps, video.frames),
                           captions_of("v_mismatch", video.caption_emb[:, :32].copy()))
    return [aligned, failed_load, mismatch]


def test_realign_rows_equal_realign_video(realign_inputs, run_calibration):
    from pipeline.results import realign_video

    config = _config()
    provenance = {"model": "test", "config_hash": "0" * 8}
    results = [realign_video(v, config.align, provenance, config.clips, None, run_calibration) for v in realign_inputs]

    def key(row):
        return row.video_id, row.caption_idx, row.kept, row.drop_reason, row.start, row.end, row.key

    expected_rows = [key(r) for res in results for r in res.rows]
    expected_keys = [s["__key__"] for res in results for s in res.samples]
    expected_failures = [dataclasses.asdict(f) for res in results for f in res.failures]
    expected_outcomes = [res.outcome.counts() for res in results]
    # the inputs exercise every branch: kept and unalignable captions, a failed load, a failed alignment
    aligned = results[0]
    assert 0 < aligned.outcome.captions_kept < aligned.outcome.captions_in
    assert {r.drop_reason for r in aligned.rows} == {None, "unalignable"}
    assert {r.drop_reason for res in results[1:] for r in res.rows} == {"video_failed"}
    assert [f.error_class for f in results[2].failures] == ["dim_mismatch"]

    p = BeamTestPipeline()
    calibration = p | "Calibration" >> beam.Create([run_calibration])
    out = p | beam.Create(realign_inputs) | Realign(config.align, provenance, config.clips,
                                                    run_calibration=calibration)
    assert_that(out["rows"] | "Rows" >> beam.FlatMap(lambda rows: [key(r) for r in rows]),
                equal_to(expected_rows), label="Rows")
    assert_that(out[stage.SAMPLES] | "SampleKeys" >> beam.FlatMap(lambda s: [x["__key__"] for x in s]),
                equal_to(expected_keys), label="Samples")
    assert_that(out[stage.FAILURES], equal_to(expected_failures), label="Failures")
    assert_that(out[stage.OUTCOMES], equal_to(expected_outcomes), label="Outcomes")
    result = _run(p)

    n_kept = sum(res.outcome.captions_kept for res in results)
    n_unalignable = sum(1 for res in results for r in res.rows if r.drop_reason == "unalignable")
    n_failed_rows = len(realign_inputs[1].captions.text) + len(realign_inputs[2].captions.text)
    assert counter(result, "realign", stage.KEPT) == n_kept == len(expected_keys)
    assert counters(result, "realign") == {
        stage.TOTAL: 3,
        stage.KEPT: n_kept,
        stage.dropped("unalignable"): n_unalignable,
        stage.dropped("video_failed"): n_failed_rows,
        stage.failed("dim_mismatch"): 1,  # the load failure is counted by its own stage, not here
    }


# ----------------------------------------------------------------------------- combiners


def _combine(fn: beam.CombineFn, values, n_parts: int):
    """``fn`` over ``values`` as a runner may do it: ``n_parts`` accumulators, merged."""
    accs = []
    for part in range(n_parts):
        acc = fn.create_accumulator()
        for value in values[part::n_parts]:
            acc = fn.add_input(acc, value)
        accs.append(acc)
    return fn.extract_output(fn.merge_accumulators(accs))


COUNTS = [{"videos_ok": 1, "captions_in": 5, "captions_kept": 3, "dropped/unalignable": 2},
          {"videos_failed": 1, "captions_in": 4, "captions_kept": 0, "dropped/video_failed": 4},
          {"videos_ok": 1, "captions_in": 2, "captions_kept": 2},
          {"videos_ok": 1, "captions_in": 3, "captions_kept": 1, "dropped/unalignable": 1,
           "dropped/clip_failed": 1, "videos_resumed": 1}]
COUNTS_TOTAL = {"videos_ok": 3, "videos_failed": 1, "videos_resumed": 1, "captions_in": 14, "captions_kept": 6,
                "dropped/unalignable": 3, "dropped/video_failed": 4, "dropped/clip_failed": 1}


def test_sum_counts_is_order_independent():
    for order in itertools.permutations(COUNTS):
        for n_parts in (1, 2, 3):
            assert _combine(SumCounts(), [dict(c) for c in order], n_parts) == COUNTS_TOTAL
    assert SumCounts().extract_output(SumCounts().create_accumulator()) == {}


def test_sum_counts_in_a_pipeline():
    shuffled = list(COUNTS)
    random.Random(3).shuffle(shuffled)
    p = BeamTestPipeline()
    total = p | beam.Create(shuffled) | beam.CombineGlobally(SumCounts())
    assert_that(total, equal_to([COUNTS_TOTAL]))
    _run(p)


def test_merge_of_sum_arrays_is_order_independent():
    rng = np.random.default_rng(5)
    parts = [rng.integers(0, 1000, 16, dtype=np.int64) for _ in range(5)] + [None]
    expected = np.zeros(16, dtype=np.int64)
    for part in parts[:-1]:
        expected = expected + part
    for seed in range(8):
        order = list(parts)
        random.Random(seed).shuffle(order)
        for n_parts in (1, 2, 4):
            got = _combine(_Merge(sum_arrays), order, n_parts)
            assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert _combine(_Merge(sum_arrays), [None, None], 2) is None
    assert _Merge(sum_arrays).extract_output(_Merge(sum_arrays).create_accumulator()) is None


def test_merge_of_decoy_pools_is_order_independent():
    from curation.calibration import (
        POOL_SIZE,
        merge_pools,
        pool_candidates,
        sample_keys,
    )

    rng = np.random.default_rng(9)
    sizes = (120, 30, 110, 60)
    assert sum(sizes) > POOL_SIZE  # the merge must choose, not keep everything
    videos = {f"v{i}": rng.standard_normal((n, 4)).astype(np.float32) for i, n in enumerate(sizes)}
    pools = [pool_candidates(vid, emb) for vid, emb in videos.items()]
    # independently: every caption's key, the POOL_SIZE smallest, in key order
    every = sorted((int(k), vid, i) for vid, emb in videos.items() for i, k in enumerate(sample_keys(vid, len(emb))))
    every = every[:POOL_SIZE]
    want_ids = tuple(vid for _, vid, _ in every)
    want_emb = np.stack([videos[vid][i] for _, vid, i in every])
    for order in itertools.permutations(pools):
        for n_parts in (1, 2):
            got = _combine(_Merge(merge_pools), list(order) + [order[0]], n_parts)  # a repeat too
            assert [int(k) for k in got.keys] == [k for k, _, _ in every]
            assert got.video_ids == want_ids
            assert np.array_equal(got.emb, want_emb)


def test_merge_in_a_pipeline_on_shuffled_inputs():
    parts = [np.arange(8, dtype=np.int64) * i for i in range(1, 7)]
    shuffled = list(parts)
    random.Random(1).shuffle(shuffled)
    expected = np.arange(8, dtype=np.int64) * sum(range(1, 7))

    def matches(actual):
        if len(actual) != 1 or not np.array_equal(actual[0], expected):
            raise BeamAssertException(f"{actual} != [{expected}]")

    p = BeamTestPipeline()
    total = p | beam.Create(shuffled) | beam.CombineGlobally(_Merge(sum_arrays))
    assert_that(total, matches)
    _run(p)
