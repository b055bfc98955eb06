"""``nccurate manifest SOURCE -o MANIFEST``: a manifest written from a folder (or bucket prefix) of
videos, or of feature files, with each video's captions decided once.

Video mode (the default)
    SOURCE is listed recursively (sorted; names starting with ``.`` are skipped, and so are the
    captions folder, the manifest and its ids file when they lie inside it). A video is a file
    ending in one of :data:`VIDEO_EXTENSIONS` (any case). Its captions, first found wins:

    1. ``sidecar``: a captions file with the same stem in the same folder (``talk.mp4`` ->
       ``talk.json``, else ``talk.vtt``, else ``talk.srt``);
    2. ``table``: the entry of ``--table FILE`` whose key is the stem, converted by
       :func:`pipeline.inputs.caption_tables.convert_caption_table` into
       ``--captions-dir`` (default ``<manifest folder>/captions``; only the entries of videos
       that need one are converted);
    3. ``embedded``: a text subtitle track in a local video
       (:func:`pipeline.media.subtitles.has_text_subtitles`) -> ``"captions": "embedded"``. A
       remote video is not downloaded to look: its row has no ``captions`` and the run decides
       (its subtitle track, else speech recognition), or with ``--no-asr`` it gets
       ``"embedded"`` and fails with ``no_captions`` at run time when it has no text track;
    4. ``asr``: ``"captions": "asr"`` (speech recognition), or with ``--no-asr`` the video is
       left out and reported.

    ``--caption-features DIR`` adds ``caption_features`` from ``DIR/<stem>.npy`` (any folder
    below ``DIR``) to the rows whose captions are a file (a sidecar or a table entry: the
    manifest allows caption features only with a captions file); for the others it is reported
    as not used.

Feature mode (``--features DIR --fps F --caption-features DIR``)
    A row for every stem that has a frame-features file (``DIR/<stem>.npy``), captions (a
    ``<stem>.json``/``.vtt``/``.srt`` anywhere under SOURCE, in that preference, else the
    ``--table`` entry) and a caption-features file (``<stem>.npy``). Files of one kind sharing
    a stem in different folders are ambiguous: they are reported and not used.

Video ids
    A video's id is its file stem when that is a valid ``video_id`` (``[A-Za-z0-9_-]{1,128}``),
    else :func:`~pipeline.inputs.caption_tables.safe_video_id` of it (other characters -> ``_``,
    at most 119 of them, ``-`` and 8 hex digits of the stem's SHA-256), the same rule that names
    a table's converted files. When several videos would get one id (``a/x.mp4`` and
    ``b/x.mp4``, ``x.mp4`` and ``x.mkv``), each of them is named by its path inside SOURCE
    instead, every character a video_id cannot hold as ``_`` (``a/x.mp4`` -> ``a_x_mp4``; longer
    than 128, or still shared, it gets the hash suffix of that path). Every id that is not the
    file's stem is reported and written to ``<manifest without extension>.ids.json``
    (``{path inside SOURCE, or stem in feature mode: video_id}``).

Output
    One JSON object a line, sorted by ``video_id``, keys in a fixed order, ASCII only (so any
    file name round-trips). Paths are relative to the manifest's folder when both are local,
    else absolute (URIs as listed). Written with the atomic writer; an existing manifest is
    refused unless ``overwrite``. The same inputs give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pipeline.errors import ArgumentError
from pipeline.inputs.caption_tables import (
    convert_caption_table, hashed_video_id, id_chars, safe_video_id, table_format,
)
from pipeline.storage import atomic, files

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts")
#: Sidecar captions, in preference order.
CAPTION_EXTENSIONS = (".json", ".vtt", ".srt")
FEATURE_EXTENSION = ".npy"

#: The kinds of unpaired files, in the order the summary lists them.
UNPAIRED_KINDS = (
    "caption file without a video",
    "caption file not used (a preferred one is)",
    "video left out (no captions; --no-asr)",
    "caption features without a video",
    "caption features not used (the video's captions are not a file)",
    "features without captions",
    "features without caption features",
    "caption file without features",
    "caption features without features",
    "ambiguous (another file of its kind has its stem)",
)


@dataclass
class ManifestSummary:
    """What :func:`build_manifest` wrote; :meth:`text` is what ``nccurate manifest`` prints."""

    manifest: str
    mode: str                       # "video" or "features"
    rows: int = 0
    sidecar: int = 0
    table: int = 0
    embedded: int = 0
    asr: int = 0
    runtime: int = 0                # remote videos whose captions the run decides (not probed)
    no_asr: bool = False
    unpaired: list[tuple[str, str]] = field(default_factory=list)   # (kind, path)
    table_path: str | None = None
    captions_dir: str | None = None
    table_written: int = 0
    table_unused: int = 0           # table entries of no video here
    bad_table_entries: list[tuple[str, str]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)             # source name -> video_id
    ids_file: str | None = None

    @property
    def with_captions(self) -> int:
        return self.sidecar + self.table + self.embedded

    def text(self) -> str:
        lines = [f"manifest: {self.manifest}",
                 f"{self.rows} videos, {self.with_captions} with captions ({self.sidecar} sidecar, "
                 f"{self.table} table, {self.embedded} embedded), {self.asr} needing ASR"]
        if self.runtime:
            lines.append(
                f"{self.runtime} remote videos without a captions file (not downloaded to look): "
                + ('captions "embedded"; one without a text subtitle track fails with no_captions'
                   if self.no_asr else "no captions field, so the run uses their subtitle track, else speech recognition"))
        if self.table_path is not None:
            lines.append(f"table {self.table_path}: {self.table_written} entries converted into {self.captions_dir}, "
                         f"{len(self.bad_table_entries)} bad, {self.table_unused} for no video here")
        if self.unpaired:
            lines.append(f"unpaired ({len(self.unpaired)}):")
            lines += [f"  {kind}: {path}" for kind, path in self.unpaired]
        if self.bad_table_entries:
            lines.append(f"bad table entries, skipped ({len(self.bad_table_entries)}):")
            lines += [f"  {name}: {reason}" for name, reason in self.bad_table_entries]
        if self.ids:
            lines.append(f"video ids that are not the file's stem ({len(self.ids)}, written to {self.ids_file}):")
            lines += [f"  {name} -> {video_id}" for name, video_id in sorted(self.ids.items())]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ listing


def _walk(root: str) -> list[str]:
    """Sorted paths (``/``-separated) of the files under ``root``, relative to it; hidden names
    (``.``) skipped."""
    found: list[str] = []
    if files.is_uri(root):
        fs, inner = files.filesystem(root)
        fs.invalidate_cache()
        base = fs._strip_protocol(inner).rstrip("/")
        for entry in fs.find(inner):
            stripped = fs._strip_protocol(entry)
            if stripped.startswith(base + "/"):
                found.append(stripped[len(base) + 1:])
    else:
        top = files.local(root)
        for folder, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = os.path.relpath(folder, top)
            found += [name if rel == "." else posixpath.join(rel.replace(os.sep, "/"), name) for name in names]
    return sorted(rel for rel in found if not any(part.startswith(".") for part in rel.split("/")))


def _full(root: str, rel: str) -> str:
    return files.join(root, rel) if files.is_uri(root) else os.path.join(files.local(root), *rel.split("/"))


def _inside(path: str, folder: str) -> bool:
    path, folder = path.rstrip("/"), folder.rstrip("/")
    if files.is_uri(path) != files.is_uri(folder):
        return False
    if files.is_uri(path):
        return path == folder or path.startswith(folder + "/")
    return path == folder or path.startswith(folder + os.sep)


def _split(rel: str) -> tuple[str, str, str]:
    """``(folder, stem, lower-case extension)`` of a relative path."""
    folder, name = posixpath.split(rel)
    stem, ext = posixpath.splitext(name)
    return folder, stem, ext.lower()


def _require_folder(path: str, what: str) -> None:
    if not files.exists(path) and not files.isdir(path):
        raise ArgumentError(f"{path}: {what} not found")
    if not files.isdir(path):
        raise ArgumentError(f"{path}: {what} is not a folder")


def _by_stem(root: str, rels: list[str], ext: str, unpaired: list) -> dict[str, str]:
    """``{stem: full path}`` of the files ending in ``ext`` under ``root``; a stem held by more than
    one of them is ambiguous (reported, left out)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in rels:
        folder, stem, file_ext = _split(rel)
        if file_ext == ext:
            groups[stem].append(rel)
    out = {}
    for stem, group in groups.items():
        if len(group) == 1:
            out[stem] = _full(root, group[0])
        else:
            unpaired += [(UNPAIRED_KINDS[-1], _full(root, rel)) for rel in group]
    return out


