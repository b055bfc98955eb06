"""Caption parsers: HowTo100M JSON, WebVTT and SRT bytes -> a list of :class:`CaptionCue`.

Every parser takes ``(name, data)``: ``name`` is used only for dispatch (its extension) and in
error messages; ``data`` is the raw file content. The result is a list of
``CaptionCue(start_s, end_s, text)`` with times in seconds (``0 <= start_s <= end_s``) and
whitespace-normalised, non-empty ``text``.

Common rules
------------
* Bytes are decoded as UTF-8; a leading BOM is allowed. CRLF and lone CR line ends are accepted.
* Cues are returned in **file order** and never sorted: a caption's index is its position in the
  returned list.
* A cue whose text is empty once tags, entities and whitespace are removed is not a caption and
  is dropped silently.
* Failures raise :class:`curation.errors.InputError`, never another exception type:
  ``bad_captions`` for malformed input (invalid UTF-8, syntax, timestamps, fields; the message
  names the file and, where there is one, the line number or field index), and
  ``empty_captions`` when the file is empty or whitespace-only, or parses but yields no caption.

Formats
-------
HowTo100M JSON (``.json``)
    One object ``{"start": [...], "end": [...], "text": [...]}`` of three equal-length lists:
    ``start``/``end`` are finite numbers ``>= 0`` (``bool`` is not a number) with
    ``end[i] >= start[i]``; ``text`` holds strings. Other keys are ignored. Only this dict form is
    accepted: a list of ``{"start", "end", "text"}`` objects is ``bad_captions``.
WebVTT (``.vtt``)
    The first line must be ``WEBVTT`` (optionally followed by a space or tab and free text); the
    header block up to the first blank line (``Kind:``, ``Language:`` ...) is skipped, as are
    ``NOTE``, ``STYLE`` and ``REGION`` blocks. A cue is an optional identifier line, a timing
    line ``[hh:]mm:ss.ttt --> [hh:]mm:ss.ttt`` with optional cue settings after it
    (``align:start position:0%``), then text lines up to an empty line or a line containing
    ``-->``. All ``<...>`` tags are removed (``<v Speaker>``, ``<b>``, ``<c.colour>``, inline
    ``<00:00:01.500>`` timestamps), then HTML entities are decoded (``&amp; &lt; &gt; &nbsp;``...).
    A whitespace-only line inside a cue (YouTube writes one) is kept as text and so vanishes.
SRT (``.srt``)
    Blocks separated by blank lines: an index line (ASCII digits; tolerated when missing), a
    timing line ``hh:mm:ss,ttt --> hh:mm:ss,ttt`` (``.`` accepted for ``,``; trailing ``X1:``
    style coordinates ignored), then text lines. Only the formatting tags ``<i> <b> <u> <s>
    <font ...>`` (and their closers) and ASS overrides such as ``{\\an8}`` are removed, so a
    literal ``a < b`` survives; entities are not decoded (SRT is not HTML).

Minutes and seconds must be ``00``-``59``; hours are 1 to 8 digits. Multi-line cue text is
joined with a single space.

Rolling-caption de-duplication (WebVTT and SRT)
-----------------------------------------------
YouTube auto-captions "roll": each cue repeats the previous cue's last line as its first line
and adds a new one, and ~10 ms "flash" cues in between repeat the line just shown. The rule,
applied per cue in file order, over lines already stripped of tags and empty lines:

1. A cue's *carried-over* lines are the longest prefix of its lines (at most
   ``MAX_CARRY_LINES``) that equals the suffix of the **previous cue's** lines (the cue just
   before it in the file, whether or not that one was emitted), provided the cue starts no
   later than ``ROLL_GAP_S`` (0.5 s) after the previous cue ends (overlap counts).
2. The carried-over lines are dropped when the cue has new lines after them (a roll) or when
   the cue lasts at most ``FLASH_MAX_S`` (0.05 s; a flash repeat). The remaining lines form
   the caption, with the cue's own start and end; a cue with nothing left is dropped.

So a cue that merely repeats its predecessor is kept when it lasts longer than a flash, and
cues further apart than ``ROLL_GAP_S`` are never touched: legitimately repeated captions
(``"ok"`` at 10 s and again at 40 s, or two adjacent 2 s cues both saying ``"ok"``) survive.
HowTo100M JSON is already segmented and is not de-duplicated.

Embedded subtitle tracks
------------------------
:func:`cues_from_track` turns a track's packets (``pipeline.media.subtitles`` reads them) into
captions by the rules of the sidecar format its codec stores (:data:`TRACK_FORMATS`: subrip and
mov_text by SRT's, webvtt by WebVTT's, ASS/SSA events with their ``{...}`` overrides removed and
``\\N`` as a line break), with the same rolling de-duplication, so a track gives the captions of
the file it was muxed from.
"""

