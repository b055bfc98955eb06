"""Restoring what an unfinished attempt of the same run checkpointed (``pipeline.outputs.checkpoint``):
finished videos' results (:class:`Resume`) and finished decodes (``_RestoreFramesFn``)."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from pipeline.transforms.compat import TaggedParDo
from pipeline.transforms.realign import emit_result
from pipeline.transforms.stage import (CALIBRATIONS, DECODES, DECOYS, FAILURES, HISTOGRAMS, META, OUTCOMES, SAMPLES,
                                       VIDEOS, _StageDoFn)


class _ResumeFn(_StageDoFn):
    """ref -> the video's checkpointed result (tagged like ``Realign``'s outputs, its outcome
    marked ``videos_resumed``), or the ref itself (main output) when it has none."""

    stage = "resume"

    def __init__(self, output: str, calibrated: bool):
        super().__init__()
        self.output, self.calibrated = output, calibrated

    def process(self, ref):
        from pipeline.outputs.checkpoint import load_calibration, load_result

        saved = load_result(self.output, ref.video_id)
        calibration = load_calibration(self.output, ref.video_id) if self.calibrated and saved is not None else None
        if saved is None or (self.calibrated and calibration is None and saved.result.outcome.ok):
            yield ref  # nothing to restore (a finished video of method posterior has both files)
            return
        self.count(VIDEOS)
        if saved.histogram is not None:
            yield beam.pvalue.TaggedOutput(HISTOGRAMS, saved.histogram)
        if calibration is not None:
            yield beam.pvalue.TaggedOutput(CALIBRATIONS, calibration[0])
            yield beam.pvalue.TaggedOutput(DECOYS, calibration[1])
        resumed = dataclasses.replace(saved.result.outcome, resumed=True)
        yield from emit_result(dataclasses.replace(saved.result, outcome=resumed), rows_tag="rows")


class Resume(beam.PTransform):
    """Refs -> ``{"todo": refs without a result checkpoint, "rows", SAMPLES, OUTCOMES, FAILURES,
    HISTOGRAMS, CALIBRATIONS, DECOYS: the checkpointed results of the others}`` (``pipeline.outputs.checkpoint``).
    ``calibrated``: the run's method learns from the run (``posterior``), so a finished video is
    restored only with its calibration checkpoint."""

    def __init__(self, output: str, calibrated: bool = False):
        super().__init__()
        self.output, self.calibrated = output, calibrated

    def expand(self, refs):
        return refs | TaggedParDo(_ResumeFn(self.output, self.calibrated), "rows", SAMPLES, OUTCOMES, FAILURES, HISTOGRAMS, CALIBRATIONS,
                                  DECOYS, main="todo")


class _RestoreFramesFn(_StageDoFn):
    """ref -> its checkpointed decode (``(video_id, emb)`` + meta, or its keyed failure), or
    the ref itself on the ``todo`` output when an earlier attempt did not finish it."""

    stage = "resume"

    def __init__(self, output: str):
        super().__init__()
        self.output = output

    def process(self, ref):
        from pipeline.outputs.checkpoint import load_decode_failure, load_frames

        failure = load_decode_failure(self.output, ref.video_id)
        frames = None if failure is not None else load_frames(self.output, ref.video_id)
        if failure is None and frames is None:
            yield beam.pvalue.TaggedOutput("todo", ref)
            return
        self.count(DECODES)
        if failure is not None:
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, failure))
            return
        emb, pts_s, source, notes = frames
        for row in notes:
            yield beam.pvalue.TaggedOutput(FAILURES, (ref.video_id, row))
        yield beam.pvalue.TaggedOutput(META, (ref.video_id, (pts_s, source, 1)))
        yield ref.video_id, (0, emb)
