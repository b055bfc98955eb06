"""The decord decode backend: decord indexes every packet at open, then ``get_batch`` reads the
picked frames (resized inside the decoder), in chunks. Same picks as :mod:`pipeline.media.pyav`
(the rules of :mod:`curation.frames`). decord is imported inside functions."""

from __future__ import annotations

import numpy as np

from curation.errors import InputError
from curation.frames import center_crop, nearest_indices, resize_dims, sample_times_s
from pipeline.media.failures import decode_error
from pipeline.media.pyav import video_dims

#: Frames per decord ``get_batch`` call (bounds the decoder's uncropped frames in memory).
DECORD_CHUNK = 128


class DecordRejected(InputError):
    """A decode_error from decord itself (not PyAV): :func:`pipeline.media.decode.decode_into`
    retries with PyAV."""


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
        raise decode_error(path, "decord cannot read it", exc, DecordRejected) from None
    if n == 0:
        raise decode_error(path, "no frame could be decoded")
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


def decode_decord(path: str, sample_fps: float, size: int, sink, threads: int = 0):
    """decord: the packet index at open, then ``get_batch`` of the picked frames, in chunks of
    :data:`DECORD_CHUNK` samples, into ``sink``. Returns ``(pts_s, duration_s)``; raises
    :class:`DecordRejected` where decord's own FFmpeg fails."""
    import decord

    reader, ts = open_decord(path, size, threads)
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
