"""Align one video's captions to its frames: the method switchboard over the pure pieces.

Notation: m captions, T frames at ``fps``; embeddings ``caption_emb: (m, D)``,
``frame_emb: (T, D)``; ASR spans ``asr_start_s, asr_end_s: (m,)`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import numpy as np
from annotated_types import Ge, Gt, Interval

from curation import ot

from curation import similarity

from curation import spans

from curation import timeline

from curation import timing

Method = Literal["posterior", "norton", "s2dtw", "argmax", "asr"]
PromptMode = Literal["run", "video", "fixed"]
METHODS: tuple[str, ...] = get_args(Method)
PROMPT_MODES: tuple[str, ...] = get_args(PromptMode)


@dataclass(frozen=True)
class AlignParams:
    """Every knob of realignment; ``configs/default.yaml`` documents each one. The bounds are
    ``annotated_types`` annotations, which ``pipeline.config`` validates (pydantic)."""

    method: Method = "posterior"
    minmax: bool = True
    ncl: bool = True
    ncl_temperature: Annotated[float, Gt(0)] = 1.0
    ncl_relative: bool = True
    smooth_s: Annotated[float, Ge(0)] = 8.0
    eps: Annotated[float, Gt(0)] = 0.1
    n_iter: Annotated[int, Ge(1)] = 50
    bucket: bool = True
    prompt_mode: PromptMode = "video"
    prompt_quantile: Annotated[float, Interval(ge=0, le=1)] = 0.3
    prompt_value: float = 0.5
    bucket_span_s: Annotated[float, Gt(0)] = 16.0
    window_s: Annotated[float | None, Gt(0)] = 60.0
    prior_sigma_s: Annotated[float | None, Gt(0)] = None
    prior_weight: Annotated[float, Ge(0)] = 0.5
    min_span_s: Annotated[float, Gt(0)] = 1.0
    min_alignability: Annotated[float, Interval(ge=0, le=1)] = 0.5
    s2dtw_gamma: Annotated[float, Gt(0)] = 0.1
    s2dtw_skip_cost: float = 0.5
    weight: Literal["shown", "legacy"] = "shown"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"align.method: {self.method!r} is not one of {list(METHODS)}")
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"align.prompt_mode: {self.prompt_mode!r} is not one of {list(PROMPT_MODES)}")
        if self.method == "posterior" and self.window_s is None:
            raise ValueError("align.window_s: method 'posterior' needs a window (seconds), not null")

    def ncl_tau(self, cosine: np.ndarray) -> float:
        """NCL temperature for ``cosine: (m, T)``: ``ncl_temperature`` standard deviations of the
        matrix when ``ncl_relative`` (the same for any encoder's cosine band), else as given."""
        if not self.ncl_relative:
            return self.ncl_temperature
        return self.ncl_temperature * max(float(np.std(cosine)), 1e-6)


def prepared_similarity(caption_emb: np.ndarray, frame_emb: np.ndarray, params: AlignParams, fps: float) -> np.ndarray:
    """``(m, T)`` similarity the aligners see: cosine, then :func:`prepare`."""
    return prepare(similarity.cosine_similarity(caption_emb, frame_emb), params, fps)


def prepare(cosine: np.ndarray, params: AlignParams, fps: float) -> np.ndarray:
    """``(m, T)``: temporal mean over ``smooth_s`` seconds, then NCL (optional), then min-max
    (optional) of a cosine similarity matrix."""
    sim = spans.temporal_mean(cosine, params.smooth_s, fps)
    if params.ncl:
        sim = similarity.ncl_normalise(sim, params.ncl_tau(sim))
    return similarity.minmax_scale(sim) if params.minmax else sim


def video_prompt_samples(sim: np.ndarray, asr_start_s: np.ndarray, asr_end_s: np.ndarray, fps: float) -> np.ndarray:
    """``(m,)`` timestamp-paired similarities of one video: what the prompt quantile is taken over."""
    return timeline.paired_similarity(sim, asr_start_s, asr_end_s, fps)


def resolve_prompt_value(sim: np.ndarray, asr_start_s, asr_end_s, fps: float, params: AlignParams,
                         run_prompt_value: float | None) -> float:
    """The prompt value p for this video: fixed, the run-level value, or this video's quantile."""
    if params.prompt_mode == "fixed":
        return params.prompt_value
    if params.prompt_mode == "run":
        if run_prompt_value is None:
            raise ValueError("align.prompt_mode 'run' needs the run-level prompt value")
        return float(run_prompt_value)
    samples = video_prompt_samples(sim, asr_start_s, asr_end_s, fps)
    return float(np.quantile(samples, params.prompt_quantile))


def bucket_cell_value(prompt_value: float, eps: float, span_frames: float) -> float:
    """Value of the bucket cells: ``p + eps * log(span_frames)``.

    Norton applies the bucket to clip-level similarities (about one clip per caption). At frame
    level a caption's entropic mass spreads over every frame it may reach, so one dustbin cell
    at ``p`` is outweighed by sheer count. Giving the bucket the weight of ``span_frames`` frames
    at similarity ``p`` (``exp(v/eps) = span_frames * exp(p/eps)``) restores the comparison
    "is this caption better matched by some span than by the prompt?".
    """
    return float(prompt_value + eps * np.log(max(span_frames, 1.0)))


def _soft_alignment(sim: np.ndarray, asr_start_s, asr_end_s, fps, params: AlignParams,
                    prompt_value: float) -> tuple[np.ndarray, np.ndarray]:
    """``(plan: (m, T), bucket_mass: (m,))`` of the configured method; bucket 0 where none."""
    m, t = sim.shape
    no_bucket = np.zeros(m)
    if params.method == "asr":
        mask = timeline.span_frame_mask(asr_start_s, asr_end_s, t, fps)
        return mask.astype(np.float64), no_bucket
    if params.method == "s2dtw":
        from curation.s2dtw import s2dtw_plan

        # shift so every real cell costs >= 0 (cost = 1 - sim for [0, 1] similarities): only
        # then can the constant skip cells (cost s2dtw_skip_cost) win against a poor match
        return s2dtw_plan(sim - 1.0, params.s2dtw_gamma, params.s2dtw_skip_cost)
    centre = (np.asarray(asr_start_s) + np.asarray(asr_end_s)) / 2.0
    prior = timeline.temporal_penalty(centre, t, fps, params.window_s, params.prior_sigma_s, params.prior_weight)
    scored = sim + prior
    if params.method == "argmax":
        return np.where(np.isfinite(scored), np.exp((scored - np.nanmax(scored)) / params.eps), 0.0), no_bucket
    if params.bucket:
        bucket_value = bucket_cell_value(prompt_value, params.eps, params.bucket_span_s * fps)
        result = ot.norton_bucket_plan(scored, bucket_value, params.eps, params.n_iter)
        return result.plan, result.bucket_mass
    return ot.plain_plan(scored, params.eps, params.n_iter), no_bucket


def _asr_centre_s(asr_start_s, asr_end_s) -> np.ndarray:
    return (np.asarray(asr_start_s, dtype=np.float64) + np.asarray(asr_end_s, dtype=np.float64)) / 2.0


def caption_evidence(caption_emb, frame_emb, asr_start_s, asr_end_s, fps: float, params: AlignParams) -> timing.Evidence:
    """Segment evidence (``curation.timing``) of every caption of one video, on the plain cosine
    (no smoothing, NCL or min-max: the evidence model standardises it by a median polish). It
    feeds both the run-level calibration and realignment, so a pipeline computes it once."""
    sim = similarity.cosine_similarity(caption_emb, frame_emb, np.float32)
    return timing.segment_evidence(sim, _asr_centre_s(asr_start_s, asr_end_s), fps, params.window_s)


def calibration_stats(video_id: str, caption_emb, frame_emb, asr_start_s, asr_end_s, fps: float,
                      params: AlignParams, decoy_pool=None, evidence: timing.Evidence | None = None):
    """One video's share of the run-level calibration (``curation.calibration.VideoStats``):
    its captions' evidence statistics (``evidence``, :func:`caption_evidence`, made when not
    given), their decoys' (captions of other videos from ``decoy_pool``, a
    ``curation.calibration.DecoyPool``) and its sample for the offset prior's fit, for the
    captions whose keys can be in the run's sample (``DecoyPool.sample_bound``; all without a pool)."""
    from curation import calibration

    centre = _asr_centre_s(asr_start_s, asr_end_s)
    if evidence is None:
        evidence = caption_evidence(caption_emb, frame_emb, asr_start_s, asr_end_s, fps, params)
    keys = calibration.sample_keys(video_id, len(centre))
    rows = np.arange(len(centre)) if decoy_pool is None else np.flatnonzero(keys <= np.uint64(decoy_pool.sample_bound()))
    if not rows.size:
        return calibration.no_stats(params.window_s)
    decoy_emb = calibration.decoys_for(decoy_pool, video_id, len(centre), np.shape(caption_emb)[1])
    decoy_sim = None if decoy_emb is None else similarity.cosine_similarity(decoy_emb[rows], frame_emb, np.float32)
    sim = similarity.cosine_similarity(caption_emb, frame_emb, np.float32) if decoy_emb is None else None
    decoy = timing.decoy_evidence(evidence, sim, decoy_sim, centre, fps, params.window_s, rows)
    return calibration.video_stats(keys[rows], timing.evidence_rows(evidence, rows), decoy, params.window_s)


def _align_posterior(caption_emb, frame_emb, asr_start_s, asr_end_s, duration_s, fps: float,
                     params: AlignParams, run_calibration, evidence) -> spans.CaptionScores:
    """The ``posterior`` method (``curation.timing``): alignability from the run's calibration of
    the evidence statistic, the span centre from the posterior over offsets."""
    from curation import calibration

    if evidence is None:
        evidence = caption_evidence(caption_emb, frame_emb, asr_start_s, asr_end_s, fps, params)
    if run_calibration is None:  # a lone video: calibrated on itself
        stats = calibration_stats("video", caption_emb, frame_emb, asr_start_s, asr_end_s, fps, params,
                                  evidence=evidence)
        run_calibration = calibration.estimate(stats, params.window_s)
    alignability = run_calibration.alignability(run_calibration.statistic(evidence))
    centre_s, concentration, on_prob = timing.posterior_centre_s(evidence, run_calibration.prior,
                                                                 run_calibration.in_window(evidence.llr),
                                                                 duration_s, fps)
    n_frames = np.shape(frame_emb)[0]
    start_s, end_s = spans.span_around(centre_s, duration_s, n_frames / fps)
    in_span = timeline.span_frame_mask(start_s, end_s, n_frames, fps)  # one run of frames per row
    first, stop = in_span.argmax(axis=1), n_frames - in_span[:, ::-1].argmax(axis=1)
    return spans.CaptionScores(start_s=start_s, end_s=end_s, alignability=alignability,
                               bucket_mass=1.0 - alignability,
                               similarity=similarity.mean_cosine_over_runs(caption_emb, frame_emb, first, stop),
                               concentration=np.clip(concentration, 0.0, 1.0),
                               shown_at_centre=np.clip(on_prob, 0.0, 1.0))


def align_video(
    caption_emb: np.ndarray,
    frame_emb: np.ndarray,
    asr_start_s: np.ndarray,
    asr_end_s: np.ndarray,
    fps: float,
    params: AlignParams,
    prompt_value: float | None = None,
    run_calibration=None,
    evidence: timing.Evidence | None = None,
) -> spans.CaptionScores:
    """Realign every caption of one video; returns per-caption spans and scores.

    ``prompt_value`` is the run-level prompt (``prompt_mode: run``); with ``video`` it is the
    ``prompt_quantile`` of this video's timestamp-paired similarities, with ``fixed`` it is
    ``params.prompt_value``. ``run_calibration`` (``curation.calibration.RunCalibration``) is
    what method ``posterior`` learnt from the run; without it a video is calibrated on itself;
    ``evidence``: the video's :func:`caption_evidence`, when the calibration pass already made it.
    The span keeps the caption's ASR duration (at least ``min_span_s``),
    centred on the window of that length holding most plan mass. Alignability is
    ``1 - bucket_mass`` for bucket methods, else the mean similarity inside the span.
    """
    asr_start_s = np.asarray(asr_start_s, dtype=np.float64)
    asr_end_s = np.asarray(asr_end_s, dtype=np.float64)
    duration_s = np.maximum(asr_end_s - asr_start_s, params.min_span_s)
    if params.method == "posterior":
        return _align_posterior(caption_emb, frame_emb, asr_start_s, asr_end_s, duration_s, fps, params,
                                run_calibration, evidence)
    raw = similarity.cosine_similarity(caption_emb, frame_emb)
    sim = prepare(raw, params, fps)
    prompt_value = resolve_prompt_value(sim, asr_start_s, asr_end_s, fps, params, prompt_value)
    plan, bucket_mass = _soft_alignment(sim, asr_start_s, asr_end_s, fps, params, prompt_value)
    video_s = sim.shape[1] / fps
    if params.method == "asr":
        start_s, end_s = spans.span_around((asr_start_s + asr_end_s) / 2.0, duration_s, video_s)
    else:
        start_s, end_s = spans.span_around(spans.peak_centre_s(plan, duration_s, fps), duration_s, video_s)
    in_span = timeline.span_frame_mask(start_s, end_s, sim.shape[1], fps)
    span_sim = (sim * in_span).sum(axis=1) / in_span.sum(axis=1)
    has_bucket = params.method == "s2dtw" or (params.method == "norton" and params.bucket)
    alignability = 1.0 - bucket_mass if has_bucket else np.clip(span_sim, 0.0, 1.0)
    return spans.CaptionScores(
        start_s=start_s,
        end_s=end_s,
        alignability=np.clip(alignability, 0.0, 1.0),
        bucket_mass=bucket_mass,
        similarity=(raw * in_span).sum(axis=1) / in_span.sum(axis=1),
        concentration=spans.mass_in_span(plan, start_s, end_s, fps),
    )
