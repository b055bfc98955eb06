"""Records that flow between pipeline stages (frozen dataclasses; numpy payloads)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")

#: Where a video's captions come from: a captions ``file`` (the ``captions`` path), the video's
#: ``embedded`` text subtitle track, speech recognition (``asr``) of its audio, or ``auto`` (a row
#: without captions: the run's ``captions.when_missing`` decides).
CAPTION_SOURCES = ("file", "embedded", "asr", "auto")


@dataclass(frozen=True)
class VideoRef:
    """One manifest row, paths already resolved against the manifest's directory. ``captions`` is
    the captions file's path when ``captions_from`` is ``file``, else None."""

    video_id: str
    captions: str | None
    features: str | None = None
    fps: float | None = None
    caption_features: str | None = None
    video: str | None = None
    captions_from: str = "file"


@dataclass(frozen=True)
class FrameFeatures:
    """Per-frame embeddings of one video: ``emb: (T, D)`` float32 sampled at ``fps`` (frame k
    stands for ``[k/fps, (k+1)/fps)``). Video mode also records the decoded frames' actual
    presentation times ``pts_s: (T,)`` and the media file ``source`` that clips are cut from."""

    video_id: str
    fps: float
    emb: np.ndarray
    pts_s: np.ndarray | None = None
    source: str | None = None


@dataclass(frozen=True)
class CaptionSet:
    """Parsed captions of one video, in file order; ``emb: (m, D)`` float32 or None."""

    video_id: str
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    text: tuple[str, ...]
    emb: np.ndarray | None


@dataclass(frozen=True)
class Failure:
    """One row of the failures table."""

    video_id: str
    stage: str
    error_class: str
    message: str


@dataclass(frozen=True)
class VideoInputs:
    """What loading produced for one video; ``frames``/``captions`` are None where that stage
    failed, with its failure row (a :class:`Failure` as a dict) in ``failures``, so ``ok`` means
    both are usable. The failures travel with the video to ``Realign``, which emits them with the
    rest of the video's result (one checkpointable record per video)."""

    video_id: str
    frames: FrameFeatures | None
    captions: CaptionSet | None
    failures: tuple[dict, ...] = ()
    evidence: object = None  # curation.timing.Evidence, attached once for method posterior

    @property
    def ok(self) -> bool:
        return self.frames is not None and self.captions is not None
