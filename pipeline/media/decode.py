"""Video decoding: frames sampled at ``sample_fps`` at the encoder's input size (DESIGN §1).

Conventions (all times in seconds; the rules themselves live in :mod:`curation.frames`):

* Time 0 is the file's presentation start: the earliest start of its audio streams and the
  video stream (:func:`pipeline.media.pyav.origin_ticks`), as a player and captions count it; a
  video stream that starts ``d`` seconds late has its first frame at ``d`` (samples before it use
  the first frame, the nearest). decord's times (from the stream's own start) are moved likewise.
* ``duration_s`` is the end of the last decoded frame: its PTS plus its duration (or one frame
  period from the stream's frame rate). Sample ``k`` stands for ``[k / fps, (k + 1) / fps)`` and
  targets its centre ``(k + 0.5) / fps``; the decoded frame with the nearest PTS is used (ties go
  to the earlier frame). ``pts_s`` records the PTS of the frame actually used.
* Frames are shown as a player shows them (:class:`pipeline.media.pyav.Display`): upright (the
  display rotation applied), with square pixels (the sample aspect ratio applied) and, with
  ``deinterlace`` (``decode.deinterlace``, on by default), interlaced frames replaced by their first
  field scaled to full height; then resized so their shorter side is ``size`` (aspect kept) and
  centre-cropped to ``size x size`` (CLIP-style).

Two backends give the same samples: ``pyav`` (the default; :mod:`pipeline.media.pyav`: decodes
only the packets the picks depend on where the codec allows it, else one sequential pass,
converting only the chosen frames) and ``decord`` (:mod:`pipeline.media.decord`: indexes every
packet at open, then ``get_batch`` of the chosen frames, resized inside the decoder). A file that
decord's bundled FFmpeg rejects but PyAV's reads (an mdat cut mid-packet: decord fails or not
depending on where the cut lands) is decoded with ``pyav``, so both backends keep the frames that
exist. :mod:`pipeline.media.isolated` runs a decode in a child process with a wall-clock limit,
so a native hang or crash fails only its video. Heavy imports (numpy aside) happen inside
functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipeline.media.decord import DecordRejected, decode_decord
from pipeline.media.failures import media_input
from pipeline.media.pyav import declared_end_s, decode_pyav

BACKENDS = ("decord", "pyav")


@dataclass(frozen=True)
class DecodedFrames:
    """Frames sampled from one video.

    frames: (N, size, size, 3) uint8 RGB; pts_s: (N,) float64 seconds, the PTS of the decoded
    frame used for each sample; duration_s: the stream's duration in seconds; sample_fps: Hz;
    notes: :attr:`Decoded.notes`.
    """

    frames: np.ndarray
    pts_s: np.ndarray
    duration_s: float
    sample_fps: float
    notes: tuple[tuple[str, str], ...] = ()


class FrameSink:
    """Receives a video's sampled frames in sample order, ``(n, size, size, 3)`` uint8 at a time.
    :class:`ArraySink` keeps them (in-process decode); the decode child streams them to a raw
    file (:class:`FileSink`) so neither it nor the reader holds a whole video's frames."""

    def add(self, frames: np.ndarray) -> None:
        raise NotImplementedError

    def keep_first(self, n: int) -> None:
        """Keep only the first ``n`` frames added (0: a decode path gave up, another starts over)."""
        raise NotImplementedError


class ArraySink(FrameSink):
    def __init__(self):
        self.frames: list[np.ndarray] = []

    def add(self, frames: np.ndarray) -> None:
        self.frames.extend(np.array(frames, dtype=np.uint8, copy=True))

    def keep_first(self, n: int) -> None:
        del self.frames[n:]

    def array(self, size: int) -> np.ndarray:
        return np.stack(self.frames) if self.frames else np.zeros((0, size, size, 3), np.uint8)


