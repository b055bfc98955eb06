"""Running the pipeline: check the output directory, run the graph, enforce the failure ratio."""

from __future__ import annotations

import json
import os
import time

from pipeline.config import Config


class RunError(RuntimeError):
    """A one-line, user-facing reason why a run cannot start or did not succeed."""


#: What nccurate writes into an output directory; anything else there is the user's.
OUTPUT_DIRS, OUTPUT_FILES = ("shards", "index", "failures"), ("summary.json", "shardindex.json")
FRESH, RESUME, COMPLETE = "fresh", "resume", "complete"


def prepare_output(output: str, identity: dict, overwrite: bool) -> str:
    """Get ``output`` ready for a run of ``identity`` (``pipeline.checkpoint.run_identity``) and
    say which kind of run it is:

    * ``fresh``: a new or empty directory (or ``overwrite``: nccurate's files there are removed);
    * ``resume``: an unfinished run of the same manifest and configuration left checkpoints in
      ``_work``; its partial final files are removed, the checkpoints kept;
    * ``complete``: a finished run of the same manifest and configuration: nothing to do.

    Raises :class:`RunError` for a directory holding anything else (another run's outputs,
    files nccurate did not write) unless ``overwrite``, and for one that cannot be written."""
    from pipeline.checkpoint import read_run_identity, write_run_identity

    if os.path.exists(output) and not os.path.isdir(output):
        raise RunError(f"output {output}: exists and is not a directory")
    state = FRESH
    if os.path.isdir(output) and os.listdir(output):
        state = FRESH if overwrite else _existing_run(output, identity, read_run_identity(output))
        if state == COMPLETE:
            return state
        _clear_outputs(output, keep_work=state == RESUME)
    try:
        os.makedirs(output, exist_ok=True)
        if state == FRESH:
            write_run_identity(output, identity)
    except OSError as exc:
        raise RunError(f"output {output}: not writable ({exc.strerror or exc})") from None
    return state


def _existing_run(output: str, identity: dict, unfinished: dict | None) -> str:
    """``complete`` or ``resume`` when ``output`` holds a run of ``identity``; RunError otherwise."""
    summary_path = os.path.join(output, "summary.json")
    if os.path.exists(os.path.join(output, "shardindex.json")) and os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
        done = {key: summary.get(key) for key in ("manifest_sha256", "config_hash")}
        if done == {key: identity[key] for key in done}:
            return COMPLETE
        raise RunError(f"output {output}: holds a completed run of another manifest or configuration "
                       f"(config_hash {done['config_hash']}, this run {identity['config_hash']}); "
                       "choose a new --output or pass --overwrite to replace it")
    if unfinished is None:
        raise RunError(f"output {output}: directory is not empty; choose a new one or pass --overwrite")
    if unfinished != identity:
        raise RunError(f"output {output}: holds an unfinished run of another manifest, configuration or nccurate "
                       f"version ({unfinished}); rerun that one to finish it, or pass --overwrite to discard it")
    return RESUME


def _clear_outputs(output: str, keep_work: bool) -> None:
    """Remove what nccurate writes (``OUTPUT_DIRS``, ``OUTPUT_FILES``, and ``_work`` unless
    ``keep_work``); refuse a directory that holds anything else."""
    import shutil

    from pipeline.checkpoint import WORK_DIR

    foreign = sorted(set(os.listdir(output)) - set(OUTPUT_DIRS) - set(OUTPUT_FILES) - {WORK_DIR})
    if foreign:
        raise RunError(f"output {output}: holds files nccurate did not write ({', '.join(foreign[:3])}); refusing to mix them")
    for sub in OUTPUT_DIRS + (() if keep_work else (WORK_DIR,)):
        shutil.rmtree(os.path.join(output, sub), ignore_errors=True)
    for name in OUTPUT_FILES:
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


def _raise_if_unreconciled(output: str, required: bool = True) -> dict:
    """``summary.json``'s content; RunError naming every broken identity when it does not
    reconcile, or when it is ``required`` and missing (``{}`` when missing and not required)."""
    path = os.path.join(output, "summary.json")
    if not os.path.exists(path):
        if required:
            raise RunError(f"output {output}: the run ended without writing summary.json")
        return {}
    with open(path, encoding="utf-8") as handle:
        summary = json.load(handle)
    if not summary.get("reconciled"):
        raise RunError(f"output {output}: counts do not reconcile, outputs are not trustworthy: "
                       f"{'; '.join(summary.get('problems', []))}")
    return summary


def run(manifest: str, output: str, config: Config, beam_args: list[str] | tuple[str, ...] = (),
        overwrite: bool = False, notify=None) -> dict:
    """Run the whole pipeline; returns ``summary.json``'s content. When ``output`` already holds
    this very run (same manifest bytes and configuration) nothing is run; when it holds an
    unfinished attempt of it, the run resumes from its checkpoints; ``notify(message)`` (e.g.
    the CLI's stderr) hears which. Raises :class:`RunError` when the inputs or output are
    unusable, the counts do not reconcile, or the failure ratio exceeds ``max_failure_ratio``."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.checkpoint import file_sha256, remove_work, run_identity
    from pipeline.config import beam_args as config_beam_args
    from pipeline.graph import build_graph
    check_manifest(manifest)
    modes = manifest_modes(manifest)
    if "video" in modes:
        check_model(config)
    output = os.path.abspath(output)
    identity = run_identity(file_sha256(manifest), config.hash())
    state = prepare_output(output, identity, overwrite)
    if notify is not None and state != FRESH:
        notify(f"output {output}: already holds this run (same manifest and configuration); nothing to do"
               if state == COMPLETE else
               f"output {output}: resuming an unfinished run of this manifest and configuration from its checkpoints")
    if state != COMPLETE:
        options = PipelineOptions(config_beam_args(config) + list(beam_args))  # the caller's flags come last and win
        try:
            with beam.Pipeline(options=options) as p:
                build_graph(p, os.path.abspath(manifest), output, config, time.time(), modes,
                            identity["manifest_sha256"], resume=state == RESUME)
        except Exception:
            _raise_if_unreconciled(output, required=False)  # Finalize's AccountingError arrives wrapped by the runner
            raise
    summary = _raise_if_unreconciled(output)
    remove_work(output)
    if summary["failure_ratio"] > config.max_failure_ratio:
        raise RunError(
            f"{summary['videos_failed']} of {summary['videos_in']} videos failed "
            f"(ratio {summary['failure_ratio']:.3f} > max_failure_ratio {config.max_failure_ratio}); "
            f"see {os.path.join(output, 'failures')}")
    return summary
