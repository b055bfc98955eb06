"""A synthetic narrated-video world in feature space, for benchmarks, tests and the demo.

Each video is ``duration_s`` seconds of 1-fps frame features: visual *steps* (a concept held for
10–40 s) separated by background, all tinted by a per-video *scene* vector that makes frames of
one video look alike. Captions are sorted by ASR start time, as ASR output is:

* alignable (``alignable_fraction``, ~30%): describe one step; their text embedding is the step's
  concept plus noise; the truth span is the step; the ASR time is the truth shifted by a
  heavy-tailed offset (Student-t, df 2, ``offset_scale_s``, clipped to ±``max_offset_s``);
* chatter (the rest): text about concepts never shown, at uniformly random times.

Text embeddings also share a constant modality offset, as real dual encoders' do.
Everything is drawn from ``numpy.random.Generator`` streams seeded by ``seed``: deterministic.

The defaults are the project's first world. The other knobs (``truth``, ``evidence``,
``offset_dist``, ``offset_bias_s``, ``outlier_share``, ``text_bias``, ``noise_corr_s``,
``visual_signal``) build the benchmark family of ``curation.synth.worlds``; their draws come from a
second stream, so a world with every such knob at its default is the same, number for number,
as before they existed:

* ``truth="moment"``: the caption describes a moment of its own duration inside the step (its
  truth span), not the whole step;
* ``evidence="peaked"``: the frames of that moment also show a detail only that caption names
  (``moment_strength``); ``"flat"``: every frame of the step shows the same concept;
* ``offset_dist="gauss"``: ASR offset ``N(offset_bias_s, offset_scale_s²)`` instead of
  ``t(2) × offset_scale_s``; either way ``outlier_share`` of the alignable captions get a
  uniform offset in ±``max_offset_s`` instead; offsets are ASR time minus true time;
* ``text_bias``: strength of a per-video direction added to every caption of the video;
* ``noise_corr_s``: frame noise is AR(1) with this time constant (0 = independent frames);
* ``visual_signal=False``: frames show no concept at all (scene, background and noise only);
* ``shared_strength``: a world direction added to frames and captions alike, which squeezes
  every cosine into a narrow positive band as a real CLIP's are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation.synth.captions import (CaptionWorld, caption_counts, chatter_start_s, draw_steps, place_alignable,
                                     t2_offset_s)

WORDS = ("cut", "stir", "pour", "fold", "screw", "sand", "paint", "glue", "whisk", "peel",
         "slice", "knead", "drill", "measure", "wrap", "rinse", "fry", "clamp", "sew", "mix")


@dataclass(frozen=True)
class WorldParams(CaptionWorld):
    """Knobs of the feature world: the narration of :class:`CaptionWorld` (its defaults) and
    the feature space's (durations in seconds)."""

    dim: int = 512
    n_concepts: int = 400
    n_chatter_topics: int = 300
    scene_strength: float = 1.0
    concept_strength: float = 0.9
    frame_noise: float = 1.0
    text_noise: float = 1.3
    modality_offset: float = 0.8
    truth: str = "step"
    evidence: str = "flat"
    moment_strength: float = 0.9
    offset_dist: str = "t2"
    offset_bias_s: float = 0.0
    outlier_share: float = 0.0
    text_bias: float = 0.0
    noise_corr_s: float = 0.0
    visual_signal: bool = True
    shared_strength: float = 0.0


@dataclass(frozen=True)
class SynthVideo:
    """One synthetic video: features, captions and ground truth (times in seconds)."""

    video_id: str
    fps: float
    frames: np.ndarray          # (T, D) float32
    caption_emb: np.ndarray     # (m, D) float32
    texts: tuple[str, ...]
    asr_start_s: np.ndarray     # (m,)
    asr_end_s: np.ndarray       # (m,)
    alignable: np.ndarray       # (m,) bool
    true_start_s: np.ndarray    # (m,) NaN for chatter
    true_end_s: np.ndarray      # (m,)
    # (m,) the step whose frames show the caption's concept (NaN for chatter): the truth span
    # where ``truth="step"``, the step around it where the truth is a moment
    shown_start_s: np.ndarray = None
    shown_end_s: np.ndarray = None


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass(frozen=True)
class World:
    """The shared vocabulary: visual concepts, chatter topics, the text modality offset."""

    concepts: np.ndarray   # (n_concepts, D)
    chatter: np.ndarray    # (n_chatter_topics, D)
    text_offset: np.ndarray  # (D,)
    shared: np.ndarray = None  # (D,) direction common to both modalities (``shared_strength``)

    @staticmethod
    def make(params: WorldParams, seed: int) -> "World":
        rng = np.random.default_rng([seed, 0])
        world = World(_unit(rng, params.n_concepts, params.dim),
                      _unit(rng, params.n_chatter_topics, params.dim),
                      _unit(rng, 1, params.dim)[0])
        shared = _unit(np.random.default_rng([seed, 3]), 1, params.dim)[0]
        return World(world.concepts, world.chatter, world.text_offset, shared)


