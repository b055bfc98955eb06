"""Beam transforms: one composite ``PTransform`` per verb; each ``DoFn.process`` unpacks, calls
one function of ``pipeline.inputs`` / ``pipeline.rows`` / ``pipeline.writers``, emits, counts.

Failures leave every stage on the ``failures`` tagged output as dicts
``{video_id, stage, error_class, message}``; counters are named ``total``, ``ok``,
``failed/<class>``, ``kept``, ``dropped/<reason>`` in a namespace per stage.
"""

from __future__ import annotations

import os
from collections import Counter

import apache_beam as beam
from apache_beam.metrics import Metrics

from curation.errors import InputError
from curation.records import Failure

FAILURES = "failures"
OUTCOMES = "outcomes"
SAMPLES = "samples"


def failure_dict(video_id: str, stage: str, error: Exception) -> dict:
    """A failures-table row; unexpected exceptions become ``internal_error`` with their type."""
    if isinstance(error, InputError):
        fail = Failure(video_id, stage, error.error_class, error.message)
    else:
        fail = Failure(video_id, stage, "internal_error", " ".join(f"{type(error).__name__}: {error}".split())[:500])
    return fail.__dict__.copy()


class _StageDoFn(beam.DoFn):
    """Counts ``total``/``ok``/``failed/<class>`` for one stage and routes failures."""

    stage = "stage"

    def __init__(self):
        self._counters: dict[str, object] = {}

    def count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            self._counters[name] = Metrics.counter(self.stage, name)
        self._counters[name].inc(n)

    def fail(self, video_id: str, error: Exception, stage: str | None = None):
        row = failure_dict(video_id, stage or self.stage, error)
        self.count(f"failed/{row['error_class']}")
        return beam.pvalue.TaggedOutput(FAILURES, row)


class _ParseManifestFn(_StageDoFn):
    stage = "manifest"

    def __init__(self, base_dir: str):
        super().__init__()
        self.base_dir = base_dir

    def process(self, line: str):
        from pipeline.inputs import manifest_video_id, parse_manifest_line

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


class ReadManifest(beam.PTransform):
    """JSON Lines manifest -> ``VideoRef`` (unique, valid video_ids) + failures."""

    def __init__(self, manifest: str):
        super().__init__()
        self.manifest = manifest

    def expand(self, pbegin):
        from pipeline.inputs import resolve_path

        base_dir = os.path.dirname(resolve_path(self.manifest, os.getcwd()))
        lines = (pbegin | "Read" >> beam.io.ReadFromText(self.manifest)
                 | "NonBlank" >> beam.Filter(lambda line: line.strip() != ""))
        parsed = lines | "Parse" >> beam.ParDo(_ParseManifestFn(base_dir)).with_outputs(FAILURES, main="refs")
        unique = (parsed.refs | "ByVideo" >> beam.GroupByKey()
                  | "Dedupe" >> beam.ParDo(_RejectDuplicatesFn()).with_outputs(FAILURES, main="refs"))
        failures = (parsed[FAILURES], unique[FAILURES]) | "ManifestFailures" >> beam.Flatten()
        return {"refs": unique.refs, FAILURES: failures, "rows": lines | "CountRows" >> beam.combiners.Count.Globally()}


class _LoadInputsFn(_StageDoFn):
    """Loads features and captions of one video (both, so the failures table names each
    stage that failed) into a :class:`VideoInputs`."""

    stage = "load"

    def __init__(self, expected_dim):
        super().__init__()
        self.expected_dim = expected_dim

    def process(self, ref):
        from curation.records import VideoInputs
        from pipeline.inputs import load_caption_set, load_frame_features

        self.count("total")
        loaded = {}
        for stage, load in (("features", load_frame_features), ("captions", load_caption_set)):
            try:
                loaded[stage] = load(ref, self.expected_dim)
            except Exception as exc:  # noqa: BLE001 - every data error becomes a failures row
                yield self.fail(ref.video_id, exc, stage)
                loaded[stage] = None
        inputs = VideoInputs(ref.video_id, loaded["features"], loaded["captions"])
        if inputs.ok:
            self.count("ok")
        yield inputs


