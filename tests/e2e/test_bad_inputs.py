"""End-to-end tests of bad inputs: every bad manifest row or file fails *that* video, with a
closed-vocabulary ``error_class`` and a one-line message, and never the run; the good videos
are unaffected and the books still balance. The failure ratio guard turns too many failures
into a :class:`RunError`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from curation.errors import ERROR_CLASSES
from pipeline.config import load_config
from pipeline.run import RunError, run
from pipeline.synth.feature_corpus import captions_text, write_corpus
from tests import helpers

N_GOOD = 4


class _Unpickled:
    """Unpickling this object creates a marker file: proof that a features file was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass(frozen=True)
class Bad:
    """One bad manifest row and the failure rows it must produce."""

    line: str                  # the manifest line
    video_id: str              # video_id of its failure rows
    error_class: str
    stage: str
    names: str                 # the message must contain this (a file name or the video_id)
    n_failures: int = 1
    index_rows: int = 0        # rows in the index (captions parsed, video failed later)
    copies: int = 1            # how many times the line appears in the manifest


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = helpers.small_corpus(N_GOOD, 21)
    write_corpus(str(root), good, caption_format="json")
    with open(root / "manifest.jsonl", encoding="utf-8") as handle:
        good_lines = [line for line in handle.read().splitlines() if line.strip()]
    donor = good[0]                      # its captions/features are reused by bad rows
    m, dim = donor.caption_emb.shape
    caps, text = f"data/{donor.video_id}.json", f"data/{donor.video_id}.text.npy"
    feats = f"data/{donor.video_id}.features.npy"
    os.makedirs(root / "bad", exist_ok=True)

    def save(name, arr, allow_pickle=False):
        np.save(root / "bad" / name, arr, allow_pickle=allow_pickle)
        return f"bad/{name}"

    def row(video_id, features=feats, captions=caps, caption_features=text, fps=1.0, omit=()):
        r = {"video_id": video_id, "features": features, "fps": fps, "captions": captions,
             "caption_features": caption_features}
        for key in omit:
            del r[key]
        return json.dumps(r)

    nan = donor.frames.copy()
    nan[5, 3] = np.nan
    wrong_width = np.concatenate([donor.caption_emb, donor.caption_emb[:, :1]], axis=1)
    pickled = np.empty(2, dtype=object)
    marker = str(root / "UNPICKLED")
    pickled[0], pickled[1] = _Unpickled(marker), np.zeros(3)
    (root / "bad" / "broken.json").write_text('{"start": [0.0, 1.0], "end": [1.0, ')
    (root / "bad" / "noheader.vtt").write_text(captions_text(donor, "vtt").replace("WEBVTT\n\n", "", 1))

    bad = [
        Bad(row("no_features", features="bad/nope.features.npy"), "no_features", "missing_file", "features",
            "nope.features.npy", index_rows=m),
        Bad(row("nan_features", features=save("nan.npy", nan)), "nan_features", "bad_features", "features",
            "nan.npy", index_rows=m),
        Bad(row("flat_features", features=save("flat.npy", donor.frames[:, 0].copy())), "flat_features",
            "bad_features", "features", "flat.npy", index_rows=m),
        Bad(row("pickled_features", features=save("pickled.npy", pickled, allow_pickle=True)), "pickled_features",
            "bad_features", "features", "pickled.npy", index_rows=m),
        Bad(row("wide_text", caption_features=save("wide.npy", wrong_width)), "wide_text", "dim_mismatch",
            "realign", "wide_text", index_rows=m),
        Bad(row("short_text", caption_features=save("short.npy", donor.caption_emb[:-1])), "short_text",
            "dim_mismatch", "captions", "short.npy"),
        Bad(row("broken_json", captions="bad/broken.json"), "broken_json", "bad_captions", "captions", "broken.json"),
        Bad(row("no_header", captions="bad/noheader.vtt"), "no_header", "bad_captions", "captions", "noheader.vtt"),
        Bad(row("../etc"), "../etc", "invalid_video_id", "manifest", "../etc"),
        Bad(row("a.b"), "a.b", "invalid_video_id", "manifest", "a.b"),
        Bad(row("x" * 300), "x" * 300, "invalid_video_id", "manifest", "x" * 100),
        Bad("this line is { not JSON", "", "bad_manifest_row", "manifest", "this line is"),
        Bad(row("no_captions", omit=("captions",)), "no_captions", "bad_manifest_row", "manifest", "captions"),
        Bad(row("dup_video"), "dup_video", "duplicate_video_id", "manifest", "dup_video", n_failures=2, copies=2),
    ]
    bad_lines = [b.line for b in bad for _ in range(b.copies)]
    lines = good_lines[:2] + ["", "   "] + bad_lines[:8] + good_lines[2:] + [""] + bad_lines[8:]
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n\n")
    return {"root": root, "manifest": str(manifest), "good": good, "bad": bad, "marker": marker,
            "nonblank": sum(1 for line in lines if line.strip())}


