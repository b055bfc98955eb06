"""Tests for pipeline.synth.video_corpus: the video-mode demo corpus on disk is what a user would
give the pipeline (manifest rows, captions files, H.264 videos) plus the truth of its plans,
and it is byte-for-byte reproducible."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from curation.synth.video import VideoParams, frames_of, make_video_plan
from pipeline.inputs.captions import parse_captions
from pipeline.inputs.manifest import parse_manifest_line
from pipeline.synth.feature_corpus import truth_entries
from pipeline.synth.video_corpus import write_video_corpus

SEED = 7
PARAMS = VideoParams(duration_s=(20, 30))
FORMATS = ("vtt", "json", "srt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("synthvid") / "a")
    manifest, truth = write_video_corpus(directory, 3, SEED, FORMATS, PARAMS)
    return directory, manifest, truth


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, directory)] = handle.read()
    return out


def test_manifest_rows_are_video_mode_rows(corpus):
    directory, manifest, _ = corpus
    assert manifest == os.path.join(directory, "manifest.jsonl")
    with open(manifest, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    plans = [make_video_plan(i, SEED, PARAMS) for i in range(3)]
    assert len(lines) == 3
    for i, (line, plan) in enumerate(zip(lines, plans)):
        row = json.loads(line)
        assert row == {"video_id": plan.video_id, "video": f"data/{plan.video_id}.mp4",
                       "captions": f"data/{plan.video_id}.{FORMATS[i]}"}
        ref = parse_manifest_line(line, directory)
        assert ref.video_id == plan.video_id and ref.features is None and ref.caption_features is None
        assert os.path.isfile(ref.video) and os.path.isfile(ref.captions)


def test_captions_parse_back_to_the_plans_captions(corpus):
    directory, _, _ = corpus
    for i in range(3):
        plan = make_video_plan(i, SEED, PARAMS)
        path = os.path.join(directory, "data", f"{plan.video_id}.{FORMATS[i]}")
        with open(path, "rb") as handle:
            cues = parse_captions(path, handle.read())
        assert [c.text for c in cues] == list(plan.texts)
        np.testing.assert_allclose([c.start_s for c in cues], plan.asr_start_s, atol=1e-3)
        np.testing.assert_allclose([c.end_s for c in cues], plan.asr_end_s, atol=1e-3)


def test_truth_matches_the_plans(corpus):
    _, _, truth_path = corpus
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    plans = [make_video_plan(i, SEED, PARAMS) for i in range(3)]
    assert list(truth) == [p.video_id for p in plans]
    for plan in plans:
        assert truth[plan.video_id] == truth_entries(plan)
        assert sum(row[0] for row in truth[plan.video_id]) == int(plan.alignable.sum())


def test_videos_have_the_plans_duration_and_pixels(corpus):
    import av

    from pipeline.media.decode import decode_frames

    directory, _, _ = corpus
    for i in range(2):
        plan = make_video_plan(i, SEED, PARAMS)
        path = os.path.join(directory, "data", f"{plan.video_id}.mp4")
        dec = decode_frames(path, 1, 48, "pyav")
        assert dec.duration_s == pytest.approx(plan.duration_s, abs=1e-3)
        assert len(dec.frames) == plan.duration_s
        with av.open(path) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", plan.width, plan.height)
            assert float(stream.average_rate) == plan.fps
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(decoded) == plan.n_frames
        for k in (0, plan.n_frames // 2, plan.n_frames - 1):  # frame k is the plan's frame k
            want = next(frames_of(plan, [k])).astype(float)
            err = np.abs(decoded[k].astype(float) - want).mean()
            other = np.abs(decoded[k].astype(float) - next(frames_of(plan, [(k + 37) % plan.n_frames])).astype(float)).mean()
            assert err < 4 and err < other, (k, err, other)


def test_two_writes_are_byte_identical(corpus, tmp_path):
    directory, _, _ = corpus
    write_video_corpus(str(tmp_path / "b"), 3, SEED, FORMATS, PARAMS)
    first, second = _files(directory), _files(str(tmp_path / "b"))
    assert sorted(first) == sorted(second)
    assert len(first) == 2 * 3 + 2
    for name in first:
        assert first[name] == second[name], name
