"""``nccurate bench align``: alignment quality tables of the benchmark methods on synthetic
worlds or on a user's truth file (printed numbers, never assertions)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from curation.evaluate import (CEILING, EvalVideo, benchmark_methods, ceiling_score, format_calibration_table, format_keep_table, format_table,
                               format_world_table, score_method)
from curation.errors import InputError
from curation.synth.features import make_corpus
from pipeline.config import Config
from pipeline.errors import ArgumentError


def load_truth_videos(manifest: str, truth_path: str, config: Config) -> list[EvalVideo]:
    """Videos of a feature-mode manifest joined with an HTM-Align truth file
    ``{video_id: [[alignable, start_s, end_s, text], ...]}`` (one entry per caption, in order).
    Videos missing from the truth file are skipped; a caption-count mismatch, a truth file that
    is not JSON and a bad manifest row are :class:`ArgumentError`."""
    with open(truth_path, encoding="utf-8") as handle:
        try:
            truth = json.load(handle)
        except ValueError as exc:
            raise ArgumentError(f"truth {truth_path}: not a JSON file ({exc})") from None
    try:
        videos = _truth_videos(manifest, truth_path, truth, config)
    except InputError as exc:
        raise ArgumentError(str(exc)) from None
    if not videos:
        raise ArgumentError(f"truth {truth_path}: no video of {manifest} is in the truth file")
    return videos


def _truth_videos(manifest: str, truth_path: str, truth: dict, config: Config) -> list[EvalVideo]:
    from pipeline.inputs.arrays import load_caption_set, load_frame_features
    from pipeline.inputs.manifest import parse_manifest_line

    base = os.path.dirname(os.path.abspath(manifest))
    videos = []
    with open(manifest, encoding="utf-8") as handle:
        for line in filter(str.strip, handle):
            ref = parse_manifest_line(line, base)
            if ref.video_id not in truth:
                continue
            caps = load_caption_set(ref, config.features.dim)
            rows = truth[ref.video_id]
            if len(rows) != len(caps.text):
                raise ArgumentError(f"truth {truth_path}: video {ref.video_id} has {len(rows)} entries but its captions file has {len(caps.text)} captions")
            label = np.array([bool(r[0]) for r in rows])
            videos.append(EvalVideo(caps.emb, load_frame_features(ref, config.features.dim).emb, ref.fps,
                                    np.array(caps.start_s), np.array(caps.end_s), label,
                                    np.array([float(r[1]) if r[0] else np.nan for r in rows]),
                                    np.array([float(r[2]) if r[0] else np.nan for r in rows])))
    return videos


def video_world(config: Config, n_videos: int, seed: int, workdir: str) -> list[EvalVideo]:
    """The video demo's world as the demo runs it: its H.264 corpus written to ``workdir``,
    decoded at ``decode.sample_fps`` and embedded by the shipped tiny model."""
    from pipeline.demo import demo_config, make_inputs
    from pipeline.tools.similarity import SimilarityMatrices

    manifest, truth_path = make_inputs(workdir, "video", n_videos, seed)
    cfg = demo_config(config, "video")
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    source = SimilarityMatrices({"config": cfg.to_dict(), "manifest": manifest})
    videos = []
    for video_id in sorted(truth):
        caption_emb, frame_emb, fps, caps = source.embeddings_of(video_id)
        rows = truth[video_id]
        videos.append(EvalVideo(caption_emb, frame_emb, fps, np.array(caps.start_s), np.array(caps.end_s),
                                np.array([bool(r[0]) for r in rows]),
                                np.array([float(r[1]) if r[0] else np.nan for r in rows]),
                                np.array([float(r[2]) if r[0] else np.nan for r in rows])))
    return videos


def _world_table(worlds: dict[str, list[EvalVideo]], config: Config, title: str, plot: str | None = None) -> str:
    """The methods x worlds table, then the configured method's weight calibration per world;
    ``plot``: also draw its reliability diagrams to this PNG path."""
    methods = benchmark_methods(config.align)
    scores = {name: {w: score_method(name, videos, params) for w, videos in worlds.items()}
              for name, params in methods.items()}
    configured = scores[next(reversed(methods))]
    # the last row: what no aligner can beat where a step shows its concept evenly
    scores[CEILING] = {w: ceiling_score(videos) for w, videos in worlds.items()}
    if plot is not None:
        from pipeline.tools.plots import reliability_png

        reliability_png(plot, [(f"{world}: ECE {s.weight_ece:.3f} / {s.legacy_ece:.3f}",
                                [(f"{config.align.weight} weight", s.weight_bins, "#e8412c"),
                                 ("legacy weight", s.legacy_bins, "#3b6fb6")])
                               for world, s in configured.items()])
    return (format_world_table(scores, next(iter(methods)), title) + "\n\n"
            + format_calibration_table(configured, f"Confidence weight of this config ({config.align.method}) against "
                                                   "'alignable and an R@1 hit', over the kept captions")
            + "\n\n" + format_keep_table(configured, "Keeping rules of this config: precision / recall in % (alignability "
                                                       "against 'alignable', the weight against 'alignable and an R@1 hit')"))


def bench_align(config: Config, n_videos: int = 40, seed: int = 0, manifest: str | None = None,
                truth: str | None = None, held_out: bool = True, video: bool = True, plots: str | None = None) -> str:
    """The method tables (``curation.evaluate.benchmark_methods``) on the benchmark family of
    worlds (``curation.synth.worlds``), or on a user's HTM-Align-format truth.

    Tables (each followed by the configured weight's calibration,
    ``curation.evaluate.format_calibration_table``): the named worlds at ``seed`` (plus the video
    demo's world, ``video``); with
    ``held_out``, the same worlds at seeds ``seed + 1`` and ``seed + 2`` pooled, and five
    worlds whose knobs are drawn at random (``curation.synth.worlds.random_world``) on seeds
    ``seed + 100 ...``: the seeds the method was never looked at on while it was designed.
    ``plots``: a folder that gets the reliability diagrams of the weights of each table
    (``reliability-seed{seed}.png``, ``-held-out.png``, ``-random.png``)."""
    from curation.synth.worlds import WORLDS, random_world

    if bool(truth) != bool(manifest):
        raise ArgumentError("--truth and --manifest go together")
    if truth:
        videos = load_truth_videos(manifest, truth, config)
        scores = [score_method(name, videos, params) for name, params in benchmark_methods(config.align).items()]
        return format_table(scores, f"Alignment on {truth}: {len(videos)} videos")
    corpus = lambda params, s: [EvalVideo.of_synth(v) for v in make_corpus(n_videos, s, params)]  # noqa: E731
    worlds = {name: corpus(params, seed) for name, params in WORLDS.items()}
    if video:
        with tempfile.TemporaryDirectory() as tmp:
            worlds["video demo"] = video_world(config, 24, seed, tmp)
    note = f"R@1 / AUC in %; {n_videos} videos per synthetic world, window ±{config.align.window_s} s"
    plot = (lambda name: os.path.join(plots, f"reliability-{name}.png")) if plots else (lambda name: None)  # noqa: E731
    if plots:
        os.makedirs(plots, exist_ok=True)
    tables = [_world_table(worlds, config, f"Worlds at seed {seed} ({note})", plot(f"seed{seed}"))]
    if held_out:
        fresh = {name: corpus(params, seed + 1) + corpus(params, seed + 2) for name, params in WORLDS.items()}
        tables.append(_world_table(fresh, config, f"Held-out seeds {seed + 1} and {seed + 2}, pooled ({note})",
                                   plot("held-out")))
        drawn = {f"random {seed + 100 + i}": corpus(random_world(seed + 100 + i), seed + 100 + i) for i in range(5)}
        tables.append(_world_table(drawn, config, f"Worlds drawn at random (curation.synth.worlds.random_world) ({note})",
                                   plot("random")))
    if plots:
        tables.append(f"reliability diagrams: {os.path.join(plots, 'reliability-*.png')}")
    return "\n\n".join(tables)
