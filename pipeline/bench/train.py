"""``nccurate bench train``: does curation make a better model? (issue: training on the shards)

On the synthetic pixel world of the demo (``curation.synth.video``):

1. A training corpus (``--train-videos`` H.264 videos, world seed 100) is curated twice with the
   demo's encoder as the scorer: (a) ``align.method=asr`` with ``min_alignability=0``: every
   caption at its ASR span, nothing dropped (the raw pairs a naive pipeline gives); (b, c) the
   default method (Norton OT + prompt bucket), unalignable captions dropped.
2. A fresh model (``nccurate-tiny``, random init with the run's seed; the demo's encoder is never
   trained on) is trained for the same steps on (a) with weight 1, (b) with weight 1, and
   (c) with the shards' confidence weights (Cali-NCE), for every seed.
3. Each model is scored on a clean held-out set: ``--eval-videos`` other videos (world seed 200),
   every alignable caption paired with the frames of its true step; text -> clip retrieval where
   a hit is a clip showing the caption's concept (concepts repeat, so exact-clip identity would
   be ambiguous).

It also holds the demo encoder's acceptance check through real files (:func:`evaluate_demo_h264`):
``models.train_demo.evaluate`` on frames that went through the demo's H.264 writer and the
pipeline's decoder instead of the rendered ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np

from curation.frames import segment_centres
from pipeline.config import load_config
from pipeline.outputs.layout import OutputLayout

TRAIN_WORLD_SEED, EVAL_WORLD_SEED = 100, 200
CONDITIONS = (
    ("a", "raw ASR pairs (ASR spans, no filtering, weight 1)"),
    ("b", "realigned + filtered, weight 1"),
    ("c", "realigned + filtered + confidence weights"),
)


def curate(manifest: str, output: str, method: str) -> dict:
    """Run the pipeline with the demo's encoder; ``asr`` keeps every caption at its ASR span."""
    from pipeline.demo import demo_config
    from pipeline.run import run

    overrides = ["clips.format=mp4"] + (["align.method=asr", "align.min_alignability=0"] if method == "asr" else [])
    config = demo_config(load_config(None, overrides), "video")
    return run(manifest, output, config, overwrite=True)


def step_frames(frames: np.ndarray, start_s: float, end_s: float, n_frames: int) -> np.ndarray:
    """(n_frames, S, S, 3): frames of a 1-fps decode (``frames[t]`` covers [t, t+1) s) spread
    uniformly over [start_s, end_s): the frame covering each of the
    :func:`~curation.frames.segment_centres` of n_frames equal segments."""
    centres = segment_centres(start_s, end_s, n_frames)
    return frames[np.clip(np.floor(centres).astype(int), 0, len(frames) - 1)]


