"""``nccurate bench throughput --mode video``: decode, encoder and end-to-end rates of video mode
as ratios measured in one run on the same files (DESIGN §7). Prints numbers, never asserts.

Inputs (under ``--workdir``, reused by later runs): one long synthetic H.264 video
(:func:`pipeline.synth.long_video.write_long_video`: 640x360, 25 fps, a keyframe every 2 s, moving
noise), hard-linked as ``--videos`` files (decode work is per file; the page
cache makes the reads free either way), each with HowTo100M-style captions (one about every 6 s).

Measured, in this order, all on the same files:

1. **Each stage alone, one core** (``resources`` threads = 1 for the decoder and torch):
   * the reference: a plain sequential PyAV 1-fps decode (:func:`plain_sequential_decode`);
   * the pipeline's decode of each backend, as the pipeline calls it (a child process per video,
     frames read back in chunks), as a ratio to the reference: **decode efficiency**;
   * the encoder alone on decoded frames (images/s, and video-seconds/s at ``decode.sample_fps``);
   * captions (parse + text tower), realign (similarity, OT, spans), clips (cut + encode the kept
     captions' mp4) and shard writing.
2. **The whole pipeline** (``nccurate run`` in a child process, DirectRunner
   ``--direct_running_mode=multi_processing``) with 1 worker and with ``--workers`` workers, one
   thread each; peak RSS of the whole process tree. A run has a fixed start-up cost (imports of
   torch and open_clip in the launcher and in every worker, Beam's job service, the model):
   it is measured on a one-video manifest of :data:`STARTUP_VIDEO_S` seconds and reported, and
   the **steady** rate is ``video-seconds / (wall - start-up)``, what a corpus of many videos
   sees. **Pipeline efficiency** = steady end-to-end video-seconds/s / what the slowest stage
   alone gives on the same cores (``workers x`` its one-core rate); the **scaling** from 1 to N
   workers is the ratio of steady rates (and of raw walls).

Every caption is kept (:data:`pipeline.bench.runs.KEEP_ALL`), so each one's clip is cut: a fixed,
worst case workload (a random-init encoder would otherwise keep an arbitrary share).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config

#: Length of the one video of the start-up run.
STARTUP_VIDEO_S = 10.0


def write_linked_inputs(workdir: str, n_videos: int, duration_s: float, width: int, height: int, fps: float, log,
                        prefix: str = "v") -> dict:
    """``{"manifest", "videos", "generated", "generation_s"}``: the long video
    (:func:`pipeline.synth.long_video.long_video`, written once), ``n_videos`` hard links to it
    (``{prefix}000.mp4``, ...), their captions and a manifest."""
    from curation.synth.captions import howto_captions
    from pipeline.synth.long_video import long_video

    made = long_video(workdir, duration_s, width, height, fps, log)
    master = made["video"]
    rows, videos = [], []
    for i in range(n_videos):
        video_id = f"{prefix}{i:03d}"
        path = os.path.join(workdir, f"{video_id}.mp4")
        if os.path.exists(path) and not os.path.samefile(path, master):
            os.remove(path)
        if not os.path.exists(path):
            os.link(master, path)
        with open(os.path.join(workdir, f"{video_id}.json"), "w", encoding="utf-8") as handle:
            json.dump(howto_captions(duration_s, seed=i), handle)
        rows.append({"video_id": video_id, "video": f"{video_id}.mp4", "captions": f"{video_id}.json"})
        videos.append(path)
    manifest = os.path.join(workdir, f"manifest-{prefix}{n_videos}.jsonl")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return {"manifest": manifest, "videos": videos, "generated": made["generated"],
            "generation_s": made["generation_s"]}


def plain_sequential_decode(path: str, sample_fps: float = 1.0, threads: int = 0) -> int:
    """The reference for decode efficiency (DESIGN §7): one plain sequential PyAV pass over every
    frame, converting the first frame at or after each ``k / sample_fps`` to full-size RGB.
    Returns the number of converted frames."""
    from pipeline.media.pyav import frame_times, open_video_stream

    container, stream = open_video_stream(path, threads)
    converted, next_s = 0, 0.0
    with container:
        for t_s, _, frame in frame_times(stream, container.decode(stream)):
            if t_s >= next_s:
                frame.to_ndarray(format="rgb24")
                converted += 1
                next_s = converted / sample_fps
    return converted


@dataclass
class StageTimes:
    """Seconds each stage took alone over all videos, on one core."""

    plain_pyav: float
    decode: dict          # backend -> seconds (child process + reading the chunks back)
    encode: float
    images: int
    captions: float
    realign: float
    clips: float
    shards: float


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def time_stages(config: Config, videos: list[str], workdir: str, backends: tuple[str, ...]) -> StageTimes:
    """Run each stage alone over ``videos`` in this process with one decoder and one torch thread
    (torch's thread count is restored after: it is process-wide, and float results depend on it)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _time_stages(config, videos, workdir, backends)
    finally:
        torch.set_num_threads(threads)


def _time_stages(config: Config, videos: list[str], workdir: str, backends: tuple[str, ...]) -> StageTimes:
    import torch

    from curation.records import CaptionSet, FrameFeatures
    from models.encoder import encoder_spec_of, input_size_of, shared_encoder
    from pipeline.inputs.arrays import load_caption_set
    from pipeline.inputs.manifest import parse_manifest_line
    from pipeline.media.isolated import decode_isolated
    from pipeline.outputs.tables import write_shard
    from pipeline.results import aligned_rows, samples_for_video

    torch.set_num_threads(1)
    spec = encoder_spec_of(config.model)
    size, fps, batch = input_size_of(spec), config.decode.sample_fps, config.model.frame_batch_size
    encoder = shared_encoder(spec)
    encoder.encode_frames(np.zeros((2, size, size, 3), np.uint8), 2)  # warm-up outside the timings

    def decode_all(path: str, backend: str):
        with decode_isolated(path, fps, size, backend, 3600.0, threads=1) as result:
            return result.pts_s, list(result.in_chunks(batch))

    # Per video, the reference and each backend back to back (load that comes and goes hits them
    # alike); the first backend's frames are what the encoder is timed on.
    plain, decode = 0.0, dict.fromkeys(backends, 0.0)
    encode, images, frames = 0.0, 0, []
    for v in videos:
        plain += _timed(plain_sequential_decode, v, fps, 1)[0]
        for b in backends:
            seconds, decoded = _timed(decode_all, v, b)
            decode[b] += seconds
            if b == backends[0]:
                pts_s, chunks = decoded
        del decoded
        seconds, emb = _timed(lambda cs: np.concatenate([encoder.encode_frames(c, batch) for c in cs]), chunks)
        encode, images = encode + seconds, images + len(pts_s)
        frames.append(FrameFeatures(os.path.basename(v)[:-4], fps, emb, pts_s=pts_s, source=v))
    refs = [parse_manifest_line(json.dumps({"video_id": f.video_id, "video": f.source, "captions": f.source[:-4] + ".json"}),
                                workdir) for f in frames]
    t_caps, caption_sets = 0.0, []
    for ref in refs:
        seconds, caps = _timed(lambda r: load_caption_set(r, None), ref)
        seconds_emb, emb = _timed(encoder.encode_texts, list(caps.text), config.model.text_batch_size)
        t_caps += seconds + seconds_emb
        caption_sets.append(CaptionSet(caps.video_id, caps.start_s, caps.end_s, caps.text, emb))
    t_align, rows = 0.0, []
    for f, c in zip(frames, caption_sets):
        seconds, r = _timed(aligned_rows, f, c, config.align, None)
        t_align, rows = t_align + seconds, rows + [r]
    t_clips, samples = 0.0, []
    for f, r in zip(frames, rows):
        seconds, (_, s, _) = _timed(samples_for_video, r, f, {}, config.clips)
        t_clips, samples = t_clips + seconds, samples + s
    t_shards, _ = _timed(write_shard, os.path.join(workdir, "shards-alone"), 0, samples, config.output.layout, config.seed)
    return StageTimes(plain, decode, encode, images, t_caps, t_align, t_clips, t_shards)


#: What the pipeline child runs with on top of the timed stages' config: one thread per worker.
ONE_THREAD_RUN = ("resources.decode_threads=1", "resources.torch_threads=1", "checkpoints=false")


def run_pipeline(manifest: str, output: str, config_path: str, workers: int, log_path: str):
    """``nccurate run`` with the config file ``config_path`` as a child with ``workers``
    DirectRunner worker processes; ``(wall_s, peak_tree_rss_bytes, returncode)``."""
    from pipeline.bench.proctree import run_measured
    from pipeline.bench.runs import run_command
    from pipeline.media.isolated import child_env

    cmd = run_command(manifest, output, config_path,
                      (f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"))
    returncode, wall_s, sampler = run_measured(cmd, log_path, 0.5, child_env())
    return wall_s, sampler.peak_tree_bytes, returncode


def time_asr(config: Config, workdir: str, log=print) -> str:
    """Speech recognition's cost per audio second, as a ratio to real time, on the real narrated
    video of :mod:`pipeline.synth.narrated` (LibriVox narration; needs Debian's
    ``pocketsphinx-testdata``): in process on one thread (the model loaded beforehand), and as the
    pipeline runs it (a child process per video, the model loaded in it); the line printed."""
    from pipeline.errors import ArgumentError
    from pipeline.media import speech
    from pipeline.media.media_captions import captions_isolated, settings
    from pipeline.synth import narrated

    if not narrated.librivox_available():
        raise ArgumentError(f"--asr needs the LibriVox narration of Debian's pocketsphinx-testdata "
                            f"({narrated.LIBRIVOX_DIR}): apt-get install pocketsphinx-testdata")
    path = os.path.join(workdir, "narrated.mp4")
    if not os.path.exists(path):
        narrated.make_narrated_video(path)
    asr = config.asr
    log(f"timing speech recognition ({asr.model}) on {path} ...")
    samples, _ = speech.decode_audio(path)
    audio_s = len(samples) / speech.SAMPLE_RATE
    args = (asr.model, asr.device, asr.compute_type, asr.language, asr.beam_size)
    speech.load_model(asr.model, asr.device, asr.compute_type, cpu_threads=1)
    alone, _ = _timed(lambda: speech.transcribe_file(path, *args, cpu_threads=1))
    child, _ = _timed(captions_isolated, path, "asr", settings("asr", config.captions.languages, asr), asr.timeout_s)
    return (f"speech recognition ({asr.model}, {asr.device} {asr.compute_type}, beam {asr.beam_size}) on "
            f"{audio_s:.1f} s of narration: {alone / audio_s:.3f} s per audio second alone on one thread "
            f"({audio_s / alone:.1f}x real time), {child / audio_s:.3f} in the pipeline's child process with "
            f"the model load ({audio_s / child:.1f}x real time)")


def bench_throughput_video(config: Config, workdir: str, model: str = "ViT-B-32", n_videos: int = 4,
                           duration_s: float = 600.0, width: int = 640, height: int = 360, fps: float = 25.0,
                           workers: int = 2, backends: tuple[str, ...] = ("pyav", "decord"), log=print,
                           asr: bool = False) -> str:
    """Generate (or reuse) the inputs, time every stage alone, run the pipeline with 1 and
    ``workers`` workers; the printed report. Stages and pipeline run with ``config``, ``model``
    at random init (the same compute as its weights, nothing downloaded) and every caption kept;
    the pipeline child also with :data:`ONE_THREAD_RUN` (its config file is in ``workdir``).
    ``asr``: also time speech recognition (:func:`time_asr`)."""
    from pipeline.bench.runs import KEEP_ALL, write_run_config

    workdir = os.path.abspath(workdir)
    inputs = write_linked_inputs(workdir, n_videos, duration_s, width, height, fps, log)
    config = write_run_config(config, (f"model.name={model}", "model.pretrained=null", *KEEP_ALL),
                              os.path.join(workdir, "config-stages.yaml"))
    run_config = os.path.join(workdir, "config-run.yaml")
    write_run_config(config, ONE_THREAD_RUN, run_config)
    log(f"timing each stage alone on {n_videos} videos ...")
    st = time_stages(config, inputs["videos"], workdir, backends)
    video_s = n_videos * duration_s
    startup = write_linked_inputs(workdir, 1, STARTUP_VIDEO_S, width, height, fps, log, prefix="startup")
    runs, startups = {}, {}
    for w in sorted({1, workers}):
        log(f"running the pipeline with {w} worker(s): start-up run, then the corpus ...")
        startups[w] = run_pipeline(startup["manifest"], os.path.join(workdir, f"out-startup-{w}"), run_config, w,
                                   os.path.join(workdir, f"run-startup-{w}.log"))
        runs[w] = run_pipeline(inputs["manifest"], os.path.join(workdir, f"out-{w}"), run_config, w,
                               os.path.join(workdir, f"run-{w}.log"))
    stage_s = {f"decode ({config.decode.backend}, in the pipeline's child process)": st.decode[config.decode.backend],
               f"encode frames ({config.model.name})": st.encode, "captions (parse + text tower)": st.captions,
               "realign": st.realign, "clips (cut + encode kept captions)": st.clips, "write shards": st.shards}
    slowest_name, slowest = max(stage_s.items(), key=lambda kv: kv[1])
    rate = lambda seconds: video_s / seconds  # noqa: E731 - video-seconds per second
    lines = [
        f"Video-mode throughput: {n_videos} x {duration_s:g} s of {width}x{height} H.264 at {fps:g} fps "
        f"(keyframe every 2 s), sampled at {config.decode.sample_fps:g} fps; model {config.model.name} "
        f"(random init), clips {config.clips.format} {config.clips.size}px; {os.cpu_count()} cores",
        "",
        "| stage alone, one core | seconds | video-s/s | share of the sum |",
        "|---|---:|---:|---:|",
        f"| plain sequential PyAV 1-fps decode (reference) | {st.plain_pyav:.1f} | {rate(st.plain_pyav):.1f} | |",
    ]
    total = sum(stage_s.values())
    lines += [f"| {name} | {s:.1f} | {rate(s):.1f} | {s / total:.0%} |" for name, s in stage_s.items()]
    lines += ["", "decode efficiency (rate / plain PyAV, one core): " + ", ".join(
        f"{b} {st.plain_pyav / s:.2f}" for b, s in st.decode.items())]
    lines.append(f"encoder alone: {st.images / st.encode:.1f} images/s on one core")
    lines += ["", "| pipeline (DirectRunner multi_processing, 1 thread per worker) | wall s | start-up s | "
                  "steady video-s/s | vs slowest stage on as many cores | peak RSS (tree) | exit |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    steady = {w: video_s / max(1e-9, wall - startups[w][0]) for w, (wall, _, _) in runs.items()}
    for w, (wall, rss, rc) in runs.items():
        lines.append(f"| {w} worker(s) | {wall:.1f} | {startups[w][0]:.1f} | {steady[w]:.1f} | "
                     f"{steady[w] / (w * rate(slowest)):.2f} | {rss / 1e9:.2f} GB | {rc} |")
    if workers > 1:
        lines.append(f"\nscaling 1 -> {workers} workers: {steady[workers] / steady[1]:.2f}x steady "
                     f"({runs[1][0] / runs[workers][0]:.2f}x in raw wall time, start-up included)")
    lines.append(f"slowest stage: {slowest_name}; the stages back to back on one core give {rate(total):.1f} "
                 f"video-s/s (the bound for 1 worker, {rate(total) / rate(slowest):.2f} of the slowest stage), "
                 f"the pipeline with 1 worker {steady[1]:.1f} steady: the rest is Beam and process overhead")
    if asr:
        lines += ["", time_asr(config, workdir, log)]
    return "\n".join(lines)