# ------------------------------------------------------------------------------------ ids


def video_ids(rels: list[str]) -> dict[str, str]:
    """``{path inside SOURCE: video_id}`` by the module docstring's rule."""
    stem_ids = {rel: safe_video_id(_split(rel)[1]) for rel in rels}
    shared = Counter(stem_ids.values())
    ids = {rel: vid if shared[vid] == 1 else _path_id(rel) for rel, vid in stem_ids.items()}
    taken = Counter(ids.values())
    for rel in rels:
        if taken[ids[rel]] > 1 and ids[rel] != stem_ids[rel]:
            ids[rel] = hashed_video_id(rel)
    if len(set(ids.values())) != len(ids):
        clash = sorted(rel for rel in rels if Counter(ids.values())[ids[rel]] > 1)
        raise ArgumentError(f"cannot give {', '.join(clash[:4])} distinct video ids; rename one of them")
    return ids


def _path_id(rel: str) -> str:
    cleaned = id_chars(rel)
    return cleaned if len(cleaned) <= 128 else hashed_video_id(rel)


# ------------------------------------------------------------------------------------ paths


def _ids_path(manifest: str) -> str:
    root, ext = posixpath.splitext(manifest) if files.is_uri(manifest) else os.path.splitext(manifest)
    return f"{root if ext else manifest}.ids.json"


