"""Beam transforms: one composite ``PTransform`` per verb; each ``DoFn.process`` unpacks, calls
one function of ``pipeline.inputs`` / ``pipeline.results`` / ``pipeline.outputs.tables``, emits, counts.

Failures leave every stage on the ``failures`` tagged output as dicts
``{video_id, stage, error_class, message}``; counters are named ``total``, ``ok``,
``failed/<class>``, ``kept``, ``dropped/<reason>`` in a namespace per stage.

Only primitives every runner executes: the manifest is read by a ``Create`` of byte ranges and a
``FlatMap`` (Beam 2.77's DaskRunner has no translation for ``beam.io.Read``), and a DoFn with
tagged outputs is applied through :class:`TaggedParDo` (the DaskRunner hands every output of a
multi-output ``ParDo``, main and tagged alike, to each consumer of any one of them).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np

import apache_beam as beam
from apache_beam.metrics import Metrics

from curation.errors import InputError
from pipeline.results import failure_of, has_usable_features

FAILURES = "failures"
OUTCOMES = "outcomes"
SAMPLES = "samples"
HISTOGRAMS = "histograms"
CALIBRATIONS = "calibrations"
DECOYS = "decoys"


def failure_dict(video_id: str, stage: str, error: Exception) -> dict:
    """A failures-table row (``pipeline.results.failure_of`` as a dict, as failures travel)."""
    return dataclasses.asdict(failure_of(video_id, stage, error))


class _StageDoFn(beam.DoFn):
    """Counts ``total``/``ok``/``failed/<class>`` for one stage and routes failures."""

    stage = "stage"

    def __init__(self):
        self._counters: dict[str, object] = {}

    def count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = Metrics.counter(self.stage, name)
        self._counters[name].inc(n)

    def failure_row(self, video_id: str, error: Exception, stage: str | None = None) -> dict:
        """The failures-table row of ``error``, counted as ``failed/<class>``."""
        row = failure_dict(video_id, stage or self.stage, error)
        self.count(f"failed/{row['error_class']}")
        return row

    def fail(self, video_id: str, error: Exception, stage: str | None = None):
        return beam.pvalue.TaggedOutput(FAILURES, self.failure_row(video_id, error, stage))


class _ParseManifestFn(_StageDoFn):
    stage = "manifest"

    def __init__(self, base_dir: str):
        super().__init__()
        self.base_dir = base_dir

    def process(self, line: str):
        from pipeline.inputs.manifest import manifest_video_id, parse_manifest_line

        self.count("total")
        try:
            ref = parse_manifest_line(line, self.base_dir)
        except InputError as exc:
            yield self.fail(manifest_video_id(line), exc)
            return
        self.count("ok")
        yield ref.video_id, ref


class _RejectDuplicatesFn(_StageDoFn):
    """Every row of a video_id that occurs more than once fails: nccurate never picks one."""

    stage = "manifest"

    def process(self, item):
        video_id, refs = item
        refs = list(refs)
        if len(refs) == 1:
            yield refs[0]
            return
        for _ in refs:
            yield self.fail(video_id, InputError(
                "duplicate_video_id", f"video_id {video_id} appears on {len(refs)} manifest lines; all are failed"))


class _TagOutputsFn(beam.DoFn):
    """Runs ``fn`` and emits each of its outputs as ``(tag, value)`` on the main output
    (``main`` for the untagged ones); the lifecycle methods and side inputs pass through."""

    def __init__(self, fn: beam.DoFn, main: str):
        super().__init__()
        self.fn, self.main = fn, main

    def setup(self):
        self.fn.setup()

    def start_bundle(self):
        self.fn.start_bundle()

    def process(self, element, *args, **kwargs):
        for out in self.fn.process(element, *args, **kwargs) or ():
            yield (out.tag, out.value) if isinstance(out, beam.pvalue.TaggedOutput) else (self.main, out)

    def finish_bundle(self):
        self.fn.finish_bundle()

    def teardown(self):
        self.fn.teardown()


def _only(tagged, tag: str):
    if tagged[0] == tag:
        yield tagged[1]


class _Outputs(dict):
    """``{tag: PCollection}`` whose tags are attributes too, like ``with_outputs``' result."""

    def __getattr__(self, tag: str):
        try:
            return self[tag]
        except KeyError:
            raise AttributeError(tag) from None


