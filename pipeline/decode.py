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
child process (``python -m pipeline.decode``) with a wall-clock limit, so a native hang or crash
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


def open_video_stream(path: str):
    """``(container, stream)`` of the first video stream, opened with PyAV (decode_error else)."""
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


def _decode_pyav(path: str, sample_fps: float, size: int) -> DecodedFrames:
    import av

    container, stream = open_video_stream(path)
    picker = NearestPicker(sample_fps, 0.5)
    chosen: dict[int, tuple[float, np.ndarray]] = {}
    cache: tuple[object, np.ndarray] | None = None  # the last converted frame (a frame can serve several targets)
    end_s = 0.0

    def keep(picks):
        nonlocal cache
        for k, t_s, frame in picks:
            if cache is None or cache[0] is not frame:
                rgb = to_rgb(frame, *resize_dims(frame.width, frame.height, size))
                cache = (frame, np.ascontiguousarray(center_crop(rgb, size)))  # a copy: a view would keep all of rgb
            chosen[k] = (t_s, cache[1])

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
    frames, pts_s = np.empty((n, size, size, 3), np.uint8), np.empty(n, np.float64)
    for k in range(n):  # popped while copied: the picks and the result are not both held whole
        pts_s[k], frames[k] = chosen.pop(k)
    return DecodedFrames(frames=frames, pts_s=pts_s, duration_s=float(end_s), sample_fps=float(sample_fps))


# -------------------------------------------------------------------------------------- decord


def video_dims(path: str) -> tuple[int, int]:
    """``(width, height)`` of the first video stream, read from the header with PyAV."""
    container, stream = open_video_stream(path)
    with container:
        return stream.codec_context.width, stream.codec_context.height


def open_decord(path: str, size: int | None = None):
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
        reader = decord.VideoReader(path, ctx=decord.cpu(0), **kwargs)
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


def _decode_decord(path: str, sample_fps: float, size: int) -> DecodedFrames:
    import decord

    reader, ts = open_decord(path, size)
    order = np.argsort(ts[:, 0], kind="stable")  # decord indexes in presentation order; be safe
    duration_s = float(ts[:, 1].max())
    if not duration_s > 0:
        raise _decode_error(path, "the decoded frames span zero seconds")
    idx = order[nearest_indices(ts[order, 0], sample_times_s(duration_s, sample_fps))]
    unique, inverse = np.unique(idx, return_inverse=True)
    frames = np.empty((len(idx), size, size, 3), np.uint8)
    by_unique = np.argsort(inverse, kind="stable")  # output rows grouped by the frame they show
    bounds = np.searchsorted(inverse[by_unique], np.arange(len(unique) + 1))
    try:  # in chunks: one get_batch of an hour's uncropped frames would hold GBs (bench memory)
        for lo in range(0, len(unique), DECORD_CHUNK):
            hi = min(lo + DECORD_CHUNK, len(unique))
            crops = center_crop(_decord_batch(reader, unique[lo:hi].tolist()), size)
            rows = by_unique[bounds[lo]:bounds[hi]]
            frames[rows] = crops[inverse[rows] - lo]
    except (decord.DECORDError, RuntimeError) as exc:
        raise _decode_error(path, "decord failed to decode frames", exc, _DecordRejected) from None
    return DecodedFrames(frames=frames, pts_s=ts[idx, 0].copy(), duration_s=duration_s,
                         sample_fps=float(sample_fps))


# ------------------------------------------------------------------------------------- public