@pytest.fixture(scope="module")
def bad_run(bad_world):
    out = str(bad_world["root"] / "out")
    return helpers.run_pipeline(bad_world["manifest"], out, ["max_failure_ratio=1.0"])


def _failures_of(run_out, bad: Bad) -> list[dict]:
    # failure rows carry at most a prefix of an over-long video_id
    if len(bad.video_id) > 128:
        return [f for f in run_out.failures if f["video_id"] and bad.video_id.startswith(f["video_id"])]
    return [f for f in run_out.failures if f["video_id"] == bad.video_id]


def test_good_videos_are_ok_with_index_rows(bad_run, bad_world):
    failed_ids = {f["video_id"] for f in bad_run.failures}
    for v in bad_world["good"]:
        assert v.video_id not in failed_ids
        rows = bad_run.rows_of(v.video_id)
        assert [r["caption_idx"] for r in rows] == list(range(len(v.texts)))
        assert [r["text"] for r in rows] == list(v.texts)
        assert all(r["drop_reason"] in (None, "unalignable") for r in rows)
    assert bad_run.summary["videos_ok"] == N_GOOD


BAD_ROWS = ("missing features", "NaN features", "1-D features", "pickled object features",
            "caption width", "caption row count", "malformed json captions", "vtt without header",
            "video_id ../etc", "video_id a.b", "video_id of 300 chars", "line not JSON",
            "no captions field", "duplicate video_id (two identical rows)")


@pytest.mark.parametrize("which", range(len(BAD_ROWS)), ids=BAD_ROWS)
def test_each_bad_row_is_a_failure_with_its_class(bad_run, bad_world, which):
    assert len(bad_world["bad"]) == len(BAD_ROWS)
    bad = bad_world["bad"][which]
    rows = _failures_of(bad_run, bad)
    assert len(rows) == bad.n_failures, rows
    for f in rows:
        assert f["error_class"] == bad.error_class, f
        assert f["stage"] == bad.stage, f
        assert f["error_class"] in ERROR_CLASSES
        msg = f["message"]
        assert msg and "\n" not in msg and "\r" not in msg, msg
        assert bad.names in msg, f"message does not name {bad.names!r}: {msg}"
        assert "Traceback" not in msg


def test_failed_videos_have_video_failed_index_rows_only_when_captions_parsed(bad_run, bad_world):
    for bad in bad_world["bad"]:
        if len(bad.video_id) > 128 or not bad.video_id:
            continue
        rows = bad_run.rows_of(bad.video_id)
        assert len(rows) == bad.index_rows, bad.video_id
        for r in rows:
            assert r["kept"] is False and r["drop_reason"] == "video_failed", r
            assert r["weight"] == 0.0 and r["shard"] is None and r["key"] is None, r
    kept_videos = {r["video_id"] for r in bad_run.index if r["kept"]}
    assert kept_videos <= {v.video_id for v in bad_world["good"]}