class TaggedParDo(beam.PTransform):
    """``beam.ParDo(fn, **side_inputs).with_outputs(*tags, main=main)``, kept apart on every
    runner: ``fn``'s outputs travel as ``(tag, value)`` and one filter per tag splits them (the
    DaskRunner does not separate tagged outputs). Returns ``{tag: PCollection}`` (``main``
    included; ``out.tag`` works too). ``fn`` must not emit from ``finish_bundle`` (some runners
    drop those elements)."""

    def __init__(self, fn: beam.DoFn, *tags: str, main: str, **side_inputs):
        super().__init__()
        self.fn, self.tags, self.main = fn, tags, main
        self.side = side_inputs  # not ``self.side_inputs``: PTransform has an attribute of that name

    def expand(self, pcoll):
        tagged = pcoll | "Run" >> beam.ParDo(_TagOutputsFn(self.fn, self.main), **self.side)
        return _Outputs({tag: tagged | f"Only_{tag}" >> beam.FlatMap(_only, tag) for tag in (self.main, *self.tags)})


#: The manifest is read in byte ranges (a ``Create`` of them): about two rows each at the least,
#: so a small manifest still spreads over the workers of a runner that partitions only what a
#: ``Create`` gives it (Dask, with ``--dask_npartitions``); at most 128, which bounds what the
#: launch puts into the pipeline graph.
MANIFEST_SPLIT_MIN_BYTES, MANIFEST_MAX_SPLITS = 256, 128


