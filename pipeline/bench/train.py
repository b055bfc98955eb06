"""``nccurate bench train``: does curation make a better model, and do the weights help?

On two synthetic pixel worlds (``curation.synth.video``): ``demo``, the demo's world, and
``hard``, the same footage with half as many alignable captions (15%) and ASR offsets 25 s
instead of 15 s, so that every filter keeps a noisier set:

1. Each world's training corpus (``--train-videos`` H.264 videos) is curated three times with
   the demo's encoder as the scorer: ``asr`` (``align.method=asr``, ``min_alignability=0``:
   every caption at its ASR span, the raw pairs a naive pipeline gives), ``strict`` (the
   default pipeline) and ``permissive`` (the default with ``align.min_alignability`` lowered to
   :data:`PERMISSIVE_MIN_ALIGNABILITY`: every caption at its realigned span, the weights the only
   filter left, as Cali-NCE uses them). Each kept set is scored against
   the world's truth: its precision (share of pairs that are alignable with the kept span's
   centre in the true step, :func:`curation.metrics.hits`), the share of the weight those pairs
   hold, and the weights' effective sample size.
2. A fresh model (``nccurate-tiny``, random init with the run's seed; the scorer is never
   trained) is trained for the same steps under every condition of :data:`CONDITIONS`, for every
   seed. A seed fixes the init and the batch draws, so two conditions on the same kept set
   ((b, c) and (d, e)) see the same batches in the same order.
3. Each model is scored on one clean held-out set: ``--eval-videos`` other videos of the demo
   world (seed 200), every alignable caption paired with the frames of its true step;
   text -> clip retrieval where a hit is a clip showing the caption's concept (concepts repeat,
   so exact-clip identity would be ambiguous).

Results are kept per (world, condition, seed, training config) in ``WORKDIR/results.jsonl``,
so an interrupted run resumes where it stopped.

It also holds the demo encoder's acceptance check through real files (:func:`evaluate_demo_h264`):
``models.train_demo.evaluate`` on frames that went through the demo's H.264 writer and the
pipeline's decoder instead of the rendered ones.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, replace
from typing import NamedTuple

import numpy as np

from curation.frames import segment_centres
from curation.synth.video import VideoParams
from pipeline.config import load_config
from pipeline.outputs.layout import OutputLayout

EVAL_WORLD_SEED = 200
#: name -> (training corpus seed, world knobs).
WORLDS = {
    "demo": (100, VideoParams()),
    "hard": (300, VideoParams(alignable_fraction=0.15, offset_scale_s=25.0)),
}
PERMISSIVE_MIN_ALIGNABILITY = 0.0
#: kept set -> pipeline overrides (on top of the demo's video-mode config).
FILTERS = {
    "asr": ("align.method=asr", "align.min_alignability=0"),
    "strict": (),
    "permissive": (f"align.min_alignability={PERMISSIVE_MIN_ALIGNABILITY}",),
}
#: (key, kept set, training weights, label)
CONDITIONS = (
    ("a", "asr", "ones", "raw ASR pairs, weight 1"),
    ("b", "strict", "ones", "hard filter (default), weight 1"),
    ("c", "strict", "json", "hard filter (default) + weights"),
    ("d", "permissive", "json", f"permissive filter (min_alignability {PERMISSIVE_MIN_ALIGNABILITY:g}) + weights"),
    ("e", "permissive", "ones", f"permissive filter (min_alignability {PERMISSIVE_MIN_ALIGNABILITY:g}), weight 1"),
)
#: paired comparisons reported: (better?, baseline)
PAIRED = (("b", "a"), ("c", "b"), ("d", "e"), ("d", "c"), ("e", "b"))


class KeptSet(NamedTuple):
    """One curation of a training corpus, scored against its truth."""

    pairs: int
    captions: int       # captions in the corpus
    precision: float    # share of the pairs that are alignable with the kept centre in the true step
    weight_on_correct: float  # share of the summed weight held by those pairs
    ess_fraction: float       # (sum w)^2 / sum w^2 / pairs


def curate(manifest: str, output: str, kept_set: str) -> dict:
    """Run the pipeline with the demo's encoder and the :data:`FILTERS` overrides of ``kept_set``."""
    from pipeline.demo import demo_config
    from pipeline.run import run

    config = demo_config(load_config(None, ["clips.format=mp4", *FILTERS[kept_set]]), "video")
    return run(manifest, output, config, overwrite=True)


