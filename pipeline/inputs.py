"""Reading one video's inputs: manifest rows, feature arrays, captions (+ caption features).

Every function here raises :class:`curation.errors.InputError` with a closed-vocabulary class and a
one-line message naming the file or field; the Beam stages turn that into a failures row.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os

import numpy as np

from curation.errors import InputError
from curation.records import VIDEO_ID_RE, CaptionSet, FrameFeatures, VideoRef
from pipeline.retry import RetryPolicy, with_retries

_URI_SCHEMES = ("gs://", "s3://", "hdfs://", "http://", "https://", "azfs://")
_FLOAT_KINDS = ("f",)


def resolve_path(path: str, base_dir: str) -> str:
    """``path`` as given when absolute or a URI, else joined to the manifest's directory."""
    if path.startswith(_URI_SCHEMES) or os.path.isabs(path):
        return path
    if base_dir.startswith(_URI_SCHEMES):
        return base_dir.rstrip("/") + "/" + path
    return os.path.normpath(os.path.join(base_dir, path))


def read_bytes(path: str, what: str, retry: RetryPolicy = RetryPolicy()) -> bytes:
    """Whole file as bytes; local paths via ``open``, URIs via Beam's ``FileSystems``. Transient
    IO errors are retried under ``retry`` (``pipeline.retry``); permanent ones fail at once."""
    def read() -> bytes:
        if path.startswith(_URI_SCHEMES):
            from apache_beam.io.filesystems import FileSystems

            if not FileSystems.exists(path):
                raise FileNotFoundError(errno.ENOENT, "not found", path)
            with FileSystems.open(path) as handle:
                return handle.read()
        with open(path, "rb") as handle:
            return handle.read()

    try:
        return with_retries(read, retry)
    except FileNotFoundError:
        raise InputError("missing_file", f"{what} file not found: {path}") from None
    except OSError as exc:
        raise InputError("unreadable_file", f"{what} file {path}: {exc.__class__.__name__}: {exc}") from None


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
    embeds the captions). Feature mode: ``features`` + ``fps`` + ``captions`` +
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
    captions = resolve_path(_field(row, "captions", video_id, str, True), base_dir)
    if has_video:
        caption_features = _field(row, "caption_features", video_id, str, False)
        return VideoRef(
            video_id=video_id,
            captions=captions,
            video=resolve_path(_field(row, "video", video_id, str, True), base_dir),
            caption_features=resolve_path(caption_features, base_dir) if caption_features else None,
        )
    return VideoRef(
        video_id=video_id,
        captions=captions,
        features=resolve_path(_field(row, "features", video_id, str, True), base_dir),
        fps=_field(row, "fps", video_id, float, True),
        caption_features=resolve_path(_field(row, "caption_features", video_id, str, True), base_dir),
    )


def manifest_video_id(line: str) -> str:
    """Best-effort video_id of a raw manifest line for failure rows ('' when there is none)."""
    try:
        row = json.loads(line)
    except ValueError:
        return ""
    value = row.get("video_id") if isinstance(row, dict) else None
    return value[:200] if isinstance(value, str) else ""


def load_matrix(path: str, what: str, expected_dim: int | None = None, retry: RetryPolicy = RetryPolicy()) -> np.ndarray:
    """A ``.npy`` float matrix ``(n, D)``, loaded without pickle, checked finite, as float32."""
    data = read_bytes(path, what, retry)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError("bad_features", f"{what} file {path}: not a readable .npy array ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or min(arr.shape) < 1:
        raise InputError("bad_features", f"{what} file {path}: expected a 2-D (n, D) array, got shape {getattr(arr, 'shape', None)}")
    if arr.dtype.kind not in _FLOAT_KINDS:
        raise InputError("bad_features", f"{what} file {path}: expected a float array, got dtype {arr.dtype}")
    if expected_dim is not None and arr.shape[1] != expected_dim:
        raise InputError("dim_mismatch", f"{what} file {path}: width {arr.shape[1]} != features.dim {expected_dim}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError("bad_features", f"{what} file {path}: {bad} row(s) contain NaN or inf")
    return arr.astype(np.float32)


def load_frame_features(ref: VideoRef, expected_dim: int | None, retry: RetryPolicy = RetryPolicy()) -> FrameFeatures:
    """The video's per-frame features ``(T, D)`` at ``ref.fps``."""
    return FrameFeatures(ref.video_id, ref.fps, load_matrix(ref.features, "features", expected_dim, retry))


def load_caption_set(ref: VideoRef, expected_dim: int | None, retry: RetryPolicy = RetryPolicy()) -> CaptionSet:
    """Parsed captions plus their ``caption_features`` rows (one per parsed caption, file order)."""
    from pipeline.captions import parse_captions

    cues = parse_captions(ref.captions, read_bytes(ref.captions, "captions", retry))
    emb = None
    if ref.caption_features is not None:
        emb = load_matrix(ref.caption_features, "caption_features", expected_dim, retry)
        if emb.shape[0] != len(cues):
            raise InputError("dim_mismatch", f"caption_features file {ref.caption_features}: {emb.shape[0]} rows but {ref.captions} has {len(cues)} captions")
    return CaptionSet(
        video_id=ref.video_id,
        start_s=tuple(c.start_s for c in cues),
        end_s=tuple(c.end_s for c in cues),
        text=tuple(c.text for c in cues),
        emb=emb,
    )