def _written_path(path: str, manifest_dir: str) -> str:
    """How a row names ``path``: relative to the manifest's folder when both are local."""
    if files.is_uri(path):
        return path
    path = os.path.abspath(files.local(path))
    if files.is_uri(manifest_dir):
        return path
    return os.path.relpath(path, manifest_dir).replace(os.sep, "/")


def _absolute(path: str | None) -> str | None:
    """URIs without a trailing ``/``; local paths absolute, without ``file://``."""
    if path is None:
        return None
    return path.rstrip("/") if files.is_uri(path) else os.path.abspath(files.local(path))


# ------------------------------------------------------------------------------------ the tool


def build_manifest(source: str, manifest: str, *, table: str | None = None, captions_dir: str | None = None,
                   features: str | None = None, fps: float | None = None, caption_features: str | None = None,
                   no_asr: bool = False, overwrite: bool = False) -> ManifestSummary:
    """Write the manifest ``manifest`` for the videos (or, with ``features``, the feature files)
    under ``source`` as the module docstring says; returns what it wrote and reported. Raises
    :class:`~pipeline.errors.ArgumentError` (or :class:`~pipeline.inputs.caption_tables.CaptionTableError`)
    with one line when it cannot."""
    source, manifest = _absolute(source), _absolute(manifest)
    features, caption_features, table = _absolute(features), _absolute(caption_features), _absolute(table)
    manifest_dir = files.parent(manifest)
    captions_dir = _absolute(captions_dir) if captions_dir else files.join(manifest_dir, "captions")
    if features is None and fps is not None:
        raise ArgumentError("--fps is for feature mode: give --features DIR with it")
    if features is not None:
        if no_asr:
            raise ArgumentError("--no-asr is for video mode: feature mode has no speech recognition")
        if fps is None or caption_features is None:
            raise ArgumentError("feature mode needs --fps F and --caption-features DIR with --features DIR")
        if not (math.isfinite(fps) and fps > 0):
            raise ArgumentError(f"--fps must be a positive number, got {fps}")
        if features == caption_features:
            raise ArgumentError(f"{features}: --features and --caption-features must be different folders")
    if files.isdir(manifest):
        raise ArgumentError(f"{manifest}: the manifest path is a folder")
    if files.exists(manifest) and not overwrite:
        raise ArgumentError(f"{manifest}: manifest exists; use --overwrite to replace it")
    _require_folder(source, "SOURCE folder")
    if table is not None:
        table_format(table)
        if not files.exists(table) or files.isdir(table):
            raise ArgumentError(f"{table}: caption table not found")
    ids_file = _ids_path(manifest)
    skip = {manifest, ids_file}
    rels = [rel for rel in _walk(source)
            if _full(source, rel) not in skip and not _inside(_full(source, rel), captions_dir)]

    summary = ManifestSummary(manifest=manifest, mode="features" if features else "video", no_asr=no_asr,
                              table_path=table, captions_dir=captions_dir if table else None)
    if features is None:
        rows = _video_rows(source, rels, summary, table, captions_dir, caption_features, manifest_dir)
    else:
        rows = _feature_rows(source, rels, summary, table, captions_dir, features, caption_features, fps, manifest_dir)
    summary.unpaired.sort(key=lambda item: (UNPAIRED_KINDS.index(item[0]), item[1]))
    if not rows:
        raise ArgumentError(f"no manifest written: {_why_empty(summary, source)}")
    rows.sort(key=lambda row: row["video_id"])
    summary.rows = len(rows)
    data = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows).encode("ascii")
    if summary.ids:
        summary.ids_file = ids_file
        atomic.write_json_atomic(ids_file, summary.ids)
    else:
        files.remove(ids_file)  # one from an earlier manifest at this path no longer applies
    atomic.write_bytes_atomic(manifest, data)
    return summary


