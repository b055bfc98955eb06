"""``nccurate report OUT``: a static HTML report of a finished run, one folder that opens from
disk (relative links only, no script, nothing fetched).

::

    DIR/index.html                 the run's summary, failure classes, score histograms, video list
    DIR/alignability.png, weight.png, shift.png
    DIR/videos/<video_id>.html     one page a video (the first N by video_id)
    DIR/videos/<video_id>/alignment.png, thumb_<caption_idx>.jpg

The similarity matrix is not stored in the output, so it is recomputed for the reported videos
from ``summary.json``'s ``manifest`` and ``config``: feature mode loads the ``.npy`` features
and caption features (``pipeline.inputs``); video mode decodes at ``decode.sample_fps`` with the
run's backend and embeds frames and captions with the run's encoder (``caption_features`` when
the manifest row has them). It is then prepared exactly as the aligner prepares it
(:func:`curation.align.prepared_similarity`). A video whose inputs are gone or changed gets a
page that says so. Caption text is always escaped.
"""

from __future__ import annotations

import dataclasses
import html
import io
import os
import shutil
import tarfile
from collections import defaultdict
from functools import cached_property
from urllib.parse import quote

import numpy as np
import pyarrow.compute as pc

from curation.report_data import (bucket_mass_threshold, histogram, matrix_extent, middle_index, shift_s,
                                   span_boxes, symmetric_edges, unit_edges)
from pipeline.tools.inspect import OutputError, RunOutput, failure_examples, outcome_counts, read_run

