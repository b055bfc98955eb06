"""Reading one video's arrays and captions: feature matrices (.npy), caption files and caption
features, with retries of transient read errors.

Every function here raises :class:`curation.errors.InputError` with a closed-vocabulary class and a
one-line message naming the file; the Beam stages turn that into a failures row.
"""

from __future__ import annotations

import io

import numpy as np

from curation.errors import InputError
from curation.records import CaptionSet, FrameFeatures, VideoRef
from pipeline.storage import files
from pipeline.storage.retry import RetryPolicy

_FLOAT_KINDS = ("f",)


def read_bytes(path: str, what: str, retry: RetryPolicy = RetryPolicy()) -> bytes:
    """Whole file as bytes, local or a URI (:mod:`pipeline.storage.files`). Transient IO errors
    are retried under ``retry`` (``pipeline.storage.retry``); permanent ones fail at once."""
    try:
        return files.read_bytes(path, retry)
    except FileNotFoundError:
        raise InputError("missing_file", f"{what} file not found: {path}") from None
    except Exception as exc:  # OSError, or an object store's permanent error (HTTP 403, ...)
        raise InputError("unreadable_file", f"{what} file {path}: {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}") from None


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
    from pipeline.inputs.captions import parse_captions

    cues = parse_captions(ref.captions, read_bytes(ref.captions, "captions", retry))
    emb = None
    if ref.caption_features is not None:
        emb = load_matrix(ref.caption_features, "caption_features", expected_dim, retry)
        if emb.shape[0] != len(cues):
            raise InputError("dim_mismatch", f"caption_features file {ref.caption_features}: {emb.shape[0]} rows but {ref.captions} has {len(cues)} captions")
    return caption_set(ref.video_id, cues, emb)


def caption_set(video_id: str, cues, emb=None) -> CaptionSet:
    """A video's parsed captions (``pipeline.inputs.captions.CaptionCue`` list, in order) as the
    :class:`CaptionSet` the pipeline carries; ``emb``: their (m, D) features, or None (text tower)."""
    return CaptionSet(video_id=video_id, start_s=tuple(c.start_s for c in cues), end_s=tuple(c.end_s for c in cues),
                      text=tuple(c.text for c in cues), emb=emb)