from __future__ import annotations

import html
import json
import math
import posixpath
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from curation.errors import InputError

#: A cue starting at most this long after the previous cue's end may carry its lines over.
ROLL_GAP_S = 0.5
#: A cue this short (seconds) that only repeats the previous cue's text is a flash and dropped.
FLASH_MAX_S = 0.05
#: At most this many leading lines of a cue are considered carried over (roll-up shows <= 4).
MAX_CARRY_LINES = 8


class CaptionCue(NamedTuple):
    """One caption: ``start_s <= end_s`` in seconds, whitespace-normalised non-empty ``text``."""

    start_s: float
    end_s: float
    text: str


class _RawCue(NamedTuple):
    """A timed cue before de-duplication: its normalised non-empty text lines."""

    start_s: float
    end_s: float
    lines: tuple[str, ...]


# ----------------------------------------------------------------------------- shared helpers


def _bad(name: str, what: str) -> InputError:
    return InputError("bad_captions", f"{name}: {what}")


def _decode_text(name: str, data: bytes) -> str:
    """UTF-8 (BOM allowed) -> text with ``\\n`` line ends; raise on bad bytes or an empty file."""
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _bad(name, f"invalid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        raise InputError("empty_captions", f"{name}: file is empty")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _cue_text(lines: list[str], i: int, in_cue: Callable[[str], object],
              clean: Callable[[str], str]) -> tuple[tuple[str, ...], int]:
    """A cue's cleaned non-empty text lines from ``lines[i]`` while ``in_cue(line)``; returns
    them and the index of the first line after the cue."""
    texts: list[str] = []
    while i < len(lines) and in_cue(lines[i]):
        texts.append(clean(lines[i]))
        i += 1
    return tuple(t for t in texts if t), i


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _nonempty_or_raise(name: str, cues: list[CaptionCue]) -> list[CaptionCue]:
    if not cues:
        raise InputError("empty_captions", f"{name}: no caption with non-empty text")
    return cues


def _clip(line: str, width: int = 60) -> str:
    return repr(line if len(line) <= width else line[:width] + "...")


# ----------------------------------------------------------------------------- dispatch


def parse_captions(name: str, data: bytes) -> list[CaptionCue]:
    """Parse captions, choosing the format from ``name``'s extension (case-insensitive).

    ``.json`` -> :func:`parse_howto100m_json`, ``.vtt`` -> :func:`parse_webvtt`,
    ``.srt`` -> :func:`parse_srt`; any other extension is ``bad_captions``.
    """
    ext = posixpath.splitext(name)[1].lower()
    parser = _PARSERS.get(ext)
    if parser is None:
        allowed = ", ".join(sorted(_PARSERS))
        raise _bad(name, f"unknown captions extension {ext or '(none)'!r}; allowed: {allowed}")
    return parser(name, data)


# ----------------------------------------------------------------------------- HowTo100M JSON


