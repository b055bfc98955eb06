"""Running the pipeline: check the output directory, run the graph, enforce the failure ratio."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from typing import NamedTuple

from pipeline.config import Config
from pipeline.errors import RunError  # noqa: F401 (re-exported)
from pipeline.outputs.layout import OutputLayout
from pipeline.storage import files


FRESH, RESUME, COMPLETE = "fresh", "resume", "complete"


def prepare_output(output: str, identity: dict, overwrite: bool) -> str:
    """Get ``output`` ready for a run of ``identity`` (``pipeline.outputs.checkpoint.run_identity``) and
    say which kind of run it is:

    * ``fresh``: a new or empty directory (or ``overwrite``: nccurate's files there are removed);
    * ``resume``: an unfinished run of the same manifest and configuration left checkpoints in
      ``_work``; its partial final files are removed, the checkpoints kept;
    * ``complete``: a finished run of the same manifest and configuration: nothing to do.

    Raises :class:`RunError` for a directory holding anything else (another run's outputs,
    files nccurate did not write) unless ``overwrite``, and for one that cannot be written."""
    from pipeline.outputs.checkpoint import read_run_identity, write_run_identity

    try:
        if not files.is_uri(output) and os.path.exists(output) and not os.path.isdir(output):
            raise RunError(f"output {output}: exists and is not a directory")
        state = FRESH
        if files.listdir(output):
            state = FRESH if overwrite else _existing_run(output, identity, read_run_identity(output))
            if state == COMPLETE:
                return state
            _clear_outputs(output, keep_work=state == RESUME)
        files.makedirs(output)
        if state == FRESH:
            write_run_identity(output, identity)
    except RunError:
        raise
    except Exception as exc:  # OSError, or an object store refusing (no bucket, no permission)
        raise RunError(f"output {output}: not writable ({' '.join(str(exc).split())[:200] or type(exc).__name__})") from None
    return state


def _existing_run(output: str, identity: dict, unfinished: dict | None) -> str:
    """``complete`` or ``resume`` when ``output`` holds a run of ``identity``; RunError otherwise."""
    layout = OutputLayout(output)
    if files.exists(layout.shardindex) and files.exists(layout.summary):
        summary = json.loads(files.read_bytes(layout.summary))
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
    """Remove what nccurate writes (:meth:`OutputLayout.owned`, ``_work`` unless ``keep_work``);
    refuse a directory that holds anything else, so nothing nccurate did not write is deleted."""
    layout = OutputLayout(output)
    foreign = layout.foreign()
    if foreign:
        raise RunError(f"output {output}: holds files nccurate did not write ({', '.join(foreign[:3])}); refusing to mix them")
    for path in layout.owned(keep_work=keep_work):
        files.rmtree(path)


def check_manifest(manifest: str) -> None:
    if files.is_uri(manifest):
        return  # a remote manifest is checked when scan_manifest reads it
    manifest = files.local(manifest)
    if os.path.isdir(manifest):
        raise RunError(f"manifest {manifest}: is a directory; expected a JSON Lines file, one video per line")
    if not os.path.isfile(manifest):
        raise RunError(f"manifest {manifest}: no such file")
    try:
        with open(manifest, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise RunError(f"manifest {manifest}: cannot be read ({exc.strerror or exc})") from None


class ManifestScan(NamedTuple):
    modes: set[str]  # a subset of {"video", "features"}
    rows: int        # non-blank lines: the run's videos_in
    sha256: str      # of the manifest's bytes (decompressed, as Beam reads it)


def scan_manifest(manifest: str) -> ManifestScan:
    """:func:`_scan_manifest`; RunError naming the manifest when it cannot be opened or read
    (a remote path whose filesystem is not installed, a missing object, ...)."""
    try:
        return _scan_manifest(manifest)
    except RunError:
        raise
    except Exception as exc:  # OSError, ValueError, an object store's error, a filesystem not installed
        raise RunError(f"manifest {manifest}: cannot be read ({' '.join(str(exc).split())})") from None


def _scan_manifest(manifest: str) -> ManifestScan:
    """One pass over the manifest, on the driver: which modes its rows use (a row is parsed only
    when the text ``"video"`` or ``"features"`` occurs in it, and only until both are seen),
    how many rows it has (the progress total) and its sha256 (what checkpoints belong to). The
    graph holds only the branches in use; a row naming neither fails in ``ReadManifest`` anyway.
    RunError for a line that is not UTF-8 (the pipeline could not read it)."""
    modes: set[str] = set()
    rows, digest = 0, hashlib.sha256()
    with files.open_read(manifest) as handle:
        for number, raw in enumerate(handle, 1):
            digest.update(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RunError(f"manifest {manifest}: line {number} is not UTF-8 text (byte {raw[exc.start]:#04x} "
                               f"at column {exc.start + 1}); expected JSON Lines in UTF-8") from None
            rows += bool(line.strip())  # as ReadManifest's NonBlank
            if len(modes) == 2 or ('"video"' not in line and '"features"' not in line):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a bad row is reported by the pipeline's failures table
            if isinstance(row, dict):
                modes.update(mode for mode in ("video", "features") if row.get(mode) is not None)
    return ManifestScan(modes, rows, digest.hexdigest())


def manifest_modes(manifest: str) -> set[str]:
    """:func:`scan_manifest`'s modes."""
    return scan_manifest(manifest).modes


def beam_flags(config: Config, beam_args: list[str]) -> list[str]:
    """The run's Beam flags: the config's ``beam`` section, then the caller's ``beam_args``,
    which win. The caller's must be Beam options with values Beam accepts
    (``pipeline.beam_options.check_beam_flags``; the config's were checked when it was loaded), and
    the runner must be one; a runner Beam knows by its full path only is given by that."""
    from pipeline.beam_options import EXTRA_RUNNERS, beam_args as config_beam_args, check_beam_flags, runner_path
    from pipeline.errors import ConfigError

    try:
        name, source = check_beam_flags(beam_args).runner, "--runner"
        if not name:
            name, source = config.beam.get("runner"), "config beam.runner"
        path = runner_path(name, source) if name else None
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    return config_beam_args(config) + list(beam_args) + ([f"--runner={path}"] if path in EXTRA_RUNNERS else [])


def make_pipeline(flags: list[str]):
    """The Beam pipeline of ``flags``, made before anything is written: Beam checks the options
    for the runner here (a Dataflow run without ``project``, ...); RunError with its reasons."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    try:
        return beam.Pipeline(options=PipelineOptions(flags))
    except ValueError as exc:
        raise RunError(f"Beam options: {' '.join(str(exc).split())}") from None


def check_model(config: Config) -> None:
    """The encoder's name and weights exist (no weights are loaded). Only for runs with
    video-mode rows: in feature mode ``model`` is a provenance label of the user's features."""
    from models.encoder import check_spec, encoder_spec_of

    try:
        check_spec(encoder_spec_of(config.model))
    except ValueError as exc:
        raise RunError(f"model: {exc}") from None


def _raise_if_unreconciled(output: str, required: bool = True) -> dict:
    """``summary.json``'s content; RunError naming every broken identity when it does not
    reconcile, or when it is ``required`` and missing (``{}`` when missing and not required)."""
    data = files.read_bytes_or_none(OutputLayout(output).summary)
    if data is None:
        if required:
            raise RunError(f"output {output}: the run ended without writing summary.json")
        return {}
    summary = json.loads(data)
    if not summary.get("reconciled"):
        raise RunError(f"output {output}: counts do not reconcile, outputs are not trustworthy: "
                       f"{'; '.join(summary.get('problems', []))}")
    return summary


class CheckedInputs(NamedTuple):
    manifest: str  # absolute path, or a remote URL as given
    scan: ManifestScan
    flags: list[str]


def check_inputs(manifest: str, config: Config, beam_args: list[str]) -> CheckedInputs:
    """Everything that can be checked before the output is touched: the manifest is readable
    and has rows, the encoder exists (video-mode rows only), the Beam flags are valid."""
    check_manifest(manifest)
    scan = scan_manifest(manifest)
    if not scan.rows:
        raise RunError(f"manifest {manifest}: has no rows; expected JSON Lines, one video per line (see README)")
    if "video" in scan.modes:
        check_model(config)
    flags = beam_flags(config, beam_args)
    return CheckedInputs(files.absolute(manifest), scan, flags)


@contextlib.contextmanager
def watched(results_dir: str | None, total: int, progress):
    """Reports ``progress`` (None: none) while the block runs, from a :class:`pipeline.progress.ResultPoller`
    on ``results_dir``; yields a dict whose ``"summary"`` the block sets when the run finished,
    so the last line says done (else stopped). Nothing is reported after the block."""
    from pipeline.progress import ResultPoller

    ended: dict = {"summary": None}
    poller = None if progress is None else ResultPoller(results_dir, total, progress)
    if poller is not None:
        poller.start()
    try:
        yield ended
    finally:
        if poller is not None:
            poller.stop(ended["summary"])


def execute(pipeline, plan, videos_in: int, progress=None) -> dict:
    """Run ``plan``'s graph (``pipeline.transforms.graph.RunPlan``) on ``pipeline``, reporting
    ``progress`` of ``videos_in`` videos; ``summary.json``'s content (RunError when it is
    missing or does not reconcile)."""
    from pipeline.transforms.graph import build_graph

    results_dir = OutputLayout(plan.output).results_dir if plan.config.checkpoints else None
    with watched(results_dir, videos_in, progress) as ended:
        try:
            with pipeline as p:
                build_graph(p, plan)
        except Exception:
            _raise_if_unreconciled(plan.output, required=False)  # Finalize's AccountingError arrives wrapped by the runner
            raise
        ended["summary"] = _raise_if_unreconciled(plan.output)
    return ended["summary"]


def enforce_failure_ratio(summary: dict, output: str, max_failure_ratio: float) -> None:
    """RunError when more than ``max_failure_ratio`` of the videos failed."""
    if summary["failure_ratio"] > max_failure_ratio:
        raise RunError(
            f"{summary['videos_failed']} of {summary['videos_in']} videos failed "
            f"(ratio {summary['failure_ratio']:.3f} > max_failure_ratio {max_failure_ratio}); "
            f"see {OutputLayout(output).failures_dir}")


def run(manifest: str, output: str, config: Config, beam_args: list[str] | tuple[str, ...] = (),
        overwrite: bool = False, notify=None, progress=None) -> dict:
    """Run the whole pipeline; returns ``summary.json``'s content. When ``output`` already holds
    this very run (same manifest bytes and configuration) nothing is run; when it holds an
    unfinished attempt of it, the run resumes from its checkpoints; ``notify(message)`` (e.g.
    the CLI's stderr) hears which. ``progress``: None, or a callable that gets a
    ``pipeline.progress.Progress`` at the start, as videos finish (seen through their result
    checkpoints, so only with ``checkpoints: true``) and at the end, never after this returns.
    Raises :class:`RunError` when the inputs or output are unusable, the counts do not
    reconcile, or the failure ratio exceeds ``max_failure_ratio``."""
    from pipeline.outputs.checkpoint import remove_work, run_identity
    from pipeline.transforms.graph import RunPlan

    checked = check_inputs(manifest, config, list(beam_args))
    pipeline = make_pipeline(checked.flags)
    output = files.absolute(output)
    identity = run_identity(checked.scan.sha256, config.hash())
    state = prepare_output(output, identity, overwrite)
    if notify is not None and state != FRESH:
        notify(f"output {output}: already holds this run (same manifest and configuration); nothing to do"
               if state == COMPLETE else
               f"output {output}: resuming an unfinished run of this manifest and configuration from its checkpoints")
    if state == COMPLETE:
        summary = _raise_if_unreconciled(output)
    else:
        plan = RunPlan(checked.manifest, output, config, time.time(), frozenset(checked.scan.modes),
                       checked.scan.sha256, resume=state == RESUME)
        summary = execute(pipeline, plan, checked.scan.rows, progress)
    remove_work(output)
    enforce_failure_ratio(summary, output, config.max_failure_ratio)
    return summary