def _frame_noise(rng: np.random.Generator, n_frames: int, dim: int, corr_s: float, fps: float) -> np.ndarray:
    """``(T, D)`` unit-variance-per-entry noise, independent per frame or AR(1) with time
    constant ``corr_s`` seconds (stationary: every frame has the same variance)."""
    white = rng.standard_normal((n_frames, dim))
    if corr_s <= 0:
        return white
    a = float(np.exp(-1.0 / (corr_s * fps)))
    out = np.empty_like(white)
    out[0] = white[0]
    for t in range(1, n_frames):
        out[t] = a * out[t - 1] + np.sqrt(1.0 - a * a) * white[t]
    return out


def _offset_s(rng: np.random.Generator, extra: np.random.Generator, p: "WorldParams") -> float:
    """ASR time minus true time of one alignable caption, seconds (the default draws from ``rng``
    exactly as the first world did; the other knobs from ``extra``)."""
    if p.offset_dist == "t2" and p.offset_bias_s == 0.0 and p.outlier_share == 0.0:
        return t2_offset_s(rng, p)
    if extra.random() < p.outlier_share:
        return float(extra.uniform(-p.max_offset_s, p.max_offset_s))
    noise = extra.standard_t(2) if p.offset_dist == "t2" else extra.standard_normal()
    return float(np.clip(p.offset_bias_s + noise * p.offset_scale_s, -p.max_offset_s, p.max_offset_s))


def make_video(world: World, p: WorldParams, seed: int, index: int, fps: float = 1.0) -> SynthVideo:
    """Video number ``index`` of the world seeded by ``seed`` (independent of other indices)."""
    rng = np.random.default_rng([seed, 1, index])
    extra = np.random.default_rng([seed, 2, index])  # draws of the knobs the first world lacked
    duration_s = int(rng.integers(*p.duration_s))
    n_frames = int(duration_s * fps)
    scene = _unit(rng, 1, p.dim)[0]
    background = _unit(rng, 1, p.dim)[0]
    steps = draw_steps(rng, p, duration_s, p.n_concepts)

    frame_t = (np.arange(n_frames) + 0.5) / fps
    content = np.tile(background, (n_frames, 1)) * 0.5
    if p.visual_signal:
        for start, end, concept in steps:
            content[(frame_t >= start) & (frame_t < end)] = world.concepts[concept] * p.concept_strength
    if p.noise_corr_s > 0:
        noise = _frame_noise(extra, n_frames, p.dim, p.noise_corr_s, fps)
    else:
        noise = rng.standard_normal((n_frames, p.dim))
    frames = p.scene_strength * scene + content + p.frame_noise * noise / np.sqrt(p.dim) * 4
    if p.shared_strength > 0:
        frames = frames + p.shared_strength * world.shared

    n_captions, n_align = caption_counts(p, duration_s, len(steps))
    rows = []
    for k in range(n_captions):
        dur = float(rng.uniform(*p.caption_s))
        if k < n_align:
            (start, end, concept), centre, asr_start = place_alignable(rng, p, steps, duration_s, dur,
                                                                       lambda: _offset_s(rng, extra, p))
            emb = world.concepts[concept]
            text = f"now {WORDS[concept % len(WORDS)]} the part {concept}"
            true = (float(start), float(end))
            if p.truth == "moment":
                true = (max(centre - dur / 2, float(start)), min(centre + dur / 2, float(end)))
            if p.evidence == "peaked":
                detail = _unit(extra, 1, p.dim)[0]
                emb = (emb + detail) / np.sqrt(2.0)
                if p.visual_signal:
                    moment = (frame_t >= centre - dur / 2) & (frame_t < centre + dur / 2)
                    frames[moment] += p.moment_strength * detail
            rows.append((asr_start, dur, emb, text, True) + true + (float(start), float(end)))
        else:
            topic = int(rng.integers(p.n_chatter_topics))
            asr_start = chatter_start_s(rng, duration_s, dur)
            text = f"by the way, story number {topic}"
            rows.append((asr_start, dur, world.chatter[topic], text, False, np.nan, np.nan, np.nan, np.nan))
    rows.sort(key=lambda r: r[0])
    emb = np.stack([r[2] for r in rows])
    caption_emb = emb + p.modality_offset * world.text_offset + p.text_noise * rng.standard_normal(emb.shape) / np.sqrt(p.dim) * 4
    if p.text_bias > 0:
        caption_emb = caption_emb + p.text_bias * _unit(extra, 1, p.dim)[0]
    if p.shared_strength > 0:
        caption_emb = caption_emb + p.shared_strength * world.shared
    return SynthVideo(
        video_id=f"synth{seed}_{index:06d}",
        fps=fps,
        frames=frames.astype(np.float32),
        caption_emb=caption_emb.astype(np.float32),
        texts=tuple(r[3] for r in rows),
        asr_start_s=np.round(np.array([r[0] for r in rows]), 2),
        asr_end_s=np.round(np.array([r[0] + r[1] for r in rows]), 2),
        alignable=np.array([r[4] for r in rows], dtype=bool),
        true_start_s=np.array([r[5] for r in rows]),
        true_end_s=np.array([r[6] for r in rows]),
        shown_start_s=np.array([r[7] for r in rows]),
        shown_end_s=np.array([r[8] for r in rows]),
    )


def make_corpus(n_videos: int, seed: int, params: WorldParams = WorldParams()) -> list[SynthVideo]:
    """``n_videos`` videos of one world; video ``i`` depends only on ``(seed, i)``."""
    world = World.make(params, seed)
    return [make_video(world, params, seed, i) for i in range(n_videos)]
