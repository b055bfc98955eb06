"""``nccurate run`` and ``nccurate demo``."""

from __future__ import annotations

import click

from pipeline.cli.options import config_options

RUNNERS = "DirectRunner|DataflowRunner|SparkRunner|FlinkRunner|DaskRunner|..."


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--manifest", required=True, help="JSON Lines manifest, one video per line (see README).")
@click.option("--output", required=True, help="Output directory: new or empty; one holding an unfinished run of "
              "the same manifest and config resumes it; one holding that run finished is left as is.")
@config_options
@click.option("--runner", default=None, help=f"Beam runner: {RUNNERS} (default: the config's beam.runner, "
              "else DirectRunner).")
@click.option("--overwrite", is_flag=True, help="Replace nccurate outputs (finished or not) already in --output.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@click.pass_context
def run(ctx, manifest, output, config, runner, overwrite, quiet):
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
      captions   rows without a captions file: when_missing (auto, embedded, asr), languages
      asr        speech recognition: model, device, compute_type, language, timeout_s
      align      realignment, filtering: method, eps, window_s, min_alignability
      output     layout, samples_per_shard, min_shards, index_files
      io         retries of input reads: attempts, backoff_s
      beam       Beam pipeline options (runner, project, temp_location, ...)
      resources  the encoder's resource hints, decoder and torch threads

    Exit status: 0 on success; 2 with a one-line reason (a bad config, manifest, output or
    Beam option; counts that do not reconcile; failures above max_failure_ratio)."""
    from pipeline.progress import StreamProgress
    from pipeline.run import run as run_pipeline

    beam_args = list(ctx.args) + ([f"--runner={runner}"] if runner else [])
    summary = run_pipeline(manifest, output, config, beam_args, overwrite=overwrite,
                           notify=lambda message: click.echo(message, err=True),
                           progress=None if quiet else StreamProgress())
    click.echo(
        f"videos: {summary['videos_ok']} ok, {summary['videos_failed']} failed of {summary['videos_in']}; "
        f"captions: {summary['captions_kept']} kept of {summary['captions_in']}; "
        f"{summary['samples_written']} samples in {summary['shards']} shard(s) -> {output}")


@click.command()
@click.option("--output", default="nccurate-demo", show_default=True, help="Where inputs and outputs go.")
@click.option("--videos", default=24, show_default=True, type=click.IntRange(min=1), help="Number of synthetic videos.")
@click.option("--seed", default=0, show_default=True)
@click.option("--mode", type=click.Choice(["video", "features"]), default="video", show_default=True,
              help="video: H.264 files + the shipped tiny encoder; features: .npy feature matrices.")
@config_options
def demo(output, videos, seed, mode, config):
    """Make a synthetic narrated corpus, curate it end to end, and score it against its truth.
    Rerunning replaces the previous demo's outputs in OUTPUT."""
    from pipeline.demo import demo as run_demo

    click.echo(run_demo(output, config, videos, seed, mode))
