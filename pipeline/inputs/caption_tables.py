"""Caption tables for a whole corpus, converted once into one HowTo100M sidecar file a video.

HowTo100M ships its ASR captions as one ``caption.json`` of several GB,
``{video_id: {"start": [...], "end": [...], "text": [...]}, ...}``; other corpora ship a parquet or
JSON Lines table keyed by ``video_id``. No worker should load such a table: :func:`convert_caption_table`
streams it once and writes ``CAPTIONS_DIR/<video_id>.json`` (HowTo100M format) for each video, which
the pipeline then reads like any sidecar captions file.

Table formats (chosen by the file name; ``.gz``/``.bz2``/``.xz``/``.zst`` on a JSON or JSON Lines
table is decompressed while reading; any path may be a URI)
    ``.json``
        One object ``{video_id: {"start": [...], "end": [...], "text": [...]}, ...}``
        (HowTo100M's ``caption.json``), read incrementally by :func:`iter_json_object`.
    ``.jsonl`` / ``.ndjson``
        One JSON object a line, in either shape: a *per-video* row ``{"video_id", "start": [...],
        "end": [...], "text": [...]}`` or a *per-caption* row ``{"video_id", "start": s, "end": e,
        "text": t}`` (``start`` a list or not decides a row's shape; a file may mix them).
    ``.parquet`` / ``.pq``
        Columns ``video_id``, ``start``, ``end``, ``text`` (others ignored): list columns for the
        per-video shape, scalar columns for the per-caption shape; read with
        :meth:`pyarrow.parquet.ParquetFile.iter_batches`.

A per-caption table's rows of one video need not be adjacent; its captions keep the table's row
order (they are never sorted). A video is one entry: one key of the JSON object, one per-video row,
or all of its per-caption rows.

Entries
    Each entry is written as ``{"end": [...], "start": [...], "text": [...]}`` (only those keys,
    sorted, compact, one trailing newline, non-ASCII text as UTF-8) with the atomic writer, so the
    bytes depend only on the entry, and is checked by
    :func:`pipeline.inputs.captions.parse_howto100m_json` on exactly those bytes. An entry that
    fails (not an object, missing or unequal lists, bad times, no caption with text, a video on
    more than one entry, a row without a string ``video_id``, a JSON Lines line that is not JSON)
    is reported (its id, or ``line N``/``row N``, and a one-line reason) and skipped, never fatal.
    A table that cannot be read as a whole (missing, unknown format, a JSON syntax error, a parquet
    file without the four columns) raises :class:`CaptionTableError`.

Ids
    A key that is not a valid ``video_id`` (``[A-Za-z0-9_-]{1,128}``) is written under
    :func:`safe_video_id` of it: every other character becomes ``_``, cut to 119 characters, then
    ``-`` and 8 hex digits of the key's SHA-256 (stable, and never equal to a valid key's id
    except by a hash collision). The result lists each mapped key.

Memory bound
    JSON: one entry at a time. The reader holds the undecoded text of at most one entry plus one
    read (``chunk_size`` bytes; the read doubles while one entry is bigger than the buffer), and
    the decoded entry; besides that, one id string per wanted entry (to find duplicates).
    JSON Lines and parquet: two passes. The first counts the rows of each wanted video (one
    counter a video id); the second holds the captions of the videos whose rows are not all seen
    yet and writes a video as soon as its last row arrives, so a table grouped by video (the usual
    layout) holds one video's captions at a time, and a table whose rows of every video are spread
    over the whole file at worst holds all of them. Parquet also holds one batch of rows
    (``PARQUET_BATCH_ROWS``) and the row group pyarrow is decoding; JSON Lines one line.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from curation.errors import InputError
from curation.records import VIDEO_ID_RE
from pipeline.errors import NccurateError
from pipeline.inputs.captions import parse_howto100m_json
from pipeline.storage import atomic, files

#: Bytes read from a JSON table at a time (more while one entry is bigger than the buffer).
CHUNK_BYTES = 256 << 10
#: Rows a parquet batch holds: per-video rows carry whole caption lists, so fewer of them.
PARQUET_BATCH_ROWS = {"video": 256, "caption": 16384}
#: The columns (and JSON Lines keys) of a table.
COLUMNS = ("video_id", "start", "end", "text")

_INVALID_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_HASH_HEX = 8
_WS = " \t\n\r"
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd")
#: A value (or a syntax error) this close to the end of the buffer may be cut by the read.
_TAIL_CHARS = 16


class CaptionTableError(NccurateError, ValueError):
    """A caption table that cannot be read as a whole (one line, naming the file)."""


# ------------------------------------------------------------------------------------ ids


def id_chars(name: str) -> str:
    """``name`` with every character a video_id cannot hold as ``_`` (its length unchanged)."""
    return _INVALID_ID_CHARS.sub("_", name)


def hashed_video_id(name: str) -> str:
    """A valid video_id for any ``name``: :func:`id_chars` of it cut to 119 characters, ``-`` and
    the first 8 hex digits of the SHA-256 of ``name`` (UTF-8)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{id_chars(name)[:128 - _HASH_HEX - 1]}-{digest}"


