"""The whole Beam graph, assembled in one function so every runner gets the same graph.

It reads top-down like DESIGN §1's picture: read the manifest, [restore what an earlier attempt
finished], load each video (feature or video mode), the run-level estimates, realign, then
write the index, the shards and the run records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam

from pipeline.config import Config
from pipeline.outputs.summary import RunRecords
from pipeline.transforms.load import LoadInputs, LoadVideoInputs
from pipeline.transforms.read import ReadManifest
from pipeline.transforms.realign import AttachEvidence, DecoyPool, Realign, RunCalibration, RunPromptValue, SumCounts
from pipeline.transforms.resume import Resume
from pipeline.transforms.stage import CALIBRATIONS, DECOYS, FAILURES, HISTOGRAMS, OUTCOMES, SAMPLES
from pipeline.transforms.write import Finalize, WriteIndex, WriteShards, shard_count

#: The result outputs that a resumed run takes from both ``Realign`` and the checkpoints.
RESULT_TAGS = ("rows", SAMPLES, OUTCOMES, FAILURES)


@dataclass(frozen=True)
class RunPlan:
    """What one run does. ``modes``: the branches to build (``pipeline.run.scan_manifest``); a
    manifest of one mode gets a graph without the other's stages, whose fixed cost is real on
    the DirectRunner. ``resume``: ``output`` holds an unfinished attempt of this run; only then
    does the graph hold the stages that look for its checkpoints (a fresh run has none)."""

    manifest: str
    output: str
    config: Config
    started_at: float
    modes: frozenset[str] = frozenset({"video", "features"})
    manifest_sha256: str | None = None
    resume: bool = False

    @property
    def checkpoint_to(self) -> str | None:
        """Where ``LoadVideoInputs``, ``RunCalibration`` and ``Realign`` checkpoint (None: off)."""
        return self.output if self.config.checkpoints else None

    def records(self) -> RunRecords:
        config = self.config
        return RunRecords(self.output, self.manifest, self.manifest_sha256, config.to_dict(), config.hash(),
                          self.started_at)


def provenance(config: Config) -> dict:
    """Fields every sample's json carries besides its own scores."""
    from pipeline.results import PIPELINE_VERSION

    return {"model": config.model.name, "pretrained": config.model.pretrained,
            "method": config.align.method, "pipeline_version": PIPELINE_VERSION,
            "config_hash": config.hash()}


class Restored(NamedTuple):
    """What a resumed run takes from its checkpoints, each None on a fresh run: the inputs of
    the run-level estimates (``histograms``, ``calibrations``, ``decoys``) and the results."""

    histograms: object = None
    calibrations: object = None
    decoys: object = None
    results: dict | None = None


def with_resume(refs, plan: RunPlan) -> tuple[object, Restored]:
    """Refs -> ``(refs to do, Restored)``, the resume branch's one owner. On a fresh run every
    ref is to do and nothing is restored; on a resumed one, the videos an earlier attempt
    finished come from ``Resume`` (and leave the refs to do)."""
    if not plan.resume:
        return refs, Restored()
    resumed = refs | "Resume" >> Resume(plan.output, plan.config.align.method == "posterior")
    return resumed["todo"], Restored(resumed[HISTOGRAMS], resumed[CALIBRATIONS], resumed[DECOYS],
                                     {tag: resumed[tag] for tag in RESULT_TAGS})


def with_restored(fresh, restored: Restored) -> dict:
    """``Realign``'s result outputs, with the restored results' flattened in when resuming."""
    if restored.results is None:
        return {tag: fresh[tag] for tag in RESULT_TAGS}
    return {tag: (fresh[tag], restored.results[tag]) | f"All[{tag}]" >> beam.Flatten() for tag in RESULT_TAGS}


def load_videos(todo, plan: RunPlan) -> tuple[object, dict]:
    """Refs -> ``(VideoInputs of every video, extra run inputs)``: feature rows through
    ``LoadInputs``, video rows through ``LoadVideoInputs`` (``decodes_resumed`` when resuming)."""
    config, modes = plan.config, plan.modes
    want_video, want_features = "video" in modes, "features" in modes or not modes
    if want_video and want_features:
        # two filters, not beam.Partition: a multi-output ParDo, whose outputs the DaskRunner mixes
        feature_refs = todo | "FeatureRows" >> beam.Filter(lambda ref: ref.video is None)
        video_refs = todo | "VideoRows" >> beam.Filter(lambda ref: ref.video is not None)
    else:
        feature_refs = video_refs = todo
    loaded, extra = [], {}
    if want_features:
        loaded.append(feature_refs | "LoadInputs" >> LoadInputs(config.features.dim, config.io))
    if want_video:
        video = video_refs | "LoadVideoInputs" >> LoadVideoInputs(
            config, plan.checkpoint_to, plan.output if plan.resume else None, plan.output)
        loaded.append(video.pop("ok"))
        extra.update(video)
    return loaded | "AllInputs" >> beam.Flatten(), extra


def build_graph(p: beam.Pipeline, plan: RunPlan) -> None:
    """manifest -> [resume] -> load -> run-level estimates -> Realign (+ clips, checkpointed) ->
    index, shards, run records (``Finalize``: failures, summary.json, shardindex.json)."""
    config, out = plan.config, plan.config.output
    manifest = p | "ReadManifest" >> ReadManifest(plan.manifest)
    refs = manifest["refs"] | "Reshuffle" >> beam.Reshuffle()
    todo, restored = with_resume(refs, plan)
    inputs, run_inputs = load_videos(todo, plan)

    prompt = calibration = None
    if config.align.prompt_mode == "run":
        prompt = inputs | "RunPrompt" >> RunPromptValue(config.align, restored.histograms)
    if config.align.method == "posterior":
        inputs = inputs | "Evidence" >> AttachEvidence(config.align)
        pool = inputs | "DecoyPool" >> DecoyPool(restored.decoys)
        calibration = inputs | "RunCalibration" >> RunCalibration(config.align, pool, restored.calibrations,
                                                                  plan.checkpoint_to)
    fresh = inputs | "Realign" >> Realign(config.align, provenance(config), config.clips, prompt,
                                          plan.checkpoint_to, calibration, config.decode)
    results = with_restored(fresh, restored)

    n_kept = results[SAMPLES] | "SamplesPerVideo" >> beam.Map(len) | "CountKept" >> beam.CombineGlobally(sum)
    n_shards = n_kept | "ShardCount" >> beam.Map(shard_count, out.samples_per_shard, out.min_shards)
    shards = results[SAMPLES] | "WriteShards" >> WriteShards(plan.output, out.layout, config.seed, n_shards)
    index = results["rows"] | "WriteIndex" >> WriteIndex(plan.output, out.index_files, out.layout, config.seed,
                                                        n_shards)
    failures = (manifest[FAILURES], results[FAILURES]) | "AllFailures" >> beam.Flatten()
    stats = results[OUTCOMES] | "Stats" >> beam.CombineGlobally(SumCounts())
    run_inputs.update(stats=stats, manifest_rows=manifest["rows"], shards=shards, index_files=index,
                      failures=failures)
    if prompt is not None:
        run_inputs["prompt_value"] = prompt
    if calibration is not None:
        run_inputs["calibration"] = calibration
    _ = p | "Finalize" >> Finalize(plan.records(), **run_inputs)
