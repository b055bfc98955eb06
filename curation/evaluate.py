"""Scoring aligners against ground truth with the TAN / HTM-Align protocol (``curation.metrics``)."""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple, Sequence

import numpy as np

from curation.align import (AlignParams, align_video, calibration_stats, caption_evidence, prepared_similarity,
                            video_prompt_samples)
from curation.metrics import (ReliabilityBins, brier_score, expected_calibration_error, hits, recall_at_1,
                              reliability_bins, roc_auc)
from curation.spans import caption_weight, confidence_weight


class EvalVideo(NamedTuple):
    """One video's inputs and truth (``true_*`` NaN for unalignable captions). ``shown_*``: the
    span of footage that shows each caption, where it is known and differs from the truth (a
    synthetic world whose truth is the sentence's moment inside a step shown evenly: the step);
    None = the truth span."""

    caption_emb: np.ndarray   # (m, D)
    frames: np.ndarray        # (T, D)
    fps: float
    asr_start_s: np.ndarray   # (m,)
    asr_end_s: np.ndarray
    alignable: np.ndarray     # (m,) bool
    true_start_s: np.ndarray
    true_end_s: np.ndarray
    shown_start_s: np.ndarray | None = None
    shown_end_s: np.ndarray | None = None

    @staticmethod
    def of_synth(v) -> "EvalVideo":
        """The :class:`EvalVideo` of a ``curation.synth.features.SynthVideo``."""
        return EvalVideo(v.caption_emb, v.frames, v.fps, v.asr_start_s, v.asr_end_s, v.alignable,
                         v.true_start_s, v.true_end_s, v.shown_start_s, v.shown_end_s)

    def shown_span(self) -> tuple[np.ndarray, np.ndarray]:
        """``(start_s, end_s)``: the footage that shows each caption (the truth where unknown)."""
        if self.shown_start_s is None:
            return self.true_start_s, self.true_end_s
        return self.shown_start_s, self.shown_end_s


class MethodScore(NamedTuple):
    name: str
    r_at_1: float       # percent
    auc: float          # percent
    kept_alignable: float  # percent of alignable captions kept
    kept_other: float      # percent of unalignable captions kept
    videos_per_s: float
    # the confidence weight against "alignable and an R@1 hit", over the kept captions (the pairs
    # a model trains on): ECE (10 bins), Brier, the share of hits and the mean weight (percent)
    weight_ece: float = float("nan")
    weight_brier: float = float("nan")
    hit_share: float = float("nan")
    weight_mean: float = float("nan")
    legacy_ece: float = float("nan")    # the same for the legacy weight (alignability x concentration)
    legacy_brier: float = float("nan")
    weight_ece_all: float = float("nan")  # ECE over all captions, the dropped ones weighing 0
    # (rule, precision %, recall %) of keeping rules: alignability >= t against "alignable", and
    # the weight (as if every caption were kept) >= t against "alignable and an R@1 hit"
    keep_rules: tuple = ()
    # reliability bins (10) of the weight and of the legacy weight over the kept captions
    weight_bins: ReliabilityBins | None = None
    legacy_bins: ReliabilityBins | None = None
    # the weight against the event the ``shown`` weight is the probability of, "alignable and the
    # span's centre lies in footage that shows it" (EvalVideo.shown_span), over the kept captions:
    # its share (percent), ECE and Brier (the same as the hit event's where the truth is what the
    # footage shows)
    shown_share: float = float("nan")
    shown_ece: float = float("nan")
    shown_brier: float = float("nan")


#: Thresholds of :func:`keep_rules`: on alignability (``min_alignability``), and on the weight.
ALIGNABILITY_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
WEIGHT_THRESHOLDS = (0.5,)


