"""``nccurate bench media``: every real-world file shape of :mod:`pipeline.synth.media_shapes`
decoded and clipped, and every model frame and clip frame checked against the shape's truth.
Prints numbers, never asserts.

For one shape and one decode backend, :func:`check_shape`:

* **Model frames**: :func:`~pipeline.media.decode.decode_frames` at each ``(sample_fps, size)``
  of :data:`MODEL_GRIDS`. Sample ``k`` targets ``(k + 0.5) / sample_fps``; the truth's frame
  nearest to it (:func:`curation.frames.nearest_indices`: ties to the earlier frame; a target
  before the first frame uses the first; either of two where the choice is within a millisecond
  of the tie threshold, :func:`acceptable_frames`) must be the one shown (its code read by
  :func:`~pipeline.synth.media_shapes.read_code`), upright, with square pixels (the grid's
  bounding box square within :data:`ASPECT_TOLERANCE`), and ``pts_s[k]`` must be that frame's
  time within :data:`PTS_TOLERANCE_S`. The number of samples must be that of the truth's
  end (:func:`curation.frames.sample_times_s`) and ``duration_s`` that end within
  :data:`DURATION_TOLERANCE_S`.
* **Clips**: :func:`~pipeline.media.clips.cut_clip` of the spans of :func:`clip_spans` (from
  the start, straddling 1.5 s, mid-GOP, near the end and past it), mp4 and jpg, 2 to 8 fps.
  Output frame ``k`` must show the truth's frame nearest to ``start + (k + 0.5) / fps``; a clip
  has ``max(1, round((min(end, video end) - start) * fps))`` frames, each of
  :func:`~pipeline.media.clips.clip_dims` of the display size, upright, square pixels; an mp4
  carries no rotation and a sample aspect ratio of 1 or none. ``cut_clip`` has no backend
  choice: clips are checked on one backend's row only (``clips=True``).
* **Failures**: a shape whose truth has an ``error_class`` must fail with it (clips with
  ``clip_failed``); one with ``allowed_errors`` (a truncated file) may fail with one of them
  instead of decoding.

The result is a :class:`ShapeCheck` (frames checked, every mismatch with its details); nothing
raises out of the checker. :func:`bench_media` writes the corpus and formats the table.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from curation.errors import InputError
from curation.frames import TIE_EPS_S, nearest_indices, sample_times_s
from pipeline.synth.media_shapes import FULL, SHAPES, SMALL, ShapeTruth, read_code, write_corpus

#: ``(sample_fps, size)`` of the model-frame decodes of every shape.
MODEL_GRIDS = ((1.0, 48), (2.0, 64))
#: Shorter side of the clips.
CLIP_SIZE = 48
PTS_TOLERANCE_S = 1e-3
#: Where the nearest-frame choice is this close to the tie threshold (``TIE_EPS_S``), either
#: frame is accepted (:func:`acceptable_frames`). Under ``TIE_EPS_S``: an exact tie (the two
#: frames equally far) stays unambiguous, the earlier, as millisecond ticks cannot tip it.
TIE_BAND_S = 0.9e-3
#: |grid width / grid height - 1| allowed (a 48 px picture's grid is ~43 px; the rounding of its
#: edges moves each by a pixel at most; an ignored 4:3 pixel aspect is off by 33%).
ASPECT_TOLERANCE = 0.1
DURATION_TOLERANCE_S = 0.05
BACKENDS = ("pyav", "decord")


@dataclass(frozen=True)
class Mismatch:
    """One thing that differs from the truth.

    where: ``"model 1 Hz/48 k=3"``, ``"clip mp4 [2.473, 3.973) 8 fps k=5"``, or the whole
    decode or clip (``k`` absent); target_s: the frame's target time (None for a whole-decode
    problem); expected / got: the code (or count, class, ...) expected and seen; problems: what
    is wrong, one phrase each."""

    where: str
    problems: tuple[str, ...]
    target_s: float | None = None
    expected: object = None
    got: object = None

    def __str__(self) -> str:
        at = f" @{self.target_s:.3f}s" if self.target_s is not None else ""
        return f"{self.where}{at}: {'; '.join(self.problems)}"


@dataclass
class ShapeCheck:
    """One shape on one backend: ``model_frames`` and ``clip_frames`` checked, ``mismatches``,
    ``outcome`` (``ok``, ``failed as expected (CLASS)``, ``MISMATCH``), ``wall_s``."""

    shape: str
    backend: str
    model_frames: int = 0
    clip_frames: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    expected_failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def outcome(self) -> str:
        if self.mismatches:
            return "MISMATCH"
        if self.expected_failures:
            return f"failed as expected ({', '.join(sorted(set(self.expected_failures)))})"
        return "ok"


def clip_spans(end_s: float) -> list[tuple[float, float, float, str]]:
    """``(start_s, end_s, fps, fmt)`` of the clips cut from a video ending at ``end_s``: from
    the start, straddling 1.5 s (a late video start), at ~30% and ~60% (mid-GOP, off the frame
    grid), near the end and running past it (clamped)."""
    third, sixth = round(0.3 * end_s, 2) + 0.013, round(0.6 * end_s, 2) + 0.021
    return [(0.0, 1.0, 4.0, "mp4"), (1.2, 2.2, 6.0, "jpg"), (third, third + 1.5, 8.0, "jpg"),
            (sixth, sixth + 1.0, 5.0, "mp4"), (round(end_s - 1.1, 3), round(end_s + 1.0, 3), 8.0, "mp4"),
            (round(end_s - 0.7, 3), round(end_s + 1.0, 3), 2.0, "jpg")]


def acceptable_frames(times_s: np.ndarray, target_s: float) -> list[int]:
    """The truth frames an output frame meant for ``target_s`` may show: the nearest
    (:func:`curation.frames.nearest_indices`: ties within ``TIE_EPS_S`` to the earlier), and
    also the other of the two frames around the target when the choice lies within
    :data:`TIE_BAND_S` of the tie threshold (a container's tick rounding, e.g. matroska's
    milliseconds, or float noise in the target can tip it either way)."""
    nearest = int(nearest_indices(times_s, np.array([target_s]))[0])
    after = int(np.searchsorted(times_s, target_s, side="left"))
    if 0 < after < len(times_s):
        before_by = abs(target_s - times_s[after - 1]) - abs(times_s[after] - target_s)
        if abs(before_by - TIE_EPS_S) < TIE_BAND_S:
            return [nearest, after if nearest == after - 1 else after - 1]
    return [nearest]


def _frame_problems(truth: ShapeTruth, rgb: np.ndarray, target_s: float) -> tuple[list[str], int, int | None, int]:
    """``(problems, expected code, code read, truth frame shown)`` of one output frame meant for
    ``target_s`` (the frame shown: the acceptable frame whose code was read, else the nearest)."""
    candidates = acceptable_frames(truth.times_s, target_s)
    idx = candidates[0]
    expected = int(truth.codes[idx])
    reading = read_code(rgb)
    problems = []
    shown = [i for i in candidates if reading.code is not None and int(truth.codes[i]) == reading.code]
    if shown:
        idx = shown[0]
        expected = int(truth.codes[idx])
    elif reading.code is None:
        problems.append(f"unreadable ({reading.why}), expected frame {idx} code {expected}")
    else:
        near = np.flatnonzero(truth.codes == reading.code)
        at = f" (frame at {truth.times_s[near[0]]:.3f}s)" if len(near) else ""
        problems.append(f"shows code {reading.code}{at}, expected {expected} (frame at {truth.times_s[idx]:.3f}s)")
    if reading.orientation not in (None, "upright"):
        problems.append(f"shown {reading.orientation}")
    if reading.aspect and abs(reading.aspect - 1.0) > ASPECT_TOLERANCE:
        problems.append(f"pixels not square: grid {reading.aspect:.2f} wide per high")
    return problems, expected, reading.code, idx


def _failure(check: ShapeCheck, truth: ShapeTruth, where: str, exc: BaseException, clip: bool) -> None:
    """Record a decode/clip exception: an expected failure, or a mismatch."""
    cls = getattr(exc, "error_class", None) if isinstance(exc, InputError) else None
    wanted = ("clip_failed",) if clip and truth.error_class else ((truth.error_class,) if truth.error_class else ())
    allowed = ("clip_failed",) if clip and truth.allowed_errors else truth.allowed_errors
    if cls is not None and (cls in wanted or cls in allowed):
        check.expected_failures.append(cls)
        return
    got = cls or type(exc).__name__
    check.mismatches.append(Mismatch(where, (f"failed: {got}: {str(exc)[:200]}",),
                                     expected=truth.error_class or "decodes", got=got))


def check_model_frames(check: ShapeCheck, truth: ShapeTruth, decode: Callable) -> None:
    """The model-frame checks of :func:`check_shape` for every grid of :data:`MODEL_GRIDS`."""
    for fps, size in MODEL_GRIDS:
        where = f"model {fps:g} Hz/{size}"
        try:
            decoded = decode(truth.path, fps, size, backend=check.backend)
        except Exception as exc:  # noqa: BLE001 - anything a decoder raises is a result here
            _failure(check, truth, where, exc, clip=False)
            continue
        if truth.error_class:
            check.mismatches.append(Mismatch(where, (f"decoded {len(decoded.frames)} frames, expected {truth.error_class}",),
                                             expected=truth.error_class, got="decoded"))
            continue
        targets = sample_times_s(truth.end_s, fps)
        frames, pts_s = np.asarray(decoded.frames), np.asarray(decoded.pts_s, np.float64)
        if len(frames) != len(targets):
            check.mismatches.append(Mismatch(where, (f"{len(frames)} samples, expected {len(targets)}",),
                                             expected=len(targets), got=len(frames)))
        if abs(float(decoded.duration_s) - truth.end_s) > DURATION_TOLERANCE_S:
            check.mismatches.append(Mismatch(where, (f"duration_s {float(decoded.duration_s):.3f}, expected {truth.end_s:.3f}",),
                                             expected=truth.end_s, got=float(decoded.duration_s)))
        for k in range(min(len(frames), len(targets))):
            target = float(targets[k])
            problems, expected, got, idx = _frame_problems(truth, frames[k], target)
            if k < len(pts_s) and abs(pts_s[k] - truth.times_s[idx]) > PTS_TOLERANCE_S:
                problems.append(f"pts_s {pts_s[k]:.4f}, expected {truth.times_s[idx]:.4f}")
            check.model_frames += 1
            if problems:
                check.mismatches.append(Mismatch(f"{where} k={k}", tuple(problems), target, expected, got))


def clip_frames(members: dict[str, bytes], fmt: str) -> tuple[list[np.ndarray], list[str]]:
    """``(frames, problems)``: the RGB frames of a clip's members and what is wrong with the
    container itself (an mp4's rotation or non-square sample aspect)."""
    problems: list[str] = []
    if fmt == "jpg":
        from PIL import Image

        return [np.asarray(Image.open(io.BytesIO(members[name])).convert("RGB")) for name in sorted(members)], problems
    import av

    with av.open(io.BytesIO(members["mp4"])) as container:
        stream = container.streams.video[0]
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        if sar and float(sar) not in (0.0, 1.0):
            problems.append(f"mp4 sample aspect ratio {sar}")
        frames = []
        for frame in container.decode(stream):
            if frame.rotation and not frames:
                problems.append(f"mp4 carries a display rotation of {frame.rotation} deg")
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames, problems


def check_clips(check: ShapeCheck, truth: ShapeTruth, cut: Callable) -> None:
    """The clip checks of :func:`check_shape` for every span of :func:`clip_spans`."""
    from pipeline.media.clips import clip_dims

    dims = clip_dims(*truth.display, CLIP_SIZE)
    for start, end, fps, fmt in clip_spans(truth.end_s if truth.end_s > 0 else 8.0):
        where = f"clip {fmt} [{start:.3f}, {end:.3f}) {fps:g} fps"
        try:
            members = cut(truth.path, start, end, fmt, CLIP_SIZE, fps)
            frames, problems = clip_frames(members, fmt)
        except Exception as exc:  # noqa: BLE001
            _failure(check, truth, where, exc, clip=True)
            continue
        if truth.error_class:
            check.mismatches.append(Mismatch(where, ("cut, expected clip_failed",), expected="clip_failed", got="cut"))
            continue
        n = max(1, round((min(end, truth.end_s) - start) * fps))
        if len(frames) != n:
            problems.append(f"{len(frames)} frames, expected {n}")
        sizes = sorted({(f.shape[1], f.shape[0]) for f in frames})
        if sizes != [dims]:
            problems.append(f"frames {sizes}, expected {dims[0]}x{dims[1]}")
        if problems:
            check.mismatches.append(Mismatch(where, tuple(problems), expected=n, got=len(frames)))
        for k, rgb in enumerate(frames[:n]):
            target = start + (k + 0.5) / fps
            frame_problems, expected, got, _ = _frame_problems(truth, rgb, target)
            check.clip_frames += 1
            if frame_problems:
                check.mismatches.append(Mismatch(f"{where} k={k}", tuple(frame_problems), target, expected, got))


def check_shape(truth: ShapeTruth, backend: str, clips: bool = True, decode: Callable | None = None,
                cut: Callable | None = None) -> ShapeCheck:
    """Check one generated shape's model frames on ``backend`` and (with ``clips``) its clips.
    ``decode`` / ``cut`` replace :func:`~pipeline.media.decode.decode_frames` /
    :func:`~pipeline.media.clips.cut_clip` (same signatures), e.g. to check the checker."""
    from pipeline.media.clips import cut_clip
    from pipeline.media.decode import decode_frames

    started = time.perf_counter()
    check = ShapeCheck(truth.name, backend)
    check_model_frames(check, truth, decode or decode_frames)
    if clips:
        check_clips(check, truth, cut or cut_clip)
    check.wall_s = time.perf_counter() - started
    return check


def check_corpus(truths: list[ShapeTruth], backends=BACKENDS, log=None) -> list[ShapeCheck]:
    """:func:`check_shape` of every truth on every backend; clips on the first backend's row."""
    results = []
    for truth in truths:
        for n, backend in enumerate(backends):
            results.append(check_shape(truth, backend, clips=n == 0))
            if log:
                log(f"{truth.name} {backend}: {results[-1].outcome}")
    return results


def format_table(results: list[ShapeCheck], details: int = 3) -> str:
    """The table (shape, backend, frames checked, mismatches, outcome, seconds), totals, then up
    to ``details`` mismatches of each row that has any."""
    head = f"{'shape':24s} {'backend':7s} {'model':>5s} {'clip':>5s} {'mism.':>5s} {'s':>5s}  outcome"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.shape:24s} {r.backend:7s} {r.model_frames:5d} {r.clip_frames if r.clip_frames else '-':>5} "
                     f"{len(r.mismatches):5d} {r.wall_s:5.1f}  {r.outcome}")
    lines.append("-" * len(head))
    bad = [r for r in results if r.mismatches]
    lines.append(f"{'total':24s} {'':7s} {sum(r.model_frames for r in results):5d} {sum(r.clip_frames for r in results):5d} "
                 f"{sum(len(r.mismatches) for r in results):5d} {sum(r.wall_s for r in results):5.1f}  "
                 f"{len(results) - len(bad)}/{len(results)} rows without a mismatch")
    for r in bad:
        lines.append(f"\n{r.shape} / {r.backend}: {len(r.mismatches)} mismatches, e.g.")
        lines.extend(f"  {m}" for m in r.mismatches[:details])
    return "\n".join(lines)


def bench_media(workdir: str, full: bool = False, backends=BACKENDS, shapes=None, log=None) -> str:
    """Write the corpus (:data:`~pipeline.synth.media_shapes.FULL` with ``full``, else
    :data:`~pipeline.synth.media_shapes.SMALL`) under ``workdir``, check every shape on every
    backend and return the report."""
    unknown = sorted(set(shapes or ()) - set(SHAPES))
    if unknown:
        from pipeline.errors import ArgumentError

        raise ArgumentError(f"unknown shape(s) {unknown}; known: {sorted(SHAPES)}")
    os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    truths = write_corpus(workdir, FULL if full else SMALL, list(shapes) if shapes else None)
    generated_s = time.perf_counter() - started
    if log:
        log(f"wrote {len(truths)} shapes under {workdir} in {generated_s:.1f} s")
    results = check_corpus(truths, tuple(backends), log)
    return (f"Media shapes ({'full' if full else 'small'} corpus, {len(truths)} shapes, generated in "
            f"{generated_s:.1f} s; model frames at {', '.join(f'{f:g} Hz/{s} px' for f, s in MODEL_GRIDS)}, "
            f"clips {CLIP_SIZE} px on the {backends[0]} row)\n\n" + format_table(results))
