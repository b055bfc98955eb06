"""curation.frames: the sample grid, the nearest-frame rule (vectorised and streaming agree, ties
go to the earlier frame), segment centres, and the resize/crop geometry every decoder shares."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

from curation.frames import (
    TIE_EPS_S,
    NearestPicker,
    center_crop,
    grid_times_s,
    nearest_indices,
    resize_dims,
    sample_times_s,
    segment_centres,
    uniform_indices,
)


def test_sample_times_are_interval_centres():
    np.testing.assert_array_equal(sample_times_s(3.0, 1.0), [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(sample_times_s(6.5, 2.0), (np.arange(13) + 0.5) / 2)
    assert len(sample_times_s(2.999, 1.0)) == 2  # a partial last interval has no sample
    assert len(sample_times_s(3.0 - 1e-12, 1.0)) == 3  # float noise below a whole number does not lose one
    np.testing.assert_array_equal(sample_times_s(0.2, 1.0), [0.5])  # at least one for a positive duration
    assert sample_times_s(0.0, 1.0).shape == (0,) and sample_times_s(-1.0, 1.0).shape == (0,)


def test_grid_times_take_arrays_and_scalars_alike():
    k = np.arange(5)
    np.testing.assert_array_equal(grid_times_s(k, 4.0, 0.5, 10.0), [grid_times_s(int(i), 4.0, 0.5, 10.0) for i in k])
    assert grid_times_s(2, 2.0, 0.5, 1.0) == 2.25


def test_nearest_indices_picks_the_nearest_and_clamps_at_both_ends():
    pts = np.array([0.0, 1.0, 2.0, 4.0])
    got = nearest_indices(pts, np.array([-3.0, 0.4, 0.6, 2.9, 3.1, 9.0]))
    assert got.tolist() == [0, 0, 1, 2, 3, 3]


def test_ties_within_the_epsilon_go_to_the_earlier_frame():
    pts = np.array([0.0, 1.0])
    assert nearest_indices(pts, np.array([0.5])).tolist() == [0]
    assert nearest_indices(pts, np.array([0.5 + TIE_EPS_S / 4])).tolist() == [0]  # float32-level noise
    assert nearest_indices(pts, np.array([0.5 + 2 * TIE_EPS_S])).tolist() == [1]  # a real preference


def test_on_a_constant_rate_grid_the_nearest_frame_rounds_half_down():
    """Frame i at i / fps: the nearest to t is ceil(t * fps - 0.5), ties to the earlier (exact
    midpoints exist in binary floating point for power-of-two rates only; elsewhere targets stay
    clear of the tie band)."""
    rng = np.random.default_rng(0)
    n = 500
    for fps in (4.0, 8.0, 25.0, 29.97):
        targets = rng.uniform(0, n / fps, 300)
        frac = targets * fps - np.floor(targets * fps)
        targets = targets[np.abs(frac - 0.5) > 0.05]
        if fps in (4.0, 8.0):
            targets = np.concatenate([targets, (np.arange(40) + 0.5) / fps])
        want = np.clip(np.ceil(targets * fps - 0.5).astype(int), 0, n - 1)
        assert nearest_indices(np.arange(n) / fps, targets).tolist() == want.tolist(), fps


def _stream(pts: np.ndarray, rate: float, phase: float, offset_s: float, n: int):
    """Feed frames ``0 .. P-1`` at ``pts`` to a NearestPicker; every pick, in order."""
    picker = NearestPicker(rate, phase, offset_s)
    picks = []
    for i, t in enumerate(pts):
        picks += picker.push(float(t), i)
    return picks + picker.finish(n)


def test_streaming_picker_equals_the_vectorised_rule():
    """Frame times with near-ties (targets midway between frames, moved by less than the tie
    epsilon): NearestPicker fed frame by frame picks what nearest_indices picks for every target,
    including the ones past the last frame that only finish() resolves."""
    rng = np.random.default_rng(3)
    for trial in range(20):
        pts = np.cumsum(rng.choice([1 / 30, 1 / 25, 0.25, 0.5], size=200))
        pts[rng.integers(0, 200, 20)] += rng.uniform(-1, 1, 20) * TIE_EPS_S / 3
        pts = np.sort(pts)
        rate, offset = float(rng.choice([0.5, 1.0, 2.0, 3.0])), float(rng.choice([0.0, 0.25, 1.0]))
        n = int((pts[-1] - offset) * rate) + 3  # a few targets past the last frame
        picks = _stream(pts, rate, 0.5, offset, n)
        assert [k for k, _, _ in picks] == list(range(n)), trial
        want = nearest_indices(pts, grid_times_s(np.arange(n), rate, 0.5, offset))
        assert [frame for _, _, frame in picks] == want.tolist(), trial
        assert [t for _, t, _ in picks] == pts[want].tolist(), trial


def test_exact_ties_pick_the_earlier_frame_in_both_forms():
    pts = np.arange(10) / 2.0  # targets of a 1 Hz grid (0.5, 1.5, ...) hit frames; 2 Hz ones fall midway
    want = nearest_indices(pts, grid_times_s(np.arange(9), 2.0, 0.5))
    assert want.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert [frame for _, _, frame in _stream(pts, 2.0, 0.5, 0.0, 9)] == want.tolist()


def test_picker_without_frames_picks_nothing():
    picker = NearestPicker(1.0, 0.5)
    assert picker.finish(3) == [] and picker.k == 3


def test_segment_centres_and_their_integer_form():
    np.testing.assert_array_equal(segment_centres(10.0, 30.0, 4), [12.5, 17.5, 22.5, 27.5])
    assert uniform_indices(20, 4).tolist() == [2, 7, 12, 17]
    assert uniform_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # a short clip: items repeat
    assert uniform_indices(8, 8).tolist() == list(range(8))
    assert uniform_indices(1, 3).tolist() == [0, 0, 0]
    for n_items in range(1, 40):
        for n in range(1, 12):
            want = np.floor(segment_centres(0.0, float(n_items), n)).astype(np.int64)
            np.testing.assert_array_equal(uniform_indices(n_items, n), want)


@pytest.mark.parametrize("width, height, size, want", [
    (128, 96, 64, (85, 64)),    # 85.33 -> 85
    (96, 128, 64, (64, 85)),    # portrait: the same rule on the other axis
    (640, 360, 224, (398, 224)),
    (100, 100, 32, (32, 32)),
    (101, 100, 50, (50, 50)),   # 50.5 rounds (half to even) to 50, never under size
    (16, 9, 224, (398, 224)),   # upscaling
])
def test_resize_dims_keep_the_aspect_with_the_shorter_side_at_size(width, height, size, want):
    assert resize_dims(width, height, size) == want
    assert min(resize_dims(width, height, size)) == size


def test_center_crop_takes_the_centred_window_of_any_leading_shape():
    rgb = np.arange(6 * 9 * 3).reshape(6, 9, 3)
    crop = center_crop(rgb, 4)
    assert crop.shape == (4, 4, 3)
    np.testing.assert_array_equal(crop, rgb[1:5, 2:6])  # top (6-4)//2 = 1, left (9-4)//2 = 2
    batch = np.stack([rgb, rgb + 1])
    np.testing.assert_array_equal(center_crop(batch, 4), np.stack([crop, crop + 1]))
    assert np.shares_memory(center_crop(rgb, 4), rgb)  # a view: callers copy when they keep it


def test_frames_imports_only_numpy():
    """Pure: no codec, Beam, torch or file IO module at any level of the file."""
    tree = ast.parse((pathlib.Path(__file__).resolve().parents[2] / "curation" / "frames.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "numpy"}, imported
