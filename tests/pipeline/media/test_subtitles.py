"""Embedded text subtitle tracks (pipeline.media.subtitles): a track muxed from a sidecar file gives
the captions that file gives, in mkv (subrip, webvtt, ass) and mp4 (mov_text); track choice by
language; times on the video's timeline; files without a text track."""

from __future__ import annotations

import struct
from fractions import Fraction

import av
import pytest

from curation.errors import InputError
from pipeline.inputs.captions import CaptionCue, parse_srt, parse_webvtt
from pipeline.media.subtitles import choose_subtitle_stream, has_text_subtitles, language_matches, read_track_captions
from tests.videos import make_video

SRT = """1
00:00:01,000 --> 00:00:02,500
Hello <i>world</i>

2
00:00:03,010 --> 00:00:04,000
second line
two

3
00:00:05,250 --> 00:00:07,125
{\\an8}<font color="red">a < b</font> stays
"""

# YouTube-style rolling cues: each repeats the previous one's last line (de-duplicated by the parser)
VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.500 --> 00:00:02.000 align:start position:0%
so today we are

00:00:02.000 --> 00:00:03.500 align:start position:0%
so today we are
<c.colorE5E5E5>going to</c> fix &amp; paint

00:00:03.500 --> 00:00:05.000
going to fix &amp; paint
the old chair
"""

ASS = """[Script Info]
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:01.00,0:00:02.50,Default,,0,0,0,,{\\i1}Hello{\\i0} there, friend
Dialogue: 0,0:00:03.20,0:00:04.00,Default,,0,0,0,,first\\Nsecond\\hline
"""


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("subs") / "v.mp4")
    make_video(path, 8.0, fps=8, size=(64, 48), pattern="noise")
    return path


def _mux(video: str, out: str, tracks, video_offset_s: float = 0.0, fmt: str | None = None) -> str:
    """``video``'s stream plus subtitle ``tracks`` = [(sidecar path, language or None, default)]
    remuxed into ``out`` (packets copied as the sidecar's demuxer gives them); the video stream
    starts ``video_offset_s`` late."""
    from av.stream import Disposition

    vin = av.open(video)
    sources = [av.open(path) for path, _, _ in tracks]
    with av.open(out, "w", format=fmt) as container:
        vout = container.add_stream_from_template(vin.streams.video[0])
        souts = []
        for src, (_, language, default) in zip(sources, tracks):
            stream = container.add_stream_from_template(src.streams.subtitles[0])
            if language:
                stream.metadata["language"] = language
            stream.disposition = Disposition.default if default else Disposition(0)
            souts.append(stream)
        shift = round(video_offset_s / vin.streams.video[0].time_base)
        for packet in vin.demux(vin.streams.video[0]):
            if packet.dts is None:
                continue
            packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            packet.stream = vout
            container.mux(packet)
        for src, stream in zip(sources, souts):
            for packet in src.demux(src.streams.subtitles[0]):
                if packet.dts is None:
                    continue
                packet.stream = stream
                container.mux(packet)
    for src in (vin, *sources):
        src.close()
    return out


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name, text, parse", [("a.srt", SRT, parse_srt), ("a.vtt", VTT, parse_webvtt)])
def test_a_matroska_track_gives_the_captions_of_its_sidecar_file(video, tmp_path, name, text, parse):
    sidecar = _write(tmp_path, name, text)
    mkv = _mux(video, str(tmp_path / "v.mkv"), [(sidecar, "eng", True)])
    expected = parse(sidecar, text.encode())
    assert len(expected) >= 3
    assert read_track_captions(mkv) == expected
    assert has_text_subtitles(mkv) and not has_text_subtitles(video)


def test_an_mp4_mov_text_track_gives_the_captions_of_its_sidecar_file(video, tmp_path):
    """mov_text packets (16-bit length + text, empty packets between cues) written by hand from the
    sidecar's blocks, as a muxer stores them."""
    cues = [((1000, 2500), "Hello world"), ((3010, 4000), "second line\ntwo"), ((5250, 7125), "a < b stays")]
    srt = "".join(f"{i + 1}\n00:00:{a // 1000:02d},{a % 1000:03d} --> 00:00:{b // 1000:02d},{b % 1000:03d}\n{t}\n\n"
                  for i, ((a, b), t) in enumerate(cues))
    out = str(tmp_path / "v.mp4")
    vin = av.open(video)
    with av.open(out, "w") as container:
        vout = container.add_stream_from_template(vin.streams.video[0])
        sub = container.add_stream("mov_text")
        sub.codec_context.subtitle_header = b"[Script Info]\nScriptType: v4.00+\n\n[Events]\nFormat: Layer, Start, End, Text\n"
        sub.metadata["language"] = "eng"
        for packet in vin.demux(vin.streams.video[0]):
            if packet.dts is not None:
                packet.stream = vout
                container.mux(packet)
        for (start, end), text in cues:
            data = text.encode()
            packet = av.Packet(struct.pack(">H", len(data)) + data)
            packet.pts = packet.dts = start
            packet.duration, packet.time_base, packet.stream = end - start, Fraction(1, 1000), sub
            container.mux(packet)
    vin.close()
    assert read_track_captions(out) == parse_srt("a.srt", srt.encode())


def test_an_ass_track_loses_its_override_blocks_and_joins_its_lines(video, tmp_path):
    mkv = _mux(video, str(tmp_path / "v.mkv"), [(_write(tmp_path, "a.ass", ASS), None, True)])
    assert read_track_captions(mkv) == [CaptionCue(1.0, 2.5, "Hello there, friend"),
                                        CaptionCue(3.2, 4.0, "first second line")]


def test_the_track_is_chosen_by_language_then_default_then_first(video, tmp_path):
    english = _write(tmp_path, "en.srt", "1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    french = _write(tmp_path, "fr.srt", "1\n00:00:01,000 --> 00:00:02,000\nbonjour\n")
    mkv = _mux(video, str(tmp_path / "v.mkv"), [(english, "eng", False), (french, "fre", True)])

    def text(languages):
        return [c.text for c in read_track_captions(mkv, languages)]

    assert text(["en"]) == ["hello"] and text(["fr", "en"]) == ["bonjour"] and text(["de", "eng"]) == ["hello"]
    assert text([]) == ["bonjour"] and text(["de"]) == ["bonjour"]  # no match: the default track
    with av.open(mkv) as container:
        assert choose_subtitle_stream(container, ["en"]).metadata["language"] == "eng"
    assert language_matches("eng", "en") and language_matches("en-GB", "en") and not language_matches("fre", "en")


def test_times_are_on_the_video_timeline_when_the_video_starts_late(video, tmp_path):
    """The video stream starts 1.5 s into the container's clock: time 0 is its first frame, as for
    the decoded frames (pipeline.media.pyav.timeline_zero), so every cue moves 1.5 s earlier."""
    sidecar = _write(tmp_path, "a.srt", SRT)
    mkv = _mux(video, str(tmp_path / "v.mkv"), [(sidecar, "eng", True)], video_offset_s=1.5)
    got = read_track_captions(mkv)
    expected = parse_srt(sidecar, SRT.encode())
    assert [c.text for c in got] == [c.text for c in expected]
    assert [(c.start_s, c.end_s) for c in got] == [(round(max(0.0, c.start_s - 1.5), 9), round(c.end_s - 1.5, 9))
                                                   for c in expected]


def test_a_file_without_a_text_track_is_no_captions_naming_it(video):
    with pytest.raises(InputError, match=r"^no_captions: gs://bucket/v\.mp4: no text subtitle track$"):
        read_track_captions(video, name="gs://bucket/v.mp4")


def test_a_file_that_is_not_media_is_a_decode_error(tmp_path):
    bad = _write(tmp_path, "bad.mkv", "not a video at all")
    assert not has_text_subtitles(bad)
    with pytest.raises(InputError, match="decode_error: cannot decode .*bad.mkv"):
        read_track_captions(bad)
