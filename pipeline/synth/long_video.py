"""The long synthetic video of the video benchmarks (``nccurate bench memory``, ``bench
throughput --mode video``), written once per work directory and reused.

* The video: ``W x H`` H.264 mp4 of ``duration_s`` at ``fps`` (libx264 ``preset=ultrafast``,
  ``crf=23``, a keyframe every :data:`GOP_S` seconds as streaming sites use), encoded frame by
  frame from frames made straight in yuv420p that are never held together. Content: a sliding
  luma gradient, a chroma "scene" that changes every :data:`SCENE_S` seconds and a moving
  noise patch that lifts the bitrate to that of a typical upload at no extra encoding cost.
* Its captions: HowTo100M-style json (:func:`curation.synth.captions.howto_captions`).
* A manifest of the one video.

The video's name carries its parameters and it is written to a temporary name, renamed when
complete, so a later call reuses it.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from curation.synth.captions import howto_captions
from pipeline.errors import ArgumentError

#: x264 options of the long video (fast to write; crf 23 is x264's default quality).
LONG_VIDEO_X264 = {"preset": "ultrafast", "crf": "23"}
GOP_S = 2.0
SCENE_S = 20.0
NOISE_PATCH = 96
VIDEO_ID = "long_video"


def bframe_x264(bframes: int) -> dict:
    """x264 options of a long video with ``bframes`` B-frames between references (x264's
    ``veryfast`` preset: CABAC and the loop filter on, as uploads have them; ultrafast turns
    both off and allows no B-frames), a fixed group length (no scene cuts)."""
    return {"preset": "veryfast", "crf": "23", "x264-params": f"bframes={int(bframes)}:b-adapt=0:scenecut=0"}


def long_video_planes(duration_s: float, width: int, height: int, fps: float):
    """Yield ``round(duration_s * fps)`` frames as ``(height * 3 // 2, width)`` uint8 yuv420p
    planes (Y, then U and V of ``(height // 2, width // 2)`` each, flattened row-wise). The
    same buffer is reused and overwritten for every frame: consume (copy) it before the next."""
    if width % 2 or height % 2 or width < 2 or height < 2:
        raise ArgumentError(f"--width/--height {width}x{height}: must be even and >= 2 (yuv420p)")
    yy, xx = np.mgrid[0:height, 0:width]
    gradient = ((xx + yy) // 4 % 256).astype(np.uint8)
    patch = max(1, min(NOISE_PATCH, height // 4, width // 4))
    noise = np.random.default_rng(0).integers(0, 256, (4 * patch, patch), dtype=np.uint8)
    buf = np.empty((height * 3 // 2, width), np.uint8)
    luma, chroma = buf[:height], buf[height:].reshape(2, -1)
    for k in range(round(duration_s * fps)):
        shift = 3 * k % width
        luma[:, :width - shift], luma[:, width - shift:] = gradient[:, shift:], gradient[:, :shift]
        scene = int(k / fps // SCENE_S)
        chroma[0], chroma[1] = (64 + 37 * scene) % 256, (192 + 91 * scene) % 256
        top = (height - patch) // 2 + int((height // 4) * np.sin(k / (5 * fps)))
        left = (width - patch) // 2 + int((width // 4) * np.cos(k / (7 * fps)))
        offset = (k * 7919) % (3 * patch)
        luma[top:top + patch, left:left + patch] = noise[offset:offset + patch]
        yield buf


def write_long_video(path: str, duration_s: float, width: int, height: int, fps: float, log=None,
                     bframes: int = 0, gop_s: float = GOP_S) -> str:
    """Encode :func:`long_video_planes` to ``path`` (H.264 mp4, one keyframe every ``gop_s``;
    with ``bframes``, :func:`bframe_x264`), streaming: one frame in memory at a time, with x264's
    frame threads. Written to ``path + '.part'`` and renamed when complete. Returns ``path``."""
    from fractions import Fraction

    import av

    part = path + ".part"
    n = round(duration_s * fps)
    every = max(1, round(300 * fps))  # a progress line per 5 minutes of video
    with av.open(part, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = max(1, round(gop_s * fps))
        stream.codec_context.thread_type = "AUTO"
        stream.options = bframe_x264(bframes) if bframes else dict(LONG_VIDEO_X264)
        for k, planes in enumerate(long_video_planes(duration_s, width, height, fps)):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = k
            container.mux(stream.encode(frame))
            if log and (k + 1) % every == 0:
                log(f"  encoded {(k + 1) / fps / 60:.0f} of {n / fps / 60:.0f} min")
        container.mux(stream.encode(None))
    os.replace(part, path)
    return path


def long_video(workdir: str, duration_s: float, width: int, height: int, fps: float, log=print,
               bframes: int = 0, gop_s: float = GOP_S) -> dict:
    """``workdir/video-WxH-Ffps-Ds.mp4`` (:func:`write_long_video`; ``-bB-gG`` before the
    extension for other B-frame counts and group lengths), written once and reused.
    Returns ``{"video", "stem", "generated", "generation_s"}``; ``generation_s`` is this call's
    encoding time, or the one recorded when the reused video was written."""
    os.makedirs(workdir, exist_ok=True)
    stem = f"video-{width}x{height}-{fps:g}fps-{duration_s:g}s"
    if bframes or gop_s != GOP_S:
        stem += f"-b{int(bframes)}-g{gop_s:g}s"
    video, meta = os.path.join(workdir, stem + ".mp4"), os.path.join(workdir, stem + ".json")
    generated = not os.path.exists(video)
    if generated:
        log(f"writing {video} ({duration_s:g} s of {width}x{height} at {fps:g} fps) ...")
        t0 = time.perf_counter()
        write_long_video(video, duration_s, width, height, fps, log, bframes, gop_s)
        info = {"generation_s": round(time.perf_counter() - t0, 1), "frames": round(duration_s * fps)}
        with open(meta, "w", encoding="utf-8") as handle:
            json.dump(info, handle)
    else:
        log(f"reusing {video}")
        info = {"generation_s": None}
        if os.path.exists(meta):
            with open(meta, encoding="utf-8") as handle:
                info = json.load(handle)
    return {"video": video, "stem": stem, "generated": generated, "generation_s": info.get("generation_s")}


def write_inputs(workdir: str, duration_s: float, width: int, height: int, fps: float, log=print) -> dict:
    """The video (:func:`long_video`), its captions and a manifest of it under ``workdir``.
    Returns ``{"manifest", "video", "generated", "generation_s", "video_bytes"}``."""
    made = long_video(workdir, duration_s, width, height, fps, log)
    video, stem = made["video"], made["stem"]
    captions = os.path.join(workdir, f"captions-{duration_s:g}s.json")
    with open(captions, "w", encoding="utf-8") as handle:
        json.dump(howto_captions(duration_s), handle)
    manifest = os.path.join(workdir, f"manifest-{stem}.jsonl")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"video_id": VIDEO_ID, "video": os.path.basename(video),
                                 "captions": os.path.basename(captions)}) + "\n")
    return {"manifest": manifest, "video": video, "generated": made["generated"],
            "generation_s": made["generation_s"], "video_bytes": os.path.getsize(video)}
