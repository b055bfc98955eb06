"""``pipeline.outputs.checkpoint``: a decode checkpoint gives back what was saved, the decode's
notes (failures-table rows of a usable video) included, and is incomplete until every chunk is there."""

from __future__ import annotations

import numpy as np

from pipeline.outputs.checkpoint import load_frames, save_emb_chunk, save_pts


def test_a_decode_checkpoint_round_trips_its_times_source_and_notes(tmp_path):
    out = str(tmp_path)
    pts_s = np.array([0.5, 1.5, 2.625])
    notes = [{"video_id": "v", "stage": "decode", "error_class": "truncated", "message": "ends at 3 s"}]
    save_pts(out, "v", pts_s, "/videos/v.mkv", 2, notes)
    assert load_frames(out, "v") is None  # no chunk yet
    save_emb_chunk(out, "v", 0, np.ones((2, 4), np.float32))
    assert load_frames(out, "v") is None  # one of two
    save_emb_chunk(out, "v", 1, np.zeros((1, 4), np.float32))
    emb, got_pts, source, got_notes = load_frames(out, "v")
    assert emb.shape == (3, 4) and emb[:2].sum() == 8 and got_pts.tolist() == pts_s.tolist()
    assert source == "/videos/v.mkv" and got_notes == notes
    save_pts(out, "w", pts_s, "/videos/w.mp4", 1)
    save_emb_chunk(out, "w", 0, np.ones((3, 4), np.float32))
    assert load_frames(out, "w")[3] == []
