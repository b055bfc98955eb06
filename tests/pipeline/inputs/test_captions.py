"""Tests for pipeline.inputs.captions: HowTo100M JSON, WebVTT and SRT parsing and rolling de-dup."""

from __future__ import annotations

import json

import pytest

from curation.errors import InputError
from pipeline.inputs.captions import (
    CaptionCue,
    parse_captions,
    parse_howto100m_json,
    parse_srt,
    parse_webvtt,
)

C = CaptionCue

# --------------------------------------------------------------------------- happy paths


def test_json_keeps_file_order_normalises_and_drops_empty_text():
    data = json.dumps(
        {
            "start": [5, 1.5, 2.0, 7],
            "end": [6.25, 2, 2.0, 9],
            "text": ["  later\ncue ", "earlier cue", "   ", "last"],
            "extra": "ignored",
        }
    ).encode()
    assert parse_howto100m_json("v.json", data) == [
        C(5.0, 6.25, "later cue"),
        C(1.5, 2.0, "earlier cue"),
        C(7.0, 9.0, "last"),
    ]


VTT = """WEBVTT - a title
Kind: captions
Language: en

NOTE this is a comment
spanning two lines

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

intro
00:01.000 --> 00:02.500 align:start position:0%
<v Roger>Hello <b>world</b></v>
second&nbsp;line

00:00:03.000 --> 00:00:04.000
Tom &amp; Jerry &lt;3 &gt; <c.yellow>cats</c>

2
01:00:00.000 --> 01:00:01.250 line:0
 <i>last</i>
"""


def test_webvtt_parses_blocks_tags_entities_and_settings():
    assert parse_webvtt("a.vtt", VTT.encode()) == [
        C(1.0, 2.5, "Hello world second line"),
        C(3.0, 4.0, "Tom & Jerry <3 > cats"),
        C(3600.0, 3601.25, "last"),
    ]


def test_webvtt_crlf_and_bom():
    data = b"\xef\xbb\xbf" + VTT.replace("\n", "\r\n").encode()
    assert parse_webvtt("a.vtt", data) == parse_webvtt("a.vtt", VTT.encode())


def test_webvtt_keeps_file_order_and_zero_length_cue():
    data = b"WEBVTT\n\n00:10.000 --> 00:11.000\nb\n\n00:01.000 --> 00:01.000\na\n"
    assert parse_webvtt("a.vtt", data) == [C(10.0, 11.0, "b"), C(1.0, 1.0, "a")]


SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> <font color="#ff0000">there</font>
<B>friend</B> a < b

2
00:00:03.000 --> 00:00:04,000
{\\an8}dot accepted

3
00:01:05,250 --> 01:00:00,000
no final newline"""


def test_srt_parses_tags_dot_separator_and_missing_final_newline():
    assert parse_srt("s.srt", SRT.encode()) == [
        C(1.0, 2.5, "Hello there friend a < b"),
        C(3.0, 4.0, "dot accepted"),
        C(65.25, 3600.0, "no final newline"),
    ]


def test_srt_crlf_and_bom():
    data = b"\xef\xbb\xbf" + SRT.replace("\n", "\r\n").encode()
    assert parse_srt("s.srt", data) == parse_srt("s.srt", SRT.encode())


def test_srt_does_not_decode_entities():
    data = b"1\n00:00:00,000 --> 00:00:01,000\nTom &amp; Jerry\n"
    assert parse_srt("s.srt", data) == [C(0.0, 1.0, "Tom &amp; Jerry")]


@pytest.mark.parametrize("name", ["X.VTT", "dir.json/a.Vtt", "gs://b/c/x.vtt"])
def test_dispatch_is_case_insensitive(name):
    data = b"WEBVTT\n\n00:00.000 --> 00:01.000\nhi\n"
    assert parse_captions(name, data) == [C(0.0, 1.0, "hi")]


def test_dispatch_json_and_srt():
    assert parse_captions("a.JSON", b'{"start":[0],"end":[1],"text":["x"]}') == [C(0.0, 1.0, "x")]
    assert parse_captions("a.Srt", b"1\n00:00:00,000 --> 00:00:01,000\ny\n") == [C(0.0, 1.0, "y")]


# --------------------------------------------------------------------------- rolling de-dup

YOUTUBE = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.310 align:start position:0%
 
so<00:00:00.480><c> today</c><00:00:00.960><c> we're</c><00:00:01.200><c> going</c>

00:00:02.310 --> 00:00:02.320 align:start position:0%
so today we're going
 

00:00:02.320 --> 00:00:04.950 align:start position:0%
so today we're going
to<00:00:02.800><c> make</c><00:00:03.200><c> bread</c>

00:00:04.950 --> 00:00:04.960 align:start position:0%
to make bread
 

00:00:04.960 --> 00:00:07.110 align:start position:0%
to make bread
first<00:00:05.400><c> the</c><00:00:05.900><c> flour</c>

00:00:07.110 --> 00:00:07.120 align:start position:0%
first the flour
 

00:00:07.120 --> 00:00:09.000 align:start position:0%
first the flour
then<00:00:07.600><c> the</c><00:00:08.100><c> water</c>

00:00:09.000 --> 00:00:09.010 align:start position:0%
then the water
 
"""