GENERATOR = "nccurate report"
KEPT, DROPPED, ASR = "#e8412c", "#b0b0b0", "white"
CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;font-size:90%}
.missing{background:#fff3cd;padding:.5em;border:1px solid #e0c060}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0;width:170px;font-size:85%}
figure img{width:160px;border:1px solid #ccc}.plots figure,.plots figure img{width:auto}code{background:#f4f4f4}"""


def build_report(output: str, n_videos: int = 8, to: str | None = None) -> str:
    """Write the report of ``output`` into ``to`` (default ``output/report``), replacing an
    earlier report there; returns the path of its ``index.html``. :class:`OutputError` when
    ``output`` is not a finished run or ``to`` holds something else than a report."""
    run = read_run(output)
    dest = os.path.abspath(to or os.path.join(run.path, "report"))
    _fresh_dir(dest)
    all_ids = sorted(pc.unique(run.index.column("video_id")).to_pylist())
    video_ids = all_ids[:max(n_videos, 0)]
    rows_by_video = _rows_of(run, video_ids)
    histograms = _score_histograms(run, dest)
    matrices = SimilarityMatrices(run.summary)
    thumbs = _thumbnails(os.path.join(run.path, "shards"), [r for v in video_ids for r in rows_by_video[v] if r["kept"]])
    os.makedirs(os.path.join(dest, "videos"), exist_ok=True)
    for i, video_id in enumerate(video_ids):
        nav = [("report", "../index.html")] + [(f"{label} {video_ids[j]}", f"{quote(video_ids[j])}.html")
                                               for label, j in (("←", i - 1), ("→", i + 1)) if 0 <= j < len(video_ids)]
        _write(os.path.join(dest, "videos", f"{video_id}.html"),
               _video_page(dest, video_id, rows_by_video[video_id], run, matrices, thumbs, nav))
    path = os.path.join(dest, "index.html")
    _write(path, _front_page(run, histograms, rows_by_video, len(all_ids)))
    return path


def _rows_of(run: RunOutput, video_ids: list[str]) -> dict[str, list[dict]]:
    """video_id -> its index rows in caption order, for ``video_ids`` only."""
    import pyarrow as pa

    chosen = run.index.filter(pc.is_in(run.index.column("video_id"), value_set=pa.array(video_ids, pa.string())))
    rows_by_video: dict[str, list[dict]] = {video_id: [] for video_id in video_ids}
    for row in sorted(chosen.to_pylist(), key=lambda r: (r["video_id"], r["caption_idx"])):
        rows_by_video[row["video_id"]].append(row)
    return rows_by_video


# ------------------------------------------------------------------------------------ inputs


def run_config(tree: dict):
    """``summary.json``'s ``config`` -> :class:`pipeline.config.Config` (validated; the runtime
    sections ``beam`` and ``resources`` are left out: they do not change what was computed)."""
    from pipeline.config import build_config

    flat = {f"{section}.{key}": value for section, fields in tree.items()
            if isinstance(fields, dict) and section not in ("beam", "resources") for key, value in fields.items()}
    flat.update({key: value for key, value in tree.items() if not isinstance(value, dict)})
    return build_config(flat)


class SimilarityMatrices:
    """The prepared similarity ``(m captions, T frames)`` of a run's videos, recomputed from its
    inputs; the encoder (video mode) is loaded once, on first use."""

    def __init__(self, summary: dict):
        self.summary = summary

    @cached_property
    def config(self):
        return run_config(self.summary.get("config", {}))

    @cached_property
    def refs(self) -> dict:
        """video_id -> VideoRef of every usable manifest line (bad and repeated ids left out)."""
        from pipeline.inputs.manifest import parse_manifest_line
        from pipeline.inputs.arrays import read_bytes

        manifest = self.summary.get("manifest") or "?"
        text = read_bytes(manifest, "manifest", self.config.io).decode("utf-8", "replace")
        refs, seen = {}, set()
        for line in filter(str.strip, text.splitlines()):
            try:
                ref = parse_manifest_line(line, os.path.dirname(manifest))
            except ValueError:
                continue
            refs[ref.video_id] = None if ref.video_id in seen else ref
            seen.add(ref.video_id)
        return refs

    @cached_property
    def encoder(self):
        """The run's encoder (``models.encoder.load_encoder`` through the process's cache, so
        the demo reuses the model its run loaded); on the CPU when the run's GPU is absent."""
        import torch

        from pipeline.transforms.inference import shared_encoder
        from pipeline.transforms.video import encoder_spec

        spec = encoder_spec(self.config.model)
        if spec.device != "cpu" and not torch.cuda.is_available():
            spec = dataclasses.replace(spec, device="cpu")
        return shared_encoder(spec)

    def of(self, video_id: str) -> tuple[np.ndarray, float]:
        """``(sim (m, T), fps)``; ValueError/OSError with a one-line reason when the inputs are
        gone or unusable."""
        from curation.align import prepared_similarity

        caption_emb, frame_emb, fps, _ = self.embeddings_of(video_id)
        return prepared_similarity(caption_emb, frame_emb, self.config.align, fps), fps

    def embeddings_of(self, video_id: str):
        """``(caption_emb (m, D), frame_emb (T, D), fps, CaptionSet)`` of one video, as the run
        computed them."""
        from pipeline.inputs.arrays import load_caption_set, load_frame_features

        cfg = self.config
        ref = self.refs.get(video_id)
        if ref is None:
            raise ValueError(f"video {video_id} has no usable line in the manifest {self.summary.get('manifest')}")
        captions = load_caption_set(ref, None, cfg.io)
        if ref.features is not None:
            frames = load_frame_features(ref, None, cfg.io)
            frame_emb, fps = frames.emb, frames.fps
        else:
            from models.encoder import input_size_of
            from pipeline.media.decode import decode_frames

            decoded = decode_frames(ref.video, cfg.decode.sample_fps, input_size_of(self.encoder.spec), cfg.decode.backend)
            frame_emb, fps = self.encoder.encode_frames(decoded.frames, cfg.model.frame_batch_size), cfg.decode.sample_fps
        caption_emb = captions.emb
        if caption_emb is None:
            caption_emb = self.encoder.encode_texts(list(captions.text), cfg.model.text_batch_size)
        return caption_emb, frame_emb, fps, captions


def _thumbnails(shards_dir: str, kept_rows: list[dict]) -> dict[str, object]:
    """sample key -> PIL image: the middle frame of its ``mp4`` clip, or its first ``jpg``
    frame; nothing for ``npy`` payloads, shards that cannot be read or media that do not decode."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in kept_rows:
        if row["shard"] and row["key"]:
            wanted[row["shard"]].add(row["key"])
    out: dict[str, object] = {}
    for shard, keys in sorted(wanted.items()):
        try:
            with tarfile.open(os.path.join(shards_dir, shard)) as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if key in keys and key not in out and (ext == "mp4" or ext.endswith("jpg")):
                        data = tar.extractfile(member).read()
                        image = _middle_frame(data) if ext == "mp4" else _jpeg(data)
                        if image is not None:
                            out[key] = image
        except (OSError, tarfile.TarError):
            continue
    return out


def _middle_frame(mp4: bytes):
    """The middle decoded frame of an mp4 clip as a PIL image; None when it has none."""
    import av

    try:
        with av.open(io.BytesIO(mp4)) as clip:
            frames = list(clip.decode(video=0))
    except (av.FFmpegError, OSError, ValueError):
        return None
    return frames[middle_index(len(frames))].to_image() if frames else None


def _jpeg(data: bytes):
    """A jpg frame as a PIL image; None when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- figures


def _figure(width_in: float, height_in: float, right: float = 0.97, width_ratios: list[float] | None = None):
    """An Agg figure (no pyplot, no global state) and its axes (one, or one a width ratio,
    sharing y), with fixed margins: a layout engine would draw every figure twice."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=80)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.75 / width_in, right=right, bottom=0.55 / height_in, top=1 - 0.45 / height_in,
                        wspace=0.2)
    if width_ratios is None:
        return fig, fig.subplots()
    return fig, fig.subplots(1, len(width_ratios), sharey=True, width_ratios=width_ratios)


def _save(fig, path: str) -> str:
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})  # level 6 costs more than the drawing
    return os.path.basename(path)


def _bars(path: str, edges: np.ndarray, series: list[tuple[str, np.ndarray, str]], xlabel: str) -> str:
    """A stacked histogram of ``series`` ``(label, counts, colour)`` over ``edges``; each series
    is one filled step outline (one artist, not one bar a bin)."""
    fig, ax = _figure(4.6, 2.8)
    bottom = np.zeros(len(edges) - 1)
    for label, counts, colour in series:
        ax.stairs(bottom + counts, edges, baseline=bottom, fill=True, color=colour, label=f"{label} ({int(counts.sum())})")
        bottom = bottom + counts
    ax.set_xlabel(xlabel)
    ax.set_ylabel("captions")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def _score_histograms(run: RunOutput, dest: str) -> list[tuple[str, str]]:
    """The front page's ``(title, png)`` histograms of alignability, weight and shift."""
    kept = run.column("kept")
    alignability, weight = run.column("alignability"), run.column("weight")
    shifts = shift_s(run.column("asr_start"), run.column("start"))
    unit, shift_edges = unit_edges(20), symmetric_edges(shifts)

    def split(values, edges):
        return [("kept", histogram(values[kept], edges), KEPT), ("dropped", histogram(values[~kept], edges), DROPPED)]

    return [
        ("Alignability", _bars(os.path.join(dest, "alignability.png"), unit, split(alignability, unit),
                               "alignability (1 - prompt-bucket mass)")),
        ("Weight of kept captions", _bars(os.path.join(dest, "weight.png"), unit, split(weight, unit)[:1],
                                          "confidence weight")),
        ("Shift: realigned start - ASR start", _bars(os.path.join(dest, "shift.png"), shift_edges,
                                                     split(shifts, shift_edges), "seconds (positive: moved later)")),
    ]


def _plot_alignment(path: str, rows: list[dict], sim: np.ndarray | None, fps: float, threshold: float | None) -> str:
    """One video's picture, one row a caption (file order) in both panels: the similarity
    image (captions x seconds; left, when ``sim: (m, T)`` is given) and the prompt-bucket mass
    (right, with the drop ``threshold`` when the method has one)."""
    m = len(rows)
    if sim is None:
        fig, bucket_ax = _figure(3.6, _rows_height_in(m))
    else:
        fig, (sim_ax, bucket_ax) = _figure(13.0, _rows_height_in(m), width_ratios=[4.2, 1.0])
        _draw_matrix(fig, sim_ax, sim, fps, rows)
    _draw_bucket_mass(bucket_ax, rows, threshold)
    return _save(fig, path)


def _draw_matrix(fig, ax, sim: np.ndarray, fps: float, rows: list[dict]) -> None:
    """The similarity image with each caption's ASR span (hollow box), realigned span (filled
    bar; grey when dropped) and, for kept captions, a line between them. Each kind of mark is
    one collection: one draw call, not one a caption."""
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Patch, Rectangle

    m, t = sim.shape
    image = ax.imshow(sim, aspect="auto", cmap="viridis", interpolation="nearest", extent=matrix_extent(m, t, fps))
    fig.colorbar(image, cax=ax.inset_axes([1.01, 0.0, 0.015, 1.0]), label="similarity the aligner sees")
    boxes = span_boxes([r["asr_start"] for r in rows], [r["asr_end"] for r in rows], [r["start"] for r in rows],
                       [r["end"] for r in rows], [r["kept"] for r in rows])
    aligned = [b for b in boxes if b.start_s is not None]
    for kept, colour, style in ((True, ASR, "-"), (False, DROPPED, ":")):
        ax.add_collection(PatchCollection(
            [Rectangle((b.asr_start_s, b.row - 0.42), b.asr_end_s - b.asr_start_s, 0.84) for b in boxes if b.kept == kept],
            facecolor="none", edgecolor=colour, linewidth=1.0, linestyle=style))
    ax.add_collection(LineCollection([[((b.asr_start_s + b.asr_end_s) / 2, b.row), ((b.start_s + b.end_s) / 2, b.row)]
                                      for b in aligned if b.kept], colors=ASR, linewidths=0.6))
    ax.add_collection(PatchCollection(
        [Rectangle((b.start_s, b.row - 0.22), b.end_s - b.start_s, 0.44) for b in aligned],
        facecolor=[KEPT if b.kept else DROPPED for b in aligned], edgecolor="black", linewidth=0.3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("caption")
    ax.legend(handles=[Patch(fill=False, edgecolor="black", label="ASR span"), Patch(color=KEPT, label="realigned, kept"),
                       Patch(color=DROPPED, label="realigned, dropped")],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=9)


def _draw_bucket_mass(ax, rows: list[dict], threshold: float | None) -> None:
    """Prompt-bucket mass per caption: one bar a caption (one collection)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    m = len(rows)
    ax.add_collection(PatchCollection([Rectangle((0.0, i - 0.4), r["bucket_mass"], 0.8) for i, r in enumerate(rows)],
                                      facecolor=[KEPT if r["kept"] else DROPPED for r in rows], edgecolor="none"))
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"dropped above {threshold:.2f}")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(m - 0.5, -0.5)
    ax.set_xlabel("prompt-bucket mass")


def _rows_height_in(m: int) -> float:
    return float(np.clip(1.6 + 0.16 * m, 3.0, 16.0))


# -------------------------------------------------------------------------------------- html


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="generator" content="{GENERATOR}"><title>{_esc(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>{head}\n{body}</table>"


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


def _span(a, b) -> str:
    return "" if a is None else f"{a:.1f}–{b:.1f}"


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _front_page(run: RunOutput, histograms, rows_by_video: dict[str, list[dict]], n_all_videos: int) -> str:
    s = run.summary
    cfg = s.get("config", {})
    align, model = cfg.get("align", {}), cfg.get("model", {})
    counts = [
        ("videos", f"{s['videos_in']} in, {s['videos_ok']} ok, {s['videos_failed']} failed"),
        ("captions", f"{s['captions_in']} in, {s['captions_kept']} kept, {sum(s['captions_dropped'].values())} dropped"),
        *((reason if reason == "kept" else f"dropped: {reason}", n) for reason, n in outcome_counts(run).items()),
        ("samples", f"{s['samples_written']} in {s['shards']} shard(s)"),
        ("config hash", s.get("config_hash")),
        ("method", f"{align.get('method')} (prompt {align.get('prompt_mode')}, min alignability "
                   f"{align.get('min_alignability')})"),
        *([("timing, learnt from the run", f"{s['calibration']['description']} (from {s['calibration']['sampled']} "
                                            "captions)")] if s.get("calibration") else []),
        ("model", f"{model.get('name')} ({model.get('pretrained')})"),
        ("manifest", s.get("manifest")),
        ("wall time", f"{s.get('timings', {}).get('wall_s')} s"),
        ("nccurate", s.get("versions", {}).get("nccurate")),
    ]
    failures = [(cls, n, " | ".join(msgs)) for cls, (n, msgs) in failure_examples(run.failures).items()]
    videos = [f'<li><a href="videos/{quote(v)}.html">{_esc(v)}</a>: {sum(r["kept"] for r in rows_by_video[v])} kept '
              f"of {len(rows_by_video[v])} captions</li>" for v in rows_by_video]
    more = n_all_videos - len(rows_by_video)
    body = [
        f"<h1>nccurate report: {_esc(run.path)}</h1>",
        _table(counts),
        "<h2>Failures</h2>",
        _table(failures, ("error class", "count", "examples")) if failures else "<p>none</p>",
        "<h2>Scores</h2>",
        '<div class="row plots">' + "".join(f'<figure><img src="{png}" alt="{_esc(t)}">'
                                      f"<figcaption>{_esc(t)}</figcaption></figure>" for t, png in histograms) + "</div>",
        f"<h2>Videos (the first {len(rows_by_video)} by video_id)</h2>",
        f"<ul>{''.join(videos)}</ul>",
        f"<p>{more} more video(s) not shown: <code>nccurate report OUT --videos N</code>.</p>" if more > 0 else "",
    ]
    return _page(f"nccurate report {run.path}", "\n".join(body))


def _video_page(dest: str, video_id: str, rows: list[dict], run: RunOutput, matrices: SimilarityMatrices,
                thumbs: dict, nav: list[tuple[str, str]]) -> str:
    """One video's page; writes its pictures and thumbnails under ``dest/videos/<video_id>/``.
    ``nav``: ``(label, relative href)`` links at the top."""
    folder = os.path.join(dest, "videos", video_id)
    os.makedirs(folder, exist_ok=True)
    rel = quote(video_id)
    links = " | ".join(f'<a href="{href}">{_esc(label)}</a>' for label, href in nav)
    body = [f"<p>{links}</p><h1>{_esc(video_id)}</h1>",
            f"<p>{sum(r['kept'] for r in rows)} kept of {len(rows)} captions. Left: the similarity the aligner "
            "saw (rows: captions in file order; x: seconds), each caption's ASR span as a hollow box and its "
            "realigned span as a filled bar (red: kept, grey: dropped; a white line shows how far a kept caption "
            "moved). Right, on the same rows: the mass each caption sent to the prompt bucket.</p>"]
    failures = [f for f in run.failures if f["video_id"] == video_id]
    if failures:
        body.append(_table([(f["stage"], f["error_class"], f["message"]) for f in failures], ("stage", "error class", "message")))
    if any(r["start"] is not None for r in rows):
        body.append(_alignment_picture(folder, rel, video_id, rows, run, matrices))
    else:
        body.append('<p class="missing">This video was not realigned (see the failure above): no alignment picture.</p>')
    figures = []
    for r in rows:
        image = thumbs.get(r["key"]) if r["kept"] else None
        if image is not None:
            name = f"thumb_{r['caption_idx']:05d}.jpg"
            image.save(os.path.join(folder, name), format="JPEG", quality=85)
            figures.append(f'<figure><img src="{rel}/{name}" alt="clip {r["caption_idx"]}"><figcaption>'
                           f"#{r['caption_idx']} {_span(r['start'], r['end'])} s, w {r['weight']:.2f}: "
                           f"{_esc(r['text'])}</figcaption></figure>")
    if figures:
        body += ["<h2>Kept clips (middle frame)</h2>", '<div class="row">' + "".join(figures) + "</div>"]
    body += ["<h2>Captions</h2>", _table(
        [(r["caption_idx"], _span(r["asr_start"], r["asr_end"]), _span(r["start"], r["end"]), _num(r["alignability"]),
          _num(r["bucket_mass"]), _num(r["weight"]), "kept" if r["kept"] else r["drop_reason"], r["text"]) for r in rows],
        ("#", "ASR span (s)", "realigned (s)", "alignability", "bucket mass", "weight", "outcome", "text"))]
    return _page(f"{video_id}: nccurate report", "\n".join(body))


def _alignment_picture(folder: str, rel: str, video_id: str, rows: list[dict], run: RunOutput,
                       matrices: SimilarityMatrices) -> str:
    """The video's picture (similarity matrix + bucket mass; the bucket mass alone, and why,
    when the matrix cannot be recomputed), as HTML."""
    note, sim, fps = "", None, 1.0
    try:
        sim, fps = matrices.of(video_id)
        if sim.shape[0] != len(rows):
            raise ValueError(f"its inputs changed since the run: {sim.shape[0]} captions now, {len(rows)} in the index")
    except (ValueError, OSError, RuntimeError) as exc:  # gone, changed or undecodable inputs; a model that won't load
        sim = None
        note = (f'<p class="missing">No similarity picture: the inputs of this video are unavailable '
                f"({_esc(' '.join(str(exc).split()))}).</p>")
    align = run.summary.get("config", {}).get("align", {})
    has_bucket = align.get("method") == "norton" and align.get("bucket", True)
    threshold = bucket_mass_threshold(align.get("min_alignability", 0.5)) if has_bucket else None
    name = _plot_alignment(os.path.join(folder, "alignment.png"), rows, sim, fps, threshold)
    what = "prompt-bucket mass" if sim is None else "similarity matrix and prompt-bucket mass"
    return f'{note}<img src="{rel}/{name}" alt="{what} of {_esc(video_id)}">'
