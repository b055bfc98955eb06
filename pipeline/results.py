"""One video's result: typed index rows, shard samples, failures and counts (no Beam).

:func:`realign_video` is what ``Realign`` runs per video; :class:`VideoResult` is what it
emits, checkpoints (``pipeline.outputs.checkpoint``) and a resumed run restores.

Index columns follow DESIGN §5; ``drop_reason`` says why a caption was not kept
(``unalignable``: alignability below ``align.min_alignability``; ``past_footage``: its ASR span
starts after the last scored frame's interval ends, e.g. a truncated download; ``video_failed``:
the video's features could not be used; ``clip_failed``: its clip could not be cut — both in the
failures table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
from collections import Counter
from typing import NamedTuple

import numpy as np

from curation.align import AlignParams, align_video
from curation.errors import InputError
from curation.records import CaptionSet, Failure, FrameFeatures, VideoInputs
from curation.spans import caption_weight
from curation.timeline import span_frame_mask
from pipeline.outputs.layout import shard_name
from pipeline.outputs.shards import key_parts, sample_key


def _package_version() -> str:
    from importlib.metadata import version

    return version("nccurate")


PIPELINE_VERSION = _package_version()
DROP_REASONS = ("unalignable", "past_footage", "video_failed", "clip_failed")

#: Stages whose failures :func:`realign_video` records (the others come with the video's inputs).
REALIGN, CLIPS = "realign", "clips"


class IndexRow(NamedTuple):
    """One row of the index (DESIGN §5): one input caption, kept or not. The field order and
    types are the parquet ``INDEX_SCHEMA`` (``pipeline.outputs.tables.arrow_schema``): times
    in seconds, scores in [0, 1] rounded to 1e-9, None where the video could not be aligned."""

    video_id: str
    caption_idx: int
    text: str
    asr_start: float
    asr_end: float
    start: float | None
    end: float | None
    alignable: bool | None
    alignability: float | None
    similarity: float | None
    bucket_mass: float | None
    concentration: float | None
    weight: float
    kept: bool
    drop_reason: str | None
    shard: str | None
    key: str | None


def __getattr__(name: str):
    """``INDEX_SCHEMA`` (of :class:`IndexRow`) and ``FAILURE_SCHEMA`` (of
    :class:`curation.records.Failure`), built on first use so pyarrow is imported only then."""
    if name in ("INDEX_SCHEMA", "FAILURE_SCHEMA"):
        from pipeline.outputs.tables import arrow_schema

        return arrow_schema(IndexRow if name == "INDEX_SCHEMA" else Failure)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one video adds to the run's counts (``summary.json``): whether it was usable,
    its captions in and kept, and ``dropped``: sorted ``(drop_reason, captions)`` pairs."""

    ok: bool
    captions_in: int
    captions_kept: int
    dropped: tuple[tuple[str, int], ...] = ()
    resumed: bool = False

    def counts(self) -> dict[str, int]:
        """``{"videos_ok" | "videos_failed": 1, "captions_in", "captions_kept", "dropped/<reason>",
        ["videos_resumed": 1]}``: the run summed over videos (``SumCounts``) is the summary's."""
        counts = {"videos_ok" if self.ok else "videos_failed": 1, "captions_in": self.captions_in,
                  "captions_kept": self.captions_kept, **{f"dropped/{k}": v for k, v in self.dropped}}
        if self.resumed:
            counts["videos_resumed"] = 1
        return counts

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> "Outcome":
        """The inverse of :meth:`counts`."""
        dropped = tuple(sorted((k.split("/", 1)[1], v) for k, v in counts.items() if k.startswith("dropped/")))
        return cls(bool(counts.get("videos_ok")), counts["captions_in"], counts["captions_kept"], dropped,
                   bool(counts.get("videos_resumed")))


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """Everything one video contributes to the outputs: its index ``rows`` (every caption), its
    kept ``samples`` (WebDataset dicts ``{"__key__", ext: bytes}``), its ``failures`` (those of
    loading included) and its ``outcome``."""

    video_id: str
    rows: tuple[IndexRow, ...]
    samples: tuple[dict, ...]
    failures: tuple[Failure, ...]
    outcome: Outcome

    @property
    def realign_failures(self) -> tuple[Failure, ...]:
        """The failures :func:`realign_video` recorded (alignment and clip cutting)."""
        return tuple(f for f in self.failures if f.stage in (REALIGN, CLIPS))


def failure_of(video_id: str, stage: str, error: Exception) -> Failure:
    """A failures-table row; unexpected exceptions become ``internal_error`` with their type."""
    if isinstance(error, InputError):
        return Failure(video_id, stage, error.error_class, error.message)
    return Failure(video_id, stage, "internal_error", " ".join(f"{type(error).__name__}: {error}".split())[:500])


