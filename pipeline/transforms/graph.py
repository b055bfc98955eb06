"""The whole Beam graph, assembled in one function so every runner gets the same graph."""

from __future__ import annotations

import apache_beam as beam

from pipeline.config import Config
from pipeline.transforms.write import Finalize, WriteIndex, WriteShards, shard_count
from pipeline.outputs.summary import RunRecords
from pipeline.transforms.video import LoadVideoInputs
from pipeline.transforms.core import (CALIBRATIONS, DECOYS, FAILURES, HISTOGRAMS, OUTCOMES, SAMPLES, AttachEvidence,
                                 DecoyPool, LoadInputs, ReadManifest, Realign, Resume, RunCalibration, RunPromptValue,
                                 SumCounts)


def provenance(config: Config) -> dict:
    """Fields every sample's json carries besides its own scores."""
    from pipeline.results import PIPELINE_VERSION

    return {"model": config.model.name, "pretrained": config.model.pretrained,
            "method": config.align.method, "pipeline_version": PIPELINE_VERSION,
            "config_hash": config.hash()}


def build_graph(p: beam.Pipeline, manifest: str, output: str, config: Config, started_at: float,
                modes: set[str] = frozenset({"video", "features"}), manifest_sha256: str | None = None,
                resume: bool = False) -> None:
    """manifest -> [resume: videos an earlier attempt finished come from their checkpoints] ->
    load (feature mode: .npy + captions; video mode: decode + embed frames, parse + embed
    captions, join) -> Realign (+ clips, checkpointed) -> index, shards, run records.

    ``modes``: the branches to build (``pipeline.run.manifest_modes``); a manifest of one mode
    gets a graph without the other's stages, whose fixed cost is real on the DirectRunner.
    ``resume``: ``output`` holds an unfinished attempt of this run; only then does the graph
    hold the stages that look for its checkpoints (a fresh run has none to find)."""
    manifest_out = p | "ReadManifest" >> ReadManifest(manifest)
    refs = manifest_out["refs"] | "Reshuffle" >> beam.Reshuffle()
    resumed = refs | "Resume" >> Resume(output, config.align.method == "posterior") if resume else None
    todo = resumed["todo"] if resume else refs
    work = output if config.checkpoints else None  # where LoadVideoInputs and Realign checkpoint
    want_video, want_features = "video" in modes, "features" in modes or not modes
    if want_video and want_features:
        # two filters, not beam.Partition: a multi-output ParDo, whose outputs the DaskRunner mixes
        feature_refs = todo | "FeatureRows" >> beam.Filter(lambda ref: ref.video is None)
        video_refs = todo | "VideoRows" >> beam.Filter(lambda ref: ref.video is not None)
    else:
        feature_refs = video_refs = todo
    loaded, sides = [], {}
    if want_features:
        loaded.append(feature_refs | "LoadInputs" >> LoadInputs(config.features.dim, config.io))
    if want_video:
        video = video_refs | "LoadVideoInputs" >> LoadVideoInputs(config, work, output if resume else None)
        loaded.append(video.pop("ok"))
        sides.update(video)  # decodes_resumed, when resuming
    inputs = loaded | "AllInputs" >> beam.Flatten()
    prompt = None
    if config.align.prompt_mode == "run":
        prompt = inputs | "RunPrompt" >> RunPromptValue(config.align, resumed[HISTOGRAMS] if resume else None)
    calibration = pool = None
    if config.align.method == "posterior":
        inputs = inputs | "Evidence" >> AttachEvidence(config.align)
        pool = inputs | "DecoyPool" >> DecoyPool(resumed[DECOYS] if resume else None)
        calibration = inputs | "RunCalibration" >> RunCalibration(config.align, pool,
                                                                  resumed[CALIBRATIONS] if resume else None, work)
    fresh = inputs | "Realign" >> Realign(config.align, provenance(config), config.clips, prompt, work, calibration)

    def merged(tag: str, label: str):
        """Realign's output ``tag``, with the restored results' when resuming."""
        return (fresh[tag], resumed[tag]) | label >> beam.Flatten() if resume else fresh[tag]

    samples, rows = merged(SAMPLES, "AllSamples"), merged("rows", "AllRows")
    n_kept = samples | "SamplesPerVideo" >> beam.Map(len) | "CountKept" >> beam.CombineGlobally(sum)
    n_shards = n_kept | "ShardCount" >> beam.Map(shard_count, config.output.samples_per_shard)
    out = config.output
    shards = samples | "WriteShards" >> WriteShards(output, out.layout, config.seed, n_shards)
    index = rows | "WriteIndex" >> WriteIndex(output, out.index_files, out.layout, config.seed, n_shards)
    failures = (manifest_out[FAILURES], merged(FAILURES, "RealignFailures")) | "AllFailures" >> beam.Flatten()
    stats = merged(OUTCOMES, "AllOutcomes") | "Stats" >> beam.CombineGlobally(SumCounts())
    sides.update(stats=stats, manifest_rows=manifest_out["rows"], shards=shards, index_files=index, failures=failures)
    if prompt is not None:
        sides["prompt_value"] = prompt
    if calibration is not None:
        sides["calibration"] = calibration
    records = RunRecords(output, manifest, manifest_sha256, config.to_dict(), config.hash(), started_at)
    _ = p | "Finalize" >> Finalize(records, **sides)
