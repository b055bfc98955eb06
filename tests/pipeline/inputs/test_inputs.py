"""Tests for pipeline.inputs: manifest rows, path resolution and the .npy loader, each bad input
an :class:`InputError` with the right closed-vocabulary class and a message naming it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from curation.errors import ERROR_CLASSES, InputError
from curation.records import VideoRef
from pipeline.inputs.arrays import load_caption_set, load_frame_features, load_matrix
from pipeline.inputs.manifest import (
    manifest_video_id,
    parse_manifest_line,
    resolve_path,
)

BASE = "/data/corpus"


def _row(**fields) -> dict:
    row = {"video_id": "vid_1", "features": "feats/vid_1.npy", "fps": 1,
           "captions": "caps/vid_1.json", "caption_features": "text/vid_1.npy"}
    row.update(fields)
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()


def _line(**fields) -> str:
    return json.dumps(_row(**fields))


def _raises(error_class: str, fn, *args) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args)
    assert info.value.error_class == error_class, str(info.value)
    assert error_class in ERROR_CLASSES
    assert "\n" not in info.value.message
    return info.value


# ----------------------------------------------------------------------------- manifest rows


def test_relative_paths_resolve_against_the_base_dir():
    ref = parse_manifest_line(_line(), BASE)
    assert isinstance(ref, VideoRef)
    assert ref.video_id == "vid_1"
    assert ref.features == os.path.join(BASE, "feats", "vid_1.npy")
    assert ref.captions == os.path.join(BASE, "caps", "vid_1.json")
    assert ref.caption_features == os.path.join(BASE, "text", "vid_1.npy")
    assert ref.fps == 1.0 and isinstance(ref.fps, float)


def test_dot_segments_are_normalised():
    ref = parse_manifest_line(_line(features="./a/../feats/x.npy", captions="../other/c.vtt"), BASE)
    assert ref.features == "/data/corpus/feats/x.npy"
    assert ref.captions == "/data/other/c.vtt"


def test_absolute_paths_and_uris_are_kept():
    ref = parse_manifest_line(_line(features="/abs/f.npy", captions="gs://bucket/c.srt",
                                    caption_features="s3://b/t.npy"), BASE)
    assert ref.features == "/abs/f.npy"
    assert ref.captions == "gs://bucket/c.srt"
    assert ref.caption_features == "s3://b/t.npy"


def test_relative_paths_under_a_uri_manifest_dir():
    assert resolve_path("data/x.npy", "gs://bucket/run") == "gs://bucket/run/data/x.npy"
    assert resolve_path("data/x.npy", "gs://bucket/run/") == "gs://bucket/run/data/x.npy"


def test_fractional_fps_is_kept():
    assert parse_manifest_line(_line(fps=2.5), BASE).fps == 2.5


@pytest.mark.parametrize("line, error_class", [
    ("not json at all", "bad_manifest_row"),
    ('["a", "list"]', "bad_manifest_row"),
    ("null", "bad_manifest_row"),
    (json.dumps(_row(video_id=_DROP)), "bad_manifest_row"),
    (json.dumps(_row(video_id=17)), "bad_manifest_row"),
    (json.dumps(_row(captions=_DROP)), "bad_manifest_row"),
    (json.dumps(_row(captions="")), "bad_manifest_row"),
    (json.dumps(_row(captions=["a.vtt"])), "bad_manifest_row"),
    (json.dumps(_row(features=_DROP)), "bad_manifest_row"),
    (json.dumps(_row(caption_features=_DROP)), "bad_manifest_row"),
    (json.dumps(_row(fps=_DROP)), "bad_manifest_row"),
    (json.dumps(_row(fps=0)), "bad_manifest_row"),
    (json.dumps(_row(fps=-1)), "bad_manifest_row"),
    (json.dumps(_row(fps="1")), "bad_manifest_row"),
    (json.dumps(_row(fps=True)), "bad_manifest_row"),
    (json.dumps(_row(fps=float("nan"))), "bad_manifest_row"),
    (json.dumps(_row(video="v.mp4")), "bad_manifest_row"),  # both video and features
    (json.dumps(_row(video_id="")), "invalid_video_id"),
    (json.dumps(_row(video_id="../etc")), "invalid_video_id"),
    (json.dumps(_row(video_id="a.b")), "invalid_video_id"),
    (json.dumps(_row(video_id="a b")), "invalid_video_id"),
    (json.dumps(_row(video_id="a/b")), "invalid_video_id"),
    (json.dumps(_row(video_id="é")), "invalid_video_id"),
    (json.dumps(_row(video_id="x" * 129)), "invalid_video_id"),
])
def test_invalid_rows_raise_input_error_with_class(line, error_class):
    _raises(error_class, parse_manifest_line, line, BASE)


def test_longest_valid_video_id_is_accepted():
    assert parse_manifest_line(_line(video_id="A-z_9" * 25 + "abc"), BASE).video_id == "A-z_9" * 25 + "abc"


def test_messages_name_the_field_or_video():
    err = _raises("bad_manifest_row", parse_manifest_line, _line(captions=_DROP), BASE)
    assert "captions" in err.message and "vid_1" in err.message
    err = _raises("bad_manifest_row", parse_manifest_line, _line(fps=-2), BASE)
    assert "fps" in err.message
    err = _raises("invalid_video_id", parse_manifest_line, _line(video_id="x" * 300), BASE)
    assert len(err.message) < 300, "an over-long video_id must be truncated in the message"


def test_video_id_with_trailing_newline_is_invalid():
    _raises("invalid_video_id", parse_manifest_line, _line(video_id="vid_1\n"), BASE)


def test_manifest_video_id_is_best_effort():
    assert manifest_video_id(_line(video_id="abc")) == "abc"
    assert manifest_video_id("{broken") == ""
    assert manifest_video_id("[1, 2]") == ""
    assert manifest_video_id(_line(video_id=5)) == ""
    assert manifest_video_id(_line(video_id="y" * 500)) == "y" * 200


# ----------------------------------------------------------------------------- load_matrix


def _save(tmp_path, name, arr, allow_pickle=False) -> str:
    path = str(tmp_path / name)
    np.save(path, arr, allow_pickle=allow_pickle)
    return path


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f8"])
def test_load_matrix_returns_float32(tmp_path, dtype):
    arr = np.arange(12, dtype=np.float64).reshape(3, 4).astype(dtype)
    out = load_matrix(_save(tmp_path, "m.npy", arr), "features")
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, arr.astype(np.float32))


def test_load_matrix_checks_expected_width(tmp_path):
    path = _save(tmp_path, "m.npy", np.zeros((3, 4), np.float32))
    assert load_matrix(path, "features", 4).shape == (3, 4)
    err = _raises("dim_mismatch", load_matrix, path, "features", 5)
    assert path in err.message


@pytest.mark.parametrize("name, arr", [
    ("int.npy", np.arange(12, dtype=np.int64).reshape(3, 4)),
    ("bool.npy", np.ones((3, 4), dtype=bool)),
    ("complex.npy", np.ones((3, 4), dtype=np.complex64)),
    ("3d.npy", np.zeros((2, 3, 4), np.float32)),
    ("1d.npy", np.zeros(4, np.float32)),
    ("0d.npy", np.float32(1.0)),
    ("empty_rows.npy", np.zeros((0, 4), np.float32)),
    ("empty_cols.npy", np.zeros((3, 0), np.float32)),
    ("nan.npy", np.array([[0.0, np.nan], [1.0, 2.0]], np.float32)),
    ("inf.npy", np.array([[0.0, 1.0], [-np.inf, 2.0]], np.float64)),
    ("structured.npy", np.zeros((3, 2), dtype=[("a", "f4"), ("b", "f4")])),
])
def test_load_matrix_rejects_bad_arrays(tmp_path, name, arr):
    path = _save(tmp_path, name, arr)
    err = _raises("bad_features", load_matrix, path, "features")
    assert path in err.message


def test_load_matrix_counts_non_finite_rows(tmp_path):
    arr = np.zeros((5, 3), np.float32)
    arr[1, 0] = np.nan
    arr[3, :] = np.inf
    err = _raises("bad_features", load_matrix, _save(tmp_path, "x.npy", arr), "features")
    assert "2 row" in err.message


class _Unpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_matrix_never_unpickles(tmp_path):
    marker = tmp_path / "UNPICKLED"
    arr = np.empty((2, 2), dtype=object)
    arr[:] = 0.0
    arr[0, 0] = _Unpickled(str(marker))
    path = _save(tmp_path, "obj.npy", arr, allow_pickle=True)
    err = _raises("bad_features", load_matrix, path, "features")
    assert path in err.message
    assert not marker.exists(), "load_matrix unpickled an object array"


@pytest.mark.parametrize("content", [b"", b"not an npy file", b"\x93NUMPY\x01\x00garbage"])
def test_load_matrix_rejects_non_npy_bytes(tmp_path, content):
    path = tmp_path / "junk.npy"
    path.write_bytes(content)
    _raises("bad_features", load_matrix, str(path), "features")


def test_load_matrix_missing_and_unreadable(tmp_path):
    missing = str(tmp_path / "nope.npy")
    err = _raises("missing_file", load_matrix, missing, "features")
    assert missing in err.message and "features" in err.message
    directory = tmp_path / "dir.npy"
    directory.mkdir()
    err = _raises("unreadable_file", load_matrix, str(directory), "caption_features")
    assert str(directory) in err.message


# ----------------------------------------------------------------------------- loaders


def _ref(tmp_path, caption_rows: int, width: int = 4, frames=None) -> VideoRef:
    caps = tmp_path / "c.json"
    caps.write_text(json.dumps({"start": [0.0, 2.0, 5.5], "end": [1.0, 3.0, 7.25], "text": ["a", " b  c ", "d"]}))
    feats = _save(tmp_path, "f.npy", np.zeros((10, 4), np.float32) if frames is None else frames)
    text = _save(tmp_path, "t.npy", np.ones((caption_rows, width), np.float64))
    return VideoRef(video_id="v1", captions=str(caps), features=feats, fps=2.0, caption_features=text)


def test_load_caption_set_pairs_rows_with_captions(tmp_path):
    caps = load_caption_set(_ref(tmp_path, 3), None)
    assert caps.video_id == "v1"
    assert caps.start_s == (0.0, 2.0, 5.5) and caps.end_s == (1.0, 3.0, 7.25)
    assert caps.text == ("a", "b c", "d")
    assert caps.emb.shape == (3, 4) and caps.emb.dtype == np.float32


def test_load_caption_set_row_count_mismatch(tmp_path):
    ref = _ref(tmp_path, 2)
    err = _raises("dim_mismatch", load_caption_set, ref, None)
    assert ref.caption_features in err.message


def test_load_caption_set_width_against_features_dim(tmp_path):
    _raises("dim_mismatch", load_caption_set, _ref(tmp_path, 3, width=4), 8)


def test_load_frame_features(tmp_path):
    frames = np.random.default_rng(0).standard_normal((10, 4))
    ff = load_frame_features(_ref(tmp_path, 3, frames=frames), 4)
    assert ff.video_id == "v1" and ff.fps == 2.0
    np.testing.assert_array_equal(ff.emb, frames.astype(np.float32))
    _raises("dim_mismatch", load_frame_features, _ref(tmp_path, 3, frames=frames), 3)


def test_video_mode_row_resolves_paths_and_optional_caption_features():
    row = {"video_id": "v1", "video": "media/v1.mp4", "captions": "c/v1.vtt"}
    ref = parse_manifest_line(json.dumps(row), BASE)
    assert ref.video == os.path.join(BASE, "media/v1.mp4") and ref.features is None
    assert ref.caption_features is None and ref.captions == os.path.join(BASE, "c/v1.vtt")
    ref = parse_manifest_line(json.dumps({**row, "caption_features": "t.npy"}), BASE)
    assert ref.caption_features == os.path.join(BASE, "t.npy")


def test_video_mode_captions_from_the_video_itself():
    """``captions`` may be "embedded", "asr" or absent (auto); a file named like them is written ./asr."""
    row = {"video_id": "v1", "video": "media/v1.mp4"}
    assert parse_manifest_line(json.dumps({**row, "captions": "c.srt"}), BASE).captions_from == "file"
    for value, source in (("embedded", "embedded"), ("asr", "asr"), (None, "auto"), (_DROP, "auto")):
        fields = {**row, "captions": value} if value is not _DROP else row
        ref = parse_manifest_line(json.dumps(fields), BASE)
        assert (ref.captions_from, ref.captions) == (source, None)
    ref = parse_manifest_line(json.dumps({**row, "captions": "./asr"}), BASE)
    assert (ref.captions_from, ref.captions) == ("file", os.path.join(BASE, "asr"))
    err = _raises("bad_manifest_row", parse_manifest_line,
                  json.dumps({**row, "captions": "asr", "caption_features": "t.npy"}), BASE)
    assert "caption_features" in err.message and "v1" in err.message
    _raises("bad_manifest_row", parse_manifest_line, json.dumps({**row, "captions": ""}), BASE)
    # feature mode still needs a captions file
    err = _raises("bad_manifest_row", parse_manifest_line, _line(captions=_DROP), BASE)
    assert "'captions' is required" in err.message


def _feature_ref(tmp_path, frames: np.ndarray, captions_emb: np.ndarray) -> VideoRef:
    np.save(tmp_path / "f.npy", frames)
    np.save(tmp_path / "c.npy", captions_emb)
    (tmp_path / "c.json").write_text(json.dumps({"start": [0.0, 2.0], "end": [1.0, 3.0], "text": ["a", "b"]}))
    return VideoRef("v", str(tmp_path / "c.json"), str(tmp_path / "f.npy"), 1.0, str(tmp_path / "c.npy"))


def test_local_features_pickle_as_a_reference_and_read_back_the_same(tmp_path):
    """Frame and caption features from local files cross a runner's stage boundary as the
    file's path and CRC (a few hundred bytes, not the array) and unpickle to equal arrays."""
    import pickle

    rng = np.random.default_rng(0)
    frames, cap = rng.standard_normal((300, 64)).astype(np.float32), rng.standard_normal((2, 512)).astype(np.float32)
    ref = _feature_ref(tmp_path, frames, cap)
    loaded_frames, loaded_caps = load_frame_features(ref, None), load_caption_set(ref, None)
    for obj, arr in ((loaded_frames, frames), (loaded_caps, cap)):
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert len(data) < arr.nbytes / 10
        again = pickle.loads(data)
        np.testing.assert_array_equal(again.emb, arr)
        assert type(again) is type(obj) and again.video_id == "v"
        assert len(pickle.dumps(again)) < arr.nbytes / 10  # and it stays a reference
    again = pickle.loads(pickle.dumps(loaded_caps))
    assert (again.start_s, again.end_s, again.text) == ((0.0, 2.0), (1.0, 3.0), ("a", "b"))
    assert pickle.loads(pickle.dumps(loaded_frames)).fps == 1.0


@pytest.mark.parametrize("change", ["rewritten", "removed"])
def test_a_features_file_changed_after_the_first_read_is_an_error_naming_it(tmp_path, change):
    """Never different frames: a file rewritten (or gone) between reads fails with its name."""
    import pickle

    rng = np.random.default_rng(1)
    ref = _feature_ref(tmp_path, rng.standard_normal((20, 8)).astype(np.float32), np.ones((2, 8), np.float32))
    data = pickle.dumps(load_frame_features(ref, 8))
    if change == "rewritten":
        np.save(tmp_path / "f.npy", rng.standard_normal((20, 8)).astype(np.float32))
    else:
        os.remove(tmp_path / "f.npy")
    with pytest.raises(InputError, match=r"f\.npy"):
        pickle.loads(data)