def test_pickled_features_are_never_unpickled(bad_run, bad_world):
    assert not os.path.exists(bad_world["marker"]), "a pickled features file was loaded with pickle"


def test_every_failure_row_is_expected(bad_run, bad_world):
    expected = sum(b.n_failures for b in bad_world["bad"])
    assert len(bad_run.failures) == expected
    classes = {}
    for b in bad_world["bad"]:
        classes[b.error_class] = classes.get(b.error_class, 0) + b.n_failures
    assert bad_run.summary["failures"] == classes
    assert all(f["error_class"] in ERROR_CLASSES for f in bad_run.failures)


def test_summary_reconciles_with_failures(bad_run, bad_world):
    s = bad_run.summary
    n_bad_rows = sum(b.copies for b in bad_world["bad"])
    assert s["videos_in"] == bad_world["nonblank"] == N_GOOD + n_bad_rows
    assert s["videos_ok"] == N_GOOD
    assert s["videos_failed"] == n_bad_rows
    assert s["videos_in"] == s["videos_ok"] + s["videos_failed"]
    assert s["failure_ratio"] == pytest.approx(n_bad_rows / (N_GOOD + n_bad_rows))
    good_captions = sum(len(v.texts) for v in bad_world["good"])
    failed_captions = sum(b.index_rows for b in bad_world["bad"])
    assert s["captions_in"] == len(bad_run.index) == good_captions + failed_captions
    assert s["captions_in"] == s["captions_kept"] + sum(s["captions_dropped"].values())
    assert s["captions_dropped"].get("video_failed") == failed_captions
    kept = [r for r in bad_run.index if r["kept"]]
    assert s["captions_kept"] == len(kept) == s["samples_written"]
    assert s["samples_written"] == sum(e["nsamples"] for e in bad_run.shardindex["shardlist"])
    assert {x["__key__"] for x in bad_run.samples} == {r["key"] for r in kept}
    assert s["reconciled"] is True


def test_default_failure_ratio_fails_the_run(bad_world, tmp_path):
    with pytest.raises(RunError, match="max_failure_ratio") as info:
        run(bad_world["manifest"], str(tmp_path / "out"), load_config(None))
    assert "\n" not in str(info.value)
    # the run's records are still there to explain the failure
    with open(tmp_path / "out" / "summary.json", encoding="utf-8") as handle:
        assert json.load(handle)["videos_failed"] == sum(b.copies for b in bad_world["bad"])


def test_missing_manifest_is_a_run_error_naming_it(tmp_path):
    missing = str(tmp_path / "nowhere" / "manifest.jsonl")
    with pytest.raises(RunError, match="manifest") as info:
        run(missing, str(tmp_path / "out"), load_config(None))
    assert missing in str(info.value)
    assert not os.path.exists(tmp_path / "out"), "no output should be created for a missing manifest"


def test_unreadable_manifest_is_a_run_error_naming_it(tmp_path):
    directory = tmp_path / "manifest.jsonl"
    directory.mkdir()  # exists, but cannot be read as a file
    with pytest.raises(RunError) as info:
        run(str(directory), str(tmp_path / "out"), load_config(None))
    assert str(directory) in str(info.value)


def test_video_id_with_trailing_newline_fails_only_its_row(tmp_path):
    videos = helpers.small_corpus(2, 5)
    manifest, _ = write_corpus(str(tmp_path / "in"), videos)
    with open(manifest, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    bad_id = rows[0]["video_id"] + "\n"
    rows[0]["video_id"] = bad_id
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows) + "\n")
    out = helpers.run_pipeline(manifest, str(tmp_path / "out"), ["max_failure_ratio=1.0"])
    assert out.summary["videos_ok"] == 1 and out.summary["videos_failed"] == 1
    assert [(f["video_id"], f["error_class"]) for f in out.failures] == [(bad_id, "invalid_video_id")]
    assert all("\n" not in r["video_id"] for r in out.index)