def eval_pairs(directory: str, n_videos: int, n_frames: int, size: int):
    """The clean held-out set: every alignable caption with its true step's frames, labelled by
    the caption's concept."""
    from curation.synth.video import make_video_plan
    from models.train import Pairs
    from pipeline.media.decode import decode_frames
    from pipeline.synth.video_corpus import write_video_corpus

    manifest, _ = write_video_corpus(directory, n_videos, EVAL_WORLD_SEED)
    frames, texts, labels, vids = [], [], [], []
    with open(manifest, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for i, row in enumerate(rows):
        plan = make_video_plan(i, EVAL_WORLD_SEED)
        decoded = decode_frames(os.path.join(directory, row["video"]), 1.0, size, "pyav").frames
        for k in np.flatnonzero(plan.alignable):
            frames.append(step_frames(decoded, plan.true_start_s[k], plan.true_end_s[k], n_frames))
            texts.append(plan.texts[k])
            labels.append(int(plan.caption_concept[k]))
            vids.append(plan.video_id)
    return Pairs(frames=np.stack(frames), texts=texts, weights=np.ones(len(texts), np.float32),
                 video_ids=vids, labels=np.array(labels))


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def bench_train(workdir: str, train_videos: int = 48, eval_videos: int = 12, seeds=(0, 1, 2),
                steps: int = 200, batch_size: int = 64, loss: str = "cali_nce", log=print) -> str:
    """Run the benchmark in ``workdir``; returns the printed report (a markdown table)."""
    import glob

    from models.encoder import EncoderSpec, input_size_of
    from models.train import TrainConfig, pairs_from_shards, train
    from pipeline.synth.video_corpus import write_video_corpus

    base = TrainConfig(steps=steps, batch_size=batch_size, loss=loss, heldout_fraction=0.0, log_every=0)
    size = input_size_of(EncoderSpec(name=base.model))
    log(f"writing {train_videos} training videos and {eval_videos} held-out videos ...")
    manifest, truth = write_video_corpus(os.path.join(workdir, "train"), train_videos, TRAIN_WORLD_SEED)
    heldout = eval_pairs(os.path.join(workdir, "eval"), eval_videos, base.n_frames, size)
    shards, kept = {}, {}
    for name, method in (("asr", "asr"), ("curated", "norton")):
        log(f"curating the training corpus ({name}) ...")
        summary = curate(manifest, os.path.join(workdir, name), method)
        shards[name] = sorted(glob.glob(OutputLayout(os.path.join(workdir, name)).shards_glob))
        kept[name] = summary["captions_kept"]
    data = {"asr": pairs_from_shards(shards["asr"], base.n_frames, size),
            "curated": pairs_from_shards(shards["curated"], base.n_frames, size)}
    results = {key: [] for key, _ in CONDITIONS}
    for seed in seeds:
        for key, _ in CONDITIONS:
            cfg = replace(base, seed=seed, weights="json" if key == "c" else "ones")
            _, res = train(data["asr" if key == "a" else "curated"], cfg, None, heldout, log=lambda _msg: None)
            results[key].append(res.heldout)
            log(f"seed {seed} ({key}): R@1 {res.heldout['r_at_1']:.1f}  R@5 {res.heldout['r_at_5']:.1f}  ({res.wall_s:.0f} s)")
    return report(results, kept, len(data["asr"]), len(data["curated"]), heldout, seeds, base, train_videos)


def report(results: dict, kept: dict, n_asr: int, n_curated: int, heldout, seeds, cfg, train_videos: int) -> str:
    r1 = {k: [r["r_at_1"] for r in v] for k, v in results.items()}
    r5 = {k: [r["r_at_5"] for r in v] for k, v in results.items()}
    pairs = {"a": n_asr, "b": n_curated, "c": n_curated}
    lines = [
        f"nccurate bench train: {train_videos} training videos; {cfg.model} from a random init, {cfg.steps} steps of "
        f"{cfg.batch_size} pairs, loss {cfg.loss}, seeds {list(seeds)}; held-out: {len(heldout)} captions of "
        f"{len(set(heldout.video_ids))} other videos, text -> clip (hit = a clip of the caption's concept)",
        "",
        "| training data | pairs | held-out R@1 | held-out R@5 | R@1 per seed |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in CONDITIONS:
        lines.append(f"| ({key}) {label} | {pairs[key]} | {_mean_std(r1[key])} | {_mean_std(r5[key])} | "
                     f"{', '.join(f'{x:.1f}' for x in r1[key])} |")
    for hi, lo in (("c", "b"), ("b", "a")):
        diff = np.asarray(r1[hi]) - np.asarray(r1[lo])
        lines.append(f"({hi}) - ({lo}): R@1 {diff.mean():+.1f} (per seed {', '.join(f'{d:+.1f}' for d in diff)}; "
                     f"better in {int((diff > 0).sum())} of {len(diff)} seeds)")
    return "\n".join(lines)


# ------------------------------------------------------------ the demo encoder through H.264 files


def demo_frames_h264(plan, directory: str, backend: str = "pyav", sample_fps: float = 1.0, size: int | None = None):
    """``(T, size, size, 3)`` uint8: ``plan``'s samples through a real file: written to
    ``directory`` as the demo writes its videos (``write_plan_video``: libx264 veryfast crf 23,
    yuv420p) and decoded with the pipeline's decoder (``backend``); ``size`` defaults to the demo
    encoder's input side. The same sample grid as ``models.train_demo.demo_frames``."""
    from models.train_demo import INPUT_SIZE
    from pipeline.media.decode import decode_frames
    from pipeline.synth.video_corpus import write_plan_video

    path = write_plan_video(os.path.join(directory, f"{plan.video_id}.mp4"), plan)
    return decode_frames(path, sample_fps, INPUT_SIZE if size is None else size, backend=backend).frames


def evaluate_demo_h264(checkpoint: str, backend: str = "pyav", n_videos: int | None = None, verbose: bool = True) -> dict:
    """``models.train_demo.evaluate`` of ``checkpoint`` on the demo's videos (all of them by
    default) read through H.264 files and the ``backend`` decoder (:func:`demo_frames_h264`);
    the result's ``frames`` is ``h264/<backend>``."""
    from models.train_demo import DEMO_VIDEOS, evaluate

    return evaluate(checkpoint, DEMO_VIDEOS if n_videos is None else n_videos,
                    frames_of_plan=lambda plan, directory: demo_frames_h264(plan, directory, backend),
                    frames_label=f"h264/{backend}", verbose=verbose)
