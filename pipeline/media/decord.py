"""The decord decode backend: decord indexes every packet at open, then ``get_batch`` reads the
picked frames (resized inside the decoder), in chunks. Same picks as :mod:`pipeline.media.pyav`
(the rules of :mod:`curation.frames`). decord is imported inside functions."""

from __future__ import annotations

import numpy as np

from curation.errors import InputError
from curation.frames import center_crop, nearest_indices, resize_dims, sample_times_s
from pipeline.media.failures import decode_error

#: Frames per decord ``get_batch`` call (bounds the decoder's uncropped frames in memory).
DECORD_CHUNK = 128


class DecordRejected(InputError):
    """A decode_error from decord itself (not PyAV): :func:`pipeline.media.decode.decode_into`
    retries with PyAV."""


#: Containers whose timestamps or seeks decord gets wrong (MPEG-TS: it hangs; AVI with B-frames:
#: NOPTS or shifted times): PyAV decodes them.
DECORD_UNSAFE_FORMATS = ("mpegts", "mpegtsraw", "avi")


def decord_header(path: str, deinterlace: bool = True) -> tuple[int, int, int, float]:
    """``(width, height, frames in the header or 0, delay_s)`` of a file decord may decode
    (``delay_s``: the video stream's start on the timeline, :func:`~pipeline.media.pyav.origin_ticks`;
    decord counts from the stream's own start); raises :class:`DecordRejected` (so PyAV decodes
    it) for what decord cannot be trusted with: a container of :data:`DECORD_UNSAFE_FORMATS`,
    more than one video stream (decord picks its own, an attached picture included), non-square
    pixels, a rotated or mirrored stream (decord turns it, sized as unrotated), open groups of
    pictures or corrupt packets (:func:`packet_distrust`) or, with ``deinterlace``, an
    interlaced first frame (decord does not deinterlace)."""
    from pipeline.media.pyav import open_video_stream, orientation, origin_ticks, pixel_aspect

    container, stream = open_video_stream(path)
    with container:
        formats = set(container.format.name.split(","))
        if formats & set(DECORD_UNSAFE_FORMATS):
            raise DecordRejected("decode_error", f"decord mishandles {container.format.name} ({path}); PyAV decodes it")
        if len(container.streams.video) != 1:
            raise DecordRejected("decode_error", f"{path} has {len(container.streams.video)} video streams; "
                                                 "decord cannot be told which one, PyAV decodes it")
        if abs(pixel_aspect(stream) - 1.0) > 1e-3:
            raise DecordRejected("decode_error", f"{path} has non-square pixels; PyAV decodes it with square ones")
        distrust = packet_distrust(container, stream)
        if distrust:
            raise DecordRejected("decode_error", f"{path} has {distrust}; PyAV decodes it")
        container.seek(0)
        first = next(container.decode(stream), None)
        if first is not None and orientation(first) != (0, False):
            raise DecordRejected("decode_error", f"{path} is rotated or mirrored; PyAV decodes it upright")
        if first is not None and deinterlace and first.interlaced_frame:
            raise DecordRejected("decode_error", f"{path} is interlaced; PyAV deinterlaces it")
        origin = origin_ticks(stream)
        delay_s = (float((stream.start_time - origin) * stream.time_base)
                   if origin is not None and stream.start_time is not None else 0.0)
        return stream.codec_context.width, stream.codec_context.height, int(stream.frames or 0), delay_s


def packet_distrust(container, stream) -> str | None:
    """Why decord's frames of ``stream`` cannot be trusted, from its packets (demuxed, not
    decoded), or None: a corrupt packet (a truncated or damaged file: decord counts it as a frame
    and its times outlast the footage), or an open group of pictures, where a packet after a
    keyframe other than the first is shown before it (HEVC CRA, H.264 recovery points): decord
    seeks to such keyframes and drops the leading pictures it cannot decode, so its frames shift
    (2 per group measured on HEVC)."""
    keyframes, key_pts = 0, None
    for packet in container.demux(stream):
        if packet.is_corrupt:
            return "a corrupt packet (truncated or damaged)"
        if not packet.size or packet.pts is None:
            continue
        if packet.is_keyframe:
            keyframes, key_pts = keyframes + 1, packet.pts
        elif keyframes > 1 and packet.pts < key_pts:
            return "open groups of pictures (decord's seeks drop their leading pictures and shift its frames)"
    return None


