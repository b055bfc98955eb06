"""The ``nccurate`` command line (click). No logic here: parse, call, print, exit.

Exit status: 0 on success; 2 with a one-line reason on bad config, unreadable manifest,
unusable output or a failure ratio above ``max_failure_ratio``.
"""

from __future__ import annotations

import logging
import os
import sys

import click

RUNNERS = "DirectRunner|DataflowRunner|SparkRunner|FlinkRunner|DaskRunner|..."


def _fail(message: str) -> None:
    click.echo(f"nccurate: error: {message}", err=True)
    sys.exit(2)


def _reason(exc: Exception) -> str:
    """One line for an error from a library call: an OSError names its file."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(str(exc).split())


def _config(config_path, overrides):
    from pipeline.config import ConfigError, load_config

    try:
        return load_config(config_path, overrides)
    except ConfigError as exc:
        _fail(str(exc))


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that optional GCP client libraries are missing; not our users' concern."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


class _OneLineError(click.ClickException):
    """An error shown as one ``nccurate: error:`` line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"nccurate: error: {self.message}", err=True)


class _OneLineErrors(click.Group):
    """Every command's usage errors (click shows three lines: usage, a hint, the error) and
    file errors (an OSError naming its file, which would be a traceback) as one line, exit 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise _OneLineError(_reason(exc)) from None


def _one_line(exc: click.UsageError) -> click.ClickException:
    """``exc`` as a :class:`_OneLineError` that names the command; the help a bare group shows
    (``nccurate bench``) stays as it is."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc
    path = exc.ctx.command_path if exc.ctx is not None else "nccurate"
    return _OneLineError(f"{path}: {exc.format_message().rstrip('.')} (see '{path} --help')")


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """nccurate: curate noisy narrated video–text data (realign, filter, weight, shard)."""
    logging.getLogger().addFilter(_DropBeamImportNoise())


_config_options = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="YAML config (default: the package's configs/default.yaml)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a dotted config key, e.g. --set align.eps=0.05 (repeatable)."),
]


def config_options(fn):
    for option in reversed(_config_options):
        fn = option(fn)
    return fn


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--manifest", required=True, help="JSON Lines manifest, one video per line (see README).")
@click.option("--output", required=True, help="Output directory: new or empty; one holding an unfinished run of "
              "the same manifest and config resumes it; one holding that run finished is left as is.")
@config_options
@click.option("--runner", default=None, help=f"Beam runner: {RUNNERS} (default: the config's beam.runner, "
              "else DirectRunner).")