def test_youtube_rolling_captions_are_deduplicated():
    cues = parse_webvtt("yt.en.vtt", YOUTUBE.encode())
    assert [c.text for c in cues] == [
        "so today we're going",
        "to make bread",
        "first the flour",
        "then the water",
    ]
    assert [(c.start_s, c.end_s) for c in cues] == [
        (0.03, 2.31),
        (2.32, 4.95),
        (4.96, 7.11),
        (7.12, 9.0),
    ]
    assert all(a.text != b.text for a, b in zip(cues, cues[1:]))


def test_rolling_dedupe_applies_to_srt_too():
    data = (
        "1\n00:00:00,000 --> 00:00:02,000\nalpha\n\n"
        "2\n00:00:02,000 --> 00:00:02,010\nalpha\n\n"
        "3\n00:00:02,010 --> 00:00:04,000\nalpha\nbeta\n"
    ).encode()
    assert parse_srt("r.srt", data) == [C(0.0, 2.0, "alpha"), C(2.01, 4.0, "beta")]


def test_three_line_roll_up_drops_two_carried_lines():
    data = (
        b"WEBVTT\n\n00:00.000 --> 00:02.000\na\nb\nc\n\n"
        b"00:02.000 --> 00:04.000\nb\nc\nd\n"
    )
    assert parse_webvtt("r.vtt", data) == [C(0.0, 2.0, "a b c"), C(2.0, 4.0, "d")]


def test_non_rolling_repeats_are_kept():
    data = (
        b"WEBVTT\n\n"
        b"00:10.000 --> 00:12.000\nok\n\n"
        b"00:40.000 --> 00:42.000\nok\n\n"  # 28 s later: a new utterance
        b"00:42.000 --> 00:44.000\nok\n\n"  # adjacent, but 2 s long: not a flash
        b"01:10.000 --> 01:12.000\nok\nsure\n"  # far away: first line is not carried
    )
    assert parse_webvtt("n.vtt", data) == [
        C(10.0, 12.0, "ok"),
        C(40.0, 42.0, "ok"),
        C(42.0, 44.0, "ok"),
        C(70.0, 72.0, "ok sure"),
    ]


# --------------------------------------------------------------------------- errors

GOOD_VTT_CUE = b"00:00.000 --> 00:01.000\nx\n"
BAD = "bad_captions"
EMPTY = "empty_captions"


