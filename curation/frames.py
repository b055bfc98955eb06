"""Frame geometry and frame sampling: the one copy of the rules every decoder and loader follows.

Pure numpy (no file IO, no codecs), so the video decoder (``pipeline.media``), the clip cutter,
the training loader (``models.data``), the demo's trainer (``models.train_demo``) and the
benchmarks share them. All times are in seconds.

* **Sample grid.** Sample ``k`` at ``rate`` Hz stands for ``[k / rate, (k + 1) / rate)`` and
  targets its centre, :func:`grid_times_s` ``(k, rate, 0.5)``; a video of ``duration_s`` seconds
  has :func:`sample_times_s` targets.
* **Nearest frame.** Each target uses the frame with the nearest PTS; candidates whose distances
  differ by less than :data:`TIE_EPS_S` tie, and the earlier frame wins
  (:func:`nearest_indices` vectorised, :class:`NearestPicker` streaming: the same picks).
* **Segment centres.** A span cut into ``n`` equal segments is represented by their centres
  (:func:`segment_centres`); :func:`uniform_indices` is the exact integer form for ``n`` of a
  clip's frames.
* **Geometry.** A frame is resized so its shorter side is ``size`` with the aspect ratio kept
  (:func:`resize_dims`), then centre-cropped to ``size x size`` (:func:`center_crop`), CLIP-style.
"""

from __future__ import annotations

import math

import numpy as np

#: Two candidate frames whose distances to a target differ by less than this (seconds) tie, and
#: the earlier wins. Covers float rounding, including decord's float32 timestamps (about 0.25 ms
#: of resolution after an hour), so every decoder picks the same frames.
TIE_EPS_S = 1e-3


def grid_times_s(k, rate: float, phase: float, offset_s: float = 0.0):
    """``offset_s + (k + phase) / rate`` seconds for sample number(s) ``k`` (int or array): the one
    formula for every target grid, so a streaming picker and a vectorised one compute
    bit-identical targets."""
    return offset_s + (k + phase) / rate


def sample_times_s(duration_s: float, sample_fps: float) -> np.ndarray:
    """``(n,)`` float64 target times ``(k + 0.5) / sample_fps`` for ``k = 0 .. n - 1`` with
    ``n = floor(duration_s * sample_fps)``, at least 1 when ``duration_s > 0`` (0 otherwise).

    Sample ``k`` stands for ``[k / fps, (k + 1) / fps)``: the feature-mode convention that frame
    ``k``'s time is its centre.
    """
    if not duration_s > 0:
        return np.zeros(0, dtype=np.float64)
    n = max(1, math.floor(duration_s * sample_fps + 1e-9))
    return grid_times_s(np.arange(n), sample_fps, 0.5)


def nearest_indices(frame_pts_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """``(n,)`` int: for each of the ``(n,)`` ``targets_s``, the index of the nearest of the
    ascending ``(P,)`` ``frame_pts_s`` (ties within :data:`TIE_EPS_S` go to the earlier frame)."""
    pts = np.asarray(frame_pts_s, dtype=np.float64)
    after = np.clip(np.searchsorted(pts, targets_s, side="left"), 0, len(pts) - 1)
    before = np.clip(after - 1, 0, len(pts) - 1)
    take_before = np.abs(targets_s - pts[before]) <= np.abs(pts[after] - targets_s) + TIE_EPS_S
    return np.where(take_before, before, after)


class NearestPicker:
    """Streaming nearest-PTS selection over frames decoded in presentation order.

    Targets are :func:`grid_times_s` ``(k, rate, phase, offset_s)`` for k = 0, 1, ...
    (unbounded while streaming). Feed ``(t_s, frame)`` with :meth:`push`, which returns the
    ``(k, t_s, frame)`` picks that became final (a target is final once a frame at or after it
    has been seen); :meth:`finish` gives the remaining targets ``k < n_targets`` the last frame.
    Same rule as :func:`nearest_indices`: nearest PTS, near-ties to the earlier frame. ``frame``
    is opaque here (a decoder's frame object, an index, ...).
    """

    def __init__(self, rate: float, phase: float, offset_s: float = 0.0):
        self.rate, self.phase, self.offset_s = rate, phase, offset_s
        self.k = 0
        self.prev: tuple[float, object] | None = None

    def target(self, k: int) -> float:
        return grid_times_s(k, self.rate, self.phase, self.offset_s)

    def push(self, t_s: float, frame) -> list[tuple[int, float, object]]:
        picks = []
        while self.target(self.k) <= t_s:
            tgt = self.target(self.k)
            if self.prev is not None and tgt - self.prev[0] <= t_s - tgt + TIE_EPS_S:
                picks.append((self.k, *self.prev))
            else:
                picks.append((self.k, t_s, frame))
            self.k += 1
        self.prev = (t_s, frame)
        return picks

    def finish(self, n_targets: int) -> list[tuple[int, float, object]]:
        picks = [(k, *self.prev) for k in range(self.k, n_targets)] if self.prev is not None else []
        self.k = max(self.k, n_targets)
        return picks


def segment_centres(start: float, end: float, n: int) -> np.ndarray:
    """``(n,)`` float64 centres of ``n`` equal segments of ``[start, end)``:
    ``start + (i + 0.5) * (end - start) / n``."""
    return start + (np.arange(n) + 0.5) * (end - start) / n


def uniform_indices(n_items: int, n: int) -> np.ndarray:
    """``(n,)`` int64 indices into ``n_items`` items (a clip's frames): the item holding each
    :func:`segment_centres` ``(0, n_items, n)``, ``floor((2 i + 1) n_items / (2 n))`` in exact
    integer arithmetic (items repeat when ``n_items < n``)."""
    i = np.arange(n, dtype=np.int64)
    return ((2 * i + 1) * n_items) // (2 * n)


def resize_dims(width: int, height: int, size: int) -> tuple[int, int]:
    """``(w, h)`` pixels with the shorter side ``size`` and the aspect ratio kept (each >= size)."""
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(..., h, w, C) -> (..., size, size, C)``: the centred ``size x size`` window (a view)."""
    h, w = rgb.shape[-3], rgb.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[..., top:top + size, left:left + size, :]
