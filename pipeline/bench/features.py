"""``nccurate bench throughput`` (feature mode): videos/s of each stage alone and of the whole
pipeline on the same synthetic files, and the aligner's cost against the old default (printed
numbers, never assertions)."""

from __future__ import annotations

import cProfile
import dataclasses
import os
import pstats
import tempfile
import time

import numpy as np

from curation.evaluate import EvalVideo
from curation.synth.features import WorldParams, make_corpus
from pipeline.config import Config


#: Rounds of the aligner-cost comparison: its medians, this machine's speed drifting by 20%.
COST_ROUNDS = 7


#: Captions of the run the bench's at-scale cost stands for: HowTo100M's 1.22 M videos at the
#: bench's 60 captions a video.
LARGE_RUN_CAPTIONS = 1.22e6 * 60


def pool_of_a_run_of(pool, n_captions: float):
    """``pool`` (``curation.calibration.DecoyPool``) with the sample bound a run of ``n_captions``
    has (its ``SAMPLE_SIZE`` smallest keys spread evenly below ``SAMPLE_SIZE / n_captions`` of the
    key range, where the uniform hash keys put them): its videos score decoys for that share of
    their captions."""
    from curation.calibration import SAMPLE_SIZE

    bound = min(SAMPLE_SIZE / n_captions, 1.0) * float(np.iinfo(np.uint64).max)
    return pool._replace(run_keys=np.linspace(0.0, bound, SAMPLE_SIZE).astype(np.uint64))


