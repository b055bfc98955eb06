"""Per-video results -> index rows and shard samples (plain dicts and bytes; no Beam).

Index columns follow DESIGN §5; ``drop_reason`` says why a caption was not kept
(``unalignable``: alignability below ``align.min_alignability``; ``video_failed``: the video's
features could not be used; ``clip_failed``: its clip could not be cut — both in the failures
table).
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa

from curation.align import AlignParams, align_video
from curation.errors import InputError
from curation.records import CaptionSet, FrameFeatures
from curation.spans import confidence_weight
from curation.timeline import span_frame_mask
from pipeline.outputs.shards import sample_key, shard_name

PIPELINE_VERSION = "0.2.0"
DROP_REASONS = ("unalignable", "video_failed", "clip_failed")

INDEX_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("caption_idx", pa.int32()), ("text", pa.string()),
    ("asr_start", pa.float64()), ("asr_end", pa.float64()),
    ("start", pa.float64()), ("end", pa.float64()),
    ("alignable", pa.bool_()), ("alignability", pa.float64()), ("similarity", pa.float64()),
    ("bucket_mass", pa.float64()), ("concentration", pa.float64()), ("weight", pa.float64()),
    ("kept", pa.bool_()), ("drop_reason", pa.string()), ("shard", pa.string()), ("key", pa.string()),
])
FAILURE_SCHEMA = pa.schema([("video_id", pa.string()), ("stage", pa.string()),
                            ("error_class", pa.string()), ("message", pa.string())])


def failed_video_rows(captions: CaptionSet) -> list[dict]:
    """Index rows for a video whose captions parsed but which could not be aligned."""
    return [
        {"video_id": captions.video_id, "caption_idx": i, "text": text,
         "asr_start": captions.start_s[i], "asr_end": captions.end_s[i],
         "start": None, "end": None, "alignable": None, "alignability": None, "similarity": None,
         "bucket_mass": None, "concentration": None, "weight": 0.0, "kept": False,
         "drop_reason": "video_failed", "shard": None, "key": None}
        for i, text in enumerate(captions.text)
    ]


def _score(x) -> float:
    """A score as the index and samples store it: rounded to 1e-9, far below any meaning, so the
    last bits in which two processes' float reductions may differ do not reach the outputs."""
    return round(float(x), 9)


def aligned_rows(frames: FrameFeatures, captions: CaptionSet, params: AlignParams,
                 run_prompt_value: float | None, run_calibration=None, evidence=None) -> list[dict]:
    """Align one video and return one index row per caption (``shard`` filled in later);
    ``run_calibration``: method ``posterior``'s run-level estimates, ``evidence`` the video's."""
    if captions.emb.shape[1] != frames.emb.shape[1]:
        raise InputError("dim_mismatch", f"video {captions.video_id}: caption_features width "
                                         f"{captions.emb.shape[1]} != features width {frames.emb.shape[1]}")
    scores = align_video(captions.emb, frames.emb, np.array(captions.start_s), np.array(captions.end_s),
                         frames.fps, params, run_prompt_value, run_calibration, evidence)
    kept = scores.alignability >= params.min_alignability
    weight = confidence_weight(scores.alignability, scores.concentration, kept)
    return [
        {"video_id": captions.video_id, "caption_idx": i, "text": text,
         "asr_start": captions.start_s[i], "asr_end": captions.end_s[i],
         "start": round(float(scores.start_s[i]), 3), "end": round(float(scores.end_s[i]), 3),
         "alignable": bool(kept[i]), "alignability": _score(scores.alignability[i]),
         "similarity": _score(scores.similarity[i]), "bucket_mass": _score(scores.bucket_mass[i]),
         "concentration": _score(scores.concentration[i]), "weight": _score(weight[i]),
         "kept": bool(kept[i]), "drop_reason": None if kept[i] else "unalignable",
         "shard": None, "key": sample_key(captions.video_id, i) if kept[i] else None}
        for i, text in enumerate(captions.text)
    ]