def _why_empty(summary: ManifestSummary, source: str) -> str:
    if summary.mode == "features":
        return f"no features file pairs with captions and caption features ({len(summary.unpaired)} unpaired files)"
    left_out = sum(kind == UNPAIRED_KINDS[2] for kind, _ in summary.unpaired)
    if left_out:
        return f"none of the {left_out} videos under {source} has captions, and --no-asr leaves them out"
    return f"{source} holds no video ({', '.join(VIDEO_EXTENSIONS)})"


def _convert(summary: ManifestSummary, table: str | None, captions_dir: str, stems: set[str]):
    """Convert the table entries of ``stems`` (None when there is no table or nothing to convert)."""
    if table is None or not stems:
        return None
    done = convert_caption_table(table, captions_dir, only=stems)
    summary.table_written, summary.table_unused = len(done.written), done.not_wanted
    summary.bad_table_entries = list(done.bad)
    return done


def _video_rows(source, rels, summary, table, captions_dir, caption_features, manifest_dir) -> list[dict]:
    videos = [rel for rel in rels if _split(rel)[2] in VIDEO_EXTENSIONS]
    if not videos:
        raise ArgumentError(f"{source} holds no video ({', '.join(VIDEO_EXTENSIONS)})")
    sidecars: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for rel in rels:
        folder, stem, ext = _split(rel)
        if ext in CAPTION_EXTENSIONS:
            sidecars[(folder, stem)].setdefault(ext, rel)
    cap_feats: dict[str, str] = {}
    if caption_features:
        _require_folder(caption_features, "--caption-features folder")
        cap_feats = _by_stem(caption_features, _walk(caption_features), FEATURE_EXTENSION, summary.unpaired)

    chosen: dict[str, str] = {}  # video rel -> sidecar rel
    for rel in videos:
        folder, stem, _ = _split(rel)
        found = sidecars.get((folder, stem), {})
        for ext in CAPTION_EXTENSIONS:
            if ext in found:
                chosen[rel] = found[ext]
                break
    used = set(chosen.values())
    video_keys = {_split(rel)[:2] for rel in videos}
    for key, found in sidecars.items():
        for rel in found.values():
            if rel not in used:
                kind = UNPAIRED_KINDS[1] if key in video_keys else UNPAIRED_KINDS[0]
                summary.unpaired.append((kind, _full(source, rel)))
    converted = _convert(summary, table, captions_dir, {_split(rel)[1] for rel in videos if rel not in chosen})

    ids = video_ids(videos)
    rows, used_feats = [], set()
    for rel in videos:
        _, stem, _ = _split(rel)
        path = _full(source, rel)
        row = {"video_id": ids[rel], "video": _written_path(path, manifest_dir)}
        table_file = converted.path_of(stem) if converted is not None and rel not in chosen else None
        if rel in chosen:
            row["captions"] = _written_path(_full(source, chosen[rel]), manifest_dir)
            summary.sidecar += 1
        elif table_file is not None:
            row["captions"] = _written_path(table_file, manifest_dir)
            summary.table += 1
        elif files.is_uri(path):
            if summary.no_asr:
                row["captions"] = "embedded"
            summary.runtime += 1
        elif _has_text_track(path):
            row["captions"] = "embedded"
            summary.embedded += 1
        elif summary.no_asr:
            summary.unpaired.append((UNPAIRED_KINDS[2], path))
            continue
        else:
            row["captions"] = "asr"
            summary.asr += 1
        if stem in cap_feats:
            if row.get("captions") in (None, "asr", "embedded"):
                summary.unpaired.append((UNPAIRED_KINDS[4], cap_feats[stem]))
            else:
                row["caption_features"] = _written_path(cap_feats[stem], manifest_dir)
            used_feats.add(stem)
        if ids[rel] != stem:
            summary.ids[rel] = ids[rel]
        rows.append(row)
    summary.unpaired += [(UNPAIRED_KINDS[3], path) for stem, path in cap_feats.items() if stem not in used_feats]
    return rows


