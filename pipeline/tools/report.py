"""``nccurate report OUT``: a static HTML report of a finished run, one folder that opens from
disk (relative links only, no script, nothing fetched).

::

    DIR/index.html                 the run's summary, failure classes, score histograms, video list
    DIR/alignability.png, weight.png, shift.png
    DIR/videos/<video_id>.html     one page a video (the first N by video_id)
    DIR/videos/<video_id>/alignment.png, thumb_<caption_idx>.jpg

The pages are jinja2 templates (``pipeline/tools/templates/``) rendered with autoescaping, so
every value (caption text above all) is escaped by construction. This module gathers what a
page shows into plain values; :mod:`pipeline.tools.plots` draws the pictures,
:mod:`pipeline.tools.similarity` recomputes the similarity matrix from the run's inputs (a video
whose inputs are gone or changed gets a page that says so) and :mod:`pipeline.tools.thumbnails`
reads the kept clips from the shards.
"""

from __future__ import annotations

import os
import shutil
from functools import lru_cache
from urllib.parse import quote

from curation.report_data import bucket_mass_threshold
from pipeline.errors import OutputError
from pipeline.storage import files
from pipeline.storage.atomic import write_bytes_atomic
from pipeline.tools.plots import alignment_png, score_histograms
from pipeline.tools.read import RunOutput, failure_examples, outcome_counts, read_run
from pipeline.tools.similarity import SimilarityMatrices
from pipeline.tools.thumbnails import thumbnails

#: The ``<meta name="generator">`` of every page; a folder whose index.html has it is a report.
GENERATOR = "nccurate report"


def build_report(output: str, n_videos: int = 8, to: str | None = None) -> str:
    """Write the report of ``output`` into ``to`` (default ``output/report``), replacing an
    earlier report there; returns the path of its ``index.html``. :class:`OutputError` when
    ``output`` is not a finished run or ``to`` holds something else than a report. Either may be
    a URI: a remote report is written to a local folder first, then uploaded file by file."""
    run = read_run(output)
    dest = files.absolute(to or run.layout.report_dir)
    if not files.is_uri(dest):
        _fresh_dir(dest)
        return _build(run, n_videos, dest)
    import tempfile

    _fresh_remote_dir(dest)
    with tempfile.TemporaryDirectory(prefix="nccurate-report-") as tmp:
        _build(run, n_videos, tmp)
        for folder, _, names in sorted(os.walk(tmp)):
            for name in sorted(names):
                local = os.path.join(folder, name)
                with open(local, "rb") as handle:
                    write_bytes_atomic(files.join(dest, *os.path.relpath(local, tmp).split(os.sep)), handle.read())
    return files.join(dest, "index.html")


def _build(run, n_videos: int, dest: str) -> str:
    """The report of ``run`` in the empty local folder ``dest``; the path of its index.html."""
    import pyarrow.compute as pc

    all_ids = sorted(pc.unique(run.index.column("video_id")).to_pylist())
    video_ids = all_ids[:max(n_videos, 0)]
    rows_by_video = rows_of(run, video_ids)
    histograms = score_histograms(run, dest)
    matrices = SimilarityMatrices(run.summary)
    thumbs = thumbnails(run.layout.shards_dir, [r for v in video_ids for r in rows_by_video[v] if r["kept"]])
    os.makedirs(os.path.join(dest, "videos"), exist_ok=True)
    for i, video_id in enumerate(video_ids):
        page = video_page(dest, video_id, rows_by_video[video_id], run, matrices, thumbs, nav_links(video_ids, i))
        _write(os.path.join(dest, "videos", f"{video_id}.html"), render("video.html", page))
    path = os.path.join(dest, "index.html")
    _write(path, render("index.html", front_page(run, histograms, rows_by_video, len(all_ids))))
    return path


