"""Cutting a realigned span out of a source video for a shard sample (DESIGN §1, §5).

:func:`cut_clip` decodes only the span: it seeks to the keyframe before ``start_s``, decodes
forward and stops once every output frame is known. Times follow :mod:`pipeline.media.decode`: 0 is
the file's presentation start (:func:`pipeline.media.pyav.origin_ticks`), and output frame ``k`` of a clip at ``fps`` is the source
frame whose PTS is nearest to ``start_s + (k + 0.5) / fps`` (ties to the earlier frame), so a
clip of ``[start_s, end_s)`` has ``n = max(1, round((end_s - start_s) * fps))`` frames and lasts
``n / fps`` seconds. Frames are shown as :class:`pipeline.media.pyav.Display` shows them (upright,
square pixels, deinterlaced with ``deinterlace``), resized (bilinear) so their shorter side is
``size``, keeping the aspect ratio, with both sides rounded up to even numbers (yuv420p); clips
are not cropped and carry no rotation or pixel aspect of their own.

A span that ends after the video (captions may outlast the footage) is clamped to the video's
end; a span that does not overlap the video, an empty or inverted span, a missing file or a
decoder error raise ``InputError('clip_failed', ...)`` naming the file and the span.

Members: ``{"mp4": bytes}`` (H.264, libx264 one thread, fixed options, x264's portable SIMD level
(:func:`x264_asm`), bit-exact faststart muxing (``moov`` first): the same cut gives the same
bytes on every machine) or ``{"f0000.jpg": bytes, "f0001.jpg": ...}`` (JPEG, quality
:data:`JPEG_QUALITY`, via Pillow).
"""

from __future__ import annotations

import gc
import io
import math
import os
from fractions import Fraction

from curation.errors import InputError
from curation.frames import NearestPicker, resize_dims
from pipeline.media.failures import check_file
from pipeline.media.pyav import Display, decoded_frames, frame_times, open_video_stream, origin_ticks, times_by_count

CLIP_FORMATS = ("mp4", "jpg")
#: x264 options of clips (one thread is set separately): fast, visually fine, deterministic.
CLIP_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
JPEG_QUALITY = 90
#: Muxer flags: no encoder version string and no creation time, so bytes depend only on the input.
MUX_OPTIONS = {"fflags": "+bitexact"}
#: x264 SIMD levels that every x86-64 CPU has. x264's AVX2/AVX-512 code is not bit-exact with its C
#: code, and on AVX-512 CPUs it reads memory it never wrote, so the same frames can give different
#: bytes from one encode to the next; up to SSE2 the output equals the C code's (README: clips).
X86_64_ASM = "MMX2,SSE,SSE2"


def x264_asm(machine: str | None = None) -> str:
    """x264's ``asm`` parameter for deterministic clips on ``machine`` (``platform.machine()``
    by default): :data:`X86_64_ASM` on x86-64, ``"0"`` (x264's C code) elsewhere, so the same
    frames give the same H.264 bytes on any machine."""
    import platform

    machine = (machine or platform.machine()).lower()
    return X86_64_ASM if machine in ("x86_64", "amd64", "x64") else "0"


def with_portable_asm(options: dict) -> dict:
    """``options`` with :func:`x264_asm` prepended to its ``x264-params`` (an ``asm`` already
    there wins: x264 applies the parameters in order)."""
    params = options.get("x264-params", "")
    return {**options, "x264-params": f"asm={x264_asm()}" + (f":{params}" if params else "")}


def clip_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """``(w, h)``: shorter side ``size``, aspect kept, each rounded *up* to an even number
    (yuv420p), so the shorter side is ``size`` or ``size + 1``."""
    return tuple(2 * math.ceil(v / 2) for v in resize_dims(width, height, size))


def _failed(source: str, start_s: float, end_s: float, why: str) -> InputError:
    return InputError("clip_failed", f"cannot cut [{start_s:.3f}, {end_s:.3f}) s from {source}: {why}"[:500])


def cut_clip(source: str, start_s: float, end_s: float, fmt: str, size: int, fps: float,
             deinterlace: bool = True) -> dict[str, bytes]:
    """The sample members of the clip ``[start_s, end_s)`` of ``source`` at ``fps`` frames per
    second and shorter side ``size``: ``{"mp4": ...}`` or ``{"f0000.jpg": ..., ...}``;
    interlaced frames deinterlaced with ``deinterlace`` (``decode.deinterlace``).

    Raises ``InputError('clip_failed')`` on a bad span or file; ``ValueError`` on a bad
    ``fmt``/``size``/``fps`` (a configuration error, not a data error).
    """
    if fmt not in CLIP_FORMATS:
        raise ValueError(f"clip format {fmt!r} is not one of {list(CLIP_FORMATS)}")
    if not fps > 0 or size < 2:
        raise ValueError(f"clip fps must be > 0 and size >= 2, got {fps}, {size}")
    if not (math.isfinite(start_s) and math.isfinite(end_s) and end_s > start_s and end_s > 0):
        raise _failed(source, start_s, end_s, "the span is empty, inverted, negative or not finite")
    frames, width, height = _span_frames(source, max(0.0, float(start_s)), float(end_s), size, fps, deinterlace)
    if fmt == "jpg":
        return {f"f{k:04d}.jpg": _jpeg(rgb) for k, rgb in enumerate(frames)}
    return {"mp4": _mp4(frames, width, height, fps)}


class _SeekMissed(Exception):
    """A seek landed after the span's first target (e.g. on a non-key packet of an MPEG-TS
    stream, whose decoder then drops frames to the next keyframe)."""


