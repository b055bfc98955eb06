"""Synthetic narration, pure numpy and deterministic for a seed.

* :class:`CaptionWorld`: the narration knobs both synthetic worlds share (the feature world
  :class:`curation.synth.features.WorldParams` and the pixel world
  :class:`curation.synth.video.VideoParams` extend it), and the draws they make the same way:
  the step timeline (:func:`draw_steps`), how many captions and how many of them describe a
  step (:func:`caption_counts`), where an alignable caption is and what its ASR time says
  (:func:`place_alignable`, :func:`t2_offset_s`), and where chatter goes
  (:func:`chatter_start_s`). Each world draws its texts and embeddings in between.
* :func:`howto_captions`: HowTo100M-style captions for a video of any length (the long video
  of the benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CaptionWorld:
    """Knobs of a synthetic narrated video (durations in seconds): ``duration_s`` long; visual
    steps of ``step_s`` separated by background gaps of ``gap_s``, a step's concept repeating an
    earlier one with ``repeat_concept_prob``; ``captions_per_minute`` captions of ``caption_s``
    each, ``alignable_fraction`` of them describing a step with an ASR time off by a
    heavy-tailed offset (Student-t, df 2, times ``offset_scale_s``, clipped to
    ±``max_offset_s``), the rest chatter at uniformly random times."""

    duration_s: tuple[int, int] = (360, 480)
    captions_per_minute: float = 8.5
    alignable_fraction: float = 0.3
    step_s: tuple[int, int] = (10, 40)
    gap_s: tuple[int, int] = (5, 30)
    repeat_concept_prob: float = 0.2
    offset_scale_s: float = 15.0
    max_offset_s: float = 60.0
    caption_s: tuple[float, float] = (2.0, 6.0)


Step = tuple[int, int, int]  # (start_s, end_s, concept)


def draw_steps(rng: np.random.Generator, p: CaptionWorld, duration_s: int, n_concepts: int) -> list[Step]:
    """``[(start_s, end_s, concept)]`` steps in time order inside ``[0, duration_s]``, separated
    by background gaps."""
    steps, t, used = [], int(rng.integers(*p.gap_s)), []
    while True:
        length = int(rng.integers(*p.step_s))
        if t + length > duration_s:
            return steps
        if used and rng.random() < p.repeat_concept_prob:
            concept = used[int(rng.integers(len(used)))]
        else:
            concept = int(rng.integers(n_concepts))
        used.append(concept)
        steps.append((t, t + length, concept))
        t += length + int(rng.integers(*p.gap_s))


def caption_counts(p: CaptionWorld, duration_s: int, n_steps: int) -> tuple[int, int]:
    """``(captions, alignable captions)`` of a video: ``captions_per_minute`` (at least 2), of
    which ``alignable_fraction`` describe a step, at most 3 per step (none without steps)."""
    n_captions = max(2, int(round(duration_s / 60.0 * p.captions_per_minute)))
    n_align = min(int(round(n_captions * p.alignable_fraction)), 3 * n_steps) if n_steps else 0
    return n_captions, n_align


def t2_offset_s(rng: np.random.Generator, p: CaptionWorld) -> float:
    """An ASR offset (ASR time minus true time), seconds: ``t(2) x offset_scale_s`` clipped to
    ±``max_offset_s``."""
    return float(np.clip(rng.standard_t(2) * p.offset_scale_s, -p.max_offset_s, p.max_offset_s))


def place_alignable(rng: np.random.Generator, p: CaptionWorld, steps: list[Step], duration_s: int, dur_s: float,
                    draw_offset_s: Callable[[], float] | None = None) -> tuple[Step, float, float]:
    """An alignable caption of ``dur_s`` seconds: ``(step, centre_s, asr_start_s)``, the step it
    describes (uniformly drawn), the moment it is said at (uniform in the step) and its ASR
    start (that moment shifted by ``draw_offset_s()``, default :func:`t2_offset_s`, and kept
    inside the video)."""
    step = steps[int(rng.integers(len(steps)))]
    centre_s = float(rng.uniform(step[0], step[1]))
    offset_s = t2_offset_s(rng, p) if draw_offset_s is None else draw_offset_s()
    return step, centre_s, float(np.clip(centre_s + offset_s - dur_s / 2, 0.0, duration_s - dur_s))


def chatter_start_s(rng: np.random.Generator, duration_s: int, dur_s: float) -> float:
    """A chatter caption's ASR start: uniform over the video."""
    return float(rng.uniform(0.0, duration_s - dur_s))

#: Seconds between caption starts of :func:`howto_captions`.
CAPTION_EVERY_S = 6.0

_OPENERS = ("so", "okay", "now", "and then", "alright", "next", "first", "after that", "here", "you know")
_VERBS = ("take", "cut", "mix", "fold", "put", "hold", "check", "turn", "press", "clean")
_THINGS = ("the dough", "this board", "the onions", "a small piece", "the edge", "your hands", "the lid",
           "the screws", "the paint", "the corner", "some water", "the bottom part")
_TAILS = ("like this", "really slowly", "right here", "a little bit", "until it looks good", "on the left side",
          "one more time", "and we're done with that", "so it doesn't stick", "as you can see")


def howto_captions(duration_s: float, every_s: float = CAPTION_EVERY_S, seed: int = 0) -> dict:
    """HowTo100M-style captions ``{"start": [...], "end": [...], "text": [...]}`` (seconds) for a
    video of ``duration_s``: caption ``i`` starts at ``i * every_s`` plus a jitter in
    ``[0, every_s / 4)`` and lasts 2 s to ``every_s - 0.5`` s, clamped to the video's end;
    ``floor(duration_s / every_s)`` captions (at least 1), sorted, ASR-like text."""
    rng = np.random.default_rng(seed)
    n = max(1, int(duration_s // every_s))
    start = np.minimum(np.arange(n) * every_s + rng.uniform(0, every_s / 4, n), max(0.0, duration_s - 1.0))
    end = np.minimum(start + rng.uniform(min(2.0, every_s / 2), max(2.0, every_s - 0.5), n), duration_s)
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    text = [f"{pick(_OPENERS)} {pick(_VERBS)} {pick(_THINGS)} {pick(_TAILS)}" for _ in range(n)]
    return {"start": [round(float(s), 3) for s in start], "end": [round(float(e), 3) for e in end], "text": text}