def rows_of(run: RunOutput, video_ids: list[str]) -> dict[str, list[dict]]:
    """video_id -> its index rows in caption order, for ``video_ids`` only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chosen = run.index.filter(pc.is_in(run.index.column("video_id"), value_set=pa.array(video_ids, pa.string())))
    rows_by_video: dict[str, list[dict]] = {video_id: [] for video_id in video_ids}
    for row in sorted(chosen.to_pylist(), key=lambda r: (r["video_id"], r["caption_idx"])):
        rows_by_video[row["video_id"]].append(row)
    return rows_by_video


# -------------------------------------------------------------------------------- page values


def span_text(a, b) -> str:
    """A ``(start_s, end_s)`` span as ``"1.0–4.0"``; empty when there is none."""
    return "" if a is None else f"{a:.1f}–{b:.1f}"


def score_text(value) -> str:
    """A score to three decimals; empty when there is none."""
    return "" if value is None else f"{value:.3f}"


def nav_links(video_ids: list[str], i: int) -> list[tuple[str, str]]:
    """``(label, relative href)`` links at the top of video ``i``'s page: the front page, the
    previous and the next video."""
    return [("report", "../index.html")] + [(f"{label} {video_ids[j]}", f"{quote(video_ids[j])}.html")
                                            for label, j in (("←", i - 1), ("→", i + 1)) if 0 <= j < len(video_ids)]


def summary_rows(run: RunOutput) -> list[tuple[str, object]]:
    """The front page's ``(what, value)`` table: totals, outcomes, the method and the run's provenance."""
    s = run.summary
    cfg = s.get("config", {})
    align, model = cfg.get("align", {}), cfg.get("model", {})
    calibration = s.get("calibration")
    return [
        ("videos", f"{s['videos_in']} in, {s['videos_ok']} ok, {s['videos_failed']} failed"),
        ("captions", f"{s['captions_in']} in, {s['captions_kept']} kept, {sum(s['captions_dropped'].values())} dropped"),
        *((reason if reason == "kept" else f"dropped: {reason}", n) for reason, n in outcome_counts(run).items()),
        ("samples", f"{s['samples_written']} in {s['shards']} shard(s)"),
        ("config hash", s.get("config_hash")),
        ("method", f"{align.get('method')} (prompt {align.get('prompt_mode')}, min alignability "
                   f"{align.get('min_alignability')})"),
        *([("timing, learnt from the run", f"{calibration['description']} (from {calibration['sampled']} captions)")]
          if calibration else []),
        ("model", f"{model.get('name')} ({model.get('pretrained')})"),
        ("manifest", s.get("manifest")),
        ("wall time", f"{s.get('timings', {}).get('wall_s')} s"),
        ("nccurate", s.get("versions", {}).get("nccurate")),
    ]


def front_page(run: RunOutput, histograms: list[tuple[str, str]], rows_by_video: dict[str, list[dict]],
               n_all_videos: int) -> dict:
    """What ``index.html`` shows. ``histograms``: ``(title, png name)``; ``rows_by_video``: the
    reported videos' index rows; ``n_all_videos``: how many videos the index holds."""
    return {
        "title": f"nccurate report {run.path}",
        "run_path": run.path,
        "counts": summary_rows(run),
        "failures": [(cls, n, " | ".join(msgs)) for cls, (n, msgs) in failure_examples(run.failures).items()],
        "histograms": histograms,
        "videos": [{"video_id": v, "href": f"videos/{quote(v)}.html", "kept": sum(r["kept"] for r in rows),
                    "captions": len(rows)} for v, rows in rows_by_video.items()],
        "more": n_all_videos - len(rows_by_video),
    }


def caption_rows(rows: list[dict]) -> list[tuple]:
    """A video page's captions table, one tuple a caption (its columns as the template's header)."""
    return [(r["caption_idx"], span_text(r["asr_start"], r["asr_end"]), span_text(r["start"], r["end"]),
             score_text(r["alignability"]), score_text(r["bucket_mass"]), score_text(r["weight"]),
             "kept" if r["kept"] else r["drop_reason"], r["text"]) for r in rows]