def safe_video_id(name: str) -> str:
    """``name`` when it is a valid video_id, else :func:`hashed_video_id` of it.

    >>> safe_video_id("abc-1_2"), safe_video_id("my video.en")
    ('abc-1_2', 'my_video_en-8d9e61f3')
    """
    return name if VIDEO_ID_RE.match(name) else hashed_video_id(name)


# ------------------------------------------------------------------------------------ streaming JSON


class _Buffer:
    """Text decoded incrementally (UTF-8, BOM allowed) from a binary file, kept from ``pos`` on."""

    def __init__(self, handle, name: str, chunk_size: int):
        self.handle, self.name, self.chunk_size = handle, name, max(1, int(chunk_size))
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.pos, self.eof = "", 0, False
        self.consumed = 0  # characters dropped before ``text``, for messages
        self.bytes_read = 0

    def fill(self, at_least: int = 0) -> bool:
        """Read more (``max(chunk_size, at_least)`` bytes); False at the end of the file."""
        if self.eof:
            return False
        if self.pos:
            self.consumed += self.pos
            self.text, self.pos = self.text[self.pos:], 0
        data = self.handle.read(max(self.chunk_size, at_least))
        try:
            if not data:
                self.eof = True
                self.text += self.decoder.decode(b"", final=True)
                return False
            self.text += self.decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise CaptionTableError(f"{self.name}: not UTF-8 near byte {self.bytes_read + exc.start}") from None
        self.bytes_read += len(data)
        return True

    def peek(self) -> str:
        """The next character after whitespace ('' at the end of the file), not consumed."""
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < len(text):
                return text[pos]
            if not self.fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            got = repr(char) if char else "the end of the file"
            raise self.error(f"expected {what}, got {got}")
        self.pos += 1
        return char

    def error(self, what: str, where: int | None = None) -> CaptionTableError:
        """An error at the absolute character ``where`` (default: the current position)."""
        where = self.consumed + self.pos if where is None else where
        return CaptionTableError(f"{self.name}: invalid JSON at character {where}: {what}")

    def value(self, decoder: json.JSONDecoder):
        """Decode the JSON value at ``pos`` (after whitespace), reading more while it is cut off.
        :meth:`fill` moves the value to the buffer's start, so offsets are taken from ``pos``."""
        self.peek()
        while True:
            start = self.pos
            try:
                value, end = decoder.raw_decode(self.text, start)
            except json.JSONDecodeError as exc:
                where = self.consumed + exc.pos
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.text) - _TAIL_CHARS
                if cut and self.fill(at_least=len(self.text) - start):
                    continue
                raise self.error(exc.msg, where) from None
            except (ValueError, RecursionError) as exc:  # over-long integers, absurd nesting
                raise self.error(type(exc).__name__) from None
            # a number ending near the buffer's end may go on in the next read (``1`` of ``1e-7``)
            if end + _TAIL_CHARS <= len(self.text) or not self.fill(at_least=len(self.text) - start):
                self.pos += end - start  # fill moved the value to the buffer's start
                return value


def iter_json_object(handle, name: str = "JSON", chunk_size: int = CHUNK_BYTES) -> Iterator[tuple[str, object]]:
    """``(key, value)`` pairs of the one JSON object in the binary file ``handle``, in file order,
    without ever holding more than one value's text and one read of ``chunk_size`` bytes
    (``dict(iter_json_object(f))`` equals ``json.load(f)``, duplicate keys included: the last
    wins). Whitespace, values cut by a read and a UTF-8 BOM are handled; anything else that is not
    one JSON object (syntax errors, trailing data, bad UTF-8) raises :class:`CaptionTableError`
    naming ``name`` and the character position."""
    buf, decoder = _Buffer(handle, name, chunk_size), json.JSONDecoder()
    first = buf.peek()
    if not first:
        raise CaptionTableError(f"{name}: the file is empty")
    if first != "{":
        raise buf.error("the top-level value must be an object {video_id: captions, ...}")
    buf.pos += 1
    if buf.peek() == "}":
        buf.pos += 1
    else:
        while True:
            if buf.peek() != '"':
                raise buf.error("expected a string key")
            key = buf.value(decoder)
            buf.expect(":", "':' after a key")
            yield key, buf.value(decoder)
            if buf.expect(",}", "',' or '}' after a value") == "}":
                break
    if buf.peek():
        raise buf.error("extra data after the top-level object")


