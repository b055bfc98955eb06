"""``nccurate bench``: alignment quality tables and feature-mode throughput (printed numbers,
never assertions)."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import tempfile
import time

import numpy as np

from curation.evaluate import EvalVideo, benchmark_methods, format_table, format_world_table, score_method
from curation.synth.features import SynthVideo, WorldParams, make_corpus
from pipeline.config import Config


def eval_video_of(v: SynthVideo) -> EvalVideo:
    return EvalVideo(v.caption_emb, v.frames, v.fps, v.asr_start_s, v.asr_end_s, v.alignable,
                     v.true_start_s, v.true_end_s)


def load_truth_videos(manifest: str, truth_path: str, config: Config) -> list[EvalVideo]:
    """Videos of a feature-mode manifest joined with an HTM-Align truth file
    ``{video_id: [[alignable, start_s, end_s, text], ...]}`` (one entry per caption, in order).
    Videos missing from the truth file are skipped; a caption-count mismatch is an error."""
    from pipeline.inputs.manifest import parse_manifest_line
    from pipeline.inputs.arrays import load_caption_set, load_frame_features

    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
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
                raise ValueError(f"truth {truth_path}: video {ref.video_id} has {len(rows)} entries but its captions file has {len(caps.text)} captions")
            label = np.array([bool(r[0]) for r in rows])
            videos.append(EvalVideo(caps.emb, load_frame_features(ref, config.features.dim).emb, ref.fps,
                                    np.array(caps.start_s), np.array(caps.end_s), label,
                                    np.array([float(r[1]) if r[0] else np.nan for r in rows]),
                                    np.array([float(r[2]) if r[0] else np.nan for r in rows])))
    if not videos:
        raise ValueError(f"truth {truth_path}: no video of {manifest} is in the truth file")
    return videos


def video_world(config: Config, n_videos: int, seed: int, workdir: str) -> list[EvalVideo]:
    """The video demo's world as the demo runs it: its H.264 corpus written to ``workdir``,
    decoded at ``decode.sample_fps`` and embedded by the shipped tiny model."""
    from pipeline.demo import demo_config, make_inputs
    from pipeline.tools.report import SimilarityMatrices

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


def _world_table(worlds: dict[str, list[EvalVideo]], config: Config, title: str) -> str:
    methods = benchmark_methods(config.align)
    scores = {name: {w: score_method(name, videos, params) for w, videos in worlds.items()}
              for name, params in methods.items()}
    return format_world_table(scores, next(iter(methods)), title)


def bench_align(config: Config, n_videos: int = 40, seed: int = 0, manifest: str | None = None,
                truth: str | None = None, held_out: bool = True, video: bool = True) -> str:
    """The method tables (``curation.evaluate.benchmark_methods``) on the benchmark family of
    worlds (``curation.synth.worlds``), or on a user's HTM-Align-format truth.

    Tables: the named worlds at ``seed`` (plus the video demo's world, ``video``); with
    ``held_out``, the same worlds at seeds ``seed + 1`` and ``seed + 2`` pooled, and five
    worlds whose knobs are drawn at random (``curation.synth.worlds.random_world``) on seeds
    ``seed + 100 ...``: the seeds the method was never looked at on while it was designed."""
    from curation.synth.worlds import WORLDS, random_world

    if truth:
        videos = load_truth_videos(manifest, truth, config)
        scores = [score_method(name, videos, params) for name, params in benchmark_methods(config.align).items()]
        return format_table(scores, f"Alignment on {truth}: {len(videos)} videos")
    corpus = lambda params, s: [eval_video_of(v) for v in make_corpus(n_videos, s, params)]  # noqa: E731
    worlds = {name: corpus(params, seed) for name, params in WORLDS.items()}
    if video:
        with tempfile.TemporaryDirectory() as tmp:
            worlds["video demo"] = video_world(config, 24, seed, tmp)
    note = f"R@1 / AUC in %; {n_videos} videos per synthetic world, window ±{config.align.window_s} s"
    tables = [_world_table(worlds, config, f"Worlds at seed {seed} ({note})")]
    if held_out:
        fresh = {name: corpus(params, seed + 1) + corpus(params, seed + 2) for name, params in WORLDS.items()}
        tables.append(_world_table(fresh, config, f"Held-out seeds {seed + 1} and {seed + 2}, pooled ({note})"))
        drawn = {f"random {seed + 100 + i}": corpus(random_world(seed + 100 + i), seed + 100 + i) for i in range(5)}
        tables.append(_world_table(drawn, config, f"Worlds drawn at random (curation.synth.worlds.random_world) ({note})"))
    return "\n\n".join(tables)


def aligner_cost(videos: list[EvalVideo], new, old, rounds: int = 3) -> dict:
    """Seconds per video of the ``new`` aligner (method ``posterior``: each video's evidence, made
    once as a pipeline run makes it, the run-level calibration, then realignment) and of the
    ``old`` one, measured interleaved (old, new, old, new, ...) on the same videos in this
    process; the medians over ``rounds`` and their ratio."""
    from curation.align import align_video
    from curation.evaluate import evidence_of, run_calibration

    def old_pass():
        for v in videos:
            align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, old)

    posterior = new.method == "posterior"
    times: dict[str, list[float]] = {"old": [], "evidence": [], "calibrate": [], "realign": []}
    for _ in range(rounds):
        start = time.perf_counter()
        old_pass()
        times["old"].append(time.perf_counter() - start)
        start = time.perf_counter()
        evidence = evidence_of(videos, new) if posterior else [None] * len(videos)
        times["evidence"].append(time.perf_counter() - start)
        start = time.perf_counter()
        calib = run_calibration(videos, new, evidence) if posterior else None
        times["calibrate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for v, e in zip(videos, evidence):
            align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, new, None, calib, e)
        times["realign"].append(time.perf_counter() - start)
    per_video = {k: float(np.median(t)) / len(videos) for k, t in times.items()}
    per_video["new"] = per_video["evidence"] + per_video["calibrate"] + per_video["realign"]
    per_video["ratio"] = per_video["new"] / per_video["old"]
    return per_video


def _time_per_video(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def bench_throughput_features(config: Config, n_videos: int = 200, seed: int = 0,
                              beam_args: tuple[str, ...] = ()) -> str:
    """Feature-mode videos/s on HowTo100M-sized inputs (~7 min at 1 fps, ~60 captions, D=512):
    realignment alone (per core), the stages alone, and the whole pipeline on the same files."""
    from curation.records import CaptionSet, FrameFeatures
    from pipeline.inputs.manifest import parse_manifest_line
    from pipeline.inputs.arrays import load_caption_set, load_frame_features
    from pipeline.results import aligned_rows, sample_for_row
    from pipeline.run import run
    from pipeline.synth.feature_corpus import write_corpus
    from pipeline.outputs.tables import write_index_file, write_shard

    videos = make_corpus(n_videos, seed, WorldParams())
    params = config.align
    pairs = [(FrameFeatures(v.video_id, v.fps, v.frames),
              CaptionSet(v.video_id, tuple(v.asr_start_s), tuple(v.asr_end_s), v.texts, v.caption_emb)) for v in videos]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = write_corpus(os.path.join(tmp, "in"), videos)
        with open(manifest, encoding="utf-8") as handle:
            refs = [parse_manifest_line(line, os.path.dirname(manifest)) for line in handle if line.strip()]
        t_load = _time_per_video(lambda r: load_frame_features(r, None), refs)
        t_caps = _time_per_video(lambda r: load_caption_set(r, None), refs)
        from curation.evaluate import NORTON_V0, run_calibration

        # realignment with the run's calibration made beforehand, as the pipeline's Realign has it
        calib = run_calibration([eval_video_of(v) for v in videos], params) if params.method == "posterior" else None
        t_align = _time_per_video(lambda fc: aligned_rows(fc[0], fc[1], params, None, calib), pairs)

        cost = aligner_cost([eval_video_of(v) for v in videos[:60]], params, NORTON_V0)
        rows = [(fc[0], aligned_rows(fc[0], fc[1], params, None, calib)) for fc in pairs[:50]]
        t_sample = _time_per_video(lambda fr: [sample_for_row(r, fr[0], {}, config.clips) for r in fr[1] if r["kept"]], rows)
        samples = [[sample_for_row(r, f, {}, config.clips) for r in rs if r["kept"]] for f, rs in rows]
        shard_dir = os.path.join(tmp, "shards_alone")
        t_tar = _time_per_video(lambda kv: write_shard(shard_dir, kv[0], kv[1], config.output.layout, config.seed),
                                list(enumerate(samples)))
        t_parquet = _time_per_video(lambda kv: write_index_file(shard_dir, kv[0], kv[1][1]), list(enumerate(rows)))

        profile = cProfile.Profile()
        profile.enable()
        for f, c in pairs[:50]:
            aligned_rows(f, c, params, None, calib)
        profile.disable()
        stats = pstats.Stats(profile).sort_stats("tottime")
        top = sorted(((fn[2], st[2]) for fn, st in stats.stats.items()), key=lambda x: -x[1])[:6]
        total = sum(st[2] for st in stats.stats.values())

        start = time.perf_counter()
        summary = run(manifest, os.path.join(tmp, "out"), config, beam_args)
        t_e2e = (time.perf_counter() - start) / n_videos
    mean_t = np.mean([v.frames.shape[0] for v in videos])
    mean_m = np.mean([len(v.texts) for v in videos])
    slowest = max(t_load, t_caps, t_align, t_sample, t_tar, t_parquet)
    lines += [
        f"Feature-mode throughput: {n_videos} videos, mean {mean_t:.0f} frames (1 fps), {mean_m:.0f} captions, D={videos[0].frames.shape[1]}, {os.cpu_count()} cores",
        "",
        "| stage (alone, one core) | videos/s |",
        "|---|---:|",
        f"| load features (.npy) | {1 / t_load:.1f} |",
        f"| parse captions + caption features | {1 / t_caps:.1f} |",
        f"| realign ({params.method}: similarity, evidence or OT, spans, rows) | {1 / t_align:.1f} |",
        f"| build shard samples | {1 / t_sample:.1f} |",
        f"| write shard tars | {1 / t_tar:.1f} |",
        f"| write index parquet | {1 / t_parquet:.1f} |",
        f"| whole pipeline, DirectRunner {' '.join(beam_args) or '(defaults)'} | {1 / t_e2e:.1f} |",
        "",
        f"pipeline efficiency = end-to-end / slowest stage alone = {slowest / t_e2e:.2f}; "
        f"all stages back to back would give {1 / sum((t_load, t_caps, t_align, t_sample, t_tar, t_parquet)):.1f} videos/s, "
        f"so the rest ({(t_e2e - sum((t_load, t_caps, t_align, t_sample, t_tar, t_parquet))) * 1000:.1f} ms/video) is Beam",
        f"aligner cost, in process, interleaved on the same 60 videos: {params.method} "
        f"{cost['new'] * 1000:.1f} ms/video (evidence {cost['evidence'] * 1000:.1f} + run-level calibration "
        f"{cost['calibrate'] * 1000:.1f} + realign {cost['realign'] * 1000:.1f}) vs the old default (norton-v0) "
        f"{cost['old'] * 1000:.1f} ms/video: "
        f"ratio {cost['ratio']:.2f}",
        f"HowTo100M (1.22 M videos) at the realign-alone rate: {1.22e6 * t_align / 3600:.1f} core-hours",
        f"kept {summary['captions_kept']} of {summary['captions_in']} captions",
        "",
        "where realignment time goes (share of profiled time, top functions):",
    ]
    lines += [f"  {share / total * 100:5.1f}%  {name}" for name, share in top]
    return "\n".join(lines)