def span_features(frames: FrameFeatures, start_s: float, end_s: float) -> np.ndarray:
    """``(k, D)`` float32 rows of the span's frames (as :func:`curation.timeline.span_frame_mask`
    pairs them: centres inside ``[start_s, end_s]``, else the nearest frame), k >= 1."""
    inside = span_frame_mask(np.array([start_s]), np.array([end_s]), frames.emb.shape[0], frames.fps)[0]
    return np.ascontiguousarray(frames.emb[inside], dtype=np.float32)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def payload_for_row(row: dict, frames: FrameFeatures, clips) -> dict[str, bytes]:
    """The sample's media members: the span's frame embeddings (``npy``; always in feature
    mode) or a clip cut from ``frames.source`` (``mp4`` or ``jpg`` frames; see ``pipeline.media.clips``)."""
    if frames.source is None or clips.format == "npy":
        return {"npy": npy_bytes(span_features(frames, row["start"], row["end"]))}
    from pipeline.media.clips import cut_clip

    return cut_clip(frames.source, row["start"], row["end"], clips.format, clips.size, clips.fps)


def sample_for_row(row: dict, frames: FrameFeatures, provenance: dict, clips) -> dict:
    """The WebDataset sample of a kept row: media payload, ``txt`` caption, ``json`` metadata."""
    meta = {
        "video_id": row["video_id"], "caption_idx": row["caption_idx"], "text": row["text"],
        "asr_span": [row["asr_start"], row["asr_end"]], "span": [row["start"], row["end"]],
        "fps": frames.fps, "alignability": row["alignability"], "similarity": row["similarity"],
        "bucket_mass": row["bucket_mass"], "concentration": row["concentration"], "weight": row["weight"],
        **provenance,
    }
    if frames.pts_s is not None:
        inside = span_frame_mask(np.array([row["start"]]), np.array([row["end"]]), len(frames.pts_s), frames.fps)[0]
        meta["frame_pts_s"] = [round(float(t), 4) for t in frames.pts_s[inside]]
    return {"__key__": row["key"], **payload_for_row(row, frames, clips),
            "txt": row["text"].encode("utf-8"), "json": json.dumps(meta, sort_keys=True).encode("utf-8")}


def samples_for_video(rows: list[dict], frames: FrameFeatures | None, provenance: dict, clips):
    """``(rows, samples, errors)``: one sample per kept row. A kept row whose clip cannot be cut
    becomes dropped (``clip_failed``, weight 0) and its error is returned as ``(row, error)``."""
    samples, errors, out_rows = [], [], []
    for row in rows:
        if row["kept"]:
            try:
                samples.append(sample_for_row(row, frames, provenance, clips))
            except InputError as exc:
                errors.append((row, exc))
                row = {**row, "kept": False, "weight": 0.0, "drop_reason": "clip_failed", "key": None}
        out_rows.append(row)
    return out_rows, samples, errors


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def shard_index_of(video_id: str, key: str, layout: str, seed: int, n_shards: int) -> int:
    """Shard number of a sample: by hash of the video (``grouped``: a video's samples stay
    together) or of the sample key (``shuffled``), seeded; in ``[0, n_shards)``."""
    return _hash_int(f"{seed}:{video_id if layout == 'grouped' else key}") % max(n_shards, 1)


def shard_of_row(row: dict, layout: str, seed: int, n_shards: int) -> str | None:
    return shard_name(shard_index_of(row["video_id"], row["key"], layout, seed, n_shards)) if row["kept"] else None


def index_file_of(video_id: str, n_files: int) -> int:
    """Index parquet file of a video's rows (stable hash of the video_id)."""
    return _hash_int(video_id) % n_files


def sort_index_rows(rows: list[dict]) -> list[dict]:
    """Rows in index order: by ``video_id`` then ``caption_idx``."""
    return sorted(rows, key=lambda r: (r["video_id"], r["caption_idx"]))
