"""A synthetic narrated-video world in *pixel* space, for the offline video-mode demo.

The visual vocabulary is 40 concepts, (colour, shape) pairs: 8 colours x 5 shapes. A video is
``duration_s`` seconds (default 150–240 s) at ``fps`` (default 4) of ``width`` x ``height``
(default 128 x 96, non-square on purpose) RGB frames:

* every frame shows the video's *style*: a per-video tinted background with a low-contrast
  texture and a slow lighting drift, so frames of one video look alike;
* visual *steps* (``step_s``, 10–30 s) show one concept: its shape in its colour, 35–50% of the
  frame height, drifting slowly around the frame centre with a sub-pixel jitter. The drift stays
  inside the centre square, so a decoder's "shorter side -> S, centre crop" keeps the shape;
* between steps (``gap_s``, 5–20 s) the background shows a distractor instead: faint drifting
  stripes and a desaturated blob (never a concept colour or shape).

Captions are drawn as the feature world's are (:mod:`curation.synth.captions`: the same knobs,
the same draws): ~8.5 per minute, sorted by ASR start; ``alignable_fraction`` of them describe
one step ("now take the red circle", "see how the red circle moves", ...) and their ASR time is
the step's time shifted by a heavy-tailed offset (Student-t, df 2, scale 15 s, clipped to
±60 s); the rest is chatter at uniformly random times that never names a colour or a shape
("my cousin loves gardening").
Texts are unique within a video (WebVTT de-duplication cannot merge two of them).

Everything of a plan comes from ``np.random.default_rng([seed, index])``; frame ``i``'s jitter
from ``np.random.default_rng([seed, index, 1, i])``: plans and frames are deterministic and a
frame does not depend on which other frames are rendered. Pure numpy, no file IO.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from curation.synth.captions import CaptionWorld, caption_counts, chatter_start_s, draw_steps, place_alignable

#: Colour name -> RGB (saturated, far from the backgrounds' desaturated tints).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (35, 195, 55),
    "blue": (40, 85, 240),
    "yellow": (245, 230, 35),
    "magenta": (230, 45, 220),
    "cyan": (35, 220, 230),
    "white": (248, 248, 248),
    "orange": (255, 140, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
#: Concept ``k`` is ``CONCEPTS[k] = (colour, shape)``; 40 of them.
CONCEPTS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
_RGB = np.array([COLOURS[c] for c, _ in CONCEPTS], dtype=np.float32)

#: Alignable caption templates: ``{c}`` colour, ``{s}`` shape.
ALIGNABLE_TEMPLATES: tuple[str, ...] = (
    "now take the {c} {s}",
    "see how the {c} {s} moves",
    "here you can see the {c} {s}",
    "next we need the {c} {s}",
    "put the {c} {s} in the middle",
    "look at this {c} {s} right here",
    "this is the {c} {s} i was talking about",
    "grab the {c} {s} and hold it still",
    "the {c} {s} goes right here",
    "watch the {c} {s} closely",
    "okay so this {c} {s} is important",
    "make sure the {c} {s} stays in place",
    "and now the {c} {s}",
    "you should see a {c} {s} now",
    "let's move the {c} {s} a little",
    "notice the {c} {s} on the screen",
)

#: Chatter templates and their slots; no slot value and no template names a colour or a shape.
CHATTER_TEMPLATES: tuple[str, ...] = (
    "my {person} loves {hobby}",
    "don't forget to {action}",
    "so yesterday i went to the {place}",
    "the weather was {weather} this weekend",
    "thanks for watching and {farewell}",
    "i think my {person} would enjoy {hobby}",
    "we talked about {hobby} in the last video",
    "if you like {hobby} then {action}",
    "honestly the {place} was packed today",
    "let me know in the comments what you think about {hobby}",
    "my {person} called me from the {place}",
    "{weather} days are perfect for {hobby}",
    "anyway, {farewell}",
    "i was at the {place} with my {person} last week",
    "this reminds me of when my {person} tried {hobby}",
    "by the way, {action} if you haven't yet",
    "it has been so {weather} lately",
    "my {person} says hi to everyone",
)
CHATTER_SLOTS: dict[str, tuple[str, ...]] = {
    "person": ("cousin", "neighbour", "sister", "brother", "dog", "grandmother", "uncle",
               "best friend", "roommate", "coworker", "mom", "dad"),
    "hobby": ("gardening", "baking bread", "fishing", "knitting", "chess", "hiking", "jazz",
              "football", "cooking pasta", "yoga", "photography", "woodworking", "cycling",
              "camping", "pottery"),
    "action": ("subscribe", "like this video", "hit the bell", "check the description",
               "share this with a friend", "leave a comment"),
    "place": ("market", "gym", "library", "airport", "beach", "office", "bakery",
              "hardware store", "post office", "cinema"),
    "weather": ("sunny", "rainy", "cold", "windy", "lovely", "terrible", "foggy", "hot"),
    "farewell": ("see you next time", "have a great day", "take care", "stay safe",
                 "see you soon"),
}


def concept_name(concept: int) -> str:
    """``'red circle'`` for concept 0."""
    colour, shape = CONCEPTS[concept]
    return f"{colour} {shape}"


def alignable_text(concept: int, template: int) -> str:
    """Alignable caption ``template`` (index into :data:`ALIGNABLE_TEMPLATES`) for ``concept``."""
    colour, shape = CONCEPTS[concept]
    return ALIGNABLE_TEMPLATES[template % len(ALIGNABLE_TEMPLATES)].format(c=colour, s=shape)


def random_alignable_text(concept: int, rng: np.random.Generator) -> str:
    return alignable_text(concept, int(rng.integers(len(ALIGNABLE_TEMPLATES))))


def random_chatter_text(rng: np.random.Generator) -> str:
    """One chatter sentence: a random template with random slot values."""
    template = CHATTER_TEMPLATES[int(rng.integers(len(CHATTER_TEMPLATES)))]
    values = {k: v[int(rng.integers(len(v)))] for k, v in CHATTER_SLOTS.items() if "{" + k + "}" in template}
    return template.format(**values)


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class VideoStyle:
    """How one video looks: background tint/texture, drift of the shapes, lighting. Small and
    hashable; the background image is computed from it (and cached) by :func:`background_of`."""

    base: tuple[float, float, float]    # background RGB (desaturated, 35–125)
    texture_seed: int
    texture_amp: float                  # low-frequency texture amplitude (grey levels)
    drift_amp: tuple[float, float]      # shape-centre drift amplitude (fraction of height), x and y
    drift_period_s: tuple[float, float]
    drift_phase: tuple[float, float]
    size_period_s: float                # shape size oscillates in [0.35, 0.5] x height
    size_phase: float
    light_amp: float                    # multiplicative lighting drift
    light_period_s: float
    distractor: tuple[float, float, float]  # desaturated offset of the background blob

    @staticmethod
    def draw(rng: np.random.Generator) -> "VideoStyle":
        grey = float(rng.uniform(35, 125))
        tint = rng.uniform(-22, 22, 3)
        dgrey = float(rng.uniform(-30, 30)) or 20.0
        return VideoStyle(
            base=tuple(float(v) for v in np.clip(grey + tint, 20, 150)),
            texture_seed=int(rng.integers(2**31)),
            texture_amp=float(rng.uniform(6, 16)),
            drift_amp=(float(rng.uniform(0.08, 0.16)), float(rng.uniform(0.04, 0.1))),
            drift_period_s=(float(rng.uniform(15, 45)), float(rng.uniform(15, 45))),
            drift_phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
            size_period_s=float(rng.uniform(20, 60)),
            size_phase=float(rng.uniform(0, 2 * np.pi)),
            light_amp=float(rng.uniform(0.0, 0.06)),
            light_period_s=float(rng.uniform(20, 80)),
            distractor=tuple(float(dgrey + v) for v in rng.uniform(-6, 6, 3)),
        )


@functools.lru_cache(maxsize=64)
def background_of(style: VideoStyle, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 background: ``style.base`` + a smooth low-contrast texture (bilinear
    upsampling of a coarse random grid) + a little fine grain. Read-only (cached)."""
    rng = np.random.default_rng(style.texture_seed)
    gh, gw = 5, 7
    coarse = rng.standard_normal((gh, gw, 3)).astype(np.float32) * 0.6 + rng.standard_normal((gh, gw, 1)).astype(np.float32)
    ys = np.linspace(0, gh - 1, height, dtype=np.float32)
    xs = np.linspace(0, gw - 1, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    smooth = ((1 - fy) * (1 - fx) * coarse[y0][:, x0] + (1 - fy) * fx * coarse[y0][:, x0 + 1]
              + fy * (1 - fx) * coarse[y0 + 1][:, x0] + fy * fx * coarse[y0 + 1][:, x0 + 1])
    grain = rng.standard_normal((height, width, 1)).astype(np.float32) * 2.0
    image = np.asarray(style.base, dtype=np.float32) + style.texture_amp * smooth + grain
    image.setflags(write=False)
    return image


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return x + 0.5, y + 0.5


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of ``shape`` of radius ``r`` (half its extent) centred at 0."""
    if shape == "circle":
        d = r - np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        a = 0.88 * r
        d = a - np.maximum(np.abs(dx), np.abs(dy))
    elif shape == "ring":
        dist = np.sqrt(dx * dx + dy * dy)
        d = np.minimum(r - dist, dist - 0.52 * r)
    elif shape == "cross":
        w, ax, ay = 0.3 * r, np.abs(dx), np.abs(dy)
        d = np.maximum(np.minimum(w - ax, r - ay), np.minimum(w - ay, r - ax))
    elif shape == "triangle":  # pointing up, circumradius R; centroid shifted so the extent is centred
        big = 1.15 * r
        py = dy - 0.25 * big
        d = 0.5 * big - np.maximum(np.maximum(py, 0.866 * dx - 0.5 * py), -0.866 * dx - 0.5 * py)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    return np.clip(d + 0.5, 0.0, 1.0)


def shape_geometry(t_s: float, style: VideoStyle, width: int = 128, height: int = 96) -> tuple[float, float, float]:
    """(cx, cy, r) in pixels of a concept's shape at time ``t_s`` (before jitter): the centre
    drifts slowly around the frame centre; the extent 2r oscillates in [0.35, 0.5] x height."""
    ax, ay = style.drift_amp
    px, py = style.drift_period_s
    fx, fy = style.drift_phase
    cx = width / 2 + ax * height * np.sin(2 * np.pi * t_s / px + fx)
    cy = height / 2 + ay * height * np.sin(2 * np.pi * t_s / py + fy)
    extent = 0.425 + 0.075 * np.sin(2 * np.pi * t_s / style.size_period_s + style.size_phase)
    return float(cx), float(cy), float(extent * height / 2)


def render_frame(concept: int | None, t_s: float, video_style: VideoStyle, rng: np.random.Generator,
                 width: int = 128, height: int = 96) -> np.ndarray:
    """One (height, width, 3) uint8 RGB frame of a video of ``video_style`` at ``t_s`` seconds:
    concept ``concept`` (index into :data:`CONCEPTS`) drawn over the background, or, for None,
    the background with its distractor (faint drifting stripes + a desaturated blob).
    ``rng`` supplies the jitter (position, brightness)."""
    x, y = _grid(width, height)
    jx, jy, jb = rng.normal(0.0, 0.6), rng.normal(0.0, 0.6), rng.normal(0.0, 1.0)
    light = 1.0 + video_style.light_amp * np.sin(2 * np.pi * t_s / video_style.light_period_s)
    # lighting + brightness jitter, and the +0.5 of rounding, applied once to the background
    image = background_of(video_style, width, height) * np.float32(light) + np.float32(jb + 0.5)
    if concept is None:
        diag = np.arange(width + height, dtype=np.float32)
        stripes = (5.0 * light) * np.sin(diag * (2 * np.pi / 22.0) + 2 * np.pi * t_s / 12.0)
        image += stripes.astype(np.float32)[_diag_index(width, height)][..., None]
        bx = width / 2 + 0.3 * width * np.sin(2 * np.pi * t_s / 17.0 + video_style.drift_phase[0]) + jx
        by = height / 2 + 0.2 * height * np.sin(2 * np.pi * t_s / 23.0 + video_style.drift_phase[1]) + jy
        sigma = 0.16 * height
        box = _box(bx, by, 3.2 * sigma, width, height)
        xs, ys = x[box], y[box]
        blob = np.exp(((xs - bx) ** 2 + (ys - by) ** 2) * (-0.5 / sigma ** 2))
        image[box] += blob[..., None] * (np.asarray(video_style.distractor, dtype=np.float32) * light)
    else:
        colour, shape = CONCEPTS[concept]
        cx, cy, r = shape_geometry(t_s, video_style, width, height)
        cx, cy = cx + jx, cy + jy
        box = _box(cx, cy, r + 2.0, width, height)
        cov = _coverage(shape, x[box] - cx, y[box] - cy, r)[..., None]
        patch = image[box]
        image[box] = patch + (_RGB[concept] * light + (jb + 0.5) - patch) * cov
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _diag_index(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return x + y


def _box(cx: float, cy: float, half: float, width: int, height: int) -> tuple[slice, slice]:
    """The (rows, cols) slices of the pixels within ``half`` of (cx, cy), clipped to the frame."""
    x0, x1 = max(0, int(np.floor(cx - half))), min(width, int(np.ceil(cx + half)) + 1)
    y0, y1 = max(0, int(np.floor(cy - half))), min(height, int(np.ceil(cy + half)) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


# --------------------------------------------------------------------------------------------
# Plans: steps, captions, truth


@dataclass(frozen=True)
class VideoParams(CaptionWorld):
    """Knobs of the pixel world: the narration of :class:`CaptionWorld` with shorter videos,
    steps and gaps and a third of the captions alignable, and the frames' size and rate
    (durations in seconds)."""

    duration_s: tuple[int, int] = (150, 240)
    alignable_fraction: float = 0.33
    step_s: tuple[int, int] = (10, 30)
    gap_s: tuple[int, int] = (5, 20)
    fps: float = 4.0
    width: int = 128
    height: int = 96


@dataclass(frozen=True, eq=False)
class VideoPlan:
    """Everything about one synthetic video except its pixels (times in seconds).

    The caption fields mirror :class:`curation.synth.features.SynthVideo` (``texts``, ``asr_start_s``,
    ``asr_end_s``, ``alignable``, ``true_start_s``/``true_end_s`` NaN for chatter), so
    ``pipeline.synth.feature_corpus.captions_text`` and ``truth_entries`` accept a plan.
    """

    video_id: str
    seed: int
    index: int
    duration_s: int
    fps: float
    width: int
    height: int
    style: VideoStyle
    steps: tuple[tuple[int, int, int], ...]   # (start_s, end_s, concept), in time order
    texts: tuple[str, ...]
    asr_start_s: np.ndarray     # (m,) sorted
    asr_end_s: np.ndarray       # (m,)
    alignable: np.ndarray       # (m,) bool
    true_start_s: np.ndarray    # (m,) NaN for chatter
    true_end_s: np.ndarray      # (m,)
    caption_concept: np.ndarray = field(default=None)  # (m,) int, -1 for chatter

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def frame_time(self, i: int) -> float:
        """Presentation time of frame ``i`` (its pts in seconds)."""
        return i / self.fps

    def concept_at(self, t_s: float) -> int | None:
        """The concept shown at ``t_s`` (a step covers ``[start, end)``), None for background."""
        for start, end, concept in self.steps:
            if start <= t_s < end:
                return concept
        return None


def _unique(draw, used: set[str], tries: int = 30) -> str:
    text = draw()
    for _ in range(tries):
        if text not in used:
            break
        text = draw()
    used.add(text)
    return text


def make_video_plan(index: int, seed: int, params: VideoParams = VideoParams()) -> VideoPlan:
    """Video number ``index`` of the world seeded by ``seed``; depends only on ``(seed, index,
    params)``. Caption timing comes from :mod:`curation.synth.captions`, as the feature world's."""
    p = params
    rng = np.random.default_rng([seed, index])
    duration_s = int(rng.integers(*p.duration_s))
    style = VideoStyle.draw(rng)
    steps = draw_steps(rng, p, duration_s, len(CONCEPTS))

    n_captions, n_align = caption_counts(p, duration_s, len(steps))
    rows, used = [], set()
    for k in range(n_captions):
        dur = float(rng.uniform(*p.caption_s))
        if k < n_align:
            (start, end, concept), _, asr_start = place_alignable(rng, p, steps, duration_s, dur)
            text = _unique(lambda: random_alignable_text(concept, rng), used)
            rows.append((asr_start, dur, text, True, float(start), float(end), concept))
        else:
            asr_start = chatter_start_s(rng, duration_s, dur)
            text = _unique(lambda: random_chatter_text(rng), used)
            rows.append((asr_start, dur, text, False, np.nan, np.nan, -1))
    rows.sort(key=lambda r: r[0])
    starts = np.round(np.array([r[0] for r in rows]), 2)
    ends = np.minimum(np.round(np.array([r[0] + r[1] for r in rows]), 2), float(duration_s))
    return VideoPlan(
        video_id=f"synthvid{seed}_{index:06d}",
        seed=int(seed), index=int(index), duration_s=duration_s, fps=float(p.fps),
        width=int(p.width), height=int(p.height), style=style, steps=tuple(steps),
        texts=tuple(r[2] for r in rows),
        asr_start_s=starts, asr_end_s=ends,
        alignable=np.array([r[3] for r in rows], dtype=bool),
        true_start_s=np.array([r[4] for r in rows]),
        true_end_s=np.array([r[5] for r in rows]),
        caption_concept=np.array([r[6] for r in rows], dtype=np.int64),
    )


def frame_rng(plan: VideoPlan, i: int) -> np.random.Generator:
    return np.random.default_rng([plan.seed, plan.index, 1, int(i)])


def frames_of(plan: VideoPlan, frame_indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
    """The plan's frames (``(height, width, 3)`` uint8) at ``frame_indices`` (default: all
    ``plan.n_frames``); frame ``i`` is at ``t = i / fps`` and is the same whatever else is asked."""
    indices = range(plan.n_frames) if frame_indices is None else frame_indices
    for i in indices:
        t = plan.frame_time(int(i))
        yield render_frame(plan.concept_at(t), t, plan.style, frame_rng(plan, i), plan.width, plan.height)
