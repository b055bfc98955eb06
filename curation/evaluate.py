"""Scoring aligners against ground truth with the TAN / HTM-Align protocol (``curation.metrics``)."""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple, Sequence

import numpy as np

from curation.align import AlignParams, align_video, calibration_stats, prepared_similarity, video_prompt_samples
from curation.metrics import recall_at_1, roc_auc


class EvalVideo(NamedTuple):
    """One video's inputs and truth (``true_*`` NaN for unalignable captions)."""

    caption_emb: np.ndarray   # (m, D)
    frames: np.ndarray        # (T, D)
    fps: float
    asr_start_s: np.ndarray   # (m,)
    asr_end_s: np.ndarray
    alignable: np.ndarray     # (m,) bool
    true_start_s: np.ndarray
    true_end_s: np.ndarray


class MethodScore(NamedTuple):
    name: str
    r_at_1: float       # percent
    auc: float          # percent
    kept_alignable: float  # percent of alignable captions kept
    kept_other: float      # percent of unalignable captions kept
    videos_per_s: float


def run_prompt_value(videos: Sequence[EvalVideo], params: AlignParams) -> float:
    """Exact ``prompt_quantile`` of the timestamp-paired similarities of all videos."""
    samples = [video_prompt_samples(prepared_similarity(v.caption_emb, v.frames, params, v.fps),
                                    v.asr_start_s, v.asr_end_s, v.fps) for v in videos]
    return float(np.quantile(np.concatenate(samples), params.prompt_quantile))


def run_calibration(videos: Sequence[EvalVideo], params: AlignParams):
    """Method ``posterior``'s run-level calibration over ``videos``, as a pipeline run makes it."""
    from curation import calibration

    stats = [calibration_stats(f"v{i}", v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params)
             for i, v in enumerate(videos)]
    return calibration.estimate(calibration.merge(stats), params.window_s)


def score_method(name: str, videos: Sequence[EvalVideo], params: AlignParams) -> MethodScore:
    """R@1 (centre of the realigned span) over alignable captions, ROC-AUC of alignability over
    all captions, and how many of each kind ``min_alignability`` keeps. ``videos_per_s`` counts
    the run-level passes (prompt value, calibration) too."""
    start = time.perf_counter()
    prompt = run_prompt_value(videos, params) if params.prompt_mode == "run" else None
    calib = run_calibration(videos, params) if params.method == "posterior" else None
    results = [align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, prompt, calib)
               for v in videos]
    elapsed = time.perf_counter() - start
    centre = np.concatenate([(r.start_s + r.end_s) / 2.0 for r in results])
    score = np.concatenate([r.alignability for r in results])
    label = np.concatenate([v.alignable for v in videos]).astype(bool)
    kept = score >= params.min_alignability
    return MethodScore(
        name=name,
        r_at_1=100.0 * recall_at_1(centre, np.concatenate([v.true_start_s for v in videos]),
                                   np.concatenate([v.true_end_s for v in videos]), label),
        auc=100.0 * roc_auc(score, label),
        kept_alignable=100.0 * float(kept[label].mean()) if label.any() else float("nan"),
        kept_other=100.0 * float(kept[~label].mean()) if (~label).any() else float("nan"),
        videos_per_s=len(videos) / max(elapsed, 1e-9),
    )


def benchmark_methods(base: AlignParams) -> dict[str, AlignParams]:
    """The comparison table of ``nccurate bench align``: baselines, ablations of the default."""
    raw = dataclasses.replace(base, smooth_s=0.0, ncl=False)
    r = dataclasses.replace
    return {
        "ASR timestamps (baseline)": r(raw, method="asr"),
        "argmax, global, raw cosine": r(raw, method="argmax", window_s=None, prior_sigma_s=None),
        "argmax, ±window, raw cosine": r(raw, method="argmax", prior_sigma_s=None),
        "argmax, ±window, smoothed+NCL": r(base, method="argmax", prior_sigma_s=None),
        "Norton OT, no bucket, no window": r(base, method="norton", bucket=False, window_s=None, prior_sigma_s=None),
        "Norton OT + bucket, no window": r(base, method="norton", window_s=None, prior_sigma_s=None),
        "Norton OT, no bucket, ±window": r(base, method="norton", bucket=False),
        "Norton OT + bucket + ±window, NCL off": r(base, method="norton", ncl=False),
        "Norton OT + bucket + ±window + Gaussian prior 30 s": r(base, method="norton", prior_sigma_s=30.0),
        "Norton OT + bucket + ±window, run-level p": r(base, method="norton", prompt_mode="run"),
        "S2DTW (VT-TWINS)": r(base, method="s2dtw"),
        "default config": base,
    }


def format_table(scores: Sequence[MethodScore], title: str) -> str:
    """A Markdown table (pastes into the README as is)."""
    lines = [title, "", "| method | R@1 | AUC | kept alignable % | kept other % | videos/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.name} | {s.r_at_1:.1f} | {s.auc:.1f} | {s.kept_alignable:.1f} | {s.kept_other:.1f} | {s.videos_per_s:.1f} |")
    return "\n".join(lines)
