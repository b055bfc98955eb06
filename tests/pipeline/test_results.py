"""``pipeline.results``: the index row declared once (Python and parquet), ``realign_video`` as
the whole of one video's realignment, and the checkpoint round trip of its typed result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from curation.align import AlignParams
from curation.records import CaptionSet, Failure, FrameFeatures, VideoInputs
from pipeline.config import load_config
from pipeline.results import IndexRow, Outcome, VideoResult, realign_video


def test_index_schema_is_the_index_row_in_design_order():
    from pipeline.results import FAILURE_SCHEMA, INDEX_SCHEMA

    assert INDEX_SCHEMA.names == list(IndexRow._fields)
    assert INDEX_SCHEMA.names[:3] == ["video_id", "caption_idx", "text"] and INDEX_SCHEMA.names[-2:] == ["shard", "key"]
    assert INDEX_SCHEMA.field("caption_idx").type == pa.int32()
    assert INDEX_SCHEMA.field("alignable").type == pa.bool_() and INDEX_SCHEMA.field("alignable").nullable
    assert INDEX_SCHEMA.field("weight").type == pa.float64() and INDEX_SCHEMA.field("key").type == pa.string()
    assert FAILURE_SCHEMA.names == ["video_id", "stage", "error_class", "message"]


def _video(video_id: str = "v1", n_captions: int = 3, width: int = 8, caption_width: int = 8) -> VideoInputs:
    rng = np.random.default_rng(0)
    frames = FrameFeatures(video_id, 1.0, rng.standard_normal((30, width)).astype(np.float32))
    starts = tuple(float(5 * i) for i in range(n_captions))
    captions = CaptionSet(video_id, starts, tuple(s + 3.0 for s in starts), tuple(f"c{i}" for i in range(n_captions)),
                          rng.standard_normal((n_captions, caption_width)).astype(np.float32))
    return VideoInputs(video_id, frames, captions)


def _params(min_alignability: float) -> AlignParams:
    return dataclasses.replace(load_config(None).align, min_alignability=min_alignability)


def test_realign_video_keeps_every_caption_as_a_row_and_counts_it():
    clips = load_config(None).clips
    kept_all = realign_video(_video(), _params(0.0), {"model": "m"}, clips)
    assert [r.caption_idx for r in kept_all.rows] == [0, 1, 2] and all(r.kept for r in kept_all.rows)
    assert [s["__key__"] for s in kept_all.samples] == ["v1_00000", "v1_00001", "v1_00002"]
    assert kept_all.outcome == Outcome(True, 3, 3, ())
    assert kept_all.outcome.counts() == {"videos_ok": 1, "captions_in": 3, "captions_kept": 3}
    dropped_all = realign_video(_video(), _params(1.1), {}, clips)
    assert dropped_all.samples == () and {r.drop_reason for r in dropped_all.rows} == {"unalignable"}
    assert dropped_all.outcome.dropped == (("unalignable", 3),)


def test_captions_that_start_after_the_footage_are_dropped_as_past_footage():
    """30 frames at 1 fps cover [0, 30) s: captions starting at 25 s and 29.9 s are scored, those
    at 30 s and 40 s (a truncated download, say) have no frame and are dropped, weight 0."""
    video = _video(n_captions=4)
    captions = dataclasses.replace(video.captions, start_s=(25.0, 29.9, 30.0, 40.0), end_s=(28.0, 33.0, 33.0, 43.0))
    result = realign_video(dataclasses.replace(video, captions=captions), _params(0.0), {}, load_config(None).clips)
    assert [r.drop_reason for r in result.rows] == [None, None, "past_footage", "past_footage"]
    assert [r.weight == 0.0 for r in result.rows] == [False, False, True, True]
    assert result.outcome.dropped == (("past_footage", 2),) and len(result.samples) == 2


def test_a_video_that_cannot_be_aligned_fails_with_its_rows_dropped():
    result = realign_video(_video(caption_width=4), _params(0.0), {}, load_config(None).clips)
    assert not result.outcome.ok and result.outcome.counts()["videos_failed"] == 1
    assert [f.error_class for f in result.realign_failures] == ["dim_mismatch"]
    assert all(r.drop_reason == "video_failed" and r.weight == 0.0 for r in result.rows) and len(result.rows) == 3


def test_load_failures_travel_with_the_result():
    failed = VideoInputs("v2", None, _video("v2").captions,
                         ({"video_id": "v2", "stage": "features", "error_class": "missing_file", "message": "m"},))
    result = realign_video(failed, _params(0.0), {}, load_config(None).clips)
    assert result.failures == (Failure("v2", "features", "missing_file", "m"),) and result.realign_failures == ()
    assert result.outcome == Outcome(False, 3, 0, (("video_failed", 3),))


def test_outcome_counts_round_trip():
    outcome = Outcome(False, 4, 1, (("clip_failed", 1), ("unalignable", 2)), resumed=True)
    assert Outcome.from_counts(outcome.counts()) == outcome
    assert outcome.counts()["dropped/unalignable"] == 2 and outcome.counts()["videos_resumed"] == 1


def test_checkpoint_round_trip_is_the_same_typed_result(tmp_path):
    from pipeline.outputs.checkpoint import (
        load_result,
        result_file,
        result_outcome,
        save_result,
    )

    result = realign_video(_video(), _params(0.0), {"model": "m"}, load_config(None).clips)
    histogram = np.arange(5, dtype=np.int64)
    save_result(str(tmp_path), result, histogram)
    saved = load_result(str(tmp_path), "v1")
    assert saved.result == result and isinstance(saved.result.rows[0], IndexRow)
    np.testing.assert_array_equal(saved.histogram, histogram)
    assert result_outcome(result_file(str(tmp_path), "v1")) == result.outcome
    assert load_result(str(tmp_path), "absent") is None


def test_result_is_frozen():
    result = VideoResult("v", (), (), (), Outcome(True, 0, 0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = ()  # type: ignore[misc]