def _span_frames(source: str, start_s: float, end_s: float, size: int, fps: float, deinterlace: bool):
    """``(frames, width, height)``: the clip's output frames, ``(height, width, 3)`` uint8 RGB.
    The seek is checked: when the first frame decoded after it comes after the span's first
    target time (or none comes), the span is decoded again from the start of the video."""
    try:
        return _decode_span(source, start_s, end_s, size, fps, deinterlace, seek=True)
    except _SeekMissed:
        return _decode_span(source, start_s, end_s, size, fps, deinterlace, seek=False)
    finally:
        # A PyAV frame and its side-data container reference each other once the side data is read
        # (the display matrix, for the orientation), so every frame picked for a clip (1.4 MB at
        # 720p) waits for Python's cyclic collector. Cutting 60 clips of a 720p video in one
        # process grew to 808 MB without this young-generation collection and stayed at ~110 MB
        # with it; a full collection would take ~240 ms in a worker with torch and Beam loaded.
        gc.collect(1)


def _decode_span(source: str, start_s: float, end_s: float, size: int, fps: float, deinterlace: bool, seek: bool):
    """:func:`_span_frames` with or without the seek. Each pick is converted as soon as it is
    final, so only small frames are held."""
    import av

    try:
        check_file(source)
        container, stream = open_video_stream(source)
    except InputError as exc:
        raise _failed(source, start_s, end_s, exc.message) from None
    display = Display(stream, deinterlace)
    n = max(1, round((end_s - start_s) * fps))
    picker = NearestPicker(fps, 0.5, offset_s=start_s)
    rgb: dict[int, object] = {}
    dims: tuple[int, int] | None = None
    last = None  # (frame, its RGB): a source frame may fill several output frames (fps > source fps)

    def keep(picks) -> None:
        nonlocal dims, last
        for k, _, frame in picks:
            if last is None or last[0] is not frame:
                dims = dims or clip_dims(*display.dims(frame), size)
                last = (frame, display.rgb(frame, *dims))
            rgb[k] = last[1]

    video_end_s = 0.0
    try:
        with container:
            seeked = seek and _seek_before(container, stream, start_s)
            first_target_s = start_s + 0.5 / fps
            for t_s, frame_end_s, frame in frame_times(stream, decoded_frames(container, stream)):
                if seeked and picker.prev is None and float(t_s) > first_target_s:
                    raise _SeekMissed()
                video_end_s = max(video_end_s, float(frame_end_s))
                keep(picker.push(float(t_s), frame))
                if picker.k >= n:
                    break
            else:  # the stream ended inside the span: clamp the span to the video
                if seeked and picker.prev is None:
                    raise _SeekMissed()
                if picker.prev is None or start_s >= video_end_s:
                    raise _failed(source, start_s, end_s, f"the span starts after the video ends ({video_end_s:.3f} s)")
                n = max(1, round((min(end_s, video_end_s) - start_s) * fps))
                keep(picker.finish(n))
    except (av.FFmpegError, OSError) as exc:
        raise _failed(source, start_s, end_s, f"decoding failed: {type(exc).__name__}: {exc}") from None
    except InputError as exc:  # frame times that go backwards
        raise _failed(source, start_s, end_s, exc.message) from None
    return [rgb[k] for k in range(n)], dims[0], dims[1]


def _seek_before(container, stream, start_s: float) -> bool:
    """Seek to the keyframe at or before one source frame period before ``start_s`` (so the
    frame nearest to the first target is decoded); whether it sought. No seek when that time is
    at or before the stream's first frame, or the stream has
    no start time or time base (frame times then count from the first decoded frame) or its times
    are counted (:func:`~pipeline.media.pyav.times_by_count`)."""
    origin = origin_ticks(stream)
    if stream.start_time is None or origin is None or not stream.time_base or start_s <= 0 or times_by_count(stream):
        return False
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    margin_s = 1.0 / float(rate) if rate else 1.0
    target = int(origin + (start_s - margin_s) / float(stream.time_base))
    if target > stream.start_time:  # else the span starts with the stream's first frame: no seek
        container.seek(target, stream=stream, backward=True, any_frame=False)
        return True
    return False


def encode_h264(path_or_file, frames, fps: float, width: int, height: int, options: dict,
                container_format: str | None = None, faststart: bool = False) -> None:
    """Encode ``frames`` (an iterable of ``(height, width, 3)`` uint8 RGB arrays; frame ``i`` at
    ``i / fps`` s) as H.264 (libx264, yuv420p, one encoder thread, x264 ``options``) into an mp4
    at ``path_or_file``: a path, or a writable binary file with ``container_format='mp4'``.
    ``width`` and ``height`` must be even (yuv420p). Deterministic: same frames, same bytes, on
    any machine (:func:`with_portable_asm`). ``faststart``: the ``moov`` index before the media
    data, so a streaming reader can start without the file's end (needs a path: ffmpeg rewrites
    the file it wrote)."""
    import av

    mux_options = {**MUX_OPTIONS, "movflags": "+faststart"} if faststart else MUX_OPTIONS
    with av.open(path_or_file, "w", format=container_format, options=mux_options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = with_portable_asm(options)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _mp4(frames, width: int, height: int, fps: float) -> bytes:
    """A faststart mp4 clip of ``frames``: written to a temporary file, which ffmpeg's faststart
    pass reopens to move the ``moov`` index to the front, then read back and removed."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nccurate-clip-") as tmp:
        path = os.path.join(tmp, "clip.mp4")
        encode_h264(path, frames, fps, width, height, CLIP_X264_OPTIONS, container_format="mp4",
                    faststart=True)
        with open(path, "rb") as f:
            return f.read()


def _jpeg(rgb) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
