"""Realignment and the run-level estimates it reads: ``Realign`` (one video at a time, through
``pipeline.results.realign_video``), the run's prompt value, decoy pool and calibration, and the
order-independent combiners that make them deterministic on any runner."""

from __future__ import annotations

import dataclasses
from collections import Counter

import apache_beam as beam
import numpy as np

from pipeline.results import has_usable_features
from pipeline.transforms.compat import TaggedParDo
from pipeline.transforms.stage import FAILURES, KEPT, OUTCOMES, SAMPLES, TOTAL, _StageDoFn, dropped, failed


def emit_result(result, rows_tag: str | None = None):
    """One video's ``pipeline.results.VideoResult`` -> the tagged outputs of ``Realign``: failure
    rows (dicts), the list of index rows (main output, or ``rows_tag``), the list of kept
    samples and the outcome counts."""
    for failure in result.failures:
        yield beam.pvalue.TaggedOutput(FAILURES, dataclasses.asdict(failure))
    if result.rows:
        rows = list(result.rows)
        yield rows if rows_tag is None else beam.pvalue.TaggedOutput(rows_tag, rows)
    if result.samples:
        yield beam.pvalue.TaggedOutput(SAMPLES, list(result.samples))
    yield beam.pvalue.TaggedOutput(OUTCOMES, result.outcome.counts())


class _RealignFn(_StageDoFn):
    """Realigns one video (``pipeline.results.realign_video``), checkpoints the result
    (``pipeline.outputs.checkpoint``) and emits it with :func:`emit_result`."""

    stage = "realign"

    def __init__(self, params, provenance: dict, clips, output: str | None, decode=None):
        super().__init__()
        self.params, self.provenance, self.clips, self.output = params, provenance, clips, output
        self.decode = decode

    def process(self, inputs, run_prompt_value=None, run_calibration=None):
        from pipeline.outputs.checkpoint import save_result
        from pipeline.results import prompt_histogram, realign_video

        self.count(TOTAL)
        result = realign_video(inputs, self.params, self.provenance, self.clips, run_prompt_value, run_calibration,
                               self.decode)
        for failure in result.realign_failures:
            self.count(failed(failure.error_class))
        self.count(KEPT, result.outcome.captions_kept)
        for reason, n in result.outcome.dropped:
            self.count(dropped(reason), n)
        if self.output is not None:
            save_result(self.output, result, prompt_histogram(inputs, self.params))
        yield from emit_result(result)


def video_calibration_stats(video, params, decoy_pool):
    """``curation.calibration.VideoStats`` of one loaded video (with its attached evidence)."""
    from curation.align import calibration_stats

    frames, captions = video.frames, video.captions
    return calibration_stats(video.video_id, captions.emb, frames.emb, np.array(captions.start_s),
                             np.array(captions.end_s), frames.fps, params, decoy_pool, video.evidence)


class AttachEvidence(beam.PTransform):
    """``VideoInputs`` -> the same with ``evidence`` (``curation.align.caption_evidence``) for
    method ``posterior``: made once, read by the run-level calibration and by realignment."""

    def __init__(self, params):
        super().__init__()
        self.params = params

    def expand(self, inputs):
        params = self.params

        def attach(video):
            from curation.align import caption_evidence

            if not has_usable_features(video):
                return video
            frames, captions = video.frames, video.captions
            evidence = caption_evidence(captions.emb, frames.emb, np.array(captions.start_s),
                                        np.array(captions.end_s), frames.fps, params)
            return dataclasses.replace(video, evidence=evidence)

        return inputs | beam.Map(attach)


class Realign(beam.PTransform):
    """``VideoInputs`` -> per-video lists of index rows (every caption) and of kept samples,
    outcomes (counts) and failures (the video's load failures included). With ``output`` set,
    each video's result is checkpointed under ``OUT/_work`` before it is emitted. ``decode``: the
    ``decode`` configuration clips are cut under (``max_bytes``, ``deinterlace``)."""

    def __init__(self, params, provenance: dict, clips, run_prompt_value=None, output: str | None = None,
                 run_calibration=None, decode=None):
        super().__init__()
        self.params, self.provenance, self.clips, self.run_prompt_value = params, provenance, clips, run_prompt_value
        self.output, self.run_calibration, self.decode = output, run_calibration, decode

    def expand(self, inputs):
        side = {} if self.run_prompt_value is None else {"run_prompt_value": beam.pvalue.AsSingleton(self.run_prompt_value)}
        if self.run_calibration is not None:
            side["run_calibration"] = beam.pvalue.AsSingleton(self.run_calibration)
        return inputs | TaggedParDo(_RealignFn(self.params, self.provenance, self.clips, self.output, self.decode),
                                    SAMPLES, OUTCOMES, FAILURES, main="rows", **side)