@pytest.mark.parametrize(
    "name, data, error_class, fragment",
    [
        ("bad.json", b'{"start": [0], ', BAD, "invalid JSON at line 1"),
        ("list.json", b'[{"start": 0, "end": 1, "text": "x"}]', BAD, "must be an object"),
        ("miss.json", b'{"start": [0], "text": ["x"]}', BAD, "missing key 'end'"),
        ("notlist.json", b'{"start": 0, "end": [1], "text": ["x"]}', BAD, "'start' must be a list"),
        ("len.json", b'{"start": [0, 1], "end": [1], "text": ["x", "y"]}', BAD, "end=1"),
        ("nan.json", b'{"start": [0, NaN], "end": [1, 2], "text": ["x", "y"]}', BAD, "start[1]"),
        ("inf.json", b'{"start": [0], "end": [Infinity], "text": ["x"]}', BAD, "end[0]"),
        ("neg.json", b'{"start": [-1], "end": [1], "text": ["x"]}', BAD, "start[0] is negative"),
        ("bool.json", b'{"start": [true], "end": [1], "text": ["x"]}', BAD, "start[0] is not a number"),
        ("str.json", b'{"start": ["0"], "end": [1], "text": ["x"]}', BAD, "start[0] is not a number"),
        ("huge.json", b'{"start": [0], "end": [1e999999], "text": ["x"]}', BAD, "end[0]"),
        ("txt.json", b'{"start": [0], "end": [1], "text": [3]}', BAD, "text[0] is not a string"),
        ("ord.json", b'{"start": [0, 5], "end": [1, 4], "text": ["x", "y"]}', BAD, "end[1]"),
        ("deep.json", b"[" * 100_000, BAD, "invalid JSON"),
        ("bigint.json", b'{"start": [' + b"9" * 5000 + b"]}", BAD, "invalid JSON"),
        ("sur.json", b'{"start": [0], "end": [1], "text": ["\\ud800"]}', BAD, "text[0]"),
        ("e.json", b'{"start": [], "end": [], "text": []}', EMPTY, "no caption"),
        ("blank.json", b'{"start": [0], "end": [1], "text": [" \\n"]}', EMPTY, "no caption"),
        ("nohdr.vtt", b"00:00.000 --> 00:01.000\nx\n", BAD, "line 1: missing 'WEBVTT'"),
        ("hdr.vtt", b"WEBVTTX\n\n" + GOOD_VTT_CUE, BAD, "missing 'WEBVTT'"),
        ("ts.vtt", b"WEBVTT\n\n00:00:01,000 --> 00:00:02.000\nx\n", BAD, "line 3: malformed"),
        ("sec.vtt", b"WEBVTT\n\n00:00:61.000 --> 00:01:02.000\nx\n", BAD, "line 3"),
        ("rev.vtt", b"WEBVTT\n\n" + GOOD_VTT_CUE + b"\n00:05.000 --> 00:04.000\ny\n", BAD, "line 6"),
        ("id.vtt", b"WEBVTT\n\njust text\nmore text\n", BAD, "line 3: expected a cue timing"),
        ("long.vtt", b"WEBVTT\n\n" + b"1" * 5000 + b":00:00.000 --> 00:01.000\nx\n", BAD, "line 3"),
        ("hdronly.vtt", b"WEBVTT\nKind: captions\n\n", EMPTY, "no caption"),
        ("tags.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\n<b> </b>&nbsp;\n", EMPTY, "no caption"),
        ("ts.srt", b"1\n00:00:01,000 --> 00:00:02,000\nx\n\n2\n00:00:03 --> 00:00:04,000\ny\n", BAD, "line 6"),
        ("rev.srt", b"1\n00:00:05,000 --> 00:00:04,000\nx\n", BAD, "line 2: cue end"),
        ("idx.srt", b"1\n\n00:00:01,000 --> 00:00:02,000\nx\n", BAD, "line 1"),
        ("junk.srt", b"hello\nworld\n", BAD, "line 1: expected a cue index"),
        ("notext.srt", b"1\n00:00:01,000 --> 00:00:02,000\n<i></i>\n", EMPTY, "no caption"),
        ("utf.vtt", b"WEBVTT\n\n00:00.000 --> 00:01.000\ncaf\xe9\n", BAD, "invalid UTF-8"),
        ("utf.srt", b"\xff\xfe1\n", BAD, "invalid UTF-8"),
        ("utf.json", b'{"text": ["\xc3"]}', BAD, "invalid UTF-8"),
        ("zero.vtt", b"", EMPTY, "file is empty"),
        ("zero.srt", b"\xef\xbb\xbf \r\n", EMPTY, "file is empty"),
        ("zero.json", b"", EMPTY, "file is empty"),
        ("captions.txt", b"WEBVTT\n\n" + GOOD_VTT_CUE, BAD, "allowed: .json, .srt, .vtt"),
        ("noext", b"WEBVTT\n\n" + GOOD_VTT_CUE, BAD, "unknown captions extension"),
    ],
)
def test_malformed_input_raises_input_error(name, data, error_class, fragment):
    with pytest.raises(InputError) as info:
        parse_captions(name, data)
    err = info.value
    assert err.error_class == error_class
    assert name in err.message
    assert fragment in err.message
    assert "\n" not in err.message


@pytest.mark.parametrize("parser", [parse_howto100m_json, parse_webvtt, parse_srt])
@pytest.mark.parametrize("data", [b"\x00\xff" * 50, b"\x80", bytes(range(256)), b"{" * 3 + b"-->"])
def test_garbage_bytes_only_raise_input_error(parser, data):
    with pytest.raises(InputError) as info:
        parser("junk.bin", data)
    assert info.value.error_class in {"bad_captions", "empty_captions"}
    assert "junk.bin" in info.value.message
