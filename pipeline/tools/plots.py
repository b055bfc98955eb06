"""The report's pictures, drawn with matplotlib's Agg canvas (no pyplot, no global state): the
front page's score histograms and one video's alignment picture; and ``nccurate bench align``'s
reliability diagrams of the confidence weights. Each function writes one PNG and returns its
file name."""

from __future__ import annotations

import os

import numpy as np

from curation.report_data import histogram, matrix_extent, shift_s, span_boxes, symmetric_edges, unit_edges
from pipeline.tools.read import RunOutput

#: Colours: kept captions, dropped captions, ASR spans (drawn over the viridis matrix).
KEPT, DROPPED, ASR = "#e8412c", "#b0b0b0", "white"


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


def _save_png(fig, path: str) -> str:
    """Write ``fig`` to ``path`` as PNG; returns the file name."""
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})  # fast compression: the drawing dominates
    return os.path.basename(path)


def _stacked_histogram_png(path: str, edges: np.ndarray, series: list[tuple[str, np.ndarray, str]], xlabel: str) -> str:
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
    return _save_png(fig, path)


def score_histograms(run: RunOutput, dest: str) -> list[tuple[str, str]]:
    """The front page's ``(title, png)`` histograms of alignability, weight and shift."""
    kept = run.column("kept")
    alignability, weight = run.column("alignability"), run.column("weight")
    shifts = shift_s(run.column("asr_start"), run.column("start"))
    unit, shift_edges = unit_edges(20), symmetric_edges(shifts)

    def split(values, edges):
        return [("kept", histogram(values[kept], edges), KEPT), ("dropped", histogram(values[~kept], edges), DROPPED)]

    return [
        ("Alignability", _stacked_histogram_png(os.path.join(dest, "alignability.png"), unit, split(alignability, unit),
                               "alignability (1 - prompt-bucket mass)")),
        ("Weight of kept captions", _stacked_histogram_png(os.path.join(dest, "weight.png"), unit, split(weight, unit)[:1],
                                          "confidence weight")),
        ("Shift: realigned start - ASR start", _stacked_histogram_png(os.path.join(dest, "shift.png"), shift_edges,
                                                     split(shifts, shift_edges), "seconds (positive: moved later)")),
    ]


def alignment_png(path: str, rows: list[dict], sim: np.ndarray | None, fps: float, threshold: float | None) -> str:
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
    return _save_png(fig, path)


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
    """The figure height, inches, for ``m`` caption rows (bounded both ways)."""
    return float(np.clip(1.6 + 0.16 * m, 3.0, 16.0))


def reliability_png(path: str, panels: list[tuple[str, list[tuple[str, object, str]]]]) -> str:
    """Reliability diagrams, one panel per ``(title, [(label, curation.metrics.ReliabilityBins,
    colour), ...])``: each series' observed frequency against its mean predicted probability per
    bin (marker area by the bin's count), the diagonal of a calibrated forecast, and under each
    panel the share of the predictions in each bin."""
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0 * cols, 3.4 * rows), dpi=80)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows * 2, cols, height_ratios=[3, 1] * rows, hspace=0.55, wspace=0.3,
                            left=0.07, right=0.98, top=0.95, bottom=0.06)
    for i, (title, series) in enumerate(panels):
        r, c = divmod(i, cols)
        ax, counts = fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c])
        ax.plot([0, 1], [0, 1], color="#888888", linewidth=0.8, linestyle="--")
        for k, (label, bins, colour) in enumerate(series):
            full = bins.count > 0
            total = max(int(bins.count.sum()), 1)
            ax.plot(bins.mean_prob[full], bins.frequency[full], color=colour, linewidth=1.0, label=label)
            ax.scatter(bins.mean_prob[full], bins.frequency[full], s=8 + 120 * bins.count[full] / total, color=colour)
            centres = (bins.edges[:-1] + bins.edges[1:]) / 2
            width = (bins.edges[1] - bins.edges[0]) / (len(series) + 1)
            counts.bar(centres + (k - (len(series) - 1) / 2) * width, bins.count / total, width=width, color=colour)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        counts.set_xlim(0, 1)
        counts.set_ylim(bottom=0)
        counts.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("observed frequency", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
            counts.set_ylabel("share", fontsize=8)
        counts.set_xlabel("predicted probability", fontsize=8)
    return _save_png(fig, path)
