"""``pipeline.inputs.caption_tables``: the streaming reader of a HowTo100M ``caption.json`` against
``json.loads`` of the same bytes (read 7 bytes at a time, so keys, strings, numbers and escapes
are cut by reads), its memory on a multi-MB file, and the conversion of JSON, JSON Lines and
parquet tables (both shapes) into per-video sidecar files: exact bytes, bad entries reported and
skipped, invalid keys mapped, ``only``, compression and a ``memory://`` store."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tracemalloc
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inputs.caption_tables import (
    CaptionTableError, convert_caption_table, iter_json_object, safe_video_id, table_format,
)
from pipeline.inputs.captions import CaptionCue, parse_captions
from pipeline.storage import files


def _sidecar(start, end, text) -> bytes:
    """The bytes the module docstring promises, built independently of the module."""
    return (json.dumps({"end": end, "start": start, "text": text}, sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False) + "\n").encode("utf-8")


def _corpus(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        k = rng.randint(1, 6)
        starts = sorted(round(rng.uniform(0, 500), rng.randint(0, 6)) for _ in range(k))
        out[f"vid{i:03d}-{rng.randint(0, 99999)}"] = {
            "start": starts,
            "end": [s + rng.choice([0, 1, 2.5, 1e-7, 12345678901234]) for s in starts],
            "text": [rng.choice(["so today", "héllo wörld", "日本語のテキスト", "tab\tand \"quotes\" \\ back",
                                 "emoji \U0001F600 pair", "esc \u00e9\u2028 line", "  spaced  "]) for _ in range(k)],
        }
    return out


class _CountingReader(io.RawIOBase):
    """A binary file that records every read size."""

    def __init__(self, data: bytes):
        self.inner, self.sizes = io.BytesIO(data), []

    def readable(self):
        return True

    def read(self, n=-1):
        self.sizes.append(n)
        return self.inner.read(n)


# ------------------------------------------------------------------------------------ the reader


@pytest.mark.parametrize("layout", ["compact", "indented", "odd_whitespace"])
def test_reader_with_7_byte_reads_equals_json_loads(tmp_path, layout):
    obj = _corpus(40)
    obj["empty"] = {}
    obj["scalars"] = [True, False, None, -0.0, 1.5e-300, -12, 10**30]
    obj['key with "quote" \u00e9'] = "value"
    obj["n"] = 1234567890123  # a top-level number longer than one read
    text = {"compact": json.dumps(obj, separators=(",", ":"), ensure_ascii=False),
            "indented": json.dumps(obj, indent=2, ensure_ascii=True),
            "odd_whitespace": json.dumps(obj, separators=(" ,\r\n\t", " :  "), ensure_ascii=False)}[layout]
    path = tmp_path / "caption.json"
    path.write_bytes(("\ufeff\n  " if layout == "odd_whitespace" else "").encode() + text.encode() + b"\n \n")
    data = path.read_bytes()
    handle = _CountingReader(data)
    pairs = list(iter_json_object(handle, "caption.json", chunk_size=7))
    assert pairs == list(json.loads(data).items())
    # it read in small pieces: 7 bytes, more (doubling) only while one value is longer than the buffer
    assert handle.sizes[0] == 7 and max(handle.sizes) < len(data) / 10 and len(handle.sizes) > 40


def test_reader_splits_numbers_and_literals_at_every_boundary():
    data = b'{"a":1234567,"b":true,"c":-9.5e-7,"d":"\\u00e9\\ud83d\\ude00","e":null}'
    expected = list(json.loads(data).items())
    for chunk in range(1, len(data) + 1):
        assert list(iter_json_object(io.BytesIO(data), chunk_size=chunk)) == expected, chunk


def test_reader_duplicate_keys_last_wins_like_json_loads():
    data = b'{"a": 1, "b": 2, "a": 3}'
    assert dict(iter_json_object(io.BytesIO(data), chunk_size=3)) == json.loads(data) == {"a": 3, "b": 2}


@pytest.mark.parametrize("data, where", [
    (b"", "the file is empty"),
    (b"  [1, 2]", "character 2: the top-level value must be an object"),
    (b'{"a": 1,}', "character 8: expected a string key"),
    (b'{"a": 1} {"b": 2}', "character 9: extra data after the top-level object"),
    (b'{"a" 1}', "character 5: expected ':' after a key"),
    (b'{"a": tru}', "character 6: Expecting value"),
    (b'{"a": [1, 2', "Expecting"),
    (b'{"a": "x', "Unterminated string"),
    (b'{"a": 1 "b": 2}', "character 8: expected ',' or '}' after a value"),
    (b'{"a": "\xff"}', "not UTF-8 near byte 7"),
])
def test_reader_errors_name_the_file_and_the_place(data, where):
    for chunk in (1, 7, 1 << 20):
        with pytest.raises(CaptionTableError) as info:
            list(iter_json_object(io.BytesIO(data), "caption.json", chunk_size=chunk))
        message = str(info.value)
        assert message.startswith("caption.json: ") and where in message and "\n" not in message, (chunk, message)


def test_multi_mb_caption_json_converts_in_far_less_memory_than_the_file(tmp_path):
    rng = random.Random(1)
    table = tmp_path / "caption.json"
    expected = {}
    with open(table, "w", encoding="utf-8") as handle:  # ~8 MB, written entry by entry
        handle.write("{")
        for i in range(160):
            n = 900
            starts = [round(j * 2.0 + rng.random(), 3) for j in range(n)]
            entry = {"start": starts, "end": [s + 1.5 for s in starts],
                     "text": [f"caption {j} of video {i} " + "words " * rng.randint(1, 8) for j in range(n)]}
            expected[f"v{i:04d}"] = entry
            handle.write(("," if i else "") + json.dumps(f"v{i:04d}") + ":" + json.dumps(entry))
        handle.write("}")
    size = os.path.getsize(table)
    assert size > 8_000_000
    out = tmp_path / "captions"
    warm = tmp_path / "warm.json"  # first use imports modules; their code is not the reader's memory
    warm.write_text(json.dumps(_corpus(2)), encoding="utf-8")
    convert_caption_table(str(warm), str(tmp_path / "warm"))
    tracemalloc.start()
    try:
        done = convert_caption_table(str(table), str(out))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted(done.written) == sorted(expected) and not done.bad
    assert peak < size / 4, f"peak {peak} bytes for a {size}-byte table"
    for key in ("v0000", "v0077", "v0159"):
        entry = expected[key]
        assert (out / f"{key}.json").read_bytes() == _sidecar(entry["start"], entry["end"], entry["text"])


# ------------------------------------------------------------------------------------ JSON tables


def test_json_table_written_as_sorted_compact_sidecars_that_parse(tmp_path):
    table = tmp_path / "caption.json"
    table.write_text(json.dumps({
        "abc": {"text": ["héllo", "world"], "start": [0.5, 2], "end": [1.5, 3], "extra": [1]},
        "def": {"start": [1], "end": [2], "text": ["  x  "]},
    }, indent=4, ensure_ascii=False), encoding="utf-8")
    done = convert_caption_table(str(table), str(tmp_path / "out"))
    assert done.written == {"abc": "abc", "def": "def"} and done.bad == [] and done.mapped == {}
    data = (tmp_path / "out" / "abc.json").read_bytes()
    assert data == '{"end":[1.5,3],"start":[0.5,2],"text":["héllo","world"]}\n'.encode("utf-8")
    assert parse_captions("abc.json", data) == [CaptionCue(0.5, 1.5, "héllo"), CaptionCue(2.0, 3.0, "world")]
    assert done.path_of("abc") == os.path.join(str(tmp_path / "out"), "abc.json") and done.path_of("zzz") is None
    first = {p: (tmp_path / "out" / p).read_bytes() for p in os.listdir(tmp_path / "out")}
    convert_caption_table(str(table), str(tmp_path / "again"))
    assert {p: (tmp_path / "again" / p).read_bytes() for p in os.listdir(tmp_path / "again")} == first


def test_bad_entries_are_reported_and_skipped_and_duplicates_trust_neither(tmp_path):
    table = tmp_path / "caption.json"
    table.write_text(
        '{"ok1": {"start": [0], "end": [1], "text": ["a"]},'
        ' "list": [1, 2],'
        ' "nokey": {"start": [0], "end": [1]},'
        ' "unequal": {"start": [0, 1], "end": [1], "text": ["a", "b"]},'
        ' "negative": {"start": [-1], "end": [1], "text": ["a"]},'
        ' "backwards": {"start": [2], "end": [1], "text": ["a"]},'
        ' "strtime": {"start": ["0"], "end": [1], "text": ["a"]},'
        ' "empty": {"start": [0], "end": [1], "text": ["   "]},'
        ' "dup": {"start": [0], "end": [1], "text": ["first"]},'
        ' "ok2": {"start": [0], "end": [1], "text": ["b"]},'
        ' "dup": {"start": [0], "end": [1], "text": ["second"]}}', encoding="utf-8")
    done = convert_caption_table(str(table), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["ok1.json", "ok2.json"]
    assert sorted(done.written) == ["ok1", "ok2"]
    reasons = dict(done.bad)
    assert [name for name, _ in done.bad] == ["list", "nokey", "unequal", "negative", "backwards", "strtime", "empty", "dup"]
    assert "not an object" in reasons["list"] and "list" in reasons["list"]
    assert reasons["nokey"] == "missing key 'text'"
    assert "unequal lengths" in reasons["unequal"]
    assert "negative" in reasons["negative"] and "before start" in reasons["backwards"]
    assert "not a number" in reasons["strtime"] and "no caption" in reasons["empty"]
    assert "more than one entry" in reasons["dup"]
    assert all("\n" not in reason for reason in reasons.values())


def test_invalid_keys_are_mapped_to_valid_ids(tmp_path):
    long_key = "L" * 200
    table = tmp_path / "caption.json"
    table.write_text(json.dumps({"my video.en": {"start": [0], "end": [1], "text": ["a"]},
                                 long_key: {"start": [0], "end": [1], "text": ["b"]},
                                 "fine_id-1": {"start": [0], "end": [1], "text": ["c"]}}), encoding="utf-8")
    done = convert_caption_table(str(table), str(tmp_path / "out"))
    short = "my_video_en-" + hashlib.sha256(b"my video.en").hexdigest()[:8]
    longer = "L" * 119 + "-" + hashlib.sha256(long_key.encode()).hexdigest()[:8]
    assert done.mapped == {"my video.en": short, long_key: longer}
    assert sorted(os.listdir(tmp_path / "out")) == sorted([f"{short}.json", f"{longer}.json", "fine_id-1.json"])
    assert len(longer) == 128 and safe_video_id("my video.en") == short
    assert done.path_of("my video.en") == os.path.join(str(tmp_path / "out"), f"{short}.json")


def test_only_converts_the_named_keys(tmp_path):
    table = tmp_path / "caption.json"
    table.write_text(json.dumps(_corpus(10)), encoding="utf-8")
    keys = sorted(_corpus(10))
    done = convert_caption_table(str(table), str(tmp_path / "out"), only={keys[2], keys[7], "absent"})
    assert sorted(done.written) == [keys[2], keys[7]] and done.not_wanted == 8
    assert sorted(os.listdir(tmp_path / "out")) == [f"{keys[2]}.json", f"{keys[7]}.json"]


def test_gzip_json_table(tmp_path):
    corpus = _corpus(5)
    table = tmp_path / "caption.json.gz"
    table.write_bytes(gzip.compress(json.dumps(corpus).encode()))
    done = convert_caption_table(str(table), str(tmp_path / "out"))
    key = sorted(corpus)[3]
    entry = corpus[key]
    assert len(done.written) == 5
    assert (tmp_path / "out" / f"{key}.json").read_bytes() == _sidecar(entry["start"], entry["end"], entry["text"])


def test_whole_table_errors_are_one_line(tmp_path):
    with pytest.raises(CaptionTableError, match="caption table not found"):
        convert_caption_table(str(tmp_path / "absent.json"), str(tmp_path / "out"))
    (tmp_path / "t.csv").write_text("video_id,start\n")
    with pytest.raises(CaptionTableError, match="unknown caption table format '.csv'"):
        convert_caption_table(str(tmp_path / "t.csv"), str(tmp_path / "out"))
    assert table_format("x/caption.JSON.gz") == "json" and table_format("t.ndjson") == "jsonl"
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(CaptionTableError, match="not a readable parquet file"):
        convert_caption_table(str(bad), str(tmp_path / "out"))
    pq.write_table(pa.table({"video_id": ["a"], "start": [0.0], "text": ["x"]}), tmp_path / "nocol.parquet")
    with pytest.raises(CaptionTableError, match="lacks the column"):
        convert_caption_table(str(tmp_path / "nocol.parquet"), str(tmp_path / "out"))


# ------------------------------------------------------------------------------------ row tables


def test_parquet_one_row_per_video(tmp_path):
    corpus = _corpus(30)
    keys = list(corpus)
    pq.write_table(pa.table({"video_id": keys, "start": [corpus[k]["start"] for k in keys],
                             "end": [corpus[k]["end"] for k in keys], "text": [corpus[k]["text"] for k in keys],
                             "other": list(range(30))}), tmp_path / "t.parquet", row_group_size=7)
    done = convert_caption_table(str(tmp_path / "t.parquet"), str(tmp_path / "out"))
    assert sorted(done.written) == sorted(keys) and not done.bad
    for key in keys:
        entry = corpus[key]
        assert (tmp_path / "out" / f"{key}.json").read_bytes() == _sidecar(
            [float(v) for v in entry["start"]], [float(v) for v in entry["end"]], entry["text"])


def test_parquet_one_row_per_caption_interleaved_keeps_row_order(tmp_path):
    rows = [("a", 5.0, 6.0, "a-first"), ("b", 0.0, 1.0, "b-first"), ("a", 1.0, 2.0, "a-second"),
            ("c", 0.0, 1.0, "c-only"), ("b", 3.0, 2.0, "b-backwards"), ("a", 3.0, 4.0, "a-third"),
            (None, 0.0, 1.0, "no id")]
    pq.write_table(pa.table({name: [r[i] for r in rows] for i, name in enumerate(["video_id", "start", "end", "text"])}),
                   tmp_path / "t.parquet", row_group_size=2)
    done = convert_caption_table(str(tmp_path / "t.parquet"), str(tmp_path / "out"))
    assert sorted(done.written) == ["a", "c"]
    assert (tmp_path / "out" / "a.json").read_bytes() == _sidecar([5.0, 1.0, 3.0], [6.0, 2.0, 4.0],
                                                                  ["a-first", "a-second", "a-third"])
    assert (tmp_path / "out" / "c.json").read_bytes() == _sidecar([0.0], [1.0], ["c-only"])
    assert [name for name, _ in done.bad] == ["b", "row 7"]
    assert "end[1] (2.0) is before start[1] (3.0)" in done.bad[0][1] and "video_id" in done.bad[1][1]


def test_jsonl_mixed_shapes_duplicates_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"video_id": "whole", "start": [0, 1], "end": [1, 2], "text": ["w1", "w2"]}),
        json.dumps({"video_id": "cap", "start": 0, "end": 1, "text": "c1"}),
        "",
        "not json",
        json.dumps({"video_id": "twice", "start": [0], "end": [1], "text": ["t"]}),
        json.dumps({"video_id": "cap", "start": 2, "end": 3, "text": "c2"}),
        json.dumps({"video_id": "twice", "start": [0], "end": [1], "text": ["t"]}),
        json.dumps([1, 2]),
        json.dumps({"video_id": 7, "start": 0, "end": 1, "text": "x"}),
        json.dumps({"video_id": "weird id!", "start": 0, "end": 1, "text": "mapped"}),
        json.dumps({"video_id": "badtime", "start": "zero", "end": 1, "text": "x"}),
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = convert_caption_table(str(tmp_path / "t.jsonl"), str(tmp_path / "out"))
    weird = safe_video_id("weird id!")
    assert sorted(done.written) == sorted(["whole", "cap", weird]) and done.mapped == {"weird id!": weird}
    assert (tmp_path / "out" / "whole.json").read_bytes() == _sidecar([0, 1], [1, 2], ["w1", "w2"])
    assert (tmp_path / "out" / "cap.json").read_bytes() == _sidecar([0, 2], [1, 3], ["c1", "c2"])
    assert (tmp_path / "out" / f"{weird}.json").read_bytes() == _sidecar([0], [1], ["mapped"])
    bad = dict(done.bad)
    assert list(bad) == ["line 4", "twice", "line 8", "line 9", "badtime"]
    assert "not JSON" in bad["line 4"] and "2 rows" in bad["twice"] and "not a JSON object" in bad["line 8"]
    assert "no string video_id" in bad["line 9"] and "not a number" in bad["badtime"]


def test_remote_table_and_captions_dir_on_a_memory_store():
    root = f"memory://nccurate-tables-{uuid.uuid4().hex}"
    try:
        corpus = _corpus(3)
        files.filesystem(root)[0].pipe_file(root.split("://")[1] + "/caption.json", json.dumps(corpus).encode())
        done = convert_caption_table(f"{root}/caption.json", f"{root}/captions", chunk_size=7)
        assert sorted(done.written) == sorted(corpus)
        key = sorted(corpus)[1]
        entry = corpus[key]
        assert files.read_bytes(f"{root}/captions/{key}.json") == _sidecar(entry["start"], entry["end"], entry["text"])
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(root.split("://")[1]):
            fs.rm(root.split("://")[1], recursive=True)
