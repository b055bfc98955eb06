"""``pipeline.outputs.checkpoint``: a decode checkpoint gives back what was saved, the decode's
notes (failures-table rows of a usable video) included, and is incomplete until every chunk is there."""

from __future__ import annotations

import numpy as np
import pytest

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


def _result():
    from curation.records import Failure
    from pipeline.results import IndexRow, Outcome, VideoResult

    rows = (IndexRow("v", 0, "cut the board", 1.0, 3.0, 2.0, 4.0, True, 0.9, 0.3, 0.1, 0.8, 0.7, True, None,
                     "shard-000000.tar", "v-00000"),
            IndexRow("v", 1, "my cousin", 5.0, 6.0, None, None, None, None, None, None, None, 0.0, False,
                     "unalignable", None, None))
    samples = ({"__key__": "v-00000", "txt": b"cut the board", "npy": bytes(range(256)) * 40},)
    failures = (Failure("v", "realign", "note", "a note"),)
    return VideoResult("v", rows, samples, failures, Outcome(True, 2, 1, (("unalignable", 1),)))


def _stats():
    from curation.calibration import DecoyPool, VideoStats

    rng = np.random.default_rng(0)
    keys, row = np.arange(3, dtype=np.uint64), lambda: rng.random((3, 121)).astype(np.float32)
    stats = VideoStats(keys, rng.normal(size=3), row(), rng.normal(size=3), row(), keys, rng.normal(size=3),
                       rng.normal(size=3), row())
    return stats, DecoyPool(np.arange(2, dtype=np.uint64), ("v", "v"), rng.normal(size=(2, 8)).astype(np.float32), keys)


def _break(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "flip":      # one byte of a payload, far from any header
        data[len(data) // 2] ^= 0x01
    elif how == "cut":     # the end never reached the disk
        data = data[: len(data) // 2]
    else:                  # the rename reached the disk, the data did not
        data = bytearray(len(data))
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["flip", "cut", "zeros"])
def test_a_broken_result_checkpoint_reads_as_absent(tmp_path, how):
    """Result checkpoints are written without fsync, so a crash may leave one broken: it must then
    read as absent (the video is redone), never as different rows or samples."""
    from pipeline.outputs.checkpoint import load_result, result_file, save_result

    out = str(tmp_path)
    save_result(out, _result())
    saved = load_result(out, "v").result
    assert saved.rows == _result().rows and saved.samples == _result().samples and saved.outcome == _result().outcome
    _break(result_file(out, "v"), how)
    assert load_result(out, "v") is None


@pytest.mark.parametrize("how", ["flip", "cut", "zeros"])
def test_a_broken_calibration_checkpoint_reads_as_absent(tmp_path, how):
    from pipeline.outputs.checkpoint import calibration_file, load_calibration, save_calibration

    out = str(tmp_path)
    stats, pool = _stats()
    save_calibration(out, "v", stats, pool)
    got, got_pool = load_calibration(out, "v")
    assert all(np.array_equal(a, b) for a, b in zip(got, stats)) and np.array_equal(got_pool.emb, pool.emb)
    assert np.array_equal(got_pool.run_keys, pool.run_keys)
    _break(calibration_file(out, "v"), how)
    assert load_calibration(out, "v") is None


def test_a_calibration_checkpoint_of_an_earlier_version_reads_as_absent(tmp_path):
    """A checkpoint without the statistics this version calibrates on (an unfinished run of an
    earlier version) is redone, never read with fields missing."""
    import io

    from pipeline.outputs.checkpoint import calibration_file, load_calibration
    from pipeline.storage.atomic import write_bytes_atomic

    stats, pool = _stats()
    old_fields = ("keys", "llr", "on_prob", "decoy_keys", "decoy_llr")
    buf = io.BytesIO()
    np.savez(buf, **{f"stats_{name}": getattr(stats, name) for name in old_fields}, pool_keys=pool.keys,
             pool_emb=pool.emb)
    write_bytes_atomic(calibration_file(str(tmp_path), "v"), buf.getvalue())
    assert load_calibration(str(tmp_path), "v") is None


def test_result_and_calibration_checkpoints_are_not_fsynced(tmp_path, monkeypatch):
    """Their CRC-32s stand in for the fsyncs (~0.8 ms each per video); decode checkpoints, which
    carry none, still fsync their data."""
    from pipeline.outputs import checkpoint
    from pipeline.storage import atomic

    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    checkpoint.save_result(str(tmp_path), _result())
    checkpoint.save_calibration(str(tmp_path), "v", *_stats())
    assert synced == []
    checkpoint.save_emb_chunk(str(tmp_path), "v", 0, np.ones((2, 4), np.float32))
    assert len(synced) == 1
