"""``ReadManifest``: the JSON Lines manifest -> unique, valid ``VideoRef`` s + failures."""

from __future__ import annotations

import os

import apache_beam as beam

from curation.errors import InputError
from pipeline.storage import files
from pipeline.transforms.compat import TaggedParDo, manifest_splits, read_manifest_split
from pipeline.transforms.stage import FAILURES, OK, TOTAL, _StageDoFn


class _ParseManifestFn(_StageDoFn):
    stage = "manifest"

    def __init__(self, base_dir: str):
        super().__init__()
        self.base_dir = base_dir

    def process(self, line: str):
        from pipeline.inputs.manifest import manifest_video_id, parse_manifest_line

        self.count(TOTAL)
        try:
            ref = parse_manifest_line(line, self.base_dir)
        except InputError as exc:
            yield self.fail(manifest_video_id(line), exc)
            return
        self.count(OK)
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
        from pipeline.inputs.manifest import resolve_path

        base_dir = files.parent(resolve_path(self.manifest, os.getcwd()))
        lines = (pbegin | "Splits" >> beam.Create(manifest_splits(self.manifest))
                 | "Read" >> beam.FlatMap(read_manifest_split)
                 | "NonBlank" >> beam.Filter(lambda line: line.strip() != ""))
        parsed = lines | "Parse" >> TaggedParDo(_ParseManifestFn(base_dir), FAILURES, main="refs")
        unique = (parsed.refs | "ByVideo" >> beam.GroupByKey()
                  | "Dedupe" >> TaggedParDo(_RejectDuplicatesFn(), FAILURES, main="refs"))
        failures = (parsed[FAILURES], unique[FAILURES]) | "ManifestFailures" >> beam.Flatten()
        n_rows = lines | "CountRows" >> beam.combiners.Count.Globally().without_defaults()  # none: no rows
        return {"refs": unique.refs, FAILURES: failures, "rows": n_rows}
