"""``nccurate bench ...``: the benchmarks (commands that print numbers)."""

from __future__ import annotations

import click

from pipeline.cli.options import config_options, video_corpus_options


def _log(message: str) -> None:
    click.echo(message, err=True)


def _seed_list(ctx, param, value: str) -> tuple[int, ...]:
    """``'0,1,2'`` -> ``(0, 1, 2)``."""
    from pipeline.errors import ArgumentError

    try:
        return tuple(int(s) for s in value.split(","))
    except ValueError:
        raise ArgumentError(f"--seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from None


@click.group()
def bench():
    """Benchmarks: commands that print numbers."""


@bench.command("align")
@click.option("--videos", default=40, show_default=True, type=click.IntRange(min=1),
              help="Synthetic videos per world.")
@click.option("--seed", default=0, show_default=True)
@click.option("--manifest", default=None, help="With --truth: a feature-mode manifest of the truth's videos.")
@click.option("--truth", default=None, help="HTM-Align-format truth {vid: [[alignable, start, end, text], ...]}.")
@click.option("--held-out/--no-held-out", default=True, show_default=True,
              help="Also the tables on held-out seeds and on randomly drawn worlds.")
@click.option("--video-world/--no-video-world", default=True, show_default=True,
              help="Also the video demo's world (writes and embeds 24 short videos).")
@click.option("--plots", default=None, help="A folder for the confidence weights' reliability diagrams (PNG).")
@config_options
def bench_align(videos, seed, manifest, truth, held_out, video_world, plots, config):
    """Alignment tables (R@1 / ROC-AUC per world): ASR times, argmax, the seed methods, the old
    default and the configured aligner, on the benchmark family of synthetic worlds."""
    from pipeline.bench.align import bench_align as run_bench

    click.echo(run_bench(config, videos, seed, manifest, truth, held_out, video_world, plots))


@bench.command("throughput", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--mode", type=click.Choice(["features", "video", "decode", "encoder"]), default="features",
              show_default=True)
@click.option("--videos", default=None, type=click.IntRange(min=1), help="Videos (default: 500 in feature mode, 4 in video mode).")
@click.option("--seed", default=0, show_default=True, help="Feature mode: the synthetic corpus's seed.")
@click.option("--workdir", default="nccurate-bench-throughput", show_default=True,
              help="Video mode: generated videos (reused by later runs) and outputs.")
@video_corpus_options(duration_s=600.0, width=640, height=360, model="ViT-B-32")
@click.option("--workers", default=2, show_default=True, help="Video mode: DirectRunner workers of the scaling run.")
@click.option("--asr", is_flag=True, help="Video mode: also time speech recognition (asr.model) per audio second.")
@click.option("--rounds", default=None, type=click.IntRange(min=1),
              help="Interleaved rounds (default: 3 decode, 5 encoder, 2 features: whole-pipeline runs "
                   "with and without checkpoints).")
@config_options
@click.pass_context
def bench_throughput(ctx, mode, videos, seed, workdir, duration_s, width, height, fps, model, workers, asr, rounds,
                     config):
    """Per-stage and end-to-end rates as ratios measured in one run (extra options go to Beam in
    feature mode). Video mode: decode vs plain PyAV, encoder images/s, pipeline vs its slowest
    stage, 1 -> N worker scaling, peak RSS. Decode mode: the PyAV decoder against plain PyAV on
    B-frame H.264 (identical picks checked). Encoder mode: the CPU image encoder's images/s per
    model.backend x model.precision this machine runs (torch fp32 / bf16, onnxruntime fp32 / int8,
    openvino fp32 / bf16; bf16 where the CPU has bf16 units) and its cosine to torch fp32."""
    if mode == "encoder":
        from pipeline.bench.encoder import bench_throughput_encoder

        click.echo(bench_throughput_encoder(model, config.model.frame_batch_size, rounds or 5, seed, log=_log))
        return
    if mode == "decode":
        from pipeline.bench.decode import bench_throughput_decode

        click.echo(bench_throughput_decode(config, workdir, duration_s, width, height, fps, rounds or 3, log=_log))
        return
    if mode == "video":
        from pipeline.bench.video import bench_throughput_video

        click.echo(bench_throughput_video(config, workdir, model, videos or 4, duration_s, width, height, fps,
                                          workers, log=_log, asr=asr))
        return
    from pipeline.bench.features import bench_throughput_features

    click.echo(bench_throughput_features(config, videos or 500, seed, tuple(ctx.args), rounds or 2))


@bench.command("train")
@click.option("--output", default="nccurate-bench-train", show_default=True, help="Work directory (corpora, shards).")
@click.option("--train-videos", default=48, show_default=True)
@click.option("--eval-videos", default=12, show_default=True)
@click.option("--seeds", default="0,1,2,3,4", show_default=True, callback=_seed_list, help="Comma-separated training seeds.")
@click.option("--steps", default=300, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--loss", type=click.Choice(["cali_nce", "norton_clip"]), default="cali_nce", show_default=True)
@click.option("--world", "worlds", multiple=True, type=click.Choice(["demo", "hard"]),
              help="Only this world (repeatable; default: demo and hard).")
def bench_train(output, train_videos, eval_videos, seeds, steps, batch_size, loss, worlds):
    """Train the same model on raw ASR pairs, hard- and permissively-filtered pairs, each with and
    without the confidence weights; held-out R@1 per seed and paired differences, per world.
    Results are kept in OUTPUT/results.jsonl: a rerun resumes."""
    from pipeline.bench.train import WORLDS
    from pipeline.bench.train import bench_train as run_bench

    click.echo(run_bench(output, train_videos, eval_videos, seeds, steps, batch_size, loss,
                         worlds or tuple(WORLDS), log=_log))


@bench.command("memory")
@click.option("--workdir", default="nccurate-bench-memory", show_default=True,
              help="Generated video, captions, manifest, outputs and memory.json (an existing video is reused).")
@video_corpus_options(duration_s=3600.0, width=1280, height=720, model="nccurate-tiny")
@click.option("--backend", type=click.Choice(["decord", "pyav"]), default="pyav", show_default=True)
@config_options
@click.option("--interval-s", default=0.2, show_default=True, help="RSS sampling period.")
def bench_memory(workdir, duration_s, width, height, fps, model, backend, config, interval_s):
    """Peak RSS of a whole video-mode run (every process) on one long video, against 2 GB."""
    from pipeline.bench.memory import bench_memory as run_bench

    text, _ = run_bench(config, workdir, duration_s, width, height, fps, model, backend, interval_s, log=_log)
    click.echo(text)


@bench.command("media")
@click.option("--full", is_flag=True, help="Longer, larger files (about 60 s each) instead of the 8 s test corpus.")
@click.option("--backend", type=click.Choice(["pyav", "decord", "both"]), default="both", show_default=True,
              help="Decode backend(s) of the model frames (clips are cut with PyAV, checked on the first row).")
@click.option("--workdir", default="nccurate-bench-media", show_default=True, help="Where the corpus is written.")
@click.option("--shape", "shapes", multiple=True, help="Only this shape (repeatable; default: every shape).")
def bench_media(full, backend, workdir, shapes):
    """Real-world file shapes (codecs, containers, rotation, pixel aspect, interlacing, late
    starts, damaged headers...): every model frame and clip frame read back and compared with
    what a player shows. Prints a table of frames checked and mismatches per shape and backend."""
    from pipeline.bench.media import bench_media as run_bench

    backends = ("pyav", "decord") if backend == "both" else (backend,)
    click.echo(run_bench(workdir, full, backends, shapes, log=_log))