def check_decord_times(path: str, ts: np.ndarray, header_frames: int) -> None:
    """:class:`DecordRejected` unless decord's ``(N, 2)`` frame times are finite, non-negative and
    strictly increasing in decord's frame order, and N agrees with the header's frame count (when
    it has one) to within 2 frames or 2%: decord gives NOPTS (``-1``) or shifted times where it
    misreads a file, and its nearest-frame picks would then be silently wrong."""
    start = ts[:, 0]
    if not np.isfinite(ts).all() or (start < 0).any() or (np.diff(start) <= 0).any():
        raise DecordRejected("decode_error", f"decord's frame times of {path} are missing or out of order; "
                                             "PyAV decodes it")
    if header_frames > 0 and abs(len(ts) - header_frames) > max(2, 0.02 * header_frames):
        raise DecordRejected("decode_error", f"decord read {len(ts)} frames of {path}, its header says "
                                             f"{header_frames}; PyAV decodes it")


def open_decord(path: str, size: int | None = None, threads: int = 0, deinterlace: bool = True):
    """``(reader, ts)``: a decord ``VideoReader`` (resizing inside the decoder to a shorter side
    of ``size`` when given) and its ``(N, 2)`` float64 ``[start, end)`` frame times in seconds on
    the timeline (decord keeps them as float32, from the stream's start), checked
    (:func:`decord_header`, :func:`check_decord_times`)."""
    import decord

    kwargs = {}
    width, height, header_frames, delay_s = decord_header(path, deinterlace)
    if size is not None and width > 0 and height > 0:
        kwargs["width"], kwargs["height"] = resize_dims(width, height, size)
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=int(threads), **kwargs)
        n = len(reader)
        ts = reader.get_frame_timestamp(np.arange(n)).astype(np.float64) if n else np.zeros((0, 2))
    except (decord.DECORDError, RuntimeError) as exc:
        raise decode_error(path, "decord cannot read it", exc, DecordRejected) from None
    if n == 0:
        raise decode_error(path, "no frame could be decoded")
    check_decord_times(path, ts, header_frames)
    return reader, ts + delay_s


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


def decode_decord(path: str, sample_fps: float, size: int, sink, threads: int = 0, deinterlace: bool = True):
    """decord: the packet index at open, then ``get_batch`` of the picked frames, in chunks of
    :data:`DECORD_CHUNK` samples, into ``sink``. Returns ``(pts_s, duration_s)``; raises
    :class:`DecordRejected` where decord's own FFmpeg fails."""
    import decord

    reader, ts = open_decord(path, size, threads, deinterlace)
    order = np.argsort(ts[:, 0], kind="stable")  # decord indexes in presentation order; be safe
    duration_s = float(ts[:, 1].max())
    if not duration_s > 0:
        raise decode_error(path, "the decoded frames span zero seconds")
    idx = order[nearest_indices(ts[order, 0], sample_times_s(duration_s, sample_fps))]
    try:  # in chunks: one get_batch of an hour's uncropped frames would hold GBs (bench memory)
        for lo in range(0, len(idx), DECORD_CHUNK):
            unique, inverse = np.unique(idx[lo:lo + DECORD_CHUNK], return_inverse=True)
            sink.add(center_crop(_decord_batch(reader, unique.tolist()), size)[inverse])
    except (decord.DECORDError, RuntimeError) as exc:
        raise decode_error(path, "decord failed to decode frames", exc, DecordRejected) from None
    return ts[idx, 0].copy(), duration_s
