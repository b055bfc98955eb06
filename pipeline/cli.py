"""The ``nccurate`` command line (click). No logic here: parse, call, print, exit.

Exit status: 0 on success; 2 with a one-line reason on bad config, unreadable manifest,
unusable output or a failure ratio above ``max_failure_ratio``.
"""

from __future__ import annotations

import logging
import sys

import click

RUNNERS = "DirectRunner|DataflowRunner|SparkRunner|FlinkRunner|DaskRunner|..."


def _fail(message: str) -> None:
    click.echo(f"nccurate: error: {message}", err=True)
    sys.exit(2)


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--output", required=True, help="Output directory (must be new or empty).")
@config_options
@click.option("--runner", default=None, help=f"Beam runner: {RUNNERS} (default DirectRunner).")
@click.option("--overwrite", is_flag=True, help="Replace nccurate outputs already in --output.")
@click.pass_context
def run(ctx, manifest, output, config_path, overrides, runner, overwrite):
    """Curate the videos of MANIFEST into OUTPUT. Unknown options (e.g.
    --direct_num_workers=2, --direct_running_mode=multi_processing, Dataflow flags) go to Beam."""
    from pipeline.run import RunError, run as run_pipeline

    config = _config(config_path, overrides)
    beam_args = list(ctx.args) + ([f"--runner={runner}"] if runner else [])
    try:
        summary = run_pipeline(manifest, output, config, beam_args, overwrite=overwrite)
    except RunError as exc:
        _fail(str(exc))
    click.echo(
        f"videos: {summary['videos_ok']} ok, {summary['videos_failed']} failed of {summary['videos_in']}; "
        f"captions: {summary['captions_kept']} kept of {summary['captions_in']}; "
        f"{summary['samples_written']} samples in {summary['shards']} shard(s) -> {output}")


@main.command()
@click.option("--output", default="nccurate-demo", show_default=True, help="Where inputs and outputs go.")
@click.option("--videos", default=24, show_default=True, help="Number of synthetic videos.")
@click.option("--seed", default=0, show_default=True)
@click.option("--mode", type=click.Choice(["video", "features"]), default="video", show_default=True,
              help="video: H.264 files + the shipped tiny encoder; features: .npy feature matrices.")
@config_options
def demo(output, videos, seed, mode, config_path, overrides):
    """Make a synthetic narrated corpus, curate it end to end, and score it against its truth.
    Rerunning replaces the previous demo's outputs in OUTPUT."""
    from pipeline.demo import demo as run_demo
    from pipeline.run import RunError

    try:
        click.echo(run_demo(output, _config(config_path, overrides), videos, seed, mode))
    except RunError as exc:
        _fail(str(exc))


@main.group()
def bench():
    """Benchmarks: commands that print numbers."""


@bench.command("align")
@click.option("--videos", default=100, show_default=True, help="Synthetic videos to score.")
@click.option("--seed", default=0, show_default=True)
@click.option("--manifest", default=None, help="With --truth: a feature-mode manifest of the truth's videos.")
@click.option("--truth", default=None, help="HTM-Align-format truth {vid: [[alignable, start, end, text], ...]}.")
@config_options
def bench_align(videos, seed, manifest, truth, config_path, overrides):
    """Alignment table (R@1, ROC-AUC): baselines and Norton/S2DTW/NCL variants."""
    from pipeline.bench import bench_align as run_bench

    if bool(truth) != bool(manifest):
        _fail("--truth and --manifest go together")
    try:
        click.echo(run_bench(_config(config_path, overrides), videos, seed, manifest, truth))
    except (ValueError, OSError) as exc:
        _fail(" ".join(str(exc).split()))


@bench.command("throughput", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--mode", type=click.Choice(["features"]), default="features", show_default=True)
@click.option("--videos", default=500, show_default=True)
@click.option("--seed", default=0, show_default=True)
@config_options
@click.pass_context
def bench_throughput(ctx, mode, videos, seed, config_path, overrides):
    """Videos/s per stage and end to end on HowTo100M-sized inputs (extra options go to Beam)."""
    from pipeline.bench import bench_throughput_features

    click.echo(bench_throughput_features(_config(config_path, overrides), videos, seed, tuple(ctx.args)))


if __name__ == "__main__":
    main()
