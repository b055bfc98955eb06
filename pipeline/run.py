"""Running the pipeline: check the output directory, run the graph, enforce the failure ratio."""

from __future__ import annotations

import json
import os
import time

from pipeline.config import Config


class RunError(RuntimeError):
    """A one-line, user-facing reason why a run cannot start or did not succeed."""


def prepare_output(output: str, overwrite: bool) -> None:
    """Create ``output``; refuse a non-empty directory unless ``overwrite`` (then clear our files)."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise RunError(f"output {output}: exists and is not a directory")
    if os.path.isdir(output) and os.listdir(output):
        if not overwrite:
            raise RunError(f"output {output}: directory is not empty; choose a new one or pass --overwrite")
        _clear_outputs(output)
    try:
        os.makedirs(output, exist_ok=True)
        probe = os.path.join(output, ".nccurate-write-test")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise RunError(f"output {output}: not writable ({exc.strerror or exc})") from None


def _clear_outputs(output: str) -> None:
    """Remove only what nccurate writes (shards/, index/, failures/, summary.json, shardindex.json)."""
    import shutil

    ours_dirs, ours_files = ("shards", "index", "failures"), ("summary.json", "shardindex.json")
    foreign = sorted(set(os.listdir(output)) - set(ours_dirs) - set(ours_files))
    if foreign:
        raise RunError(f"output {output}: holds files nccurate did not write ({', '.join(foreign[:3])}); refusing to mix them")
    for sub in ours_dirs:
        shutil.rmtree(os.path.join(output, sub), ignore_errors=True)
    for name in ours_files:
        path = os.path.join(output, name)
        if os.path.exists(path):
            os.remove(path)


def check_manifest(manifest: str) -> None:
    if "://" in manifest:
        return  # remote manifests are opened by the runner
    if not os.path.isfile(manifest):
        raise RunError(f"manifest {manifest}: no such file")
    try:
        with open(manifest, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise RunError(f"manifest {manifest}: cannot be read ({exc.strerror or exc})") from None


def manifest_modes(manifest: str) -> set[str]:
    """Which modes the manifest's rows use: a subset of ``{"video", "features"}`` (a cheap scan:
    a row is parsed only when the text ``"video"`` or ``"features"`` occurs in it). The graph
    holds only the branches in use; a row naming neither fails in ``ReadManifest`` anyway."""
    from apache_beam.io.filesystems import FileSystems

    modes: set[str] = set()
    with FileSystems.open(manifest) as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace")
            if '"video"' not in line and '"features"' not in line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a bad row is reported by the pipeline's failures table
            if isinstance(row, dict):
                modes.update(mode for mode in ("video", "features") if row.get(mode) is not None)
            if len(modes) == 2:
                break
    return modes


def check_model(config: Config) -> None:
    """The encoder's name and weights exist (no weights are loaded). Only for runs with
    video-mode rows: in feature mode ``model`` is a provenance label of the user's features."""
    from models.encoder import check_spec
    from pipeline.video import encoder_spec

    try:
        check_spec(encoder_spec(config.model))
    except ValueError as exc:
        raise RunError(f"model: {exc}") from None


def run(manifest: str, output: str, config: Config, beam_args: list[str] | tuple[str, ...] = (),
        overwrite: bool = False) -> dict:
    """Run the whole pipeline; returns ``summary.json``'s content. Raises :class:`RunError` when
    the inputs or output are unusable or the failure ratio exceeds ``max_failure_ratio``."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.graph import build_graph

    check_manifest(manifest)
    modes = manifest_modes(manifest)
    if "video" in modes:
        check_model(config)
    output = os.path.abspath(output)
    prepare_output(output, overwrite)
    started = time.time()
    options = PipelineOptions(list(beam_args))
    with beam.Pipeline(options=options) as p:
        build_graph(p, os.path.abspath(manifest), output, config, started, modes)
    with open(os.path.join(output, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    if summary["failure_ratio"] > config.max_failure_ratio:
        raise RunError(
            f"{summary['videos_failed']} of {summary['videos_in']} videos failed "
            f"(ratio {summary['failure_ratio']:.3f} > max_failure_ratio {config.max_failure_ratio}); "
            f"see {os.path.join(output, 'failures')}")
    return summary
