"""``nccurate inspect`` and ``nccurate report``: tools on a finished output."""

from __future__ import annotations

import click


@click.command("inspect")
@click.argument("output", metavar="OUT")
def inspect_cmd(output):
    """Counts, outcomes by reason, failure classes with examples, score histograms and sample
    captions of the finished run in OUT."""
    from pipeline.tools.inspect import inspect_text

    click.echo(inspect_text(output))


@click.command("report")
@click.argument("output", metavar="OUT")
@click.option("--videos", default=8, show_default=True, help="Videos that get a page (the first N by video_id).")
@click.option("--to", "to", default=None, help="Report folder (default: OUT/report); an earlier report there is replaced.")
def report_cmd(output, videos, to):
    """Static HTML report of the run in OUT: summary, score histograms, per-video alignment
    pictures and clip thumbnails. Opens from disk; nothing is fetched."""
    from pipeline.tools.report import build_report

    click.echo(f"report: {build_report(output, videos, to)}")
