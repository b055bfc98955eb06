"""Tiny synthetic videos written with PyAV, for decode and clip tests.

Frame ``k`` of a ``frame_index`` video is filled with one constant colour, :func:`colour_of`
``(k)``; the colours are 32 levels apart per channel, so compression and YUV round trips (a few
levels) never confuse two indices and :func:`index_of` reads back which source frame a decoded
pixel came from. 343 distinct colours, then the pattern repeats.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

#: ``--set`` overrides of the old default aligner (``configs/norton-v0.yaml``), for video-plumbing
#: tests: a random-init encoder on noise videos has no visual signal, which the default aligner
#: (posterior) rightly drops entirely, while norton keeps some captions whatever the evidence, so
#: decode, clips, checkpoints and runners have something to carry. (Its absolute NCL temperature
#: also keeps the random-init model's tiny cosine spread from amplifying the last bits in which
#: torch's embeddings differ between a process with one thread and one with two.)
NORTON_V0 = ("align.method=norton", "align.ncl_relative=false", "align.ncl_temperature=0.05")

#: Per-channel levels of the palette (step 32, away from the 0/255 clipping ends).
LEVELS = np.arange(24, 217, 32)  # 24, 56, ..., 216: 7 levels
N_COLOURS = len(LEVELS) ** 3
#: The colours of the outer quarters of a ``bars`` frame (not in the palette).
LEFT_BAR, RIGHT_BAR = (255, 0, 255), (0, 255, 255)

#: Encoder options: fast and high quality (constant colours come back within a few levels).
CODEC_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "18"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "4", "b": "2M"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0", "row-mt": "0"},
}


def colour_of(k) -> np.ndarray:
    """``(..., 3)`` uint8 RGB colour of frame ``k`` (int or int array)."""
    k = np.asarray(k) % N_COLOURS
    n = len(LEVELS)
    return np.stack([LEVELS[k % n], LEVELS[(k // n) % n], LEVELS[(k // (n * n)) % n]], axis=-1).astype(np.uint8)


def index_of(rgb, n_frames: int = N_COLOURS) -> np.ndarray:
    """Source frame index whose colour is nearest to ``rgb`` (``(..., 3)``; e.g. a frame's mean
    colour), searched among frames ``0 .. n_frames - 1``."""
    palette = colour_of(np.arange(min(n_frames, N_COLOURS))).astype(np.float64)
    rgb = np.asarray(rgb, dtype=np.float64)
    dist = np.linalg.norm(rgb[..., None, :] - palette, axis=-1)
    return np.argmin(dist, axis=-1)


def frame_index_of(frames: np.ndarray, n_frames: int = N_COLOURS) -> np.ndarray:
    """``(N,)`` source indices of ``(N, H, W, 3)`` decoded frames, from their centre's mean colour."""
    h, w = frames.shape[1:3]
    centre = frames[:, h // 4: h - h // 4, w // 4: w - w // 4].reshape(len(frames), -1, 3).mean(axis=1)
    return index_of(centre, n_frames)


def _pattern(pattern: str, k: int, width: int, height: int, rng) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB content of frame ``k``."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = colour_of(k)
    if pattern == "frame_index":
        return frame
    if pattern == "bars":  # quarters LEFT | colour_of(k) colour_of(k) | RIGHT along the longer axis
        if width >= height:
            frame[:, : width // 4], frame[:, width - width // 4:] = LEFT_BAR, RIGHT_BAR
        else:
            frame[: height // 4], frame[height - height // 4:] = LEFT_BAR, RIGHT_BAR
        return frame
    if pattern == "noise":  # realistic decode cost: a moving gradient plus noise
        x = (np.arange(width)[None, :] + 3 * k + np.arange(height)[:, None]) % 256
        frame[:] = x[..., None].astype(np.uint8)
        return np.clip(frame.astype(np.int16) + rng.integers(-24, 24, frame.shape), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown pattern {pattern!r}")


def make_video(path: str, duration_s: float, fps: float = 8, size: tuple[int, int] = (96, 64),
               codec: str = "libx264", pattern: str = "frame_index", options: dict | None = None,
               start_pts: int = 0, audio_s: float = 0.0) -> str:
    """Write ``round(duration_s * fps)`` frames of ``size = (width, height)`` to ``path`` (the
    container from its extension: .mp4, .webm, .mkv, ...). ``codec``: libx264, libvpx (VP8) or
    libvpx-vp9; ``options`` override the encoder options; ``start_pts`` (in frames) delays the
    first frame, so the stream has a non-zero start time; ``audio_s`` > 0 adds a silent AAC
    track of that length starting at 0 (so a delayed video starts late on the file's timeline).
    Returns ``path``."""
    import av

    width, height = size
    rate = Fraction(fps).limit_denominator(100000)
    rng = np.random.default_rng(0)
    with av.open(path, "w") as container:
        audio = container.add_stream("aac", rate=16000, layout="mono") if audio_s > 0 else None
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {**CODEC_OPTIONS.get(codec, {}), **(options or {})}
        if audio is not None:  # every stream is added before the first packet is written
            _silence(container, audio, audio_s)
        for k in range(round(duration_s * fps)):
            frame = av.VideoFrame.from_ndarray(_pattern(pattern, k, width, height, rng), format="rgb24")
            frame.pts = start_pts + k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_audio_only(path: str, duration_s: float, sample_rate: int = 16000) -> str:
    """An AAC-in-MP4 file with no video stream (a silent tone-free track). Returns ``path``."""
    import av

    with av.open(path, "w") as container:
        _silence(container, container.add_stream("aac", rate=sample_rate, layout="mono"), duration_s)
    return path


def _silence(container, stream, duration_s: float) -> None:
    """Write ``duration_s`` seconds of silence, from time 0, to the mono AAC ``stream`` of ``container``."""
    import av

    sample_rate, n = stream.rate, 1024
    for i in range(int(duration_s * sample_rate) // n):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, i * n
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