def score_kept(index_rows: list[dict], truth: dict) -> KeptSet:
    """``index_rows``: the index's rows (dicts of :class:`pipeline.results.IndexRow` fields);
    ``truth``: video_id -> HTM-Align rows ``[alignable, start_s, end_s, text]`` by caption index."""
    from curation.metrics import hits

    kept = [r for r in index_rows if r["kept"]]
    if not kept:
        return KeptSet(0, len(index_rows), float("nan"), float("nan"), float("nan"))
    rows = [truth[r["video_id"]][r["caption_idx"]] for r in kept]
    for r, t in zip(kept, rows):
        if " ".join(t[3].split()) != " ".join(r["text"].split()):
            raise ValueError(f"{r['video_id']} caption {r['caption_idx']}: index text {r['text']!r} is not the "
                             f"truth's {t[3]!r} (caption order changed?)")
    alignable = np.array([bool(t[0]) for t in rows])
    lo = np.array([t[1] if t[0] else np.nan for t in rows], dtype=float)
    hi = np.array([t[2] if t[0] else np.nan for t in rows], dtype=float)
    centre = np.array([(r["start"] + r["end"]) / 2.0 for r in kept], dtype=float)
    correct = hits(centre, lo, hi, alignable)
    w = np.array([r["weight"] for r in kept], dtype=float)
    ess = w.sum() ** 2 / max(float((w ** 2).sum()), 1e-12) / len(w)
    on_correct = float(w[correct].sum() / w.sum()) if w.sum() > 0 else float("nan")
    return KeptSet(len(kept), len(index_rows), float(correct.mean()), on_correct, float(ess))


def read_index(output: str) -> list[dict]:
    import pyarrow.parquet as pq

    parts = sorted(glob.glob(OutputLayout(output).index_glob))
    return [row for part in parts for row in pq.read_table(part).to_pylist()]


def step_frames(frames: np.ndarray, start_s: float, end_s: float, n_frames: int) -> np.ndarray:
    """(n_frames, S, S, 3): frames of a 1-fps decode (``frames[t]`` covers [t, t+1) s) spread
    uniformly over [start_s, end_s): the frame covering each of the
    :func:`~curation.frames.segment_centres` of n_frames equal segments."""
    centres = segment_centres(start_s, end_s, n_frames)
    return frames[np.clip(np.floor(centres).astype(int), 0, len(frames) - 1)]


def eval_pairs(directory: str, n_videos: int, n_frames: int, size: int):
    """The clean held-out set: every alignable caption of ``n_videos`` demo-world videos (seed
    :data:`EVAL_WORLD_SEED`) with its true step's frames, labelled by the caption's concept."""
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


def _result_key(world: str, condition: str, seed: int, cfg, train_videos: int, eval_videos: int) -> str:
    return json.dumps({"world": world, "condition": condition, "seed": seed, "train_videos": train_videos,
                       "eval_videos": eval_videos, "train": asdict(cfg)}, sort_keys=True)


