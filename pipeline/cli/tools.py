"""``nccurate inspect``, ``nccurate report`` and ``nccurate manifest``: tools on a finished output, and
the manifest a run reads."""

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


@click.command("manifest")
@click.argument("source", metavar="SOURCE")
@click.option("-o", "--output", "manifest", required=True, metavar="MANIFEST",
              help="The manifest to write (JSON Lines; local or a URI).")
@click.option("--table", metavar="FILE", default=None,
              help="A caption table (HowTo100M caption.json, .jsonl or .parquet keyed by video_id) for the "
                   "videos without a sidecar captions file; its entries are converted into --captions-dir.")
@click.option("--captions-dir", metavar="DIR", default=None,
              help="Where --table entries are written as <video_id>.json (default: <manifest folder>/captions).")
@click.option("--features", metavar="DIR", default=None,
              help="Feature mode: a folder of <stem>.npy frame features; SOURCE holds the captions.")
@click.option("--fps", type=float, default=None, help="Feature mode: frames per second of the features.")
@click.option("--caption-features", metavar="DIR", default=None,
              help="A folder of <stem>.npy caption features (required in feature mode).")
@click.option("--no-asr", is_flag=True,
              help="Leave out (and report) videos with no captions file and no subtitle track instead of "
                   "asking for speech recognition.")
@click.option("--overwrite", is_flag=True, help="Replace an existing manifest.")
def manifest_cmd(source, manifest, table, captions_dir, features, fps, caption_features, no_asr, overwrite):
    """Write a manifest for the videos under SOURCE (a folder or bucket prefix), each with its
    captions: a sidecar file, a --table entry, its text subtitle track, else speech recognition."""
    from pipeline.tools.manifest import build_manifest

    click.echo(build_manifest(source, manifest, table=table, captions_dir=captions_dir, features=features, fps=fps,
                              caption_features=caption_features, no_asr=no_asr, overwrite=overwrite).text())