class FileSink(FrameSink):
    """Appends raw frame bytes (C order, uint8) to a binary file."""

    def __init__(self, handle):
        self.handle, self.count, self.frame_bytes = handle, 0, 0

    def add(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        self.frame_bytes = frames[0].nbytes if len(frames) else self.frame_bytes
        self.handle.write(frames.tobytes())
        self.count += len(frames)

    def keep_first(self, n: int) -> None:
        if n < self.count:
            self.handle.seek(n * self.frame_bytes)
            self.handle.truncate()
            self.count = n


def check_backend(backend: str) -> None:
    """ValueError naming the allowed values when ``backend`` is not one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; allowed: {list(BACKENDS)}")


class Decoded(NamedTuple):
    """What :func:`decode_into` found besides the frames: ``pts_s (N,)`` seconds, ``duration_s``
    (the end of the last decoded frame) and ``notes``, ``(error_class, message)`` pairs about a
    usable video (:data:`NOTE_CLASSES`) that go to the failures table without failing it."""

    pts_s: np.ndarray
    duration_s: float
    notes: tuple[tuple[str, str], ...] = ()


#: Classes of decode notes: ``backend_fallback`` (decord was not trusted with the file, or hung,
#: and PyAV decoded it) and ``truncated`` (the footage ends well before the header's duration).
NOTE_CLASSES = ("backend_fallback", "truncated")


def decode_into(path: str, sample_fps: float, size: int, backend: str, sink: FrameSink, threads: int = 0,
                max_bytes: int | None = None, deinterlace: bool = True, exact: bool = True) -> Decoded:
    """Decode ``path`` (a local file, or a URI read from a bounded local copy of at most
    ``max_bytes``: :func:`~pipeline.media.failures.media_input`) in this process into ``sink``:
    one frame per target time of :func:`curation.frames.sample_times_s` (the nearest PTS, ties
    to the earlier frame), resized to a shorter side of ``size`` pixels and centre-cropped to
    ``size x size``, with ``threads`` decoder threads (0: one per core), interlaced frames
    deinterlaced with ``deinterlace``. ``exact=False`` (``decode.exact``): PyAV's approximate pass,
    the nearest reference frame without the loop filter
    (:func:`~pipeline.media.pyav.decode_pyav`); decord is always exact. Returns :class:`Decoded`.

    Raises ``InputError('missing_file' | 'unreadable_file' | 'too_large' | 'decode_error', ...)``;
    the message names the file.
    """
    check_backend(backend)
    if not sample_fps > 0 or size < 1:
        raise ValueError(f"sample_fps must be > 0 and size >= 1, got {sample_fps}, {size}")
    with media_input(path, max_bytes) as local_path:
        notes: list[tuple[str, str]] = []
        pts_s, duration_s = _decode_local(local_path, sample_fps, size, backend, sink, threads, deinterlace, exact,
                                          notes)
        declared_s = declared_end_s(local_path)
        if declared_s is not None and duration_s < declared_s - max(TRUNCATED_MIN_S, TRUNCATED_SHARE * declared_s):
            notes.append(("truncated", f"{local_path}: the footage ends at {duration_s:.3f} s, its header says "
                                       f"{declared_s:.3f} s (a truncated file, or a wrong header)"))
        return Decoded(pts_s, duration_s, tuple((cls, message.replace(local_path, path)) for cls, message in notes))


#: A video's footage is noted ``truncated`` when it ends more than this many seconds, and more than
#: this share of the header's duration, before the end the header declares.
TRUNCATED_MIN_S, TRUNCATED_SHARE = 1.0, 0.02


def _decode_local(path: str, sample_fps: float, size: int, backend: str, sink: FrameSink, threads: int,
                  deinterlace: bool, exact: bool, notes: list):
    if backend == "pyav":
        return decode_pyav(path, sample_fps, size, sink, threads, deinterlace, exact)
    try:
        return decode_decord(path, sample_fps, size, sink, threads, deinterlace)
    except DecordRejected as exc:  # PyAV picks the same frames; it fails too where the file is unusable
        notes.append(("backend_fallback", exc.message))
        sink.keep_first(0)
        return decode_pyav(path, sample_fps, size, sink, threads, deinterlace, exact)


def decode_frames(path: str, sample_fps: float, size: int, backend: str = "pyav", threads: int = 0,
                  deinterlace: bool = True, exact: bool = True) -> DecodedFrames:
    """:func:`decode_into` an array: :class:`DecodedFrames` of the whole video."""
    sink = ArraySink()
    decoded = decode_into(path, sample_fps, size, backend, sink, threads, deinterlace=deinterlace, exact=exact)
    return DecodedFrames(frames=sink.array(size), pts_s=decoded.pts_s, duration_s=decoded.duration_s,
                         sample_fps=float(sample_fps), notes=decoded.notes)
