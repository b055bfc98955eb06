"""End-to-end tests of the feature-mode pipeline (``pipeline.run.run`` on the DirectRunner).

Each module-scoped fixture runs the pipeline once on a small synthetic corpus; the tests check
the output contract of DESIGN §5 against expectations derived from the inputs (the corpus
objects and the files written for them), never against values pasted from a previous run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.run import RunError, run
from pipeline.synth.feature_corpus import write_corpus
from tests import helpers

SEED = 7
N_VIDEOS = 6
SAMPLES_PER_SHARD = 3
BASE_OVERRIDES = (f"output.samples_per_shard={SAMPLES_PER_SHARD}",)
SAMPLE_EXTS = {"npy", "txt", "json"}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus():
    return helpers.small_corpus(N_VIDEOS, SEED)


@pytest.fixture(scope="module")
def inputs(corpus, tmp_path_factory):
    """The corpus written as HowTo100M json captions: (manifest path, truth path)."""
    return write_corpus(str(tmp_path_factory.mktemp("inputs")), corpus, caption_format="json")


@pytest.fixture(scope="module")
def main(inputs, tmp_path_factory):
    """The reference run: grouped layout, several shards."""
    manifest, _ = inputs
    return helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("main") / "out"), BASE_OVERRIDES)


@pytest.fixture(scope="module")
def rerun(inputs, main, tmp_path_factory):
    """The same inputs and config again, into a second output directory."""
    manifest, _ = inputs
    return helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("rerun") / "out"), BASE_OVERRIDES)


@pytest.fixture(scope="module")
def shuffled(inputs, tmp_path_factory):
    manifest, _ = inputs
    return helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("shuffled") / "out"),
                                       BASE_OVERRIDES + ("output.layout=shuffled",))


@pytest.fixture(scope="module")
def prompt_run(inputs, tmp_path_factory):
    manifest, _ = inputs
    return helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("prompt") / "out"),
                                       BASE_OVERRIDES + ("align.method=norton", "align.prompt_mode=run"))


@pytest.fixture(scope="module")
def formats_run(corpus, tmp_path_factory):
    """The same videos again (the run-level calibration sees the same run), half with WebVTT
    and half with SRT captions, in one manifest whose rows point into two sub-directories."""
    root = tmp_path_factory.mktemp("formats")
    vtt_manifest, _ = write_corpus(str(root / "vtt"), corpus[:3], caption_format="vtt")
    srt_manifest, _ = write_corpus(str(root / "srt"), corpus[3:], caption_format="srt")
    manifest = helpers.merge_manifests(str(root), {"vtt": vtt_manifest, "srt": srt_manifest})
    return helpers.run_pipeline(manifest, str(root / "out"), BASE_OVERRIDES)


def _by_id(corpus):
    return {v.video_id: v for v in corpus}


def _kept(out):
    return [r for r in out.index if r["kept"]]


def _key(video_id: str, caption_idx: int) -> str:
    return f"{video_id}_{caption_idx:05d}"


# ----------------------------------------------------------------------------- files


def test_output_directory_has_every_file(main):
    assert main.shard_files, "no shards/*.tar written"
    assert main.index_files, "no index/*.parquet written"
    for rel in ("failures/part-00000.parquet", "summary.json", "shardindex.json"):
        assert os.path.isfile(os.path.join(main.path, rel)), rel
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(main.path) for f in files if ".tmp" in f]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    assert len(main.index_files) <= load_config(None).output.index_files


# ----------------------------------------------------------------------------- index table


def test_index_has_one_row_per_input_caption(main, corpus):
    assert len(main.index) == sum(len(v.texts) for v in corpus)
    pairs = [(r["video_id"], r["caption_idx"]) for r in main.index]
    assert len(set(pairs)) == len(pairs), "duplicate (video_id, caption_idx)"
    assert {r["video_id"] for r in main.index} == {v.video_id for v in corpus}
    for v in corpus:
        assert [r["caption_idx"] for r in main.rows_of(v.video_id)] == list(range(len(v.texts)))


def test_index_text_and_asr_times_equal_the_inputs(main, corpus):
    for v in corpus:
        rows = main.rows_of(v.video_id)
        assert [r["text"] for r in rows] == list(v.texts)
        assert [r["asr_start"] for r in rows] == v.asr_start_s.tolist()
        assert [r["asr_end"] for r in rows] == v.asr_end_s.tolist()


def test_index_columns_and_types(main):
    schema = main.index_table.schema
    expected = {
        "video_id": pa.types.is_string, "caption_idx": pa.types.is_integer, "text": pa.types.is_string,
        "asr_start": pa.types.is_floating, "asr_end": pa.types.is_floating,
        "start": pa.types.is_floating, "end": pa.types.is_floating,
        "alignable": pa.types.is_boolean, "alignability": pa.types.is_floating,
        "similarity": pa.types.is_floating, "bucket_mass": pa.types.is_floating,
        "weight": pa.types.is_floating, "kept": pa.types.is_boolean,
        "shard": pa.types.is_string, "key": pa.types.is_string,
    }
    missing = sorted(set(expected) - set(schema.names))
    assert not missing, f"index lacks columns {missing}"
    for name, is_type in expected.items():
        assert is_type(schema.field(name).type), f"{name}: {schema.field(name).type}"
    for name in ("video_id", "caption_idx", "text", "asr_start", "asr_end", "start", "end",
                 "alignability", "weight", "kept"):
        assert main.index_table.column(name).null_count == 0, f"{name} has nulls for aligned videos"


def test_scores_are_in_range_and_weight_zero_unless_kept(main):
    min_alignability = load_config(None).align.min_alignability
    for r in main.index:
        assert 0.0 <= r["alignability"] <= 1.0, r
        assert 0.0 <= r["weight"] <= 1.0, r
        assert 0.0 <= r["bucket_mass"] <= 1.0, r
        assert math.isfinite(r["similarity"]), r
        # posterior: bucket_mass is the chance share 1 - alignability (norton: 1 - bucket mass)
        assert r["alignability"] == pytest.approx(1.0 - r["bucket_mass"], abs=1e-9)
        assert r["kept"] == (r["alignability"] >= min_alignability), r
        assert r["alignable"] == r["kept"], r
        if r["kept"]:
            assert r["drop_reason"] is None, r
        else:
            assert r["weight"] == 0.0, r
            assert r["drop_reason"] == "unalignable", r
    kept = _kept(main)
    assert kept and len(kept) < len(main.index), "expected some kept and some dropped captions"
    assert any(r["weight"] > 0 for r in kept)


def test_realigned_spans_lie_in_the_video_and_keep_the_asr_duration(main, corpus):
    min_span = load_config(None).align.min_span_s
    for v in corpus:
        video_s = v.frames.shape[0] / v.fps
        for r in main.rows_of(v.video_id):
            assert 0.0 <= r["start"] <= r["end"] <= video_s + 1e-9, r
            want = min(max(r["asr_end"] - r["asr_start"], min_span), video_s)
            assert r["end"] - r["start"] == pytest.approx(want, abs=2e-3), r


def test_kept_rows_have_shard_and_key_others_null(main):
    names = {os.path.basename(s["url"]) for s in main.shardindex["shardlist"]}
    for r in main.index:
        if r["kept"]:
            assert r["key"] == _key(r["video_id"], r["caption_idx"])
            assert r["shard"] in names, r
        else:
            assert r["key"] is None and r["shard"] is None, r


# ----------------------------------------------------------------------------- summary, shardindex


def test_summary_reconciles(main, corpus):
    s = main.summary
    kept = _kept(main)
    assert s["videos_in"] == N_VIDEOS
    assert s["videos_ok"] == N_VIDEOS and s["videos_failed"] == 0
    assert s["videos_in"] == s["videos_ok"] + s["videos_failed"]
    assert s["captions_in"] == sum(len(v.texts) for v in corpus) == len(main.index)
    assert s["captions_in"] == s["captions_kept"] + sum(s["captions_dropped"].values())
    assert s["captions_kept"] == len(kept)
    assert s["captions_dropped"] == {"unalignable": len(main.index) - len(kept)}
    assert s["samples_written"] == len(kept) == sum(e["nsamples"] for e in main.shardindex["shardlist"])
    assert s["shards"] == len(main.shard_files) == len(main.shardindex["shardlist"])
    assert s["failure_ratio"] == 0.0 and s["failures"] == {} and main.failures == []
    assert s["reconciled"] is True and s["problems"] == []
    assert s["prompt_value_run"] is None
    assert s["config_hash"] == load_config(None, list(BASE_OVERRIDES)).hash()
    assert s["config"]["output"]["samples_per_shard"] == SAMPLES_PER_SHARD


def test_shardindex_describes_the_shard_files(main):
    idx = main.shardindex
    assert idx["__kind__"] == "wids-shard-index-v1"
    assert idx["wids_version"] == 1
    urls = [e["url"] for e in idx["shardlist"]]
    # relative to the directory holding the index, as wids resolves it
    assert sorted(urls) == [os.path.relpath(f, main.path) for f in main.shard_files]
    assert all(url.startswith("shards/") for url in urls)
    per_url = {}
    for sample in main.samples:
        name = os.path.basename(sample["__url__"])
        per_url[name] = per_url.get(name, 0) + 1
    for entry in idx["shardlist"]:
        path = os.path.join(main.path, entry["url"])
        assert entry["filesize"] == os.path.getsize(path)
        assert entry["md5sum"] == helpers.md5_of(path)
        assert entry["nsamples"] == per_url.get(os.path.basename(entry["url"]), 0) > 0


def test_wids_reads_the_shard_index_as_written(main, tmp_path):
    """wids resolves each url against the index file's folder: every kept caption comes back by
    random access, with its json, from the index the run wrote (no base, no localname)."""
    import wids

    dataset = wids.ShardListDataset(os.path.join(main.path, "shardindex.json"), cache_dir=str(tmp_path / "wids"),
                                    transformations=[])
    assert len(dataset) == main.summary["captions_kept"] > 0
    samples = [dataset[i] for i in range(len(dataset))]
    kept = {(r["video_id"], r["caption_idx"]): r for r in main.index if r["kept"]}
    got = {(meta["video_id"], meta["caption_idx"]): meta for meta in (json.loads(s[".json"].getvalue()) for s in samples)}
    assert set(got) == set(kept)
    assert {s["__key__"] for s in samples} == {r["key"] for r in kept.values()}


def test_shard_count_follows_samples_per_shard(main):
    n_slots = max(8, math.ceil(len(_kept(main)) / SAMPLES_PER_SHARD))  # default output.min_shards: 8
    assert len(main.shard_files) > 1, "the fixture should spread samples over several shards"
    for path in main.shard_files:
        number = int(os.path.basename(path)[len("shard-"):-len(".tar")])
        assert 0 <= number < n_slots, path


# ----------------------------------------------------------------------------- shards


def test_shards_hold_exactly_the_kept_samples(main):
    keys = [s["__key__"] for s in main.samples]
    assert len(keys) == len(set(keys)), "a key occurs twice"
    assert set(keys) == {r["key"] for r in _kept(main)}


def test_sample_members_agree_with_the_index(main):
    rows = {r["key"]: r for r in _kept(main)}
    for sample in main.samples:
        row = rows[sample["__key__"]]
        assert {k for k in sample if not k.startswith("__")} == SAMPLE_EXTS
        assert os.path.basename(sample["__url__"]) == row["shard"]
        assert sample["txt"].decode("utf-8") == row["text"]
        meta = json.loads(sample["json"])
        assert meta["weight"] == row["weight"]
        assert meta["alignability"] == row["alignability"]
        assert meta["video_id"] == row["video_id"] and meta["caption_idx"] == row["caption_idx"]
        assert meta["span"] == [row["start"], row["end"]]
        assert meta["asr_span"] == [row["asr_start"], row["asr_end"]]
        assert meta["config_hash"] == main.summary["config_hash"]
        assert meta["method"] == main.summary["config"]["align"]["method"] == "posterior"
        assert meta["model"] == main.summary["config"]["model"]["name"]
        assert meta["pretrained"] == main.summary["config"]["model"]["pretrained"]


def test_sample_npy_is_the_span_of_input_frames(main, corpus):
    videos = _by_id(corpus)
    rows = {r["key"]: r for r in _kept(main)}
    for sample in main.samples:
        row = rows[sample["__key__"]]
        v = videos[row["video_id"]]
        arr = helpers.load_npy(sample["npy"])
        assert arr.ndim == 2 and arr.shape[0] >= 1 and arr.shape[1] == v.frames.shape[1]
        assert arr.dtype == np.float32
        centres = (np.arange(v.frames.shape[0]) + 0.5) / v.fps
        inside = np.flatnonzero((centres >= row["start"]) & (centres <= row["end"]))
        if inside.size:
            np.testing.assert_array_equal(arr, v.frames[inside])
        else:
            assert arr.shape[0] == 1
            assert any(np.array_equal(arr[0], f) for f in v.frames)


def test_grouped_layout_keeps_each_video_contiguous_and_in_caption_order(main):
    shards_of_video: dict[str, set] = {}
    for sample in main.samples:
        shards_of_video.setdefault(json.loads(sample["json"])["video_id"], set()).add(sample["__url__"])
    assert all(len(s) == 1 for s in shards_of_video.values()), "a video is split over shards"
    by_shard: dict[str, list] = {}
    for sample in main.samples:
        meta = json.loads(sample["json"])
        by_shard.setdefault(sample["__url__"], []).append((meta["video_id"], meta["caption_idx"]))
    for url, seq in by_shard.items():
        videos = [v for v, _ in seq]
        runs = [v for i, v in enumerate(videos) if i == 0 or videos[i - 1] != v]
        assert len(runs) == len(set(runs)), f"{url}: a video's samples are not contiguous"
        for vid in set(videos):
            idxs = [i for v, i in seq if v == vid]
            assert idxs == sorted(idxs), f"{url}: {vid} not in caption order"


# ----------------------------------------------------------------------------- determinism


def test_rerun_gives_byte_identical_shards_and_shardindex(main, rerun):
    names = [os.path.basename(f) for f in main.shard_files]
    assert names == [os.path.basename(f) for f in rerun.shard_files]
    for name in names:
        assert main.file_bytes(f"shards/{name}") == rerun.file_bytes(f"shards/{name}"), name
    assert main.shardindex_bytes == rerun.shardindex_bytes


def test_rerun_gives_identical_index_and_failures(main, rerun):
    assert [os.path.basename(f) for f in main.index_files] == [os.path.basename(f) for f in rerun.index_files]
    assert main.index_table.equals(rerun.index_table)
    for f in main.index_files:
        rel = f"index/{os.path.basename(f)}"
        assert main.file_bytes(rel) == rerun.file_bytes(rel), rel
    assert main.file_bytes("failures/part-00000.parquet") == rerun.file_bytes("failures/part-00000.parquet")
    volatile = ("timings", "output")
    assert ({k: v for k, v in main.summary.items() if k not in volatile}
            == {k: v for k, v in rerun.summary.items() if k not in volatile})


# ----------------------------------------------------------------------------- layouts, prompt


def test_shuffled_layout_changes_order_not_content(main, shuffled):
    grouped_seq = [s["__key__"] for s in main.samples]
    shuffled_seq = [s["__key__"] for s in shuffled.samples]
    assert sorted(shuffled_seq) == sorted(grouped_seq)
    assert len(shuffled_seq) == len(set(shuffled_seq))
    assert shuffled_seq != grouped_seq
    # the index agrees with where each sample really is
    rows = {r["key"]: r for r in _kept(shuffled)}
    for sample in shuffled.samples:
        assert os.path.basename(sample["__url__"]) == rows[sample["__key__"]]["shard"]
    # within a shard, samples are no longer ordered by (video, caption)
    per_shard: dict[str, list] = {}
    for s in shuffled.samples:
        per_shard.setdefault(s["__url__"], []).append(s["__key__"])
    assert any(seq != sorted(seq) for seq in per_shard.values())
    # the layout changes where samples go, not the alignment
    drop = ["shard"]
    assert shuffled.index_table.drop(drop).sort_by([("video_id", "ascending"), ("caption_idx", "ascending")]).equals(
        main.index_table.drop(drop).sort_by([("video_id", "ascending"), ("caption_idx", "ascending")]))
    assert shuffled.summary["samples_written"] == main.summary["samples_written"]


def test_prompt_mode_run_records_and_uses_the_run_level_prompt(prompt_run, main, corpus):
    from curation.align import align_video
    from curation.prompt import histogram_quantile, paired_histogram
    from curation.records import CaptionSet, FrameFeatures

    params = load_config(None, list(BASE_OVERRIDES) + ["align.method=norton", "align.prompt_mode=run"]).align
    p = prompt_run.summary["prompt_value_run"]
    assert isinstance(p, float) and 0.0 <= p <= 1.0
    assert prompt_run.summary["config"]["align"]["prompt_mode"] == "run"

    counts = None
    for v in corpus:
        caps = CaptionSet(v.video_id, tuple(v.asr_start_s.tolist()), tuple(v.asr_end_s.tolist()), v.texts, v.caption_emb)
        h = paired_histogram(FrameFeatures(v.video_id, v.fps, v.frames), caps, params)
        counts = h if counts is None else counts + h
    assert p == pytest.approx(histogram_quantile(counts, params.prompt_quantile, params), abs=1e-12)

    # every video was aligned with that one p: the same as a fixed prompt of value p
    fixed = dataclasses.replace(params, prompt_mode="fixed", prompt_value=p)
    for v in corpus:
        scores = align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, fixed)
        got = [r["alignability"] for r in prompt_run.rows_of(v.video_id)]
        np.testing.assert_allclose(got, scores.alignability, atol=1e-9)
    assert ([r["alignability"] for r in prompt_run.index] != [r["alignability"] for r in main.index]), \
        "prompt_mode run should differ from per-video prompts"
    s = prompt_run.summary
    assert s["reconciled"] and s["captions_in"] == s["captions_kept"] + sum(s["captions_dropped"].values())


# ----------------------------------------------------------------------------- caption formats


def test_vtt_and_srt_captions_give_the_same_rows_as_json(formats_run, main, corpus):
    videos = corpus
    assert formats_run.summary["videos_ok"] == len(corpus) and formats_run.failures == []
    assert len(formats_run.index) == sum(len(v.texts) for v in videos)
    compare = ("text", "asr_start", "asr_end", "start", "end", "alignable", "alignability",
               "similarity", "bucket_mass", "weight", "kept", "key")
    for v in videos:
        rows = formats_run.rows_of(v.video_id)
        assert [r["text"] for r in rows] == list(v.texts)
        assert [r["asr_start"] for r in rows] == v.asr_start_s.tolist()
        assert [r["asr_end"] for r in rows] == v.asr_end_s.tolist()
        reference = main.rows_of(v.video_id)
        assert [{k: r[k] for k in compare} for r in rows] == [{k: r[k] for k in compare} for r in reference]
    assert {s["__key__"] for s in formats_run.samples} == {r["key"] for r in _kept(formats_run)}


# ----------------------------------------------------------------------------- output guard


def test_rerun_of_a_completed_run_is_a_no_op(main, inputs):
    manifest, _ = inputs
    before = {rel: main.file_bytes(rel) for rel in ("summary.json", "shardindex.json")}
    messages = []
    summary = run(manifest, main.path, load_config(None, list(BASE_OVERRIDES)), notify=messages.append)
    assert summary == main.summary
    assert {rel: main.file_bytes(rel) for rel in before} == before, "a no-op rerun must not touch the output"
    assert len(messages) == 1 and "nothing to do" in messages[0]


def test_completed_run_of_another_config_is_refused(main, inputs):
    manifest, _ = inputs
    before = main.file_bytes("summary.json")
    with pytest.raises(RunError, match="completed run of another manifest or configuration"):
        run(manifest, main.path, load_config(None, [*BASE_OVERRIDES, "align.eps=0.2"]))
    assert main.file_bytes("summary.json") == before, "a refused run must not touch the output"


def test_non_empty_directory_without_a_run_is_refused(inputs, tmp_path):
    manifest, _ = inputs
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        run(manifest, str(tmp_path / "out"), load_config(None, list(BASE_OVERRIDES)))
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


def test_output_that_is_a_file_is_refused(inputs, tmp_path):
    manifest, _ = inputs
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(RunError, match="not a directory"):
        run(manifest, str(target), load_config(None))


def test_foreign_files_are_never_mixed_or_removed(main, inputs, tmp_path):
    manifest, _ = inputs
    out = tmp_path / "out"
    shutil.copytree(main.path, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunError):
        run(manifest, str(out), load_config(None, list(BASE_OVERRIDES)), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_previous_output(main, inputs, tmp_path):
    manifest, _ = inputs
    out = tmp_path / "out"
    shutil.copytree(main.path, out)
    stale = out / "shards" / "shard-999999.tar"
    stale.write_bytes(b"stale")
    (out / "report").mkdir()  # nccurate report's default folder is nccurate's own: replaced, not refused
    (out / "report" / "index.html").write_text("<html></html>")
    again = helpers.run_pipeline(manifest, str(out), BASE_OVERRIDES, overwrite=True)
    assert not stale.exists(), "overwrite must clear shards of the previous run"
    assert not (out / "report").exists()
    assert again.summary["timings"]["started_at"] >= main.summary["timings"]["finished_at"]
    assert again.shardindex_bytes == main.shardindex_bytes
    assert [os.path.basename(f) for f in again.shard_files] == [os.path.basename(f) for f in main.shard_files]


# ----------------------------------------------------------------------------- alignment quality


def test_truly_alignable_captions_score_higher(main, inputs):
    _, truth_path = inputs
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    good, other = [], []
    for video_id, entries in truth.items():
        rows = main.rows_of(video_id)
        assert len(rows) == len(entries)
        for row, (alignable, _, _, text) in zip(rows, entries):
            assert row["text"] == text
            (good if alignable else other).append(row["alignability"])
    assert good and other
    assert np.mean(good) > np.mean(other)


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory):
    """Three videos of the default synthetic world (D = 512, 6-8 minutes): realistic enough
    that realignment must beat the ASR timestamps (the tiny D = 32 world is mostly noise)."""
    from curation.synth.features import WorldParams, make_corpus

    root = tmp_path_factory.mktemp("quality")
    manifest, truth_path = write_corpus(str(root / "in"), make_corpus(3, 3, WorldParams()))
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    return helpers.run_pipeline(manifest, str(root / "out")), truth


def test_realignment_moves_alignable_captions_into_their_true_step(quality_run):
    """For truly alignable captions, the realigned span centre falls inside the true step more
    often than the ASR span centre does, and alignability separates them from chatter."""
    out, truth = quality_run
    asr_hits, new_hits, good, other = [], [], [], []
    for video_id, entries in truth.items():
        rows = out.rows_of(video_id)
        assert len(rows) == len(entries)
        for row, (alignable, t0, t1, _) in zip(rows, entries):
            if not alignable:
                other.append(row["alignability"])
                continue
            good.append(row["alignability"])
            asr_hits.append(t0 <= (row["asr_start"] + row["asr_end"]) / 2 <= t1)
            new_hits.append(t0 <= (row["start"] + row["end"]) / 2 <= t1)
    assert len(asr_hits) >= 20
    assert np.mean(new_hits) > np.mean(asr_hits) + 0.1
    assert np.mean(good) > np.mean(other) + 0.05


def test_posterior_records_and_uses_the_run_level_calibration(main, corpus):
    """summary.json's calibration is the one estimated in process from the same videos (the Beam
    side inputs are exact), and every video was realigned with it."""
    from curation import calibration
    from curation.align import align_video, calibration_stats

    params = load_config(None, list(BASE_OVERRIDES)).align
    pool = calibration.merge_pools([calibration.pool_candidates(v.video_id, v.caption_emb) for v in corpus])
    stats = calibration.merge([calibration_stats(v.video_id, v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s,
                                                 v.fps, params, pool) for v in corpus])
    expected = calibration.estimate(stats, params.window_s)
    assert main.summary["calibration"] == expected.to_dict()
    assert expected.sampled == sum(len(v.texts) for v in corpus)
    for v in corpus:
        scores = align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, None, expected)
        rows = main.rows_of(v.video_id)
        np.testing.assert_allclose([r["alignability"] for r in rows], scores.alignability, rtol=0, atol=1e-9)
        np.testing.assert_allclose([r["start"] for r in rows], np.round(scores.start_s, 3), atol=1e-9)