def realign_video(inputs: VideoInputs, params: AlignParams, provenance: dict, clips,
                  run_prompt_value: float | None = None, run_calibration=None, decode=None) -> VideoResult:
    """One loaded video -> its :class:`VideoResult`: align it (a video whose inputs failed, or
    whose alignment raises, gets ``video_failed`` rows), then build the kept rows' samples
    (cutting clips from ``clips``; a clip that cannot be cut drops its row as ``clip_failed``).
    ``provenance``: the fields every sample's json carries; ``run_prompt_value`` and
    ``run_calibration``: the run-level estimates of ``prompt_mode=run`` and method ``posterior``;
    ``decode``: the ``decode`` configuration clips are cut under (``max_bytes`` of a remote
    video's local copy, ``deinterlace``); None: the defaults."""
    failures = [Failure(**f) for f in inputs.failures]
    rows, ok = None, inputs.ok
    if ok:
        try:
            rows = aligned_rows(inputs.frames, inputs.captions, params, run_prompt_value, run_calibration,
                                inputs.evidence)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure row, never swallowed
            failures.append(failure_of(inputs.video_id, REALIGN, exc))
            ok = False
    if rows is None:
        rows = failed_video_rows(inputs.captions) if inputs.captions is not None else []
    rows, samples, clip_errors = samples_for_video(rows, inputs.frames, provenance, clips, decode)
    failures.extend(failure_of(row.video_id, CLIPS, exc) for row, exc in clip_errors)
    dropped = Counter(r.drop_reason for r in rows if not r.kept)
    outcome = Outcome(ok, len(rows), len(samples), tuple(sorted(dropped.items())))
    return VideoResult(inputs.video_id, tuple(rows), tuple(samples), tuple(failures), outcome)


def prompt_histogram(inputs: VideoInputs, params: AlignParams):
    """The video's share of the run-level prompt value (``prompt_mode=run``, a usable video of
    matching widths), or None."""
    from curation.prompt import paired_histogram

    if params.prompt_mode != "run" or not has_usable_features(inputs):
        return None
    return paired_histogram(inputs.frames, inputs.captions, params)


def has_usable_features(video: VideoInputs) -> bool:
    """Loaded, with frame and caption features of one width (a mismatch fails the video in
    :func:`realign_video`, where it is recorded)."""
    return video.ok and video.frames.emb.shape[1] == video.captions.emb.shape[1]


def failed_video_rows(captions: CaptionSet) -> list[IndexRow]:
    """Index rows for a video whose captions parsed but which could not be aligned."""
    return [
        IndexRow(video_id=captions.video_id, caption_idx=i, text=text,
                 asr_start=captions.start_s[i], asr_end=captions.end_s[i],
                 start=None, end=None, alignable=None, alignability=None, similarity=None,
                 bucket_mass=None, concentration=None, weight=0.0, kept=False,
                 drop_reason="video_failed", shard=None, key=None)
        for i, text in enumerate(captions.text)
    ]


def _score(x) -> float:
    """A score as the index and samples store it: rounded to 1e-9, far below any meaning, so the
    last bits in which two processes' float reductions may differ do not reach the outputs."""
    return round(float(x), 9)


