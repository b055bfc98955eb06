"""The whole Beam graph, assembled in one function so every runner gets the same graph."""

from __future__ import annotations

import apache_beam as beam

from pipeline.config import Config
from pipeline.sinks import Finalize, WriteIndex, WriteShards, shard_count
from pipeline.summary import RunRecords
from pipeline.video import LoadVideoInputs
from pipeline.transforms import FAILURES, OUTCOMES, SAMPLES, LoadInputs, ReadManifest, Realign, RunPromptValue, SumCounts


def provenance(config: Config) -> dict:
    """Fields every sample's json carries besides its own scores."""
    from pipeline.rows import PIPELINE_VERSION

    return {"model": config.model.name, "pretrained": config.model.pretrained,
            "method": config.align.method, "pipeline_version": PIPELINE_VERSION,
            "config_hash": config.hash()}


def build_graph(p: beam.Pipeline, manifest: str, output: str, config: Config, started_at: float,
                modes: set[str] = frozenset({"video", "features"})) -> None:
    """manifest -> load (feature mode: .npy + captions; video mode: decode + embed frames,
    parse + embed captions, join) -> Realign (+ clips) -> index, shards, run records.

    ``modes``: the branches to build (``pipeline.run.manifest_modes``); a manifest of one mode
    gets a graph without the other's stages, whose fixed cost is real on the DirectRunner."""
    manifest_out = p | "ReadManifest" >> ReadManifest(manifest)
    refs = manifest_out["refs"] | "Reshuffle" >> beam.Reshuffle()
    want_video, want_features = "video" in modes, "features" in modes or not modes
    if want_video and want_features:
        feature_refs, video_refs = refs | "ByMode" >> beam.Partition(lambda ref, _: int(ref.video is not None), 2)
    else:
        feature_refs = video_refs = refs
    loaded = []
    if want_features:
        loaded.append(feature_refs | "LoadInputs" >> LoadInputs(config.features.dim))
    if want_video:
        loaded.append(video_refs | "LoadVideoInputs" >> LoadVideoInputs(config))
    inputs = [branch["ok"] for branch in loaded] | "AllInputs" >> beam.Flatten()
    prompt = inputs | "RunPrompt" >> RunPromptValue(config.align) if config.align.prompt_mode == "run" else None
    realigned = inputs | "Realign" >> Realign(config.align, provenance(config), config.clips, prompt)

    n_kept = realigned[SAMPLES] | "SamplesPerVideo" >> beam.Map(len) | "CountKept" >> beam.CombineGlobally(sum)
    n_shards = n_kept | "ShardCount" >> beam.Map(shard_count, config.output.samples_per_shard)
    out = config.output
    shards = realigned[SAMPLES] | "WriteShards" >> WriteShards(output, out.layout, config.seed, n_shards)
    index = realigned["rows"] | "WriteIndex" >> WriteIndex(output, out.index_files, out.layout, config.seed, n_shards)
    failures = ((manifest_out[FAILURES], *(branch[FAILURES] for branch in loaded), realigned[FAILURES])
                | "AllFailures" >> beam.Flatten())
    stats = realigned[OUTCOMES] | "Stats" >> beam.CombineGlobally(SumCounts())
    sides = {"stats": stats, "manifest_rows": manifest_out["rows"], "shards": shards,
             "index_files": index, "failures": failures}
    if prompt is not None:
        sides["prompt_value"] = prompt
    records = RunRecords(output, manifest, config.to_dict(), config.hash(), started_at)
    _ = p | "Finalize" >> Finalize(records, **sides)
