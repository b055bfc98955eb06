"""Reading the manifest: one JSON row per video, its fields checked, its paths resolved.

Every function here raises :class:`curation.errors.InputError` with a closed-vocabulary class and a
one-line message naming the file or field; the Beam stages turn that into a failures row.
"""

from __future__ import annotations

import json
import math
import os
import posixpath

from curation.errors import InputError
from curation.records import VIDEO_ID_RE, VideoRef
from pipeline.storage import files

def resolve_path(path: str, base_dir: str) -> str:
    """``path`` as given when absolute or a URI, else joined to the manifest's directory (a local
    folder or a URI prefix: ``gs://b/corpus`` + ``v/1.mp4`` -> ``gs://b/corpus/v/1.mp4``), with
    ``.`` and ``..`` resolved.

    >>> resolve_path("../v/1.mp4", "s3://b/corpus/manifests")
    's3://b/corpus/v/1.mp4'
    """
    if files.is_uri(path) or os.path.isabs(files.local(path)):
        return path
    if files.is_uri(base_dir):
        scheme, rest = base_dir.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        return f"{scheme}://{bucket}/" + posixpath.normpath(posixpath.join("/", prefix, path)).lstrip("/")
    return os.path.normpath(os.path.join(files.local(base_dir), path))


def _field(row: dict, name: str, video_id: str, kind: type, required: bool):
    value = row.get(name)
    if value is None:
        if required:
            raise InputError("bad_manifest_row", f"video {video_id}: manifest field {name!r} is required")
        return None
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise InputError("bad_manifest_row", f"video {video_id}: manifest field {name!r} must be a positive number, got {value!r}")
        return float(value)
    if not isinstance(value, str) or not value:
        raise InputError("bad_manifest_row", f"video {video_id}: manifest field {name!r} must be a non-empty string, got {value!r}")
    return value


def parse_manifest_line(line: str, base_dir: str) -> VideoRef:
    """One JSON Lines row -> :class:`VideoRef` (relative paths resolved against ``base_dir``).

    Video mode: ``video`` + ``captions`` (+ optional ``caption_features``, else the text tower
    embeds the captions); ``captions`` may be ``"embedded"`` (the video's text subtitle track),
    ``"asr"`` (speech recognition) or left out (:func:`_video_captions`). Feature mode: ``features`` + ``fps`` + ``captions`` +
    ``caption_features`` (a user's frame features live in their own space, so no text tower).
    """
    excerpt = " ".join(line.split())[:80]
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise InputError("bad_manifest_row", f"manifest line is not JSON ({exc.msg}): {excerpt!r}") from None
    if not isinstance(row, dict):
        raise InputError("bad_manifest_row", f"manifest line is not a JSON object: {excerpt!r}")
    video_id = row.get("video_id")
    if not isinstance(video_id, str):
        raise InputError("bad_manifest_row", f"manifest line has no string video_id: {excerpt!r}")
    if not VIDEO_ID_RE.match(video_id):
        raise InputError("invalid_video_id", f"video_id {video_id[:140]!r} must match [A-Za-z0-9_-]{{1,128}}")
    has_video, has_features = row.get("video") is not None, row.get("features") is not None
    if has_video == has_features:
        raise InputError("bad_manifest_row", f"video {video_id}: give exactly one of 'video' (video mode) or 'features' (feature mode)")
    if has_video:
        captions_from, captions = _video_captions(row, video_id, base_dir)
        caption_features = _field(row, "caption_features", video_id, str, False)
        if caption_features and captions_from != "file":
            raise InputError("bad_manifest_row", f"video {video_id}: 'caption_features' needs a captions file "
                                                 f"(one row per caption), not captions from {captions_from}")
        return VideoRef(
            video_id=video_id,
            captions=captions,
            video=resolve_path(_field(row, "video", video_id, str, True), base_dir),
            caption_features=resolve_path(caption_features, base_dir) if caption_features else None,
            captions_from=captions_from,
        )
    return VideoRef(
        video_id=video_id,
        captions=resolve_path(_field(row, "captions", video_id, str, True), base_dir),
        features=resolve_path(_field(row, "features", video_id, str, True), base_dir),
        fps=_field(row, "fps", video_id, float, True),
        caption_features=resolve_path(_field(row, "caption_features", video_id, str, True), base_dir),
    )


#: ``captions`` values of a video-mode row that are not paths (a file of that name: ``./asr``).
MEDIA_CAPTIONS = ("embedded", "asr")


def _video_captions(row: dict, video_id: str, base_dir: str) -> tuple[str, str | None]:
    """A video-mode row's ``(captions_from, captions path or None)``: a path, ``"embedded"``, ``"asr"``,
    or no ``captions`` at all (``auto``: the run's ``captions.when_missing`` decides)."""
    if row.get("captions") is None:
        return "auto", None
    value = _field(row, "captions", video_id, str, True)
    if value in MEDIA_CAPTIONS:
        return value, None
    return "file", resolve_path(value, base_dir)


def manifest_video_id(line: str) -> str:
    """Best-effort video_id of a raw manifest line for failure rows ('' when there is none)."""
    try:
        row = json.loads(line)
    except ValueError:
        return ""
    value = row.get("video_id") if isinstance(row, dict) else None
    return value[:200] if isinstance(value, str) else ""