def aligned_rows(frames: FrameFeatures, captions: CaptionSet, params: AlignParams,
                 run_prompt_value: float | None, run_calibration=None, evidence=None) -> list[IndexRow]:
    """Align one video and return one index row per caption (``shard`` filled in later);
    ``run_calibration``: method ``posterior``'s run-level estimates, ``evidence`` the video's."""
    if captions.emb.shape[1] != frames.emb.shape[1]:
        raise InputError("dim_mismatch", f"video {captions.video_id}: caption_features width "
                                         f"{captions.emb.shape[1]} != features width {frames.emb.shape[1]}")
    scores = align_video(captions.emb, frames.emb, np.array(captions.start_s), np.array(captions.end_s),
                         frames.fps, params, run_prompt_value, run_calibration, evidence)
    past = np.array(captions.start_s) >= frames.emb.shape[0] / frames.fps  # no scored frame covers them
    kept = (scores.alignability >= params.min_alignability) & ~past
    weight = caption_weight(scores, kept, params.weight)
    return [
        IndexRow(video_id=captions.video_id, caption_idx=i, text=text,
                 asr_start=captions.start_s[i], asr_end=captions.end_s[i],
                 start=round(float(scores.start_s[i]), 3), end=round(float(scores.end_s[i]), 3),
                 alignable=bool(kept[i]), alignability=_score(scores.alignability[i]),
                 similarity=_score(scores.similarity[i]), bucket_mass=_score(scores.bucket_mass[i]),
                 concentration=_score(scores.concentration[i]), weight=_score(weight[i]),
                 kept=bool(kept[i]), drop_reason=None if kept[i] else "past_footage" if past[i] else "unalignable",
                 shard=None, key=sample_key(captions.video_id, i) if kept[i] else None)
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


def payload_for_row(row: IndexRow, frames: FrameFeatures, clips, deinterlace: bool = True) -> dict[str, bytes]:
    """The sample's media members: the span's frame embeddings (``npy``; always in feature
    mode) or a clip cut from ``frames.source`` (``mp4`` or ``jpg`` frames; see ``pipeline.media.clips``)."""
    if frames.source is None or clips.format == "npy":
        return {"npy": npy_bytes(span_features(frames, row.start, row.end))}
    from pipeline.media.clips import cut_clip

    return cut_clip(frames.source, row.start, row.end, clips.format, clips.size, clips.fps, deinterlace)


def sample_for_row(row: IndexRow, frames: FrameFeatures, provenance: dict, clips, deinterlace: bool = True) -> dict:
    """The WebDataset sample of a kept row: media payload, ``txt`` caption, ``json`` metadata.

    Rates are named for what they count: ``score_fps`` is the rate of the frames the alignment
    scored (the manifest's ``fps`` in feature mode, ``decode.sample_fps`` in video mode; the
    ``npy`` rows are at this rate), ``clip_fps`` the frame rate of the ``mp4``/``jpg`` clip
    (``clips.fps``; only in samples with a clip), ``score_frame_pts_s`` the decoded PTS of the
    scored frames inside the span (video mode)."""
    media = payload_for_row(row, frames, clips, deinterlace)
    meta = {
        "video_id": row.video_id, "caption_idx": row.caption_idx, "text": row.text,
        "asr_span": [row.asr_start, row.asr_end], "span": [row.start, row.end],
        "score_fps": frames.fps, "alignability": row.alignability, "similarity": row.similarity,
        "bucket_mass": row.bucket_mass, "concentration": row.concentration, "weight": row.weight,
        **provenance,
    }
    if "npy" not in media:
        meta["clip_fps"] = clips.fps
    if frames.pts_s is not None:
        inside = span_frame_mask(np.array([row.start]), np.array([row.end]), len(frames.pts_s), frames.fps)[0]
        meta["score_frame_pts_s"] = [round(float(t), 4) for t in frames.pts_s[inside]]
    return {"__key__": row.key, **media,
            "txt": row.text.encode("utf-8"), "json": json.dumps(meta, sort_keys=True).encode("utf-8")}


def samples_for_video(rows: list[IndexRow], frames: FrameFeatures | None, provenance: dict, clips, decode=None):
    """``(rows, samples, errors)``: one sample per kept row. A kept row whose clip cannot be cut
    becomes dropped (``clip_failed``, weight 0) and its error is returned as ``(row, error)``.
    Clips of a remote video are cut from one local copy of it (at most ``decode.max_bytes``); when
    the copy cannot be made, every kept row's clip fails with that error. ``decode``: the
    ``decode`` configuration (None: the defaults)."""
    from pipeline.config import DecodeConfig
    from pipeline.media.failures import media_input, named_for

    decode = decode or DecodeConfig()

    with contextlib.ExitStack() as stack:
        copy_error, source = None, frames.source if frames is not None else None
        if source is not None and clips.format != "npy" and any(r.kept for r in rows):
            try:
                frames = dataclasses.replace(frames, source=stack.enter_context(media_input(source, decode.max_bytes)))
            except InputError as exc:
                copy_error = InputError("clip_failed", exc.message)
        samples, errors, out_rows = [], [], []
        for row in rows:
            if row.kept:
                error = copy_error
                if error is None:
                    try:
                        samples.append(sample_for_row(row, frames, provenance, clips, decode.deinterlace))
                    except InputError as exc:  # named for the video as the manifest names it, not the copy
                        error = exc if source is None else named_for(exc, frames.source, source)
                if error is not None:
                    errors.append((row, error))
                    row = row._replace(kept=False, weight=0.0, drop_reason="clip_failed", key=None)
            out_rows.append(row)
    return out_rows, samples, errors


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def shard_index_of(key: str, layout: str, seed: int, n_shards: int) -> int:
    """Shard number of the sample ``key``, in ``[0, n_shards)``: by seeded hash of its video
    part (``grouped``: a video's samples stay together; the key's stem is the video_id for ids
    of up to 64 characters, :func:`~pipeline.outputs.shards.key_stem`) or of the whole key
    (``shuffled``)."""
    return _hash_int(f"{seed}:{key_parts(key)[0] if layout == 'grouped' else key}") % max(n_shards, 1)


def shard_of_row(row: IndexRow, layout: str, seed: int, n_shards: int) -> str | None:
    return shard_name(shard_index_of(row.key, layout, seed, n_shards)) if row.kept else None


def index_file_of(video_id: str, n_files: int) -> int:
    """Index parquet file of a video's rows (stable hash of the video_id)."""
    return _hash_int(video_id) % n_files


def sort_index_rows(rows: list[IndexRow]) -> list[IndexRow]:
    """Rows in index order: by ``video_id`` then ``caption_idx``."""
    return sorted(rows, key=lambda r: (r.video_id, r.caption_idx))
