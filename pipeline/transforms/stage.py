"""What every stage shares: the tags of its outputs, its counter names, and the DoFn base
that counts ``total``/``ok``/``failed/<class>`` and routes failures.

Failures leave every stage on the ``failures`` tagged output as dicts
``{video_id, stage, error_class, message}`` (``curation.records.Failure``'s fields); counters are
named by the constants below, in a namespace per stage (DESIGN §8).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.results import failure_of

#: Output tags.
FAILURES, OUTCOMES, SAMPLES, META = "failures", "outcomes", "samples", "meta"
HISTOGRAMS, CALIBRATIONS, DECOYS = "histograms", "calibrations", "decoys"

#: Counter names (per stage namespace).
TOTAL, OK, KEPT, FRAMES, VIDEOS, DECODES = "total", "ok", "kept", "frames", "videos", "decodes"


def failed(error_class: str) -> str:
    """Counter of the failures of one class: ``failed/<class>``."""
    return f"failed/{error_class}"


def noted(note_class: str) -> str:
    """Counter of the notes of one class on usable videos (rows of the failures table that do not
    fail their video, e.g. ``pipeline.media.decode.NOTE_CLASSES``): ``noted/<class>``."""
    return f"noted/{note_class}"


def dropped(reason: str) -> str:
    """Counter of the captions dropped for one reason: ``dropped/<reason>``."""
    return f"dropped/{reason}"


def failure_dict(video_id: str, stage: str, error: Exception) -> dict:
    """A failures-table row (``pipeline.results.failure_of`` as a dict, as failures travel)."""
    return dataclasses.asdict(failure_of(video_id, stage, error))


class _StageDoFn(beam.DoFn):
    """Counts ``total``/``ok``/``failed/<class>`` for one stage and routes failures."""

    stage = "unnamed"  # every subclass names its stage

    def __init__(self):
        self._counters: dict[str, object] = {}

    def count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = Metrics.counter(self.stage, name)
        self._counters[name].inc(n)

    def failure_row(self, video_id: str, error: Exception, stage: str | None = None) -> dict:
        """The failures-table row of ``error``, counted as ``failed/<class>``."""
        row = failure_dict(video_id, stage or self.stage, error)
        self.count(failed(row["error_class"]))
        return row

    def fail(self, video_id: str, error: Exception, stage: str | None = None):
        return beam.pvalue.TaggedOutput(FAILURES, self.failure_row(video_id, error, stage))
