"""The narration both synthetic worlds share (``curation.synth.captions``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from curation.synth.captions import (
    CaptionWorld,
    caption_counts,
    draw_steps,
    place_alignable,
    t2_offset_s,
)
from curation.synth.features import WorldParams
from curation.synth.video import VideoParams


def _names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_both_worlds_take_the_caption_knobs_from_one_place():
    assert _names(CaptionWorld) <= _names(WorldParams) and _names(CaptionWorld) <= _names(VideoParams)
    assert not (_names(WorldParams) - _names(CaptionWorld)) & (_names(VideoParams) - _names(CaptionWorld))
    shared = {n: getattr(CaptionWorld(), n) for n in _names(CaptionWorld)}
    assert {n: getattr(WorldParams(), n) for n in shared} == shared  # the feature world keeps the defaults
    overridden = {n for n in shared if getattr(VideoParams(), n) != shared[n]}
    assert overridden == {"duration_s", "alignable_fraction", "step_s", "gap_s"}


def test_steps_lie_in_the_video_in_order_with_gaps():
    p = CaptionWorld()
    steps = draw_steps(np.random.default_rng(4), p, 400, 50)
    assert steps and all(0 < s < e <= 400 and p.step_s[0] <= e - s < p.step_s[1] for s, e, _ in steps)
    assert all(b[0] - a[1] >= p.gap_s[0] for a, b in zip(steps, steps[1:]))
    assert all(0 <= c < 50 for _, _, c in steps)


@pytest.mark.parametrize("duration_s, n_steps, expected", [(600, 20, (85, 26)), (600, 3, (85, 9)), (600, 0, (85, 0)),
                                                            (5, 4, (2, 1))])
def test_caption_counts(duration_s, n_steps, expected):
    assert caption_counts(CaptionWorld(), duration_s, n_steps) == expected


def test_an_alignable_caption_sits_in_its_step_and_its_asr_time_in_the_video():
    p, rng = CaptionWorld(), np.random.default_rng(0)
    steps = [(10, 30, 1), (50, 80, 2)]
    for _ in range(200):
        step, centre_s, start_s = place_alignable(rng, p, steps, 100, 4.0)
        assert step in steps and step[0] <= centre_s <= step[1] and 0.0 <= start_s <= 96.0
    _, centre_s, start_s = place_alignable(rng, p, steps, 100, 4.0, lambda: 1000.0)
    assert start_s == 96.0  # an offset past the end is clipped to the video
    offsets = [t2_offset_s(rng, p) for _ in range(2000)]
    assert max(map(abs, offsets)) <= p.max_offset_s and np.median(np.abs(offsets)) < p.offset_scale_s