@click.option("--overwrite", is_flag=True, help="Replace nccurate outputs (finished or not) already in --output.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def run(ctx, manifest, output, config_path, overrides, runner, overwrite, quiet):
    """Curate the videos of the --manifest into --output.

    Options not listed below go to Apache Beam as pipeline options (e.g.
    --direct_num_workers=2, --direct_running_mode=multi_processing, Dataflow, Spark or Flink
    flags), after the config's beam: section, so they win over it. One that is not a Beam
    option is an error (Beam itself would drop it).

    Progress goes to stderr: videos done/total, rate, ETA and failures so far, on one line
    rewritten in place on a terminal, else as plain lines (about every 10 s, and at the end).
    Live counts need checkpoints: true (the default); without checkpoints there is a start
    and an end line only. --quiet turns progress off.

    \b
    Config sections (--config FILE, --set KEY=VALUE; see configs/default.yaml):
      top level  max_failure_ratio, decode_timeout_s, seed, checkpoints
      model      open_clip encoder (video mode): name, pretrained, device, ...
      features   feature mode: dim
      decode     video mode: backend, sample_fps
      clips      the media of a sample: format, size, fps
      align      realignment, filtering: method, eps, window_s, min_alignability
      output     layout, samples_per_shard, index_files
      io         retries of input reads: attempts, backoff_s
      beam       Beam pipeline options (runner, project, temp_location, ...)
      resources  the encoder's resource hints, decoder and torch threads

    Exit status: 0 on success; 2 with a one-line reason (a bad config, manifest, output or
    Beam option; counts that do not reconcile; failures above max_failure_ratio)."""
    from pipeline.progress import StreamProgress
    from pipeline.run import RunError, run as run_pipeline

    config = _config(config_path, overrides)
    beam_args = list(ctx.args) + ([f"--runner={runner}"] if runner else [])
    try:
        summary = run_pipeline(manifest, output, config, beam_args, overwrite=overwrite,
                               notify=lambda message: click.echo(message, err=True),
                               progress=None if quiet else StreamProgress())
    except RunError as exc:
        _fail(str(exc))
    click.echo(
        f"videos: {summary['videos_ok']} ok, {summary['videos_failed']} failed of {summary['videos_in']}; "
        f"captions: {summary['captions_kept']} kept of {summary['captions_in']}; "
        f"{summary['samples_written']} samples in {summary['shards']} shard(s) -> {output}")


@main.command()
@click.option("--output", default="nccurate-demo", show_default=True, help="Where inputs and outputs go.")
@click.option("--videos", default=24, show_default=True, type=click.IntRange(min=1), help="Number of synthetic videos.")
@click.option("--seed", default=0, show_default=True)
@click.option("--mode", type=click.Choice(["video", "features"]), default="video", show_default=True,
              help="video: H.264 files + the shipped tiny encoder; features: .npy feature matrices.")
@config_options
def demo(output, videos, seed, mode, config_path, overrides):
    """Make a synthetic narrated corpus, curate it end to end, and score it against its truth.
    Rerunning replaces the previous demo's outputs in OUTPUT."""
    from pipeline.demo import demo as run_demo
    from pipeline.run import RunError

    if os.path.exists(output) and not os.path.isdir(output):
        _fail(f"--output {output}: exists and is not a directory")
    try:
        click.echo(run_demo(output, _config(config_path, overrides), videos, seed, mode))
    except RunError as exc:
        _fail(str(exc))


@main.command("inspect")
@click.argument("output", metavar="OUT")
def inspect_cmd(output):
    """Counts, outcomes by reason, failure classes with examples, score histograms and sample
    captions of the finished run in OUT."""
    from pipeline.tools.inspect import OutputError, inspect_text

    try:
        click.echo(inspect_text(output))
    except OutputError as exc:
        _fail(str(exc))


@main.command("report")
@click.argument("output", metavar="OUT")
@click.option("--videos", default=8, show_default=True, help="Videos that get a page (the first N by video_id).")
@click.option("--to", "to", default=None, help="Report folder (default: OUT/report); an earlier report there is replaced.")
def report_cmd(output, videos, to):
    """Static HTML report of the run in OUT: summary, score histograms, per-video alignment
    pictures and clip thumbnails. Opens from disk; nothing is fetched."""
    from pipeline.tools.inspect import OutputError
    from pipeline.tools.report import build_report

    try:
        click.echo(f"report: {build_report(output, videos, to)}")
    except OutputError as exc:
        _fail(str(exc))


@main.command()
@click.option("--shards", required=True, help="Shard files: a glob such as 'OUT/shards/*.tar' (quote it) or a file.")
@click.option("--output", required=True, help="Where model.pt, checkpoints and metrics.json go.")
@click.option("--model", default="nccurate-tiny", show_default=True, help="open_clip model name.")
@click.option("--pretrained", default=None, help="open_clip tag or checkpoint file to start from (default: random init).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--steps", default=300, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=5e-4, show_default=True)
@click.option("--loss", type=click.Choice(["cali_nce", "norton_clip", "video_paragraph"]), default="cali_nce", show_default=True,
              help="cali_nce: weighted InfoNCE; norton_clip: OT soft targets; video_paragraph: + Norton's video-paragraph OT loss.")
@click.option("--weights", type=click.Choice(["json", "ones"]), default="json", show_default=True,
              help="json: the shards' confidence weights; ones: ignore them.")
@click.option("--frames", "n_frames", default=4, show_default=True, help="Frames per clip.")
@click.option("--heldout-fraction", default=0.1, show_default=True, help="Share of videos held out for R@1/R@5.")
@click.option("--checkpoint-every", default=0, show_default=True, help="Steps between checkpoints (0: final only).")
@click.option("--seed", default=0, show_default=True)
def train(shards, output, model, pretrained, device, steps, batch_size, lr, loss, weights, n_frames,
          heldout_fraction, checkpoint_every, seed):
    """Fine-tune an open_clip model on curated shards (clip, caption, confidence weight)."""
    import glob

    from models.train import TrainConfig, train_on_shards

    urls = sorted(glob.glob(shards))
    if not urls:
        _fail(f"--shards {shards}: no file matches")
    try:
        cfg = TrainConfig(model=model, pretrained=pretrained, device=device, steps=steps, batch_size=batch_size, lr=lr,
                          loss=loss, weights=weights, n_frames=n_frames, heldout_fraction=heldout_fraction,
                          checkpoint_every=checkpoint_every, seed=seed)
        train_on_shards(urls, output, cfg, log=lambda msg: click.echo(msg, err=True))
    except (ValueError, OSError) as exc:
        _fail(_reason(exc))
    click.echo(f"model: {output}/model.pt (open_clip: create_model({model!r}, pretrained=...)); metrics: {output}/metrics.json")


@main.group()
def bench():
    """Benchmarks: commands that print numbers."""


@bench.command("align")
@click.option("--videos", default=40, show_default=True, type=click.IntRange(min=1),
              help="Synthetic videos per world.")
@click.option("--seed", default=0, show_default=True)
@click.option("--manifest", default=None, help="With --truth: a feature-mode manifest of the truth's videos.")
@click.option("--truth", default=None, help="HTM-Align-format truth {vid: [[alignable, start, end, text], ...]}.")
@click.option("--held-out/--no-held-out", default=True, show_default=True,
              help="Also the tables on held-out seeds and on randomly drawn worlds.")
@click.option("--video-world/--no-video-world", default=True, show_default=True,
              help="Also the video demo's world (writes and embeds 24 short videos, ~30 s).")
@config_options
def bench_align(videos, seed, manifest, truth, held_out, video_world, config_path, overrides):
    """Alignment tables (R@1 / ROC-AUC per world): ASR times, argmax, the seed methods, the old
    default and the configured aligner, on the benchmark family of synthetic worlds."""
    from pipeline.bench.align import bench_align as run_bench

    if bool(truth) != bool(manifest):
        _fail("--truth and --manifest go together")
    try:
        click.echo(run_bench(_config(config_path, overrides), videos, seed, manifest, truth, held_out, video_world))
    except (ValueError, OSError) as exc:
        _fail(_reason(exc))


@bench.command("throughput", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--mode", type=click.Choice(["features", "video"]), default="features", show_default=True)
@click.option("--videos", default=None, type=click.IntRange(min=1), help="Videos (default: 500 in feature mode, 4 in video mode).")
@click.option("--seed", default=0, show_default=True, help="Feature mode: the synthetic corpus's seed.")
@click.option("--workdir", default="nccurate-bench-throughput", show_default=True,
              help="Video mode: generated videos (reused by later runs) and outputs.")
@click.option("--duration-s", default=600.0, show_default=True, help="Video mode: length of each video.")
@click.option("--width", default=640, show_default=True)
@click.option("--height", default=360, show_default=True)
@click.option("--fps", default=25.0, show_default=True, help="Video mode: frame rate of the generated video.")
@click.option("--model", default="ViT-B-32", show_default=True, help="Video mode: open_clip model, random init.")
@click.option("--workers", default=2, show_default=True, help="Video mode: DirectRunner workers of the scaling run.")
@config_options
@click.pass_context
def bench_throughput(ctx, mode, videos, seed, workdir, duration_s, width, height, fps, model, workers, config_path,
                     overrides):
    """Per-stage and end-to-end rates as ratios measured in one run (extra options go to Beam in
    feature mode). Video mode: decode vs plain PyAV, encoder images/s, pipeline vs its slowest
    stage, 1 -> N worker scaling, peak RSS."""
    if mode == "video":
        from pipeline.bench.video import bench_throughput_video

        click.echo(bench_throughput_video(config_path, tuple(overrides), workdir, model, videos or 4, duration_s,
                                          width, height, fps, workers, log=lambda msg: click.echo(msg, err=True)))
        return
    from pipeline.bench.align import bench_throughput_features
    from pipeline.config import ConfigError, check_beam_flags
    from pipeline.run import RunError

    config = _config(config_path, overrides)
    try:
        check_beam_flags(ctx.args)  # before the stages are timed, not when the pipeline starts
        click.echo(bench_throughput_features(config, videos or 500, seed, tuple(ctx.args)))
    except (ConfigError, RunError) as exc:
        _fail(str(exc))


@bench.command("train")
@click.option("--output", default="nccurate-bench-train", show_default=True, help="Work directory (corpora, shards).")
@click.option("--train-videos", default=48, show_default=True)
@click.option("--eval-videos", default=12, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated training seeds.")
@click.option("--steps", default=200, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--loss", type=click.Choice(["cali_nce", "norton_clip"]), default="cali_nce", show_default=True)
def bench_train(output, train_videos, eval_videos, seeds, steps, batch_size, loss):
    """Train the same model on (a) raw ASR pairs, (b) curated pairs, (c) curated + weights; held-out R@1."""
    from pipeline.bench.train import bench_train as run_bench

    try:
        seed_list = tuple(int(s) for s in seeds.split(","))
    except ValueError:
        _fail(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    click.echo(run_bench(output, train_videos, eval_videos, seed_list, steps, batch_size,
                         loss, log=lambda msg: click.echo(msg, err=True)))


@bench.command("memory")
@click.option("--workdir", default="nccurate-bench-memory", show_default=True,
              help="Generated video, captions, manifest, outputs and memory.json (an existing video is reused).")
@click.option("--duration-s", default=3600.0, show_default=True, help="Length of the generated video.")
@click.option("--width", default=1280, show_default=True)
@click.option("--height", default=720, show_default=True)
@click.option("--fps", default=25.0, show_default=True, help="Frame rate of the generated video.")
@click.option("--model", default="nccurate-tiny", show_default=True, help="open_clip model name (random init).")
@click.option("--backend", type=click.Choice(["decord", "pyav"]), default="pyav", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="More config overrides for the run.")
@click.option("--interval-s", default=0.2, show_default=True, help="RSS sampling period.")
def bench_memory(workdir, duration_s, width, height, fps, model, backend, overrides, interval_s):
    """Peak RSS of a whole video-mode run (every process) on one long video, against 2 GB."""
    from pipeline.bench.memory import bench_memory as run_bench

    text, _ = run_bench(workdir, duration_s, width, height, fps, model, backend, tuple(overrides), interval_s,
                        log=lambda msg: click.echo(msg, err=True))
    click.echo(text)