def _json_seconds(name: str, field: str, index: int, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, f"{field}[{index}] is not a number: {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise _bad(name, f"{field}[{index}] is too large") from None
    if not math.isfinite(seconds):
        raise _bad(name, f"{field}[{index}] is not finite: {seconds}")
    if seconds < 0:
        raise _bad(name, f"{field}[{index}] is negative: {seconds}")
    return seconds


def _json_text(name: str, index: int, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(name, f"text[{index}] is not a string: {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(name, f"text[{index}] holds an unpaired surrogate escape") from None
    return _normalise(value)


def _json_lists(name: str, obj: object) -> tuple[list, list, list]:
    if not isinstance(obj, dict):
        raise _bad(
            name,
            f"top-level JSON value must be an object with 'start', 'end', 'text' lists, "
            f"not {type(obj).__name__}",
        )
    for key in ("start", "end", "text"):
        if key not in obj:
            raise _bad(name, f"missing key {key!r}")
        if not isinstance(obj[key], list):
            raise _bad(name, f"field {key!r} must be a list, not {type(obj[key]).__name__}")
    starts, ends, texts = obj["start"], obj["end"], obj["text"]
    if not len(starts) == len(ends) == len(texts):
        raise _bad(
            name,
            f"fields have unequal lengths: start={len(starts)}, end={len(ends)}, "
            f"text={len(texts)}",
        )
    return starts, ends, texts


def parse_howto100m_json(name: str, data: bytes) -> list[CaptionCue]:
    """Parse a HowTo100M caption object ``{"start": [...], "end": [...], "text": [...]}``.

    Only that dict form is accepted (not a list of per-cue objects). Cues keep file order;
    entries whose text is empty after whitespace normalisation are dropped.
    """
    text = _decode_text(name, data)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _bad(name, f"invalid JSON at {where}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # e.g. over-long integers, absurd nesting
        raise _bad(name, f"invalid JSON: {type(exc).__name__}") from None
    starts, ends, texts = _json_lists(name, obj)
    cues: list[CaptionCue] = []
    for i, (start, end, caption) in enumerate(zip(starts, ends, texts)):
        start_s = _json_seconds(name, "start", i, start)
        end_s = _json_seconds(name, "end", i, end)
        if end_s < start_s:
            raise _bad(name, f"end[{i}] ({end_s}) is before start[{i}] ({start_s})")
        normalised = _json_text(name, i, caption)
        if normalised:
            cues.append(CaptionCue(start_s, end_s, normalised))
    return _nonempty_or_raise(name, cues)


# ----------------------------------------------------------------------------- timestamps

_VTT_TS = r"(?:(\d{1,8}):)?(\d{2}):(\d{2})\.(\d{3})"
_VTT_TIMING = re.compile(rf"{_VTT_TS}[ \t]*-->[ \t]*{_VTT_TS}(?:[ \t].*)?")
_SRT_TS = r"(\d{1,8}):(\d{2}):(\d{2})[,.](\d{3})"
_SRT_TIMING = re.compile(rf"{_SRT_TS}[ \t]*-->[ \t]*{_SRT_TS}(?:[ \t].*)?")
_SRT_INDEX = re.compile(r"[0-9]+")


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float | None:
    """Timestamp fields -> seconds, or None when minutes or seconds exceed 59."""
    if int(minutes) > 59 or int(seconds) > 59:
        return None
    total_ms = ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)
    return total_ms / 1000  # one rounding: 2.310 -> exactly the float literal 2.31


def _parse_timing(
    name: str, line_no: int, line: str, pattern: re.Pattern[str]
) -> tuple[float, float]:
    """A timing line -> (start_s, end_s); ``line_no`` is 1-based, for messages."""
    match = pattern.fullmatch(line.strip())
    groups = match.groups() if match else ()
    start_s = _seconds(*groups[:4]) if match else None
    end_s = _seconds(*groups[4:8]) if match else None
    if start_s is None or end_s is None:
        raise _bad(name, f"line {line_no}: malformed cue timing {_clip(line)}")
    if end_s < start_s:
        raise _bad(name, f"line {line_no}: cue end {end_s:.3f}s is before its start {start_s:.3f}s")
    return start_s, end_s


# ----------------------------------------------------------------------------- de-duplication


def _carried_over(prev_lines: Sequence[str], lines: Sequence[str]) -> int:
    """Length of the longest prefix of ``lines`` equal to a suffix of ``prev_lines``."""
    for k in range(min(len(prev_lines), len(lines), MAX_CARRY_LINES), 0, -1):
        if tuple(prev_lines[-k:]) == tuple(lines[:k]):
            return k
    return 0


def _new_lines(prev: _RawCue | None, cue: _RawCue) -> tuple[str, ...]:
    """The lines of ``cue`` left after removing those rolled over from ``prev`` (module doc)."""
    if prev is None or cue.start_s - prev.end_s > ROLL_GAP_S:
        return cue.lines
    k = _carried_over(prev.lines, cue.lines)
    is_roll = 0 < k < len(cue.lines)
    is_flash = k > 0 and cue.end_s - cue.start_s <= FLASH_MAX_S
    return cue.lines[k:] if is_roll or is_flash else cue.lines


def _dedupe_rolling(raw: Sequence[_RawCue]) -> list[CaptionCue]:
    """Apply the rolling-caption rule of the module docstring; drop cues left without text."""
    cues: list[CaptionCue] = []
    prev: _RawCue | None = None
    for cue in raw:
        lines = _new_lines(prev, cue)
        if lines:
            cues.append(CaptionCue(cue.start_s, cue.end_s, " ".join(lines)))
        prev = cue
    return cues


# ----------------------------------------------------------------------------- WebVTT

_VTT_TAG = re.compile(r"<[^>\n]*>")
_VTT_SKIP_BLOCK = re.compile(r"(?:NOTE|STYLE|REGION)(?:[ \t]|$)")


def _vtt_line_text(line: str) -> str:
    return _normalise(html.unescape(_VTT_TAG.sub("", line)))


def _vtt_header_end(name: str, lines: list[str]) -> int:
    """Index of the first line after the ``WEBVTT`` header block."""
    first = lines[0]
    if not (first == "WEBVTT" or first.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise _bad(name, f"line 1: missing 'WEBVTT' header (got {_clip(first)})")
    i = 1
    while i < len(lines) and lines[i].strip() and "-->" not in lines[i]:
        i += 1
    return i


def _vtt_raw_cues(name: str, lines: list[str]) -> list[_RawCue]:
    raw: list[_RawCue] = []
    i = _vtt_header_end(name, lines)
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if "-->" not in line and _VTT_SKIP_BLOCK.match(line):
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if "-->" not in line:  # a cue identifier: the timing line must follow
            if i + 1 >= len(lines) or "-->" not in lines[i + 1]:
                raise _bad(name, f"line {i + 1}: expected a cue timing line, got {_clip(line)}")
            i += 1
        start_s, end_s = _parse_timing(name, i + 1, lines[i], _VTT_TIMING)
        texts, i = _cue_text(lines, i + 1, lambda line: line != "" and "-->" not in line, _vtt_line_text)
        raw.append(_RawCue(start_s, end_s, texts))
    return raw


def parse_webvtt(name: str, data: bytes) -> list[CaptionCue]:
    """Parse WebVTT (see the module docstring), de-duplicating rolling YouTube captions."""
    lines = _decode_text(name, data).split("\n")
    return _nonempty_or_raise(name, _dedupe_rolling(_vtt_raw_cues(name, lines)))


# ----------------------------------------------------------------------------- SRT

_SRT_TAG = re.compile(r"</?(?:i|b|u|s|font)(?:[ \t][^>\n]*)?>|\{\\[^}\n]*\}", re.IGNORECASE)


def _srt_line_text(line: str) -> str:
    return _normalise(_SRT_TAG.sub("", line))


def _srt_raw_cues(name: str, lines: list[str]) -> list[_RawCue]:
    raw: list[_RawCue] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if _SRT_INDEX.fullmatch(lines[i].strip()):
            i += 1
            if i >= len(lines) or not lines[i].strip():
                raise _bad(name, f"line {i}: cue index is not followed by a timing line")
        elif "-->" not in lines[i]:
            got = _clip(lines[i])
            raise _bad(name, f"line {i + 1}: expected a cue index or timing line, got {got}")
        start_s, end_s = _parse_timing(name, i + 1, lines[i], _SRT_TIMING)
        texts, i = _cue_text(lines, i + 1, str.strip, _srt_line_text)
        raw.append(_RawCue(start_s, end_s, texts))
    return raw


def parse_srt(name: str, data: bytes) -> list[CaptionCue]:
    """Parse SRT (see the module docstring), with the same rolling de-duplication as WebVTT."""
    lines = _decode_text(name, data).split("\n")
    return _nonempty_or_raise(name, _dedupe_rolling(_srt_raw_cues(name, lines)))


# ----------------------------------------------------------------------------- embedded tracks

#: Text subtitle codecs (FFmpeg's names) -> the sidecar format whose line rule their packets follow.
TRACK_FORMATS = {"subrip": "srt", "srt": "srt", "mov_text": "srt", "text": "srt", "webvtt": "vtt",
                 "ass": "ass", "ssa": "ass"}

_ASS_OVERRIDE = re.compile(r"\{[^}\n]*\}")


def _ass_lines(text: str) -> list[str]:
    """An ASS event's Text field -> its lines: ``\\N``/``\\n`` break lines, ``\\h`` is a space,
    ``{...}`` override blocks are removed."""
    text = _ASS_OVERRIDE.sub("", text).replace("\\h", " ")
    return re.split(r"\\[Nn]", text)


def track_cue_lines(name: str, codec: str, payload: bytes) -> list[str]:
    """One subtitle packet's payload (as a container stores it) -> its raw text lines (``name``:
    the file and track, for messages).

    ``subrip``/``text``/``webvtt``: the cue text; ``mov_text`` (mp4): a 16-bit big-endian length, then
    that many bytes of text (style boxes after it are ignored); ``ass``/``ssa`` (Matroska): the
    event's fields ``ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text``."""
    data = bytes(payload)
    if codec == "mov_text":
        length = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
        data = data[2:2 + length]
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise _bad(name, f"subtitle packet is not UTF-8 (byte {exc.start})") from None
    if TRACK_FORMATS.get(codec) == "ass":
        return _ass_lines(text.split(",", 8)[-1] if text.count(",") >= 8 else text)
    return text.split("\n")


def cues_from_track(name: str, codec: str, packets: Sequence[tuple[float, float, Sequence[str]]]) -> list[CaptionCue]:
    """An embedded subtitle track's ``(start_s, end_s, raw lines)`` packets, in file order ->
    captions by the rules of the sidecar format the codec follows (:data:`TRACK_FORMATS`: tags
    removed as in SRT or WebVTT, ASS overrides as in SRT), with the same rolling de-duplication,
    so a track gives the captions its sidecar file would. ``name`` is for messages."""
    fmt = TRACK_FORMATS.get(codec)
    if fmt is None:
        raise _bad(name, f"subtitle codec {codec!r} is not a text track; text tracks: {', '.join(sorted(TRACK_FORMATS))}")
    clean = _vtt_line_text if fmt == "vtt" else _srt_line_text
    raw = []
    for start_s, end_s, lines in packets:
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s:
            raise _bad(name, f"subtitle packet at {start_s:.3f}s ends at {end_s:.3f}s")
        texts = tuple(t for t in (clean(line) for line in lines) if t)
        raw.append(_RawCue(start_s, end_s, texts))
    return _nonempty_or_raise(name, _dedupe_rolling(raw))


_PARSERS: dict[str, Callable[[str, bytes], list[CaptionCue]]] = {
    ".json": parse_howto100m_json,
    ".srt": parse_srt,
    ".vtt": parse_webvtt,
}