def manifest_splits(manifest: str) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` byte ranges covering the manifest; a compressed one is one range
    ``(path, 0, -1)``, read whole. Runs at launch, on the machine that builds the graph."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if CompressionTypes.detect_compression_type(manifest) != CompressionTypes.UNCOMPRESSED:
        return [(manifest, 0, -1)]
    found = FileSystems.match([manifest])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"manifest {manifest}: no such file")
    size = found[0].size_in_bytes
    n = max(1, min(MANIFEST_MAX_SPLITS, -(-size // MANIFEST_SPLIT_MIN_BYTES)))
    bounds = [size * i // n for i in range(n + 1)]
    return [(manifest, a, b) for a, b in zip(bounds, bounds[1:])]


def read_manifest_split(split: tuple[str, int, int]):
    """The lines (UTF-8, without line ends) that *start* in ``[start, end)``: every line of the
    file belongs to exactly one split. ``end == -1``: the whole (compressed) file."""
    from apache_beam.io.filesystems import FileSystems

    path, start, end = split
    with FileSystems.open(path) as handle:
        if end < 0:
            start, end = 0, float("inf")
        elif start > 0:
            handle.seek(start - 1)
            start += len(handle.readline()) - 1  # the rest of a line that began before start
        position = start
        while position < end:
            line = handle.readline()
            if not line:
                return
            position += len(line)
            yield line.decode("utf-8").rstrip("\r\n")


class ReadManifest(beam.PTransform):
    """JSON Lines manifest -> ``VideoRef`` (unique, valid video_ids) + failures."""

    def __init__(self, manifest: str):
        super().__init__()
        self.manifest = manifest

    def expand(self, pbegin):
        from pipeline.inputs.manifest import resolve_path

        base_dir = os.path.dirname(resolve_path(self.manifest, os.getcwd()))
        lines = (pbegin | "Splits" >> beam.Create(manifest_splits(self.manifest))
                 | "Read" >> beam.FlatMap(read_manifest_split)
                 | "NonBlank" >> beam.Filter(lambda line: line.strip() != ""))
        parsed = lines | "Parse" >> TaggedParDo(_ParseManifestFn(base_dir), FAILURES, main="refs")
        unique = (parsed.refs | "ByVideo" >> beam.GroupByKey()
                  | "Dedupe" >> TaggedParDo(_RejectDuplicatesFn(), FAILURES, main="refs"))
        failures = (parsed[FAILURES], unique[FAILURES]) | "ManifestFailures" >> beam.Flatten()
        n_rows = lines | "CountRows" >> beam.combiners.Count.Globally().without_defaults()  # none: no rows
        return {"refs": unique.refs, FAILURES: failures, "rows": n_rows}


class _LoadInputsFn(_StageDoFn):
    """Loads features and captions of one video (both, so the failures table names each
    stage that failed) into a :class:`VideoInputs` that carries the failure rows."""

    stage = "load"

    def __init__(self, expected_dim, retry):
        super().__init__()
        self.expected_dim, self.retry = expected_dim, retry

    def process(self, ref):
        from curation.records import VideoInputs
        from pipeline.inputs.arrays import load_caption_set, load_frame_features

        self.count("total")
        loaded, failures = {}, []
        for stage, load in (("features", load_frame_features), ("captions", load_caption_set)):
            try:
                loaded[stage] = load(ref, self.expected_dim, self.retry)
            except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
                failures.append(self.failure_row(ref.video_id, exc, stage))
                loaded[stage] = None
        inputs = VideoInputs(ref.video_id, loaded["features"], loaded["captions"], tuple(failures))
        if inputs.ok:
            self.count("ok")
        yield inputs


class LoadInputs(beam.PTransform):
    """``VideoRef`` -> ``VideoInputs`` (features + captions of one video, fused: no shuffle);
    ``retry``: the :class:`pipeline.inputs.retry.RetryPolicy` of the reads."""

    def __init__(self, expected_dim, retry):
        super().__init__()
        self.expected_dim, self.retry = expected_dim, retry

    def expand(self, refs):
        return refs | beam.ParDo(_LoadInputsFn(self.expected_dim, self.retry))


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

    def __init__(self, params, provenance: dict, clips, output: str | None):
        super().__init__()
        self.params, self.provenance, self.clips, self.output = params, provenance, clips, output

    def process(self, inputs, run_prompt_value=None, run_calibration=None):
        from pipeline.outputs.checkpoint import save_result
        from pipeline.results import prompt_histogram, realign_video

        self.count("total")
        result = realign_video(inputs, self.params, self.provenance, self.clips, run_prompt_value, run_calibration)
        for failure in result.realign_failures:
            self.count(f"failed/{failure.error_class}")
        self.count("kept", result.outcome.captions_kept)
        for reason, n in result.outcome.dropped:
            self.count(f"dropped/{reason}", n)
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
            import dataclasses

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
    each video's result is checkpointed under ``OUT/_work`` before it is emitted."""

    def __init__(self, params, provenance: dict, clips, run_prompt_value=None, output: str | None = None,
                 run_calibration=None):
        super().__init__()
        self.params, self.provenance, self.clips, self.run_prompt_value = params, provenance, clips, run_prompt_value
        self.output, self.run_calibration = output, run_calibration

    def expand(self, inputs):
        side = {} if self.run_prompt_value is None else {"run_prompt_value": beam.pvalue.AsSingleton(self.run_prompt_value)}
        if self.run_calibration is not None:
            side["run_calibration"] = beam.pvalue.AsSingleton(self.run_calibration)
        return inputs | TaggedParDo(_RealignFn(self.params, self.provenance, self.clips, self.output),
                                    SAMPLES, OUTCOMES, FAILURES, main="rows", **side)


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
        self.count("videos")
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
    any order (``sum_arrays``, ``curation.calibration.merge``, ``merge_pools``)."""

    def __init__(self, merge):
        self.merge = merge

    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return self.merge([acc, value])

    def merge_accumulators(self, accs):
        return self.merge(list(accs))

    def extract_output(self, acc):
        return acc


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