class LoadInputs(beam.PTransform):
    """``VideoRef`` -> ``VideoInputs`` (features + captions of one video, fused: no shuffle)."""

    def __init__(self, expected_dim):
        super().__init__()
        self.expected_dim = expected_dim

    def expand(self, refs):
        out = refs | beam.ParDo(_LoadInputsFn(self.expected_dim)).with_outputs(FAILURES, main="ok")
        return {"ok": out.ok, FAILURES: out[FAILURES]}


class _RealignFn(_StageDoFn):
    """Emits the video's index rows as one list, its kept samples as one list, its outcome."""

    stage = "realign"

    def __init__(self, params, provenance: dict, clips):
        super().__init__()
        self.params, self.provenance, self.clips = params, provenance, clips

    def process(self, inputs, run_prompt_value=None):
        from pipeline.rows import aligned_rows, failed_video_rows, samples_for_video

        self.count("total")
        rows, ok = None, inputs.ok
        if ok:
            try:
                rows = aligned_rows(inputs.frames, inputs.captions, self.params, run_prompt_value)
            except Exception as exc:  # noqa: BLE001 - recorded as a failure row, never swallowed
                yield self.fail(inputs.video_id, exc)
                ok = False
        if rows is None:
            rows = failed_video_rows(inputs.captions) if inputs.captions is not None else []
        rows, samples, clip_errors = samples_for_video(rows, inputs.frames, self.provenance, self.clips)
        for row, exc in clip_errors:
            yield self.fail(f"{row['video_id']}", exc, "clips")
        dropped = Counter(r["drop_reason"] for r in rows if not r["kept"])
        self.count("kept", len(samples))
        for reason, n in dropped.items():
            self.count(f"dropped/{reason}", n)
        if rows:
            yield rows
        if samples:
            yield beam.pvalue.TaggedOutput(SAMPLES, samples)
        yield beam.pvalue.TaggedOutput(OUTCOMES, {"videos_ok" if ok else "videos_failed": 1, "captions_in": len(rows),
                                                 "captions_kept": len(samples),
                                                 **{f"dropped/{k}": v for k, v in dropped.items()}})


class Realign(beam.PTransform):
    """``VideoInputs`` -> per-video lists of index rows (every caption) and of kept samples,
    outcomes (counts) and failures."""

    def __init__(self, params, provenance: dict, clips, run_prompt_value=None):
        super().__init__()
        self.params, self.provenance, self.clips, self.run_prompt_value = params, provenance, clips, run_prompt_value

    def expand(self, inputs):
        side = {} if self.run_prompt_value is None else {"run_prompt_value": beam.pvalue.AsSingleton(self.run_prompt_value)}
        out = inputs | beam.ParDo(_RealignFn(self.params, self.provenance, self.clips), **side).with_outputs(
            SAMPLES, OUTCOMES, FAILURES, main="rows")
        return {"rows": out.rows, SAMPLES: out[SAMPLES], OUTCOMES: out[OUTCOMES], FAILURES: out[FAILURES]}


class RunPromptValue(beam.PTransform):
    """Run-level prompt value: the quantile of every video's timestamp-paired similarities,
    from an integer histogram (order-independent sums, so deterministic on any runner)."""

    def __init__(self, params):
        super().__init__()
        self.params = params

    def expand(self, inputs):
        from curation.prompt import histogram_quantile, paired_histogram

        params = self.params

        def histogram(video):
            # a width mismatch fails this video in Realign, where it is recorded
            if video.ok and video.frames.emb.shape[1] == video.captions.emb.shape[1]:
                yield paired_histogram(video.frames, video.captions, params)

        return (inputs | "Histogram" >> beam.FlatMap(histogram)
                | "Sum" >> beam.CombineGlobally(_SumArrays())
                | "Quantile" >> beam.Map(histogram_quantile, params.prompt_quantile, params))


class _SumArrays(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return value.copy() if acc is None else acc + value

    def merge_accumulators(self, accs):
        accs = [a for a in accs if a is not None]
        return sum(accs[1:], accs[0].copy()) if accs else None

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