# ------------------------------------------------------------------------------------ conversion


@dataclass
class TableConversion:
    """What :func:`convert_caption_table` did. ``written``: video_id -> table key of every file
    written (``captions_dir/<video_id>.json``); ``bad``: ``(id or 'line N'/'row N', reason)`` of
    every entry reported and skipped, in table order; ``mapped``: table key -> video_id of every
    written key that was not a valid id; ``not_wanted``: entries skipped because ``only`` did not
    name them."""

    table: str
    captions_dir: str
    written: dict[str, str] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    mapped: dict[str, str] = field(default_factory=dict)
    not_wanted: int = 0

    def path_of(self, key: str) -> str | None:
        """The captions file written for table key ``key``, or None."""
        video_id = safe_video_id(key)
        return files.join(self.captions_dir, f"{video_id}.json") if self.written.get(video_id) == key else None


def table_format(path: str) -> str:
    """``json``, ``jsonl`` or ``parquet`` from the file name (a compression suffix is skipped)."""
    name = posixpath.basename(path.rstrip("/")).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    ext = posixpath.splitext(name)[1]
    formats = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    if ext not in formats:
        raise CaptionTableError(f"{path}: unknown caption table format {ext or '(no extension)'!r}; "
                                f"use .json (HowTo100M caption.json), .jsonl or .parquet")
    return formats[ext]


