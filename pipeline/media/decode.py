"""Video decoding: frames sampled at ``sample_fps`` at the encoder's input size (DESIGN §1).

Conventions (all times in seconds):

* Time 0 is the first frame of the video stream (the stream's ``start_time`` is subtracted),
  as players show it and as decord reports it.
* ``duration_s`` is the end of the last decoded frame: its PTS plus its duration (or one frame
  period from the stream's frame rate). Sample ``k`` stands for ``[k / fps, (k + 1) / fps)`` and
  targets its centre ``(k + 0.5) / fps``; the decoded frame with the nearest PTS is used (ties go
  to the earlier frame). ``pts_s`` records the PTS of the frame actually used.
* Frames are resized so their shorter side is ``size`` (aspect kept), then centre-cropped to
  ``size x size`` (CLIP-style); the stored sample aspect ratio and rotation metadata are ignored.

Two backends give the same samples: ``decord`` (indexes every packet at open, then ``get_batch``
of the chosen frames, resized inside the decoder) and ``pyav`` (one sequential pass, converting
only the chosen frames). A file that decord's bundled FFmpeg rejects but PyAV's reads (an mdat
cut mid-packet: decord fails or not depending on where the cut lands) is decoded with ``pyav``,
so both backends keep the frames that exist. :func:`decode_frames_isolated` runs either in a
child process (``python -m pipeline.media.decode``) with a wall-clock limit, so a native hang or crash
fails only its video. Heavy imports (numpy aside) happen inside functions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from curation.errors import InputError

BACKENDS = ("decord", "pyav")

#: Exit status of the child when it wrote a structured :class:`InputError` to its error file.
_EXIT_INPUT_ERROR = 3


@dataclass(frozen=True)
class DecodedFrames:
    """Frames sampled from one video.

    frames: (N, size, size, 3) uint8 RGB; pts_s: (N,) float64 seconds, the PTS of the decoded
    frame used for each sample; duration_s: the stream's duration in seconds; sample_fps: Hz.
    """

    frames: np.ndarray
    pts_s: np.ndarray
    duration_s: float
    sample_fps: float


#: Two candidate frames whose distances to a target differ by less than this (seconds) tie, and
#: the earlier wins. Covers float rounding, including decord's float32 timestamps (about 0.25 ms
#: of resolution after an hour), so both backends pick the same frames.
TIE_EPS_S = 1e-3


def sample_times_s(duration_s: float, sample_fps: float) -> np.ndarray:
    """``(n,)`` float64 target times ``(k + 0.5) / sample_fps`` for ``k = 0 .. n - 1`` with
    ``n = floor(duration_s * sample_fps)``, at least 1 when ``duration_s > 0`` (0 otherwise).

    Sample ``k`` stands for ``[k / fps, (k + 1) / fps)``: the feature-mode convention that frame
    ``k``'s time is its centre.
    """
    if not duration_s > 0:
        return np.zeros(0, dtype=np.float64)
    n = max(1, math.floor(duration_s * sample_fps + 1e-9))
    return grid_times_s(np.arange(n), sample_fps, 0.5)


def grid_times_s(k, rate: float, phase: float, offset_s: float = 0.0):
    """``offset_s + (k + phase) / rate`` seconds: the one formula for every target grid, so a
    streaming picker and a vectorised one compute bit-identical targets."""
    return offset_s + (k + phase) / rate


def nearest_indices(frame_pts_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """``(n,)`` int: for each target, the index of the nearest of the ascending ``frame_pts_s``
    (ties within :data:`TIE_EPS_S` go to the earlier frame)."""
    pts = np.asarray(frame_pts_s, dtype=np.float64)
    after = np.clip(np.searchsorted(pts, targets_s, side="left"), 0, len(pts) - 1)
    before = np.clip(after - 1, 0, len(pts) - 1)
    take_before = np.abs(targets_s - pts[before]) <= np.abs(pts[after] - targets_s) + TIE_EPS_S
    return np.where(take_before, before, after)


class NearestPicker:
    """Streaming nearest-PTS selection over frames decoded in presentation order.

    Targets are :func:`grid_times_s` ``(k, rate, phase, offset_s)`` for k = 0, 1, ...
    (unbounded while streaming). Feed ``(t_s, frame)`` with :meth:`push`, which returns the
    ``(k, t_s, frame)`` picks that became final (a target is final once a frame at or after it
    has been seen); :meth:`finish` gives the remaining targets ``k < n_targets`` the last frame.
    Same rule as :func:`nearest_indices`: nearest PTS, near-ties to the earlier frame.
    """

    def __init__(self, rate: float, phase: float, offset_s: float = 0.0):
        self.rate, self.phase, self.offset_s = rate, phase, offset_s
        self.k = 0
        self.prev: tuple[float, object] | None = None

    def target(self, k: int) -> float:
        return grid_times_s(k, self.rate, self.phase, self.offset_s)

    def push(self, t_s: float, frame) -> list[tuple[int, float, object]]:
        picks = []
        while self.target(self.k) <= t_s:
            tgt = self.target(self.k)
            if self.prev is not None and tgt - self.prev[0] <= t_s - tgt + TIE_EPS_S:
                picks.append((self.k, *self.prev))
            else:
                picks.append((self.k, t_s, frame))
            self.k += 1
        self.prev = (t_s, frame)
        return picks

    def finish(self, n_targets: int) -> list[tuple[int, float, object]]:
        picks = [(k, *self.prev) for k in range(self.k, n_targets)] if self.prev is not None else []
        self.k = max(self.k, n_targets)
        return picks


def resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """``(w, h)`` with the shorter side ``size`` and the aspect ratio kept (each >= size)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(..., h, w, 3) -> (..., size, size, 3)``: the centred ``size x size`` window."""
    h, w = rgb.shape[-3], rgb.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[..., top:top + size, left:left + size, :]


def check_file(path: str) -> None:
    """``missing_file`` when ``path`` does not exist, ``unreadable_file`` when it is a directory
    or not readable. Never opens the file (a FIFO would block)."""
    if not os.path.exists(path):
        raise InputError("missing_file", f"video file not found: {path}")
    if os.path.isdir(path) or not os.access(path, os.R_OK):
        raise InputError("unreadable_file", f"video file is not a readable file: {path}")


class _DecordRejected(InputError):
    """A decode_error from decord itself (not PyAV): :func:`decode_frames` retries with PyAV."""


def _decode_error(path: str, what: str, exc: BaseException | None = None, cls: type = InputError) -> InputError:
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return cls("decode_error", f"cannot decode {path}: {what}{detail}"[:500])


# ---------------------------------------------------------------------------------------- pyav


def open_video_stream(path: str, threads: int = 0):
    """``(container, stream)`` of the first video stream, opened with PyAV (decode_error else);
    the decoder uses ``threads`` threads (0: FFmpeg's choice, one per core)."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _decode_error(path, "cannot open", exc) from None
    if not container.streams.video:
        container.close()
        raise _decode_error(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = int(threads)
    return container, stream


def frame_times(stream, frames):
    """``(t_s, end_s, frame)`` for each decoded frame: PTS relative to the stream start, and the
    frame's end (PTS + its duration, else one frame period)."""
    tb = float(stream.time_base) if stream.time_base else None
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    period = 1.0 / float(rate) if rate else 0.0
    origin = stream.start_time if stream.start_time is not None else None
    for i, frame in enumerate(frames):
        if frame.pts is None or tb is None:
            t_s = i * period
        else:
            if origin is None:
                origin = frame.pts
            t_s = (frame.pts - origin) * tb
        dur = frame.duration * tb if frame.duration and tb else period
        yield t_s, t_s + dur, frame


def to_rgb(frame, width: int, height: int) -> np.ndarray:
    """PyAV frame -> ``(height, width, 3)`` uint8 RGB (one swscale step, bilinear)."""
    from av.video.reformatter import Interpolation

    return frame.reformat(width=width, height=height, format="rgb24",
                          interpolation=Interpolation.BILINEAR).to_ndarray()


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


def _crop_rgb(frame, size: int) -> np.ndarray:
    """PyAV frame -> ``(size, size, 3)`` uint8: shorter side resized to ``size``, centre crop (a copy)."""
    return np.ascontiguousarray(center_crop(to_rgb(frame, *resize_dims(frame.width, frame.height, size)), size))


# --------------------------------------------------------------- pyav, keyframe-aware (fast path)


@dataclass(frozen=True)
class PacketIndex:
    """The first video stream's packets in decode order, read by demuxing only (no decoding).

    pts: (P,) int64 ticks; end: (P,) int64 ticks (pts + duration); gop: (P,) int, the number of
    the keyframe-started group each packet belongs to; closed: (G + 1,) bool, ``closed[g]``: no
    packet of group g shows before its keyframe and the keyframe resets every reference (so
    group g decodes without the packets of group g - 1); time_base and origin (ticks of time 0)."""

    pts: np.ndarray
    end: np.ndarray
    gop: np.ndarray
    closed: np.ndarray
    time_base: float
    origin: int


#: Codecs whose keyframes are checked to reset every reference (see :func:`_resets_references`).
_SKIPPABLE_CODECS = ("h264", "hevc", "vp8", "vp9")


def _nal_types(data: bytes, hevc: bool):
    """NAL unit types of a length-prefixed (avcC / hvcC, 4-byte lengths) access unit."""
    pos = 0
    while pos + 5 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        head = data[pos + 4]
        yield (head >> 1) & 0x3F if hevc else head & 0x1F
        pos += 4 + length


def _resets_references(codec: str, extradata: bytes | None, packet_bytes: bytes) -> bool:
    """True when a keyframe packet starts a group nothing later can reference across: an H.264
    IDR picture (NAL type 5), an HEVC IDR (19, 20), a VP8 or VP9 keyframe. Annex-B H.264/HEVC
    (no avcC/hvcC extradata) and other codecs answer False: their groups are never skipped."""
    if codec in ("vp8", "vp9"):
        return True
    if not extradata or extradata[0] != 1:  # not length-prefixed
        return False
    types = set(_nal_types(packet_bytes, codec == "hevc"))
    return bool(types & ({19, 20} if codec == "hevc" else {5}))


def index_packets(path: str) -> PacketIndex | None:
    """Demux ``path``'s first video stream; None when a packet lacks a PTS (then the sequential
    path decides what is what) or the codec is not one of :data:`_SKIPPABLE_CODECS`."""
    import av

    container, stream = open_video_stream(path)
    codec = stream.codec_context.name
    if codec not in _SKIPPABLE_CODECS or not stream.time_base:
        container.close()
        return None
    extradata, time_base = stream.codec_context.extradata, float(stream.time_base)
    pts, end, gop, closed = [], [], [], []
    with container:
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None
                if packet.is_keyframe or not gop:
                    closed.append(packet.is_keyframe and _resets_references(codec, extradata, bytes(packet)))
                    key_pts = packet.pts
                elif packet.pts < key_pts:
                    closed[-1] = False  # a leading picture: it may reference the previous group
                pts.append(packet.pts)
                end.append(packet.pts + (packet.duration or 0))
                gop.append(len(closed) - 1)
        except (av.FFmpegError, OSError):
            return None
        origin = stream.start_time if stream.start_time is not None else (min(pts) if pts else 0)
    if not pts:
        return None
    return PacketIndex(np.array(pts, np.int64), np.array(end, np.int64), np.array(gop, np.int64),
                       np.array(closed + [True], bool), time_base, int(origin))


class _GaveUp(Exception):
    """The keyframe-aware path cannot vouch for its picks; the sequential path runs instead."""


def _decode_pyav_indexed(path: str, sample_fps: float, size: int, sink: FrameSink, index: PacketIndex,
                         stats: dict | None = None, threads: int = 0):
    """Decode only what the samples need: within each group of pictures, packets after the
    group's last needed frame are not decoded when the next group does not reference them
    (``index.closed``); whole groups without a needed frame are skipped the same way. The picks
    are those of the sequential path (nearest PTS, near-ties to the earlier frame), computed from
    the packets' PTS, and every picked frame is checked to come out of the decoder with that PTS.
    Returns ``(pts_s, duration_s)``; raises :class:`_GaveUp` when a needed frame does not appear.
    ``stats`` (a dict) receives ``packets`` (in the stream) and ``decoded`` (sent to the decoder)."""
    import av

    order = np.argsort(index.pts, kind="stable")
    frame_pts = index.pts[order]
    if np.any(np.diff(frame_pts) == 0):
        raise _GaveUp("two packets share a PTS")
    pts_s = (frame_pts - index.origin) * index.time_base
    duration_s = float(((index.end - index.origin) * index.time_base).max())
    targets = sample_times_s(duration_s, sample_fps)
    if not len(targets):
        raise _GaveUp("zero duration")
    need = nearest_indices(pts_s, targets)                  # (n,) positions in presentation order
    needed = np.unique(need)
    left = np.bincount(index.gop[order][needed], minlength=len(index.closed))  # needed frames per group
    wanted = set(frame_pts[needed].tolist())
    crops: dict[int, np.ndarray] = {}
    next_k = 0

    def emit():
        nonlocal next_k
        while next_k < len(need) and int(frame_pts[need[next_k]]) in crops:
            first = next_k
            while next_k < len(need) and need[next_k] == need[first]:
                next_k += 1
            sink.add(np.broadcast_to(crops[int(frame_pts[need[first]])], (next_k - first, size, size, 3)))
        done_below = frame_pts[need[next_k]] if next_k < len(need) else None
        for key in [k for k in crops if done_below is None or k < done_below]:
            del crops[key]

    container, stream = open_video_stream(path, threads)
    gop_of_pts = dict(zip(index.pts.tolist(), index.gop.tolist()))
    skip_until_key, current, sent = False, -1, 0
    with container:
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    if packet.is_keyframe:
                        current, skip_until_key = current + 1, False
                        if left[current] == 0 and index.closed[current + 1]:
                            skip_until_key = True  # nothing needed here, and the next group starts afresh
                    if skip_until_key:
                        continue
                    sent += 1
                for frame in packet.decode():
                    if frame.pts in wanted:
                        wanted.discard(frame.pts)
                        crops[frame.pts] = _crop_rgb(frame, size)
                        left[gop_of_pts[frame.pts]] -= 1
                        emit()
                if current >= 0 and left[current] == 0 and index.closed[current + 1]:
                    skip_until_key = True
        except (av.FFmpegError, OSError) as exc:
            raise _GaveUp(str(exc)) from None
    if next_k < len(need):
        raise _GaveUp(f"{len(need) - next_k} picked frames did not come out of the decoder")
    if stats is not None:
        stats.update(packets=len(index.pts), decoded=sent)
    return pts_s[need], duration_s


# ------------------------------------------------------------------------------- pyav, sequential


def _decode_pyav_sequential(path: str, sample_fps: float, size: int, sink: FrameSink, threads: int = 0):
    """One sequential pass over every frame: a :class:`NearestPicker` chooses, only the chosen
    frames are converted. Returns ``(pts_s, duration_s)``. Handles what the indexed path does
    not vouch for (damaged files, missing PTS, other codecs)."""
    import av

    container, stream = open_video_stream(path, threads)
    picker = NearestPicker(sample_fps, 0.5)
    pts_s: list[float] = []
    cache: tuple[object, np.ndarray] | None = None  # the last converted frame (a frame can serve several targets)
    end_s = 0.0

    def keep(picks):
        nonlocal cache
        for _k, t_s, frame in picks:
            if cache is None or cache[0] is not frame:
                cache = (frame, _crop_rgb(frame, size))
            sink.add(cache[1][None])
            pts_s.append(float(t_s))

    try:
        with container:
            for t_s, end, frame in frame_times(stream, container.decode(stream)):
                keep(picker.push(t_s, frame))
                end_s = max(end_s, end)
            n = len(sample_times_s(end_s, sample_fps))
            keep(picker.finish(n))
    except (av.FFmpegError, OSError) as exc:
        raise _decode_error(path, "decoding failed", exc) from None
    if picker.prev is None:
        raise _decode_error(path, "no frame could be decoded")
    if n == 0:
        raise _decode_error(path, "the decoded frames span zero seconds")
    sink.keep_first(n)  # a pick may have been made for a target past the last frame's end
    return np.array(pts_s[:n], np.float64), float(end_s)


def _decode_pyav(path: str, sample_fps: float, size: int, sink: FrameSink, threads: int = 0):
    """The keyframe-aware path where the packet index allows it, else (or when it gives up) the
    sequential one; both pick the same frames. Returns ``(pts_s, duration_s)``."""
    index = index_packets(path)
    if index is not None:
        try:
            return _decode_pyav_indexed(path, sample_fps, size, sink, index, threads=threads)
        except _GaveUp:
            sink.keep_first(0)
    return _decode_pyav_sequential(path, sample_fps, size, sink, threads)


# -------------------------------------------------------------------------------------- decord


def video_dims(path: str) -> tuple[int, int]:
    """``(width, height)`` of the first video stream, read from the header with PyAV."""
    container, stream = open_video_stream(path)
    with container:
        return stream.codec_context.width, stream.codec_context.height


def open_decord(path: str, size: int | None = None, threads: int = 0):
    """``(reader, ts)``: a decord ``VideoReader`` (resizing inside the decoder to a shorter side
    of ``size`` when given) and its ``(N, 2)`` float64 ``[start, end)`` frame times in seconds
    (decord keeps them as float32)."""
    import decord

    kwargs = {}
    if size is not None:
        width, height = video_dims(path)
        if width > 0 and height > 0:
            kwargs["width"], kwargs["height"] = resize_dims(width, height, size)
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=int(threads), **kwargs)
        n = len(reader)
        ts = reader.get_frame_timestamp(np.arange(n)).astype(np.float64) if n else np.zeros((0, 2))
    except (decord.DECORDError, RuntimeError) as exc:
        raise _decode_error(path, "decord cannot read it", exc, _DecordRejected) from None
    if n == 0:
        raise _decode_error(path, "no frame could be decoded")
    return reader, ts


def _decord_batch(reader, indices: list[int]) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 frames ``indices`` (ascending) of a decord reader.

    decord 0.6 takes an RGB row's padding for extra channels at some widths (16, 24, 48, 72, ...:
    its frames come back ``(h, w, 4)`` or ``(h, w, 6)`` and ``get_batch`` fails; dmlc/decord#336).
    Those frames are read one by one and the padding is cut off each row.
    """
    import decord

    try:
        return reader.get_batch(indices).asnumpy()
    except decord.DECORDError:
        if reader[indices[0]].asnumpy().shape[-1] == 3:
            raise
    frames = [reader[i].asnumpy() for i in indices]
    return np.stack([f.reshape(f.shape[0], -1)[:, :3 * f.shape[1]].reshape(*f.shape[:2], 3) for f in frames])


#: Frames per decord ``get_batch`` call (bounds the decoder's uncropped frames in memory).
DECORD_CHUNK = 128


def _decode_decord(path: str, sample_fps: float, size: int, sink: FrameSink, threads: int = 0):
    """decord: the packet index at open, then ``get_batch`` of the picked frames, in chunks of
    :data:`DECORD_CHUNK` samples. Returns ``(pts_s, duration_s)``."""
    import decord

    reader, ts = open_decord(path, size, threads)
    order = np.argsort(ts[:, 0], kind="stable")  # decord indexes in presentation order; be safe
    duration_s = float(ts[:, 1].max())
    if not duration_s > 0:
        raise _decode_error(path, "the decoded frames span zero seconds")
    idx = order[nearest_indices(ts[order, 0], sample_times_s(duration_s, sample_fps))]
    try:  # in chunks: one get_batch of an hour's uncropped frames would hold GBs (bench memory)
        for lo in range(0, len(idx), DECORD_CHUNK):
            unique, inverse = np.unique(idx[lo:lo + DECORD_CHUNK], return_inverse=True)
            sink.add(center_crop(_decord_batch(reader, unique.tolist()), size)[inverse])
    except (decord.DECORDError, RuntimeError) as exc:
        raise _decode_error(path, "decord failed to decode frames", exc, _DecordRejected) from None
    return ts[idx, 0].copy(), duration_s


# ------------------------------------------------------------------------------------- public


def decode_into(path: str, sample_fps: float, size: int, backend: str, sink: FrameSink, threads: int = 0):
    """Decode ``path`` in this process into ``sink``: one frame per target time of
    :func:`sample_times_s` (the nearest PTS, ties to the earlier frame), resized to a shorter side
    of ``size`` pixels and centre-cropped to ``size x size``, with ``threads`` decoder threads
    (0: one per core). Returns ``(pts_s, duration_s)``.

    Raises ``InputError('missing_file' | 'unreadable_file' | 'decode_error', ...)``; the message
    names the file.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; allowed: {list(BACKENDS)}")
    if not sample_fps > 0 or size < 1:
        raise ValueError(f"sample_fps must be > 0 and size >= 1, got {sample_fps}, {size}")
    check_file(path)
    if backend == "pyav":
        return _decode_pyav(path, sample_fps, size, sink, threads)
    try:
        return _decode_decord(path, sample_fps, size, sink, threads)
    except _DecordRejected:  # PyAV picks the same frames; it fails too where the file is unusable
        sink.keep_first(0)
        return _decode_pyav(path, sample_fps, size, sink, threads)


def decode_frames(path: str, sample_fps: float, size: int, backend: str = "decord", threads: int = 0) -> DecodedFrames:
    """:func:`decode_into` an array: :class:`DecodedFrames` of the whole video."""
    sink = ArraySink()
    pts_s, duration_s = decode_into(path, sample_fps, size, backend, sink, threads)
    return DecodedFrames(frames=sink.array(size), pts_s=pts_s, duration_s=duration_s, sample_fps=float(sample_fps))


class IsolatedDecode:
    """A video decoded by the child (:func:`decode_isolated`): ``pts_s (N,)``, ``duration_s``,
    ``sample_fps``, ``size`` and ``n_frames``; the frames stay in the child's raw file and are read
    :meth:`in_chunks`, so the reader holds one chunk at a time. A context manager: leaving it
    removes the child's temporary directory."""

    def __init__(self, tmp: str, frames_path: str, meta: dict):
        self.tmp, self.frames_path = tmp, frames_path
        self.pts_s = np.asarray(meta["pts_s"], np.float64)
        self.duration_s, self.sample_fps = float(meta["duration_s"]), float(meta["sample_fps"])
        self.size, self.n_frames = int(meta["size"]), int(meta["n_frames"])

    def __enter__(self) -> "IsolatedDecode":
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def in_chunks(self, chunk_frames: int):
        """Yield ``(n <= chunk_frames, size, size, 3)`` uint8 arrays, in sample order."""
        frame_bytes = self.size * self.size * 3
        with open(self.frames_path, "rb") as handle:
            for lo in range(0, self.n_frames, chunk_frames):
                n = min(chunk_frames, self.n_frames - lo)
                data = handle.read(n * frame_bytes)
                if len(data) != n * frame_bytes:
                    raise OSError(f"decoded frames file {self.frames_path} is short")
                yield np.frombuffer(bytearray(data), np.uint8).reshape(n, self.size, self.size, 3)

    def decoded(self) -> DecodedFrames:
        """Every frame at once."""
        frames = np.concatenate(list(self.in_chunks(max(1, self.n_frames))))
        return DecodedFrames(frames=frames, pts_s=self.pts_s, duration_s=self.duration_s, sample_fps=self.sample_fps)


def decode_isolated(path: str, sample_fps: float, size: int, backend: str, timeout_s: float,
                    threads: int = 0) -> IsolatedDecode:
    """:func:`decode_into` in a child process (``python -m pipeline.media.decode``) killed after
    ``timeout_s`` seconds of wall clock; returns an :class:`IsolatedDecode` whose frames are read
    from the child's file (use it in a ``with``: leaving it removes the file). On an error the
    temporary directory is removed here.

    Raises ``InputError('timeout')`` when the limit is hit; the child's own ``InputError`` with
    its class and message; ``InputError('decode_error')`` when the child dies from a signal or
    exits non-zero without one.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; allowed: {list(BACKENDS)}")
    check_file(path)
    tmp = tempfile.mkdtemp(prefix="nccurate-decode-")
    out, err, log = (os.path.join(tmp, name) for name in ("frames", "error.json", "stderr.txt"))
    cmd = [sys.executable, "-m", "pipeline.media.decode", path, "--sample-fps", repr(float(sample_fps)),
           "--size", str(int(size)), "--backend", backend, "--threads", str(int(threads)), "--out", out, "--error", err]
    try:
        with open(log, "wb") as stderr:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                      env=child_env(), timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:  # run() has killed and reaped the child
                raise InputError("timeout", f"decoding {path} exceeded decode_timeout_s={timeout_s}") from None
        return _read_child_result(path, proc.returncode, tmp, out, err, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def decode_frames_isolated(path: str, sample_fps: float, size: int, backend: str, timeout_s: float) -> DecodedFrames:
    """:func:`decode_isolated`, every frame read at once."""
    with decode_isolated(path, sample_fps, size, backend, timeout_s) as result:
        return result.decoded()


def child_env() -> dict[str, str]:
    """The environment with this package's root first on PYTHONPATH, so a child
    ``python -m pipeline.<module>`` imports this very code whatever the working directory."""
    import pipeline

    root = os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _read_child_result(path: str, returncode: int, tmp: str, out: str, err: str, log: str) -> IsolatedDecode:
    if returncode == 0 and os.path.exists(out + ".json"):
        with open(out + ".json", encoding="utf-8") as handle:
            return IsolatedDecode(tmp, out + ".u8", json.load(handle))
    if returncode == _EXIT_INPUT_ERROR and os.path.exists(err):
        with open(err, encoding="utf-8") as handle:
            payload = json.load(handle)
        raise InputError(payload["error_class"], payload["message"])
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        raise _decode_error(path, f"the decoder process died from {name}")
    raise _decode_error(path, f"the decoder process exited with status {returncode}: {_last_line(log)}")


def _last_line(log: str) -> str:
    """The last non-empty line of the child's stderr (at most 300 characters)."""
    with open(log, "rb") as handle:
        handle.seek(max(0, os.path.getsize(log) - 4096))
        lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def plain_sequential_decode(path: str, sample_fps: float = 1.0, threads: int = 0) -> int:
    """The reference for decode efficiency (DESIGN §7): one plain sequential PyAV pass over every
    frame, converting the first frame at or after each ``k / sample_fps`` to full-size RGB.
    Returns the number of converted frames."""
    container, stream = open_video_stream(path, threads)
    converted, next_s = 0, 0.0
    with container:
        for t_s, _, frame in frame_times(stream, container.decode(stream)):
            if t_s >= next_s:
                frame.to_ndarray(format="rgb24")
                converted += 1
                next_s = converted / sample_fps
    return converted


def _main(argv: list[str] | None = None) -> int:
    """Child entry point: decode one file to raw frames + a JSON of their times, or write its
    InputError to a JSON file."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.media.decode", description=_main.__doc__)
    parser.add_argument("path")
    parser.add_argument("--sample-fps", type=float, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--threads", type=int, default=0, help="decoder threads (0: one per core)")
    parser.add_argument("--out", required=True, help="OUT.u8 (raw frames) and OUT.json (their times) are written")
    parser.add_argument("--error", required=True, help="where an InputError is written as JSON")
    args = parser.parse_args(argv)
    try:
        with open(args.out + ".u8", "wb") as handle:
            sink = FileSink(handle)
            pts_s, duration_s = decode_into(args.path, args.sample_fps, args.size, args.backend, sink, args.threads)
    except InputError as exc:
        with open(args.error, "w", encoding="utf-8") as handle:
            json.dump({"error_class": exc.error_class, "message": exc.message}, handle)
        return _EXIT_INPUT_ERROR
    meta = {"pts_s": pts_s.tolist(), "duration_s": duration_s, "sample_fps": args.sample_fps, "size": args.size,
            "n_frames": sink.count}
    with open(args.out + ".json.part", "w", encoding="utf-8") as handle:
        json.dump(meta, handle)  # floats round-trip exactly through JSON
    os.replace(args.out + ".json.part", args.out + ".json")  # written last: it says the frames are complete
    return 0


if __name__ == "__main__":
    sys.exit(_main())