def video_page(dest: str, video_id: str, rows: list[dict], run: RunOutput, matrices: SimilarityMatrices,
               thumbs: dict, nav: list[tuple[str, str]]) -> dict:
    """What one video's page shows; writes its pictures and thumbnails under
    ``dest/videos/<video_id>/``. ``thumbs``: sample key -> PIL image; ``nav``: :func:`nav_links`."""
    folder = os.path.join(dest, "videos", video_id)
    os.makedirs(folder, exist_ok=True)
    rel = quote(video_id)
    realigned = any(r["start"] is not None for r in rows)
    clips = []
    picture = alignment_picture(folder, rel, video_id, rows, run, matrices) if realigned else None
    for r in rows:
        image = thumbs.get(r["key"]) if r["kept"] else None
        if image is not None:
            name = f"thumb_{r['caption_idx']:05d}.jpg"
            image.save(os.path.join(folder, name), format="JPEG", quality=85)
            clips.append({"src": f"{rel}/{name}", "caption_idx": r["caption_idx"], "span": span_text(r["start"], r["end"]),
                          "weight": f"{r['weight']:.2f}", "text": r["text"]})
    return {
        "title": f"{video_id}: nccurate report",
        "video_id": video_id,
        "nav": nav,
        "kept": sum(r["kept"] for r in rows),
        "failures": [(f["stage"], f["error_class"], f["message"]) for f in run.failures if f["video_id"] == video_id],
        "picture": picture,
        "clips": clips,
        "captions": caption_rows(rows),
    }


def alignment_picture(folder: str, rel: str, video_id: str, rows: list[dict], run: RunOutput,
                      matrices: SimilarityMatrices) -> dict:
    """Draw the video's picture (similarity matrix + bucket mass; the bucket mass alone when
    the matrix cannot be recomputed) into ``folder``; returns ``{"src", "alt", "missing"}``,
    ``missing`` being why there is no matrix (empty when there is one)."""
    missing, sim, fps = "", None, 1.0
    try:
        sim, fps = matrices.of(video_id)
        if sim.shape[0] != len(rows):
            raise ValueError(f"its inputs changed since the run: {sim.shape[0]} captions now, {len(rows)} in the index")
    except (ValueError, OSError, RuntimeError) as exc:  # gone, changed or undecodable inputs; a model that won't load
        sim, missing = None, " ".join(str(exc).split())
    align = run.summary.get("config", {}).get("align", {})
    has_bucket = align.get("method") == "norton" and align.get("bucket", True)
    threshold = bucket_mass_threshold(align.get("min_alignability", 0.5)) if has_bucket else None
    name = alignment_png(os.path.join(folder, "alignment.png"), rows, sim, fps, threshold)
    what = "prompt-bucket mass" if sim is None else "similarity matrix and prompt-bucket mass"
    return {"src": f"{rel}/{name}", "alt": f"{what} of {video_id}", "missing": missing}


# ------------------------------------------------------------------------------------- output


@lru_cache(maxsize=1)
def _templates():
    """The report's jinja2 environment: templates from ``pipeline/tools/templates/``, every
    ``{{ value }}`` HTML-escaped, undefined names an error."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("pipeline.tools", "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)


def render(template: str, page: dict) -> str:
    """``page`` (from :func:`front_page` or :func:`video_page`) rendered by ``template``."""
    return _templates().get_template(template).render(generator=GENERATOR, **page)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fresh_dir(dest: str) -> None:
    """Make ``dest`` empty: remove an earlier report there; refuse anything else."""
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        try:
            with open(os.path.join(dest, "index.html"), encoding="utf-8") as handle:
                ours = f'content="{GENERATOR}"' in handle.read(4096)
        except OSError:
            ours = False
        if not ours:
            raise OutputError(f"{dest}: exists and is not an nccurate report; choose another --to")
        shutil.rmtree(dest)
    os.makedirs(dest, exist_ok=True)


def _fresh_remote_dir(dest: str) -> None:
    """:func:`_fresh_dir` for a URI: remove an earlier report's objects; refuse anything else."""
    if files.listdir(dest):
        head = files.read_bytes_or_none(files.join(dest, "index.html")) or b""
        if f'content="{GENERATOR}"'.encode() not in head[:4096]:
            raise OutputError(f"{dest}: exists and is not an nccurate report; choose another --to")
        files.rmtree(dest)
