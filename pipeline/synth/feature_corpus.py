"""Writing a synthetic feature-mode corpus (``curation.synth.features``) to disk as a user's inputs:
``.npy`` features, captions (HowTo100M json, WebVTT or SRT), caption features, a manifest,
and the ground truth in HTM-Align format ``{video_id: [[alignable, start, end, text], ...]}``."""

from __future__ import annotations

import json
import os

import numpy as np

from curation.synth.features import SynthVideo


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def captions_text(video: SynthVideo, fmt: str) -> str:
    """The video's captions in ``fmt`` (json, vtt or srt), in caption order."""
    starts, ends, texts = video.asr_start_s.tolist(), video.asr_end_s.tolist(), list(video.texts)
    if fmt == "json":
        return json.dumps({"start": starts, "end": ends, "text": texts})
    if fmt == "vtt":
        cues = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n" for a, b, t in zip(starts, ends, texts)]
        return "WEBVTT\n\n" + "\n".join(cues)
    if fmt == "srt":
        cues = [f"{i + 1}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n" for i, (a, b, t) in enumerate(zip(starts, ends, texts))]
        return "\n".join(cues)
    raise ValueError(f"caption format {fmt!r} is not one of json, vtt, srt")


def truth_entries(video: SynthVideo) -> list[list]:
    """HTM-Align rows ``[alignable 0/1, start_s, end_s, text]`` in caption order."""
    return [[int(a), float(s) if a else -1.0, float(e) if a else -1.0, t]
            for a, s, e, t in zip(video.alignable, video.true_start_s, video.true_end_s, video.texts)]


def write_corpus(directory: str, videos: list[SynthVideo],
                 caption_format: str | tuple[str, ...] = "json") -> tuple[str, str]:
    """Write every video's files and ``manifest.jsonl`` (relative paths) and ``truth.json``
    under ``directory``; returns (manifest path, truth path). ``caption_format`` may be a tuple
    of formats, used in turn (video i gets ``formats[i % len(formats)]``)."""
    formats = (caption_format,) if isinstance(caption_format, str) else tuple(caption_format)
    os.makedirs(os.path.join(directory, "data"), exist_ok=True)
    lines, truth = [], {}
    for i, v in enumerate(videos):
        fmt = formats[i % len(formats)]
        stem = os.path.join("data", v.video_id)
        np.save(os.path.join(directory, stem + ".features.npy"), v.frames)
        np.save(os.path.join(directory, stem + ".text.npy"), v.caption_emb)
        with open(os.path.join(directory, f"{stem}.{fmt}"), "w", encoding="utf-8") as handle:
            handle.write(captions_text(v, fmt))
        lines.append(json.dumps({"video_id": v.video_id, "features": stem + ".features.npy", "fps": v.fps,
                                 "captions": f"{stem}.{fmt}", "caption_features": stem + ".text.npy"}))
        truth[v.video_id] = truth_entries(v)
    manifest = os.path.join(directory, "manifest.jsonl")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    truth_path = os.path.join(directory, "truth.json")
    with open(truth_path, "w", encoding="utf-8") as handle:
        json.dump(truth, handle)
    return manifest, truth_path