def decode_frames(path: str, sample_fps: float, size: int, backend: str = "decord") -> DecodedFrames:
    """Decode ``path`` in this process: one frame per target time of :func:`sample_times_s`
    (the nearest PTS, ties to the earlier frame), resized to a shorter side of ``size`` pixels
    and centre-cropped to ``size x size``.

    Raises ``InputError('missing_file' | 'unreadable_file' | 'decode_error', ...)``; the message
    names the file.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; allowed: {list(BACKENDS)}")
    if not sample_fps > 0 or size < 1:
        raise ValueError(f"sample_fps must be > 0 and size >= 1, got {sample_fps}, {size}")
    check_file(path)
    if backend == "pyav":
        return _decode_pyav(path, sample_fps, size)
    try:
        return _decode_decord(path, sample_fps, size)
    except _DecordRejected:  # PyAV picks the same frames; it fails too where the file is unusable
        return _decode_pyav(path, sample_fps, size)


def decode_frames_isolated(path: str, sample_fps: float, size: int, backend: str, timeout_s: float) -> DecodedFrames:
    """:func:`decode_frames` in a child process (``python -m pipeline.decode``) killed after
    ``timeout_s`` seconds of wall clock.

    Raises ``InputError('timeout')`` when the limit is hit; the child's own ``InputError`` with
    its class and message; ``InputError('decode_error')`` when the child dies from a signal or
    exits non-zero without one. The temporary directory holding the result is always removed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; allowed: {list(BACKENDS)}")
    check_file(path)
    tmp = tempfile.mkdtemp(prefix="nccurate-decode-")
    out, err, log = (os.path.join(tmp, name) for name in ("frames.npz", "error.json", "stderr.txt"))
    cmd = [sys.executable, "-m", "pipeline.decode", path, "--sample-fps", repr(float(sample_fps)),
           "--size", str(int(size)), "--backend", backend, "--out", out, "--error", err]
    try:
        with open(log, "wb") as stderr:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                      env=_child_env(), timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:  # run() has killed and reaped the child
                raise InputError("timeout", f"decoding {path} exceeded decode_timeout_s={timeout_s}") from None
        return _read_child_result(path, proc.returncode, out, err, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _child_env() -> dict[str, str]:
    """The environment with this package's root first on PYTHONPATH, so ``-m pipeline.decode``
    imports this very code whatever the working directory."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _read_child_result(path: str, returncode: int, out: str, err: str, log: str) -> DecodedFrames:
    if returncode == 0 and os.path.exists(out):
        with np.load(out, allow_pickle=False) as data:
            return DecodedFrames(frames=data["frames"], pts_s=data["pts_s"],
                                 duration_s=float(data["duration_s"]), sample_fps=float(data["sample_fps"]))
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


def plain_sequential_decode(path: str, sample_fps: float = 1.0) -> int:
    """The reference for decode efficiency (DESIGN §7): one plain sequential PyAV pass over every
    frame, converting the first frame at or after each ``k / sample_fps`` to full-size RGB.
    Returns the number of converted frames."""
    container, stream = open_video_stream(path)
    converted, next_s = 0, 0.0
    with container:
        for t_s, _, frame in frame_times(stream, container.decode(stream)):
            if t_s >= next_s:
                frame.to_ndarray(format="rgb24")
                converted += 1
                next_s = converted / sample_fps
    return converted


def _main(argv: list[str] | None = None) -> int:
    """Child entry point: decode one file to an .npz, or write its InputError to a JSON file."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.decode", description=_main.__doc__)
    parser.add_argument("path")
    parser.add_argument("--sample-fps", type=float, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--error", required=True, help="where an InputError is written as JSON")
    args = parser.parse_args(argv)
    try:
        decoded = decode_frames(args.path, args.sample_fps, args.size, args.backend)
    except InputError as exc:
        with open(args.error, "w", encoding="utf-8") as handle:
            json.dump({"error_class": exc.error_class, "message": exc.message}, handle)
        return _EXIT_INPUT_ERROR
    with open(args.out + ".part", "wb") as handle:
        np.savez(handle, frames=decoded.frames, pts_s=decoded.pts_s,
                 duration_s=np.float64(decoded.duration_s), sample_fps=np.float64(decoded.sample_fps))
    os.replace(args.out + ".part", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