def _has_text_track(path: str) -> bool:
    from pipeline.media.subtitles import has_text_subtitles

    return has_text_subtitles(files.local(path))


def _feature_rows(source, rels, summary, table, captions_dir, features, caption_features, fps, manifest_dir) -> list[dict]:
    _require_folder(features, "--features folder")
    _require_folder(caption_features, "--caption-features folder")
    feats = _by_stem(features, _walk(features), FEATURE_EXTENSION, summary.unpaired)
    if not feats and not summary.unpaired:
        raise ArgumentError(f"{features} holds no {FEATURE_EXTENSION} features file")
    cap_feats = _by_stem(caption_features, _walk(caption_features), FEATURE_EXTENSION, summary.unpaired)
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for rel in rels:
        _, stem, ext = _split(rel)
        if ext in CAPTION_EXTENSIONS:
            groups[stem][ext].append(rel)
    sidecars: dict[str, str] = {}
    for stem, by_ext in groups.items():
        best = next(by_ext[ext] for ext in CAPTION_EXTENSIONS if ext in by_ext)
        if len(best) > 1:
            summary.unpaired += [(UNPAIRED_KINDS[-1], _full(source, rel)) for rel in best]
            continue
        sidecars[stem] = _full(source, best[0])
        summary.unpaired += [(UNPAIRED_KINDS[1] if stem in feats else UNPAIRED_KINDS[7], _full(source, rel))
                             for ext, group in by_ext.items() for rel in group if group is not best]
    converted = _convert(summary, table, captions_dir, {stem for stem in feats if stem not in sidecars})
    rows = []
    for stem, path in feats.items():
        captions, kind = sidecars.get(stem), "sidecar"
        if captions is None and converted is not None:
            captions, kind = converted.path_of(stem), "table"
        if captions is None:
            summary.unpaired.append((UNPAIRED_KINDS[5], path))
            continue
        if stem not in cap_feats:
            summary.unpaired.append((UNPAIRED_KINDS[6], path))
            continue
        video_id = safe_video_id(stem)
        rows.append({"video_id": video_id, "features": _written_path(path, manifest_dir), "fps": fps,
                     "captions": _written_path(captions, manifest_dir),
                     "caption_features": _written_path(cap_feats[stem], manifest_dir)})
        setattr(summary, kind, getattr(summary, kind) + 1)
        if video_id != stem:
            summary.ids[stem] = video_id
    summary.unpaired += [(UNPAIRED_KINDS[7], path) for stem, path in sidecars.items() if stem not in feats]
    summary.unpaired += [(UNPAIRED_KINDS[8], path) for stem, path in cap_feats.items() if stem not in feats]
    if len({row["video_id"] for row in rows}) != len(rows):
        raise ArgumentError("two feature stems map to one video id; rename one of them")
    return rows