def _load_results(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {row["key"]: row["heldout"] for row in rows}


def curate_world(workdir: str, world: str, train_videos: int, n_frames: int, size: int, log=print):
    """Write ``world``'s training corpus and curate it into every :data:`FILTERS` kept set;
    returns ``({kept set: Pairs}, {kept set: KeptSet})``."""
    from models.train import pairs_from_shards
    from pipeline.synth.video_corpus import write_video_corpus

    seed, params = WORLDS[world]
    base = os.path.join(workdir, world)
    log(f"[{world}] writing {train_videos} training videos ...")
    manifest, truth_path = write_video_corpus(os.path.join(base, "train"), train_videos, seed, params=params)
    with open(truth_path, encoding="utf-8") as handle:
        truth = json.load(handle)
    data, kept = {}, {}
    for name in FILTERS:
        log(f"[{world}] curating the training corpus ({name}) ...")
        output = os.path.join(base, name)
        curate(manifest, output, name)
        data[name] = pairs_from_shards(sorted(glob.glob(OutputLayout(output).shards_glob)), n_frames, size)
        kept[name] = score_kept(read_index(output), truth)
        log(f"[{world}] {name}: {kept[name].pairs} pairs, precision {100 * kept[name].precision:.0f}%")
    return data, kept


def bench_train(workdir: str, train_videos: int = 48, eval_videos: int = 12, seeds=(0, 1, 2, 3, 4),
                steps: int = 300, batch_size: int = 64, loss: str = "cali_nce", worlds=tuple(WORLDS),
                log=print) -> str:
    """Run the benchmark in ``workdir``; returns the printed report (markdown tables)."""
    from models.encoder import EncoderSpec, input_size_of
    from models.train import TrainConfig, train

    unknown = [w for w in worlds if w not in WORLDS]
    if unknown:
        raise ValueError(f"unknown world(s) {unknown}; expected some of {', '.join(WORLDS)}")
    base = TrainConfig(steps=steps, batch_size=batch_size, loss=loss, heldout_fraction=0.0, log_every=0)
    size = input_size_of(EncoderSpec(name=base.model))
    os.makedirs(workdir, exist_ok=True)
    log(f"writing {eval_videos} held-out videos ...")
    heldout = eval_pairs(os.path.join(workdir, "eval"), eval_videos, base.n_frames, size)
    results_path = os.path.join(workdir, "results.jsonl")
    done = _load_results(results_path)
    sections = []
    for world in worlds:
        data, kept = curate_world(workdir, world, train_videos, base.n_frames, size, log)
        results = {key: [] for key, *_ in CONDITIONS}
        for seed in seeds:
            for key, kept_set, weights, _ in CONDITIONS:
                cfg = replace(base, seed=seed, weights=weights)
                rkey = _result_key(world, key, seed, cfg, train_videos, eval_videos)
                if rkey not in done:
                    _, res = train(data[kept_set], cfg, None, heldout, log=lambda _msg: None)
                    done[rkey] = res.heldout
                    with open(results_path, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps({"key": rkey, "heldout": res.heldout}) + "\n")
                    log(f"[{world}] seed {seed} ({key}): R@1 {res.heldout['r_at_1']:.1f}  "
                        f"R@5 {res.heldout['r_at_5']:.1f}  ({res.wall_s:.0f} s)")
                results[key].append(done[rkey])
        sections.append(report(world, results, kept))
    header = (f"nccurate bench train: {train_videos} training videos per world; {base.model} from a random init, "
              f"{base.steps} steps of {base.batch_size} pairs, loss {base.loss}, seeds {list(seeds)}; held-out: "
              f"{len(heldout)} captions of {len(set(heldout.video_ids))} other videos, text -> clip "
              f"(hit = a clip of the caption's concept)")
    return "\n\n".join([header, *sections])


def _pct(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{100 * x:.0f}%"


def report(world: str, results: dict, kept: dict) -> str:
    """One world's table: per condition its kept set, mean ± sd R@1/R@5 over the seeds and the
    per-seed R@1; then the :data:`PAIRED` differences (same seed, same batches where the kept set
    is the same)."""
    r1 = {k: np.array([r["r_at_1"] for r in v], dtype=float) for k, v in results.items()}
    r5 = {k: np.array([r["r_at_5"] for r in v], dtype=float) for k, v in results.items()}
    lines = [
        f"world {world}: {kept['asr'].captions} training captions",
        "",
        "| training data | pairs | precision | weight on correct | ESS | held-out R@1 | held-out R@5 | R@1 per seed |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, kept_set, weights, label in CONDITIONS:
        k = kept[kept_set]
        on_correct, ess = (_pct(k.weight_on_correct), _pct(k.ess_fraction)) if weights == "json" else ("-", "100%")
        lines.append(f"| ({key}) {label} | {k.pairs} | {_pct(k.precision)} | {on_correct} | {ess} | "
                     f"{_mean_std(r1[key])} | {_mean_std(r5[key])} | {', '.join(f'{x:.1f}' for x in r1[key])} |")
    lines.append("")
    for hi, lo in PAIRED:
        diff = r1[hi] - r1[lo]
        sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
        lines.append(f"- ({hi}) - ({lo}): R@1 {diff.mean():+.1f} ± {sd:.1f} (per seed "
                     f"{', '.join(f'{d:+.1f}' for d in diff)}; better in {int((diff > 0).sum())} of {len(diff)} seeds)")
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