def aligner_cost(videos: list[EvalVideo], new, old, rounds: int = 3) -> dict:
    """Seconds per video of the ``new`` aligner (method ``posterior``: each video's evidence, made
    once as a pipeline run makes it, its share of the run-level calibration, the run-level
    estimate once, then realignment) and of the ``old`` one, measured interleaved (old, new, old,
    new, ...) on the same videos in this process; the medians over ``rounds`` and their ratio,
    with the once-a-run estimate spread over these videos (``ratio``), without it
    (``ratio_per_video``: what it tends to on a large run, where the estimate's capped sample
    makes its share per video vanish), and at the scale of ``LARGE_RUN_CAPTIONS``
    (``ratio_large_run``: the calibration share timed with that run's sample bound, where a video
    scores decoys only for the few captions the run's sample can hold; no estimate)."""
    from curation import calibration
    from curation.align import align_video
    from curation.evaluate import calibration_shares, evidence_of

    def old_pass():
        for v in videos:
            align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, old)

    posterior = new.method == "posterior"
    times: dict[str, list[float]] = {"old": [], "evidence": [], "calibrate": [], "calibrate_large": [],
                                     "estimate": [], "realign": []}
    for _ in range(rounds):
        start = time.perf_counter()
        old_pass()
        times["old"].append(time.perf_counter() - start)
        start = time.perf_counter()
        evidence = evidence_of(videos, new) if posterior else [None] * len(videos)
        times["evidence"].append(time.perf_counter() - start)
        calib, shares = None, None
        start = time.perf_counter()  # curation.evaluate.run_calibration, its two parts timed apart
        if posterior:
            shares = calibration_shares(videos, new, evidence)
        times["calibrate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        if posterior:  # the pool made as the pipeline makes it, with a large run's sample bound
            pool = calibration.run_pool([(f"v{i}", v.caption_emb) for i, v in enumerate(videos)])
            calibration_shares(videos, new, evidence, pool_of_a_run_of(pool, LARGE_RUN_CAPTIONS))
        times["calibrate_large"].append(time.perf_counter() - start)
        start = time.perf_counter()
        if posterior:
            calib = calibration.estimate(shares, new.window_s)
        times["estimate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for v, e in zip(videos, evidence):
            align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, new, None, calib, e)
        times["realign"].append(time.perf_counter() - start)
    per_video = {k: float(np.median(t)) / len(videos) for k, t in times.items()}
    per_video["new"] = sum(per_video[k] for k in ("evidence", "calibrate", "estimate", "realign"))
    per_video["ratio"] = per_video["new"] / per_video["old"]
    per_video["ratio_per_video"] = (per_video["new"] - per_video["estimate"]) / per_video["old"]
    per_video["large_run"] = per_video["evidence"] + per_video["calibrate_large"] + per_video["realign"]
    per_video["ratio_large_run"] = per_video["large_run"] / per_video["old"]
    return per_video


def _time_per_video(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def _time_run(run, manifest: str, out: str, config: Config, beam_args, n_videos: int) -> tuple[dict, float]:
    """(summary, seconds per video) of one whole-pipeline run."""
    start = time.perf_counter()
    summary = run(manifest, out, config, beam_args)
    return summary, (time.perf_counter() - start) / n_videos


def bench_throughput_features(config: Config, n_videos: int = 200, seed: int = 0,
                              beam_args: tuple[str, ...] = (), rounds: int = 2) -> str:
    """Feature-mode videos/s on HowTo100M-sized inputs (~7 min at 1 fps, ~60 captions, D=512):
    realignment alone (per core), the stages alone, and the whole pipeline on the same files: a
    first run, then ``rounds`` interleaved rounds of a run with checkpoints, one without, and the
    stages alone again (medians; the efficiency compares the medians).
    ``beam_args`` are checked before any stage is timed."""
    from pipeline.beam_options import check_beam_flags
    from curation.records import CaptionSet, FrameFeatures
    from pipeline.inputs.manifest import parse_manifest_line
    from pipeline.inputs.arrays import load_caption_set, load_frame_features
    from pipeline.results import aligned_rows, sample_for_row
    from pipeline.run import run
    from pipeline.synth.feature_corpus import write_corpus
    from pipeline.outputs.tables import write_index_file, write_shard

    check_beam_flags(beam_args)
    videos = make_corpus(n_videos, seed, WorldParams())
    params = config.align
    pairs = [(FrameFeatures(v.video_id, v.fps, v.frames),
              CaptionSet(v.video_id, tuple(v.asr_start_s), tuple(v.asr_end_s), v.texts, v.caption_emb)) for v in videos]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = write_corpus(os.path.join(tmp, "in"), videos)
        with open(manifest, encoding="utf-8") as handle:
            refs = [parse_manifest_line(line, os.path.dirname(manifest)) for line in handle if line.strip()]
        from curation.evaluate import NORTON_V0

        posterior = params.method == "posterior"
        evals = [EvalVideo.of_synth(v) for v in videos]
        pool = None
        if posterior:
            from curation import calibration as cal
            from curation.align import calibration_stats, caption_evidence

            pool = cal.run_pool([(v.video_id, v.caption_emb) for v in videos])
        shard_dir = os.path.join(tmp, "shards_alone")

        def bare_stages() -> tuple[tuple[float, ...], object]:
            """Seconds per video of each stage alone, and the run's calibration."""
            t_load = _time_per_video(lambda r: load_frame_features(r, None), refs)
            t_caps = _time_per_video(lambda r: load_caption_set(r, None), refs)
            # the calibration pass as the pipeline runs it: each video's evidence and its share of
            # the run-level calibration (decoys from the run's pool), then the estimate once
            t_calib, calib = 0.0, None
            if posterior:
                start = time.perf_counter()
                shares = []
                for v, e in zip(videos, evals):
                    evidence = caption_evidence(e.caption_emb, e.frames, e.asr_start_s, e.asr_end_s, e.fps, params)
                    shares.append(calibration_stats(v.video_id, e.caption_emb, e.frames, e.asr_start_s, e.asr_end_s,
                                                    e.fps, params, pool, evidence))
                calib = cal.estimate(cal.merge(shares), params.window_s)
                t_calib = (time.perf_counter() - start) / n_videos
            # realignment with the run's calibration made beforehand, as the pipeline's Realign has it
            t_align = _time_per_video(lambda fc: aligned_rows(fc[0], fc[1], params, None, calib), pairs)
            rows = [(fc[0], aligned_rows(fc[0], fc[1], params, None, calib)) for fc in pairs[:50]]
            t_sample = _time_per_video(lambda fr: [sample_for_row(r, fr[0], {}, config.clips) for r in fr[1] if r.kept],
                                       rows)
            samples = [[sample_for_row(r, f, {}, config.clips) for r in rs if r.kept] for f, rs in rows]
            t_tar = _time_per_video(lambda kv: write_shard(shard_dir, kv[0], kv[1], config.output.layout, config.seed),
                                    list(enumerate(samples)))
            t_parquet = _time_per_video(lambda kv: write_index_file(shard_dir, kv[0], kv[1][1]), list(enumerate(rows)))
            return (t_load, t_caps, t_calib, t_align, t_sample, t_tar, t_parquet), calib

        stages, calib = bare_stages()
        t_load, t_caps, t_calib, t_align, t_sample, t_tar, t_parquet = stages
        cost = aligner_cost(evals[:60], params, NORTON_V0, rounds=COST_ROUNDS)
        profile = cProfile.Profile()
        profile.enable()
        for f, c in pairs[:50]:
            aligned_rows(f, c, params, None, calib)
        profile.disable()
        stats = pstats.Stats(profile).sort_stats("tottime")
        top = sorted(((fn[2], st[2]) for fn, st in stats.stats.items()), key=lambda x: -x[1])[:6]
        total = sum(st[2] for st in stats.stats.values())

        # the first run in this process pays one-off costs (imports, caches, the files' first
        # read), so it is reported apart; the steady rates are medians of interleaved runs
        summary, t_cold = _time_run(run, manifest, os.path.join(tmp, "out-cold"), config, beam_args, n_videos)
        no_checkpoints = dataclasses.replace(config, checkpoints=False)
        # each round times the bare work again beside the two whole runs, so that the efficiency
        # compares work and runs measured at the same time (this machine's speed drifts by 20%)
        times: dict[bool, list[float]] = {True: [], False: []}
        bare_times = [sum(stages)]
        for r in range(rounds):
            for checkpoints, cfg in ((True, dataclasses.replace(config, checkpoints=True)), (False, no_checkpoints)):
                out = os.path.join(tmp, f"out-{r}-{checkpoints}")
                times[checkpoints].append(_time_run(run, manifest, out, cfg, beam_args, n_videos)[1])
            bare_times.append(sum(bare_stages()[0]))
        t_e2e, t_e2e_bare = float(np.median(times[True])), float(np.median(times[False]))
    mean_t = np.mean([v.frames.shape[0] for v in videos])
    mean_m = np.mean([len(v.texts) for v in videos])
    bare = float(np.median(bare_times))
    lines += [
        f"Feature-mode throughput: {n_videos} videos, mean {mean_t:.0f} frames (1 fps), {mean_m:.0f} captions, D={videos[0].frames.shape[1]}, {os.cpu_count()} cores",
        "",
        "| stage (alone, one core) | videos/s |",
        "|---|---:|",
        f"| load features (.npy) | {1 / t_load:.1f} |",
        f"| parse captions + caption features | {1 / t_caps:.1f} |",
        *([f"| calibration pass (evidence, decoys; the run-level estimate once) | {1 / t_calib:.1f} |"] if posterior else []),
        f"| realign ({params.method}: similarity, evidence or OT, spans, rows) | {1 / t_align:.1f} |",
        f"| build shard samples | {1 / t_sample:.1f} |",
        f"| write shard tars | {1 / t_tar:.1f} |",
        f"| write index parquet | {1 / t_parquet:.1f} |",
        f"| every stage back to back (the bare per-video work; median of {len(bare_times)}, interleaved) | {1 / bare:.1f} |",
        f"| whole pipeline, DirectRunner {' '.join(beam_args) or '(defaults)'}, checkpoints on | {1 / t_e2e:.1f} |",
        f"| whole pipeline, --set checkpoints=false | {1 / t_e2e_bare:.1f} |",
        f"| whole pipeline, the first run in this process (checkpoints {'on' if config.checkpoints else 'off'}) "
        f"| {1 / t_cold:.1f} |",
        "",
        f"pipeline efficiency = bare per-video work / end to end = {bare / t_e2e:.2f} "
        f"({bare / t_e2e_bare:.2f} without checkpoints; {bare / t_cold:.2f} for the first run in a fresh process); "
        f"bare work and end to end: medians of {len(bare_times)} / {rounds} interleaved runs; the rest, {(t_e2e - bare) * 1000:.1f} ms/video, "
        f"is Beam (its start-up included), the checkpoints ({(t_e2e - t_e2e_bare) * 1000:.1f} ms/video) and the "
        "run's launch scan",
        f"aligner cost, in process, interleaved on the same 60 videos (medians of {COST_ROUNDS} rounds): {params.method} "
        f"{cost['new'] * 1000:.1f} ms/video (evidence {cost['evidence'] * 1000:.1f} + calibration share "
        f"{cost['calibrate'] * 1000:.1f} + the run-level estimate once {cost['estimate'] * 1000:.1f} + realign "
        f"{cost['realign'] * 1000:.1f}) vs the old default (norton-v0) {cost['old'] * 1000:.1f} ms/video: "
        f"ratio {cost['ratio']:.2f} ({cost['ratio_per_video']:.2f} without the once-a-run estimate); on a run of "
        f"{LARGE_RUN_CAPTIONS / 1e6:.0f} M captions, where a video scores decoys only for the captions the run's "
        f"sample can hold: {cost['large_run'] * 1000:.1f} ms/video (calibration share "
        f"{cost['calibrate_large'] * 1000:.1f}), ratio {cost['ratio_large_run']:.2f}",
        f"HowTo100M (1.22 M videos) at the realign-alone rate: {1.22e6 * t_align / 3600:.1f} core-hours",
        f"kept {summary['captions_kept']} of {summary['captions_in']} captions",
        "",
        "where realignment time goes (share of profiled time, top functions):",
    ]
    lines += [f"  {share / total * 100:5.1f}%  {name}" for name, share in top]
    return "\n".join(lines)