def _precision_recall(keep: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Percent of kept that are positive, and of positives that are kept (NaN without any)."""
    precision = 100.0 * float(positive[keep].mean()) if keep.any() else float("nan")
    recall = 100.0 * float(keep[positive].mean()) if positive.any() else float("nan")
    return precision, recall


def keep_rules(alignability: np.ndarray, weight_if_kept: np.ndarray, alignable: np.ndarray,
               hit: np.ndarray) -> tuple:
    """``((rule, precision %, recall %), ...)`` for keeping by ``alignability >= t``
    (:data:`ALIGNABILITY_THRESHOLDS`, judged against ``alignable``) and by
    ``weight_if_kept >= t`` (:data:`WEIGHT_THRESHOLDS`, judged against ``hit``: alignable and an
    R@1 hit), all ``(n,)`` over the same captions."""
    rules = [(f"alignability >= {t:g}", *_precision_recall(alignability >= t, alignable))
             for t in ALIGNABILITY_THRESHOLDS]
    rules += [(f"weight >= {t:g}", *_precision_recall(weight_if_kept >= t, hit)) for t in WEIGHT_THRESHOLDS]
    return tuple(rules)


def run_prompt_value(videos: Sequence[EvalVideo], params: AlignParams) -> float:
    """Exact ``prompt_quantile`` of the timestamp-paired similarities of all videos."""
    samples = [video_prompt_samples(prepared_similarity(v.caption_emb, v.frames, params, v.fps),
                                    v.asr_start_s, v.asr_end_s, v.fps) for v in videos]
    return float(np.quantile(np.concatenate(samples), params.prompt_quantile))


def evidence_of(videos: Sequence[EvalVideo], params: AlignParams) -> list:
    """Every video's ``curation.align.caption_evidence`` (method ``posterior``)."""
    return [caption_evidence(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params) for v in videos]


def calibration_shares(videos: Sequence[EvalVideo], params: AlignParams, evidence: Sequence, pool=None):
    """Every video's share of method ``posterior``'s run-level calibration, merged
    (``curation.calibration.VideoStats``), against decoys from the run's pool (``pool``: made
    from the videos, as a pipeline run makes it, when None; video i is ``v{i}``), as a pipeline
    run makes them (``evidence``: :func:`evidence_of` the videos)."""
    from curation import calibration

    if pool is None:
        pool = calibration.run_pool([(f"v{i}", v.caption_emb) for i, v in enumerate(videos)])
    stats = [calibration_stats(f"v{i}", v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, pool, e)
             for i, (v, e) in enumerate(zip(videos, evidence))]
    return calibration.merge(stats)


def run_calibration(videos: Sequence[EvalVideo], params: AlignParams, evidence: Sequence | None = None):
    """Method ``posterior``'s run-level calibration over ``videos``, as a pipeline run makes it
    (``evidence``: :func:`evidence_of` the videos, when already made)."""
    from curation import calibration

    evidence = evidence_of(videos, params) if evidence is None else evidence
    return calibration.estimate(calibration_shares(videos, params, evidence), params.window_s)


def score_method(name: str, videos: Sequence[EvalVideo], params: AlignParams) -> MethodScore:
    """R@1 (centre of the realigned span) over alignable captions, ROC-AUC of alignability over
    all captions, and how many of each kind ``min_alignability`` keeps. ``videos_per_s`` counts
    the run-level passes (prompt value, calibration) too."""
    start = time.perf_counter()
    prompt = run_prompt_value(videos, params) if params.prompt_mode == "run" else None
    evidence = evidence_of(videos, params) if params.method == "posterior" else [None] * len(videos)
    calib = run_calibration(videos, params, evidence) if params.method == "posterior" else None
    results = [align_video(v.caption_emb, v.frames, v.asr_start_s, v.asr_end_s, v.fps, params, prompt, calib, e)
               for v, e in zip(videos, evidence)]
    elapsed = time.perf_counter() - start
    centre = np.concatenate([(r.start_s + r.end_s) / 2.0 for r in results])
    score = np.concatenate([r.alignability for r in results])
    label = np.concatenate([v.alignable for v in videos]).astype(bool)
    kept = score >= params.min_alignability
    true_start, true_end = np.concatenate([v.true_start_s for v in videos]), np.concatenate([v.true_end_s for v in videos])
    hit = hits(centre, true_start, true_end, label)
    shown = hits(centre, *(np.concatenate(x) for x in zip(*(v.shown_span() for v in videos))), label)
    every = np.concatenate([caption_weight(r, np.ones(len(r.alignability), bool), params.weight) for r in results])
    weight = np.where(kept, every, 0.0)  # the weight as the pipeline writes it: 0 for dropped captions
    legacy = confidence_weight(score, np.concatenate([r.concentration for r in results]), kept)
    return MethodScore(
        name=name,
        r_at_1=100.0 * recall_at_1(centre, true_start, true_end, label),
        auc=100.0 * roc_auc(score, label),
        kept_alignable=100.0 * float(kept[label].mean()) if label.any() else float("nan"),
        kept_other=100.0 * float(kept[~label].mean()) if (~label).any() else float("nan"),
        videos_per_s=len(videos) / max(elapsed, 1e-9),
        weight_ece=expected_calibration_error(weight[kept], hit[kept]),
        weight_brier=brier_score(weight[kept], hit[kept]),
        legacy_ece=expected_calibration_error(legacy[kept], hit[kept]),
        legacy_brier=brier_score(legacy[kept], hit[kept]),
        hit_share=100.0 * float(hit[kept].mean()) if kept.any() else float("nan"),
        weight_mean=100.0 * float(weight[kept].mean()) if kept.any() else float("nan"),
        weight_ece_all=expected_calibration_error(weight, hit),
        keep_rules=keep_rules(score, every, label, hit),
        weight_bins=reliability_bins(weight[kept], hit[kept]),
        legacy_bins=reliability_bins(legacy[kept], hit[kept]),
        shown_share=100.0 * float(shown[kept].mean()) if kept.any() else float("nan"),
        shown_ece=expected_calibration_error(weight[kept], shown[kept]),
        shown_brier=brier_score(weight[kept], shown[kept]),
    )


#: The name of :func:`ceiling_score`'s row in ``nccurate bench align``.
CEILING = "ceiling: true step + the corpus's true bias (not a method)"


def ceiling_centre_s(video: EvalVideo, bias_s: float, min_span_s: float = 1.0) -> np.ndarray:
    """``(m,)`` span centres of a ceiling, not an aligner: each alignable caption's ASR centre
    shifted by ``bias_s`` (true minus ASR time) and clipped into the footage that shows it
    (``video.shown_span()``, its step), keeping its span inside; other captions at their ASR
    centre. Where a step shows its concept evenly, nothing in the footage can place a caption
    better than this, so it bounds what an aligner can score there."""
    asr_centre = (video.asr_start_s + video.asr_end_s) / 2.0
    half = np.maximum(video.asr_end_s - video.asr_start_s, min_span_s) / 2.0
    lo, hi = video.shown_span()
    lo, hi = np.where(video.alignable, lo, asr_centre), np.where(video.alignable, hi, asr_centre)  # (NaN for chatter)
    inside = np.clip(asr_centre + bias_s, lo + half, hi - half)
    placed = np.where(hi - lo > 2 * half, inside, (lo + hi) / 2.0)
    return np.where(video.alignable, placed, asr_centre)


def ceiling_score(videos: Sequence[EvalVideo]) -> MethodScore:
    """R@1 of :func:`ceiling_centre_s` with the corpus's median true offset (AUC NaN: no score)."""
    label = np.concatenate([v.alignable for v in videos]).astype(bool)
    true_start, true_end = np.concatenate([v.true_start_s for v in videos]), np.concatenate([v.true_end_s for v in videos])
    asr = np.concatenate([(v.asr_start_s + v.asr_end_s) / 2.0 for v in videos])
    bias = float(np.median(((true_start + true_end) / 2.0 - asr)[label])) if label.any() else 0.0
    centre = np.concatenate([ceiling_centre_s(v, bias) for v in videos])
    nan = float("nan")
    return MethodScore(CEILING, 100.0 * recall_at_1(centre, true_start, true_end, label), nan, nan, nan, nan)


#: The realignment default before the posterior aligner (``configs/norton-v0.yaml``).
NORTON_V0 = AlignParams(method="norton", ncl_temperature=0.05, ncl_relative=False)


def benchmark_methods(base: AlignParams) -> dict[str, AlignParams]:
    """The rows of ``nccurate bench align``: the ASR baseline, a windowed argmax, each seed
    method on its own, the old default and ``base`` (the configured aligner)."""
    r = dataclasses.replace
    raw = r(NORTON_V0, smooth_s=0.0, ncl=False)
    return {
        "ASR timestamps (baseline)": r(raw, method="asr"),
        "argmax, ±window, raw cosine": r(raw, method="argmax", prior_sigma_s=None),
        "NCL + argmax, ±window (Park et al.)": r(NORTON_V0, method="argmax", smooth_s=0.0, ncl_relative=True,
                                               ncl_temperature=1.0),
        "Norton OT + bucket, ±window (Lin et al.)": r(NORTON_V0, smooth_s=0.0, ncl=False),
        "S2DTW (VT-TWINS, Ko et al.)": r(NORTON_V0, method="s2dtw"),
        "old default (norton-v0: smoothed, NCL, OT + bucket)": NORTON_V0,
        f"this config ({base.method})": base,
    }


def format_table(scores: Sequence[MethodScore], title: str) -> str:
    """A Markdown table (pastes into the README as is)."""
    lines = [title, "", "| method | R@1 | AUC | kept alignable % | kept other % | videos/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.name} | {s.r_at_1:.1f} | {s.auc:.1f} | {s.kept_alignable:.1f} | {s.kept_other:.1f} | {s.videos_per_s:.1f} |")
    return "\n".join(lines)


def format_calibration_table(scores: dict[str, MethodScore], title: str) -> str:
    """Markdown: one row per world, the configured method's confidence weight against "alignable
    and an R@1 hit" over the kept captions, the legacy weight beside it, the ECE over all
    captions (dropped ones weigh 0), and the weight against "alignable and the centre in footage
    that shows it" (the event the ``shown`` weight is the probability of; the hit event itself
    where the truth is the footage that shows a caption)."""
    lines = [title, "", "| world | kept: hit % | mean weight % | ECE | Brier | legacy ECE | legacy Brier | ECE, all captions "
             "| kept: shown % | ECE vs shown | Brier vs shown |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for world, s in scores.items():
        lines.append(f"| {world} | {s.hit_share:.1f} | {s.weight_mean:.1f} | {s.weight_ece:.3f} | {s.weight_brier:.3f} | "
                     f"{s.legacy_ece:.3f} | {s.legacy_brier:.3f} | {s.weight_ece_all:.3f} | "
                     f"{s.shown_share:.1f} | {s.shown_ece:.3f} | {s.shown_brier:.3f} |")
    return "\n".join(lines)


def format_keep_table(scores: dict[str, MethodScore], title: str) -> str:
    """Markdown: one row per world, ``precision / recall`` (%) of each of :func:`keep_rules`."""
    rules = [rule for rule, _, _ in next(iter(scores.values())).keep_rules]
    lines = [title, "", "| world | " + " | ".join(rules) + " |", "|---|" + "---:|" * len(rules)]
    for world, s in scores.items():
        lines.append(f"| {world} | " + " | ".join(f"{p:.0f} / {r:.0f}" for _, p, r in s.keep_rules) + " |")
    return "\n".join(lines)


def format_world_table(scores: dict[str, dict[str, MethodScore]], asr_row: str, title: str) -> str:
    """Markdown: rows = methods, columns = worlds, cells ``R@1 / AUC``, and each method's worst
    R@1 margin over the ``asr_row`` method across the worlds."""
    worlds = list(next(iter(scores.values())))
    lines = [title, "", "| method | " + " | ".join(worlds) + " | worst R@1 − ASR |",
             "|---|" + "---:|" * (len(worlds) + 1)]
    for name, by_world in scores.items():
        cells = [f"{s.r_at_1:.1f} / {s.auc:.1f}" for s in by_world.values()]
        worst = min(by_world[w].r_at_1 - scores[asr_row][w].r_at_1 for w in worlds)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst:+.1f} |")
    return "\n".join(lines)
