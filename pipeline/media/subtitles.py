"""Captions from a text subtitle track inside the video file (mkv, mp4 ``mov_text``, webm), read
with PyAV without decoding any picture.

Which track: the first whose ``language`` tag matches the earliest entry of the preference list
(a two-letter code also matches the three-letter ISO 639-2 codes that start with it: ``en``
matches ``eng``; ``de`` does not match ``ger``, so write ``deu``/``ger`` for those), else the track
with the default disposition, else the first text track. Bitmap tracks (DVD, PGS) are not text
and never chosen. Times are on the video's timeline (:func:`pipeline.media.pyav.timeline_zero`);
a cue's end is its packet's duration after its start. The cue text follows the rules of the
sidecar format the codec stores (:func:`pipeline.inputs.captions.cues_from_track`), so a track
muxed from an ``.srt`` or ``.vtt`` gives the captions that file gives.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from curation.errors import InputError


def text_subtitle_streams(container) -> list:
    """The container's subtitle streams whose codec stores text (:data:`~pipeline.inputs.captions.TRACK_FORMATS`)."""
    from pipeline.inputs.captions import TRACK_FORMATS

    return [s for s in container.streams.subtitles if s.codec_context.name in TRACK_FORMATS]


def language_matches(tag: str | None, wanted: str) -> bool:
    """Whether a stream's ``language`` tag matches a preference (module docstring).

    >>> language_matches("eng", "en"), language_matches("en-US", "en"), language_matches("ger", "de")
    (True, True, False)
    """
    tag, wanted = (tag or "").strip().lower(), wanted.strip().lower()
    if not tag or not wanted:
        return False
    return tag == wanted or tag.split("-")[0] == wanted or (len(wanted) == 2 and len(tag) == 3 and tag.startswith(wanted))


def choose_subtitle_stream(container, languages: Sequence[str] = ()):
    """The text track captions are read from (module docstring), or None when there is none."""
    from av.stream import Disposition

    streams = text_subtitle_streams(container)
    for wanted in languages:
        for stream in streams:
            if language_matches(stream.metadata.get("language"), wanted):
                return stream
    default = [s for s in streams if s.disposition & Disposition.default]
    return (default or streams or [None])[0]


def has_text_subtitles(path: str) -> bool:
    """Whether the local file ``path`` opens with PyAV and holds a text subtitle track."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError):
        return False
    with container:
        return bool(text_subtitle_streams(container))


def read_track_captions(path: str, languages: Sequence[str] = (), name: str | None = None) -> list:
    """The captions (``pipeline.inputs.captions.CaptionCue`` list, packet order) of the chosen text
    track of the local file ``path``; ``name``: how messages name the file (its URI). Raises
    ``InputError('no_captions')`` when the file has no text track, ``bad_captions``/``empty_captions``
    as a sidecar file would, ``decode_error`` when the file cannot be opened or read."""
    import av

    from pipeline.inputs.captions import cues_from_track, track_cue_lines
    from pipeline.media.failures import decode_error
    from pipeline.media.pyav import timeline_zero

    name = name or path
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise decode_error(name, "PyAV cannot open it", exc) from None
    with container:
        stream = choose_subtitle_stream(container, languages)
        if stream is None:
            kinds = sorted({s.codec_context.name for s in container.streams.subtitles})
            raise InputError("no_captions", f"{name}: no text subtitle track"
                                            + (f" (only {', '.join(kinds)})" if kinds else ""))
        codec, zero = stream.codec_context.name, timeline_zero(container)
        label = f"{name} subtitle track {stream.index}"
        packets = []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or not packet.size or packet.time_base is None:
                    continue  # the demuxer's flush packet
                lines = track_cue_lines(label, codec, bytes(packet))
                if not any(line.strip() for line in lines):
                    continue  # mov_text's empty packets between cues are gaps, not cues
                start = Fraction(packet.pts) * packet.time_base - zero
                end = start + Fraction(packet.duration or 0) * packet.time_base
                packets.append((float(max(start, Fraction(0))), float(max(end, Fraction(0))), lines))
        except av.FFmpegError as exc:
            raise decode_error(name, "reading its subtitle track failed", exc) from None
    return cues_from_track(label, codec, packets)