class RunPromptValue(beam.PTransform):
    """Run-level prompt value: the quantile of every video's timestamp-paired similarities,
    from an integer histogram (order-independent sums, so deterministic on any runner).
    ``restored``: the histograms of videos whose results were checkpointed by an earlier attempt."""

    def __init__(self, params, restored=None):
        super().__init__()
        self.params, self.restored = params, restored

    def expand(self, inputs):
        from curation.prompt import histogram_quantile
        from pipeline.results import prompt_histogram

        params = self.params

        def histogram(video):
            if has_usable_features(video):
                yield prompt_histogram(video, params)

        histograms = inputs | "Histogram" >> beam.FlatMap(histogram)
        if self.restored is not None:
            histograms = (histograms, self.restored) | "WithRestored" >> beam.Flatten()
        return (histograms
                | "Sum" >> beam.CombineGlobally(_Merge(sum_arrays))
                | "Quantile" >> beam.Map(histogram_quantile, params.prompt_quantile, params))


class DecoyPool(beam.PTransform):
    """The run's decoy captions (``curation.calibration.DecoyPool``): every video's candidates
    merged (order-independent); ``restored``: the candidates of checkpointed videos."""

    def __init__(self, restored=None):
        super().__init__()
        self.restored = restored

    def expand(self, inputs):
        def candidates(video):
            from curation.calibration import pool_candidates

            if has_usable_features(video):
                yield pool_candidates(video.video_id, video.captions.emb)

        parts = inputs | "Candidates" >> beam.FlatMap(candidates)
        if self.restored is not None:
            parts = (parts, self.restored) | "WithRestored" >> beam.Flatten()
        from curation.calibration import merge_pools

        return parts | "Merge" >> beam.CombineGlobally(_Merge(merge_pools))


class RunCalibration(beam.PTransform):
    """Method ``posterior``'s run-level calibration (``curation.calibration``): every video's
    evidence statistics against decoys from ``decoy_pool`` (a singleton), merged
    (order-independent), then estimated once. ``restored``: the stats of videos whose results
    were checkpointed by an earlier attempt. With ``output``, each video's stats and decoy-pool
    candidates are checkpointed (``pipeline.outputs.checkpoint.save_calibration``) for a resumed run."""

    def __init__(self, params, decoy_pool, restored=None, output: str | None = None):
        super().__init__()
        self.params, self.decoy_pool, self.restored, self.output = params, decoy_pool, restored, output

    def expand(self, inputs):
        from curation.calibration import estimate, merge

        params, output = self.params, self.output

        def stats(video, pool):
            if has_usable_features(video):
                from curation.calibration import pool_candidates
                from pipeline.outputs.checkpoint import save_calibration

                result = video_calibration_stats(video, params, pool)
                if output is not None:
                    save_calibration(output, video.video_id, result, pool_candidates(video.video_id, video.captions.emb))
                yield result

        fresh = (inputs | "Stats" >> beam.FlatMap(stats, beam.pvalue.AsSingleton(self.decoy_pool))
                 | "Merge" >> beam.CombineGlobally(_Merge(merge)))
        if self.restored is None:
            return fresh | "Estimate" >> beam.Map(estimate, params.window_s)
        # merged apart and joined as a side input: a Flatten of the restored stats with Stats
        # (which waits for the decoy pool, which waits for the Resume stage) never ran on the
        # DirectRunner
        restored = self.restored | "MergeRestored" >> beam.CombineGlobally(_Merge(merge))

        def estimate_all(merged, earlier):
            return estimate(merge([merged, earlier]), params.window_s)

        return fresh | "Estimate" >> beam.Map(estimate_all, beam.pvalue.AsSingleton(restored))


def sum_arrays(parts):
    """The elementwise sum of the arrays in ``parts`` (``None`` entries skipped), or None."""
    parts = [p for p in parts if p is not None]
    return sum(parts[1:], parts[0].copy()) if parts else None


class _Merge(beam.CombineFn):
    """Combines with ``merge(parts) -> merged`` (None for no parts): a merge that is the same in
    any order (``sum_arrays``, ``curation.calibration.merge``, ``merge_pools``). The accumulator
    is a list of parts, merged once it holds :attr:`BATCH` of them: merging every input into a
    run-sized sample (20 000 captions' evidence, ~10 MB) would copy that sample once per video."""

    BATCH = 64

    def __init__(self, merge):
        self.merge = merge

    def create_accumulator(self):
        return []

    def add_input(self, acc, value):
        acc.append(value)
        return [self.merge(acc)] if len(acc) >= self.BATCH else acc

    def merge_accumulators(self, accs):
        return [self.merge([part for acc in accs for part in acc])]

    def compact(self, acc):
        return [self.merge(acc)] if len(acc) > 1 else acc

    def extract_output(self, acc):
        return self.merge(acc)


class SumCounts(beam.CombineFn):
    """Sums ``{name: int}`` dicts (order-independent)."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, value):
        acc.update(value)
        return acc

    def merge_accumulators(self, accs):
        total = Counter()
        for acc in accs:
            total.update(acc)
        return total

    def extract_output(self, acc):
        return dict(acc)
