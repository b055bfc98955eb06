"""``nccurate inspect OUT`` on a real feature-mode run with failures: its totals equal
summary.json, its per-reason counts equal the index, failure classes come with an example; a
missing, unreadable or foreign summary.json is a one-line error naming it (inspect and report
share the reader, ``pipeline.tools.read``)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.synth.feature_corpus import write_corpus
from tests import helpers


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """Three good videos, one whose features file is gone (its captions parse: video_failed
    rows) and one with an invalid video_id."""
    root = tmp_path_factory.mktemp("inspect")
    manifest, _ = write_corpus(str(root / "in"), helpers.small_corpus(8, 5))
    with open(manifest, encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    with open(manifest, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**first, "video_id": "gone", "features": "data/gone.features.npy"}) + "\n")
        handle.write(json.dumps({**first, "video_id": "bad.id"}) + "\n")
    return helpers.run_pipeline(manifest, str(root / "out"), ("max_failure_ratio=1.0",))


@pytest.fixture(scope="module")
def printed(out):
    result = CliRunner().invoke(main, ["inspect", out.path], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _ints(pattern: str, text: str) -> tuple[int, ...]:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in\n{text}"
    return tuple(int(g) for g in match.groups())


def test_totals_equal_summary(out, printed):
    s = out.summary
    assert _ints(r"^videos +(\d+) in, (\d+) ok, (\d+) failed$", printed) == (s["videos_in"], s["videos_ok"], s["videos_failed"])
    assert _ints(r"^captions +(\d+) in, (\d+) kept, (\d+) dropped$", printed) == (
        s["captions_in"], s["captions_kept"], sum(s["captions_dropped"].values()))
    assert _ints(r"^samples +(\d+) in (\d+) shard", printed) == (s["samples_written"], s["shards"])
    assert s["videos_failed"] == 2 and s["config_hash"] in printed
    calib = s["calibration"]  # the timing model the run learnt, in words
    assert f"timing    {calib['description']} (learnt from {calib['sampled']} captions)" in printed.splitlines()


def test_outcome_counts_equal_index(out, printed):
    expected = Counter("kept" if r["kept"] else r["drop_reason"] for r in out.index)
    assert {"kept", "unalignable", "video_failed"} <= set(expected)
    for reason, n in expected.items():
        assert _ints(rf"^  {reason} +(\d+) ", printed) == (n,)


def test_failure_classes_with_an_example(out, printed):
    classes = Counter(f["error_class"] for f in out.failures)
    assert set(classes) == {"missing_file", "invalid_video_id"}
    for cls, n in classes.items():
        assert _ints(rf"^  {cls} +(\d+)$", printed) == (n,)
    block = printed.split("failure classes", 1)[1]
    assert re.search(r"missing_file.*\n +e\.g\. .*gone\.features\.npy", block)
    assert re.search(r"invalid_video_id.*\n +e\.g\. .*bad\.id", block)


def test_histograms_count_every_value(out, printed):
    aligned = [r for r in out.index if r["alignability"] is not None]
    sections = {
        "alignability, realigned captions": len(aligned),
        "weight, kept captions": sum(r["kept"] for r in out.index),
        "shift = realigned start - ASR start, seconds": len(aligned),
    }
    for title, n in sections.items():
        block = printed.split(title, 1)[1].split("\n\n", 1)[0]
        assert block.startswith(f" (n={n})")
        assert sum(int(line.rsplit(" ", 1)[1]) for line in block.splitlines()[1:]) == n


def test_sample_captions_show_both_spans(out, printed):
    samples = printed.split("sample captions", 1)[1].splitlines()[1:]
    assert len(samples) == 6 and all(" -> " in line and "ASR" in line for line in samples)
    best = max((r for r in out.index if r["kept"]), key=lambda r: r["weight"])
    assert f"{best['video_id']}#{best['caption_idx']}" in samples[0]


def test_not_an_output_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "summary.json" in lines[0]


@pytest.mark.parametrize("content, needle", [
    ("{not json", "cannot be read (JSONDecodeError"),
    ('{"videos_in": 1, "videos_ok": 1}', "not an nccurate summary (no videos_failed, captions_in"),
    ("[1, 2]", "not an nccurate summary (no videos_in"),
])
def test_unreadable_summary_is_one_line_naming_the_file(tmp_path, content, needle):
    (tmp_path / "summary.json").write_text(content)
    for command in ("inspect", "report"):
        result = CliRunner().invoke(main, [command, str(tmp_path)], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path / "summary.json") in lines[0] and needle in lines[0], lines
    assert not (tmp_path / "report").exists()