def _entry_bytes(entry: dict) -> bytes:
    """The sidecar file of an entry: sorted keys, compact, UTF-8 (an unpaired surrogate is written
    escaped, so the parser reports it)."""
    try:
        return (json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def _reason(exc: InputError, name: str) -> str:
    message = exc.message
    return message[len(name) + 2:] if message.startswith(f"{name}: ") else message


class _Writer:
    """Checks and writes entries into ``result``; one place for the id, duplicate and parse rules."""

    def __init__(self, result: TableConversion):
        self.result = result
        self.seen: set[str] = set()        # every video_id met, written or reported
        self.duplicates: set[str] = set()  # video_ids on more than one entry

    def write(self, key: str, value: object) -> None:
        result = self.result
        video_id = safe_video_id(key)
        if video_id in self.duplicates:
            return
        if video_id in self.seen:  # a second entry for one video: neither is trusted
            first = result.written.pop(video_id, None)
            if first is not None:
                result.mapped.pop(first, None)
                files.remove(files.join(result.captions_dir, f"{video_id}.json"))
            self.duplicates.add(video_id)
            self.bad(key, "appears in more than one entry; none of them is used")
            return
        self.seen.add(video_id)
        if not isinstance(value, dict):
            self.bad(key, f"not an object with 'start', 'end', 'text' lists (got {type(value).__name__})")
            return
        entry = {k: value[k] for k in ("start", "end", "text") if k in value}
        data = _entry_bytes(entry)
        try:
            parse_howto100m_json(key, data)
        except InputError as exc:
            self.bad(key, _reason(exc, key))
            return
        atomic.write_bytes_atomic(files.join(result.captions_dir, f"{video_id}.json"), data)
        result.written[video_id] = key
        if video_id != key:
            result.mapped[key] = video_id

    def bad(self, name: str, reason: str) -> None:
        self.result.bad.append((name, " ".join(reason.split())))


def convert_caption_table(table: str, captions_dir: str, only: Collection[str] | None = None,
                          chunk_size: int = CHUNK_BYTES) -> TableConversion:
    """Write ``captions_dir/<video_id>.json`` for every entry of the caption table ``table`` (or only
    for the table keys in ``only``), as the module docstring says; returns what was written,
    mapped and reported."""
    if not files.exists(table) or files.isdir(table):
        raise CaptionTableError(f"{table}: caption table not found")
    fmt = table_format(table)
    wanted: Callable[[str], bool] = (lambda key: True) if only is None else frozenset(only).__contains__
    result = TableConversion(table=table, captions_dir=captions_dir)
    writer = _Writer(result)
    files.makedirs(captions_dir)
    if fmt == "json":
        with files.open_read(table) as handle:
            for key, value in iter_json_object(handle, table, chunk_size):
                if wanted(key):
                    writer.write(key, value)
                else:
                    result.not_wanted += 1
        return result
    rows = _jsonl_rows if fmt == "jsonl" else _parquet_rows
    _convert_rows(table, rows, wanted, writer)
    return result


# ------------------------------------------------------------------------------------ row tables


@dataclass
class _Row:
    where: str                  # "line N" / "row N", for reports
    video_id: str | None        # None: ``error`` says why
    per_video: bool = False
    values: tuple = ()          # start, end, text
    error: str | None = None


def _row_of(where: str, row: object, per_video: bool | None = None, values: tuple | None = None) -> _Row:
    if not isinstance(row, dict):
        return _Row(where, None, error=f"not a JSON object (got {type(row).__name__})")
    video_id = row.get("video_id")
    if not isinstance(video_id, str):
        return _Row(where, None, error=f"no string video_id (got {type(video_id).__name__})")
    values = tuple(row.get(k) for k in ("start", "end", "text")) if values is None else values
    return _Row(where, video_id, isinstance(values[0], list) if per_video is None else per_video, values)


def _jsonl_rows(table: str, ids_only: bool) -> Iterator[_Row]:
    with files.open_read(table) as handle:
        for n, raw in enumerate(handle, 1):
            where = f"line {n}"
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield _Row(where, None, error=f"not UTF-8 (byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield _Row(where, None, error=f"not JSON ({getattr(exc, 'msg', type(exc).__name__)})")
                continue
            yield _row_of(where, row)


def _parquet_rows(table: str, ids_only: bool) -> Iterator[_Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with files.open_read(table) as handle:
        try:
            reader = pq.ParquetFile(handle)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CaptionTableError(f"{table}: not a readable parquet file ({' '.join(str(exc).split())[:200]})") from None
        schema = reader.schema_arrow
        missing = [c for c in COLUMNS if c not in schema.names]
        if missing:
            raise CaptionTableError(f"{table}: caption table lacks the column(s) {', '.join(missing)}; "
                                    f"it needs {', '.join(COLUMNS)}")
        kinds = {c: pa.types.is_list(schema.field(c).type) or pa.types.is_large_list(schema.field(c).type)
                 for c in COLUMNS[1:]}
        if len(set(kinds.values())) != 1:
            raise CaptionTableError(f"{table}: start, end and text must be all list columns (one row a video) "
                                    f"or all scalar columns (one row a caption); list columns: "
                                    f"{', '.join(c for c, is_list in kinds.items() if is_list)}")
        per_video = kinds["start"]
        columns = ["video_id"] if ids_only else list(COLUMNS)
        batch_rows = PARQUET_BATCH_ROWS["video" if per_video else "caption"]
        n = 0
        try:
            for batch in reader.iter_batches(batch_size=batch_rows, columns=columns):
                lists = [batch.column(batch.schema.get_field_index(c)).to_pylist() for c in columns]
                for values in zip(*lists):
                    n += 1
                    row = {"video_id": values[0]}
                    yield _row_of(f"row {n}", row, per_video, values[1:] if not ids_only else (None, None, None))
        except (pa.ArrowException, OSError) as exc:
            raise CaptionTableError(f"{table}: reading row {n + 1} failed ({' '.join(str(exc).split())[:200]})") from None


def _convert_rows(table: str, rows: Callable[[str, bool], Iterator[_Row]], wanted: Callable[[str], bool],
                  writer: _Writer) -> None:
    """Two passes over a JSON Lines or parquet table (module docstring: memory bound)."""
    result = writer.result
    counts: dict[str, list[int]] = {}  # video_id of the table -> [rows, per-video rows]
    for row in rows(table, True):
        if row.video_id is not None and wanted(row.video_id):
            count = counts.setdefault(row.video_id, [0, 0])
            count[0] += 1
            count[1] += row.per_video
    pending: dict[str, tuple[list, list, list]] = {}
    done: set[str] = set()
    for row in rows(table, False):
        if row.video_id is None:
            writer.bad(row.where, row.error or "no video_id")
            continue
        key = row.video_id
        if not wanted(key):
            result.not_wanted += 1
            continue
        total, per_video = counts[key]
        if per_video and total > 1:
            if key not in done:
                done.add(key)
                writer.bad(key, f"appears on {total} rows, {per_video} of them with lists "
                                f"(a video is one row with lists, or one row a caption)")
            continue
        if row.per_video:
            writer.write(key, dict(zip(("start", "end", "text"), row.values)))
            continue
        lists = pending.setdefault(key, ([], [], []))
        for target, value in zip(lists, row.values):
            target.append(value)
        if len(lists[0]) == total:
            del pending[key]
            writer.write(key, {"start": lists[0], "end": lists[1], "text": lists[2]})

