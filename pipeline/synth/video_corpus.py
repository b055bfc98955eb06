"""Writing a synthetic *video-mode* corpus (:mod:`curation.synth.video`) to disk as a user's
inputs: H.264 ``.mp4`` files, captions (HowTo100M json, WebVTT or SRT), a manifest of video-mode
rows and the ground truth in HTM-Align format ``{video_id: [[alignable, start, end, text], ...]}``.

Conventions follow :mod:`pipeline.synth.feature_corpus` (same caption writers, same truth rows, relative
paths in the manifest). Files are deterministic: the same ``(n_videos, seed, params)`` gives
byte-identical videos, captions, manifest and truth (single-threaded x264 with the clips' fixed
options, :data:`pipeline.media.clips.CLIP_X264_OPTIONS`; no creation time in the mp4).
"""

from __future__ import annotations

import json
import os

from curation.synth.video import VideoParams, VideoPlan, frames_of, make_video_plan
from pipeline.media.clips import CLIP_X264_OPTIONS, encode_h264
from pipeline.synth.feature_corpus import captions_text, truth_entries


def write_plan_video(path: str, plan: VideoPlan) -> str:
    """Render every frame of ``plan`` and write them to ``path`` (H.264 mp4 at ``plan.fps``)."""
    encode_h264(path, frames_of(plan), plan.fps, plan.width, plan.height, CLIP_X264_OPTIONS)
    return path


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_video_corpus(directory: str, n_videos: int, seed: int,
                       caption_formats: tuple[str, ...] = ("vtt", "json", "srt"),
                       params: VideoParams = VideoParams()) -> tuple[str, str]:
    """Write videos ``0 .. n_videos - 1`` of the pixel world seeded by ``seed`` under
    ``directory``: ``data/<video_id>.mp4``, ``data/<video_id>.<fmt>`` (video ``i`` gets
    ``caption_formats[i % len]``), ``manifest.jsonl`` (video-mode rows with paths relative to
    ``directory``) and ``truth.json``. Returns ``(manifest path, truth path)``."""
    formats = (caption_formats,) if isinstance(caption_formats, str) else tuple(caption_formats)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    rows, truth = [], {}
    for i in range(n_videos):
        plan = make_video_plan(i, seed, params)
        fmt = formats[i % len(formats)]
        video, captions = f"data/{plan.video_id}.mp4", f"data/{plan.video_id}.{fmt}"
        write_plan_video(os.path.join(directory, video), plan)
        _write_text(os.path.join(directory, captions), captions_text(plan, fmt))
        rows.append(json.dumps({"video_id": plan.video_id, "video": video, "captions": captions}))
        truth[plan.video_id] = truth_entries(plan)
    manifest, truth_path = os.path.join(directory, "manifest.jsonl"), os.path.join(directory, "truth.json")
    _write_text(manifest, "".join(row + "\n" for row in rows))
    _write_text(truth_path, json.dumps(truth))
    return manifest, truth_path
