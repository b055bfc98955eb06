"""Reading one video's arrays and captions: feature matrices (.npy), caption files and caption
features, with retries of transient read errors.

Every function here raises :class:`curation.errors.InputError` with a closed-vocabulary class and a
one-line message naming the file; the Beam stages turn that into a failures row.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

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
    """The video's per-frame features ``(T, D)`` at ``ref.fps``; from a local file, as
    :class:`StoredFrameFeatures` (pickled as a reference to the file)."""
    emb = load_matrix(ref.features, "features", expected_dim, retry)
    stored = StoredMatrix.of(ref.features, "features", expected_dim, retry, emb)
    if stored is None:
        return FrameFeatures(ref.video_id, ref.fps, emb)
    return StoredFrameFeatures(ref.video_id, ref.fps, emb, stored=stored)


@dataclass(frozen=True)
class StoredMatrix:
    """Where a matrix read by :func:`load_matrix` came from (a local file) and the CRC-32 of its
    float32 bytes, so it can be read again and checked to be the same.

    Why: a runner encodes every element that crosses a stage boundary (the DirectRunner: pickle,
    buffers, decode). A video's frame features (about 850 KB for 7 minutes at 1 fps, D = 512)
    and caption features (~120 KB) cost ~10 ms per MB per crossing there, and a feature-mode run
    crosses two boundaries after loading (the decoy pool and the calibration are run-level side
    inputs); reading a local ``.npy`` again costs ~0.4 ms. Records holding a :class:`StoredMatrix`
    pickle as this reference and read the file when unpickled. Files behind a URI are carried
    as arrays (a second download would cost more than the crossing)."""

    path: str
    what: str
    expected_dim: int | None
    crc32: int
    retry: RetryPolicy

    @staticmethod
    def of(path: str, what: str, expected_dim: int | None, retry: RetryPolicy, arr: np.ndarray) -> "StoredMatrix | None":
        """The reference of ``arr``, just read from ``path``; None for a URI."""
        return None if files.is_uri(path) else StoredMatrix(path, what, expected_dim, array_crc32(arr), retry)

    def read(self) -> np.ndarray:
        """The matrix again; :class:`InputError` naming the file if it changed or went away (the
        checks of :func:`load_matrix` passed on the first read, and equal bytes pass them again)."""
        data = read_bytes(self.path, self.what, self.retry)
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32, copy=False)
        except (ValueError, OSError, EOFError, AttributeError):
            arr = None
        if arr is None or array_crc32(arr) != self.crc32:
            raise InputError("bad_features", f"{self.what} file {self.path}: changed while the run was reading it "
                                             "(its contents differ from the first read)")
        return arr


def array_crc32(arr: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order)."""
    return zlib.crc32(np.ascontiguousarray(arr).data)


@dataclass(frozen=True)
class StoredFrameFeatures(FrameFeatures):
    """:class:`FrameFeatures` read from a local file: pickled as their :class:`StoredMatrix`."""

    stored: StoredMatrix | None = None

    def __reduce__(self):
        return _frames_again, (self.video_id, self.fps, self.stored)


def _frames_again(video_id: str, fps: float, stored: StoredMatrix) -> StoredFrameFeatures:
    return StoredFrameFeatures(video_id, fps, stored.read(), stored=stored)


@dataclass(frozen=True)
class StoredCaptionSet(CaptionSet):
    """A :class:`CaptionSet` whose ``emb`` was read from a local file: pickled with its
    :class:`StoredMatrix` in place of ``emb``."""

    stored: StoredMatrix | None = None

    def __reduce__(self):
        return _captions_again, (self.video_id, self.start_s, self.end_s, self.text, self.stored)


def _captions_again(video_id: str, start_s, end_s, text, stored: StoredMatrix) -> StoredCaptionSet:
    return StoredCaptionSet(video_id, start_s, end_s, text, stored.read(), stored=stored)


def load_caption_set(ref: VideoRef, expected_dim: int | None, retry: RetryPolicy = RetryPolicy()) -> CaptionSet:
    """Parsed captions plus their ``caption_features`` rows (one per parsed caption, file order)."""
    from pipeline.inputs.captions import parse_captions

    cues = parse_captions(ref.captions, read_bytes(ref.captions, "captions", retry))
    if ref.caption_features is None:
        return caption_set(ref.video_id, cues)
    emb = load_matrix(ref.caption_features, "caption_features", expected_dim, retry)
    if emb.shape[0] != len(cues):
        raise InputError("dim_mismatch", f"caption_features file {ref.caption_features}: {emb.shape[0]} rows but {ref.captions} has {len(cues)} captions")
    captions = caption_set(ref.video_id, cues, emb)
    stored = StoredMatrix.of(ref.caption_features, "caption_features", expected_dim, retry, emb)
    if stored is None:
        return captions
    return StoredCaptionSet(captions.video_id, captions.start_s, captions.end_s, captions.text, emb, stored=stored)


def caption_set(video_id: str, cues, emb=None) -> CaptionSet:
    """A video's parsed captions (``pipeline.inputs.captions.CaptionCue`` list, in order) as the
    :class:`CaptionSet` the pipeline carries; ``emb``: their (m, D) features, or None (text tower)."""
    return CaptionSet(video_id=video_id, start_s=tuple(c.start_s for c in cues), end_s=tuple(c.end_s for c in cues),
                      text=tuple(c.text for c in cues), emb=emb)
