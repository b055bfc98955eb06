"""Tests for pipeline.media (decode, pyav, decord, isolated): both backends pick the same frames at
the same times, resize and centre-crop, count time from the stream start, and map bad files
(missing, not a video, audio only, a FIFO that never delivers) to InputErrors of the right class;
the keyframe-aware PyAV path's plan and its execution."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest

from curation.errors import InputError
from curation.frames import sample_times_s
from pipeline.media import pyav
from pipeline.media.decode import BACKENDS, ArraySink, decode_frames
from pipeline.media.isolated import decode_frames_isolated, decode_isolated
from tests.videos import (
    LEFT_BAR,
    RIGHT_BAR,
    colour_of,
    frame_index_of,
    make_audio_only,
    make_video,
)

SRC_FPS = 8
DURATION_S = 6.5  # 52 frames: the last sample at 2 Hz (6.25 s) is inside, the 1 Hz grid ends at 5.5 s


@pytest.fixture(scope="module")
def video8(tmp_path_factory) -> str:
    """8 fps, 96 x 64, frame_index pattern, a keyframe every 10 frames (with B-frames)."""
    path = str(tmp_path_factory.mktemp("decode") / "v8.mp4")
    return make_video(path, DURATION_S, fps=SRC_FPS, size=(96, 64), options={"g": "10"})


def _expected_indices(targets_s: np.ndarray, src_fps: float) -> np.ndarray:
    """Nearest source frame ``round(t * fps)`` (no ties on the grids used here)."""
    return np.floor(targets_s * src_fps + 0.5).astype(int)


@pytest.mark.parametrize("sample_fps", [1, 2, 3])
def test_backends_pick_the_same_nearest_frames(video8, sample_fps):
    results = {b: decode_frames(video8, sample_fps, 32, b) for b in BACKENDS}
    targets = sample_times_s(DURATION_S, sample_fps)
    assert len(targets) == int(DURATION_S * sample_fps)
    expected = _expected_indices(targets, SRC_FPS)
    for backend, dec in results.items():
        assert dec.frames.shape == (len(targets), 32, 32, 3) and dec.frames.dtype == np.uint8, backend
        assert frame_index_of(dec.frames, 52).tolist() == expected.tolist(), backend
        np.testing.assert_allclose(dec.pts_s, expected / SRC_FPS, atol=1e-4, err_msg=backend)
        assert np.all(np.abs(dec.pts_s - targets) <= 1 / (2 * SRC_FPS) + 1e-6), backend
        assert dec.duration_s == pytest.approx(DURATION_S, abs=1e-3), backend
        assert dec.sample_fps == sample_fps
    np.testing.assert_allclose(results["decord"].pts_s, results["pyav"].pts_s, atol=1e-4)
    # the same frames, and near-identical pixels (different scalers)
    diff = np.abs(results["decord"].frames.astype(int) - results["pyav"].frames.astype(int))
    assert diff.mean() < 4


def test_ties_go_to_the_earlier_frame(video8):
    """At sample_fps 8 every target (k + 0.5) / 8 lies midway between frames k and k + 1."""
    for backend in BACKENDS:
        dec = decode_frames(video8, 8, 32, backend)
        assert frame_index_of(dec.frames, 52).tolist() == list(range(52)), backend
        np.testing.assert_allclose(dec.pts_s, np.arange(52) / 8, atol=1e-4, err_msg=backend)


@pytest.mark.parametrize("size", [16, 20, 32, 48])
def test_decord_resize_to_widths_it_misreads(tmp_path, size):
    """decord 0.6 takes RGB row padding for channels at widths 16, 24, 48, 72, ... (its
    get_batch fails): the resized widths here are 24, 30 (a control), 48 and 72."""
    path = make_video(str(tmp_path / "w.mp4"), 2, fps=SRC_FPS, size=(96, 64))
    dec = decode_frames(path, 2, size, "decord")
    assert dec.frames.shape == (4, size, size, 3)
    assert frame_index_of(dec.frames, 16).tolist() == [2, 6, 10, 14]
    assert np.abs(dec.frames.astype(int) - colour_of([2, 6, 10, 14])[:, None, None].astype(int)).max() <= 8


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
def test_shorter_side_resize_then_centre_crop_drops_the_bars(tmp_path, backend, orientation):
    """Bars fill the outer quarters of the longer axis. 128 x 48: the centre 48 x 48 square is
    columns 40..88, inside the middle half (32..96): no bar survives the crop."""
    size = (128, 48) if orientation == "landscape" else (48, 128)
    path = make_video(str(tmp_path / "bars.mp4"), 1, fps=SRC_FPS, size=size, pattern="bars")
    dec = decode_frames(path, 2, 24, backend)
    assert dec.frames.shape == (2, 24, 24, 3)
    want = colour_of(frame_index_of(dec.frames, 8))[:, None, None].astype(int)
    assert np.abs(dec.frames.astype(int) - want).max() <= 8  # the whole crop is the middle colour
    bars = np.array([LEFT_BAR, RIGHT_BAR])
    assert np.abs(dec.frames.reshape(-1, 1, 3).astype(int) - bars).sum(axis=-1).min() > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_keeps_the_aspect_ratio_before_cropping(tmp_path, backend):
    """96 x 64 bars, size 32: resized to 48 x 32, cropped to columns 8..40; the bars (columns
    0..12 and 36..48 after resizing) leave 4 columns each side. Squashing would leave 8."""
    path = make_video(str(tmp_path / "bars.mp4"), 1, fps=SRC_FPS, size=(96, 64), pattern="bars")
    dec = decode_frames(path, 1, 32, backend)
    row = dec.frames[0, 16].astype(int)
    palette = np.array([LEFT_BAR, RIGHT_BAR, colour_of(frame_index_of(dec.frames, 8)[0])], dtype=int)
    nearest = np.abs(row[:, None] - palette).sum(axis=-1).argmin(axis=1)  # 0 left bar, 1 right, 2 middle
    assert nearest.tolist() == [0] * 4 + [2] * 24 + [1] * 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_times_count_from_the_stream_start(tmp_path, backend):
    """The first frame is at PTS 5/8 s: times still start at 0 and the duration is 4 s."""
    path = make_video(str(tmp_path / "late.mp4"), 4, fps=SRC_FPS, size=(96, 64), start_pts=5)
    dec = decode_frames(path, 2, 32, backend)
    assert dec.pts_s.tolist() == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75], abs=1e-4)
    assert frame_index_of(dec.frames, 32).tolist() == [2, 6, 10, 14, 18, 22, 26, 30]
    assert dec.duration_s == pytest.approx(4.0, abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vp9_webm_decodes(tmp_path, backend):
    path = make_video(str(tmp_path / "v.webm"), 3, fps=SRC_FPS, size=(96, 64), codec="libvpx-vp9")
    dec = decode_frames(path, 2, 32, backend)
    assert frame_index_of(dec.frames, 24).tolist() == [2, 6, 10, 14, 18, 22]
    assert dec.duration_s == pytest.approx(3.0, abs=1e-3)


def test_isolated_decode_returns_the_same_arrays(video8):
    for backend in BACKENDS:
        here, child = decode_frames(video8, 2, 32, backend), decode_frames_isolated(video8, 2, 32, backend, 60)
        np.testing.assert_array_equal(child.frames, here.frames)
        np.testing.assert_array_equal(child.pts_s, here.pts_s)
        assert (child.duration_s, child.sample_fps) == (here.duration_s, here.sample_fps)


def _bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    return {
        "missing": (str(tmp_path / "nope.mp4"), "missing_file"),
        "text": (str(text), "decode_error"),
        "audio_only": (make_audio_only(str(tmp_path / "audio.mp4"), 1.0), "decode_error"),
        "directory": (str(tmp_path), "unreadable_file"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_input_errors_naming_the_file(tmp_path, backend):
    for name, (path, error_class) in _bad_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            decode_frames(path, 1, 32, backend)
        assert info.value.error_class == error_class, (name, str(info.value))
        assert path in info.value.message


def test_isolated_bad_file_keeps_the_childs_error_class(tmp_path):
    path, error_class = _bad_files(tmp_path)["audio_only"]
    with pytest.raises(InputError) as info:
        decode_frames_isolated(path, 1, 32, "pyav", 60)
    assert info.value.error_class == error_class and path in info.value.message
    with pytest.raises(InputError) as info:  # checked in the parent, no child started
        decode_frames_isolated(str(tmp_path / "nope.mp4"), 1, 32, "pyav", 60)
    assert info.value.error_class == "missing_file"


def test_a_hanging_decoder_times_out(tmp_path, monkeypatch):
    """A FIFO with no writer: opening it blocks the child forever; the parent must not block
    (check_file never opens the file) and must give up after timeout_s, removing its temp dir."""
    fifo = str(tmp_path / "stuck.mp4")
    os.mkfifo(fifo)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        decode_frames_isolated(fifo, 1, 32, "pyav", timeout_s=2)
    elapsed = time.monotonic() - start
    assert info.value.error_class == "timeout" and fifo in info.value.message
    assert 1.9 <= elapsed <= 2.2, f"killed {elapsed:.3f} s after a 2 s limit (the margin allowed is 10%)"
    assert list(scratch.iterdir()) == []


def test_bad_arguments_are_value_errors(video8):
    with pytest.raises(ValueError):
        decode_frames(video8, 1, 32, "opencv")
    with pytest.raises(ValueError):
        decode_frames(video8, 0, 32, "pyav")


# ------------------------------------------------------------------ keyframe-aware PyAV decoding

#: (codec, encoder options, expected: every group closed?, expected: some packets skipped at 1 fps,
#: expected: some unreferenced pictures left out) at 8 fps: "g" 16 is a keyframe every 2 s, so
#: each group's last 0.5 s follows its last sample.
_X265 = "log-level=error:scenecut=0:keyint=16:min-keyint=16:bframes=3"
KEYFRAME_CASES = {
    "h264_no_bframes": ("libx264", {"preset": "ultrafast", "crf": "18", "g": "16"}, True, True, False),
    "h264_bframes": ("libx264", {"preset": "medium", "crf": "18", "g": "16", "bf": "3"}, True, True, True),
    "h264_bpyramid": ("libx264", {"preset": "medium", "crf": "18",
                                  "x264-params": "keyint=16:bframes=3:b-pyramid=normal:b-adapt=0:scenecut=0"},
                      True, True, True),
    "h264_short_gop": ("libx264", {"preset": "ultrafast", "crf": "18", "g": "3"}, True, True, False),
    "h264_open_gop": ("libx264", {"preset": "medium", "crf": "18", "x264-params": "keyint=16:open-gop=1:bframes=3"},
                      False, None, True),
    "hevc_bframes": ("libx265", {"preset": "fast", "x265-params": _X265 + ":open-gop=0"}, True, True, True),
    "hevc_open_gop": ("libx265", {"preset": "fast", "x265-params": _X265 + ":open-gop=1:b-pyramid=1"}, False, None, True),
    "vp9": ("libvpx-vp9", {"g": "16"}, True, True, False),
}


@pytest.mark.parametrize("case", sorted(KEYFRAME_CASES))
def test_keyframe_aware_pyav_decode_equals_the_sequential_pass(tmp_path, case):
    """The indexed path picks the frames the sequential pass picks, pixel for pixel and PTS for
    PTS, while sending fewer packets to the decoder where groups allow and leaving out pictures
    nothing references unless they are picked; open groups (leading B pictures that reference the
    previous group) are never cut. At 1 fps and 3 Hz (where most B-frames are picked)."""
    codec, options, all_closed, skips, unreferenced = KEYFRAME_CASES[case]
    path = make_video(str(tmp_path / f"{case}.{'webm' if codec == 'libvpx-vp9' else 'mp4'}"), 12, fps=SRC_FPS,
                      size=(96, 64), codec=codec, options=options)
    index = pyav.index_packets(path)
    assert index is not None
    assert bool(index.closed[:-1].all()) == all_closed
    assert bool(index.unreferenced.any()) == unreferenced
    for fps in (1.0, 3.0):
        fast, slow, stats = ArraySink(), ArraySink(), {}
        pts_fast, dur_fast = pyav.decode_indexed(path, fps, 32, fast, index, stats)
        pts_slow, dur_slow = pyav.decode_sequential(path, fps, 32, slow)
        np.testing.assert_array_equal(pts_fast, pts_slow)
        np.testing.assert_array_equal(fast.array(32), slow.array(32))
        assert dur_fast == dur_slow == pytest.approx(12.0)
        assert stats["packets"] == 96
        assert stats["decoded"] + stats["unreferenced"] <= stats["packets"]
        assert (stats["unreferenced"] > 0) == unreferenced
        if fps == 1.0:
            assert frame_index_of(fast.array(32), 96).tolist() == [4 + 8 * k for k in range(12)]
            if skips is not None:
                assert (stats["decoded"] < stats["packets"]) == skips
            if not all_closed:  # only groups that nothing references are cut, and unreferenced pictures
                assert stats["decoded"] + stats["unreferenced"] >= 90


def test_unreferenced_pictures_are_read_from_the_nal_headers():
    """H.264: non-IDR slices with nal_ref_idc 0 only; HEVC: sub-layer non-reference slices in a
    stream of one temporal layer; a parameter set or prefix SEI in the unit keeps it."""
    def units(*nals: bytes, size: int = 4) -> bytes:
        return b"".join(len(n).to_bytes(size, "big") + n for n in nals)

    avc = pyav.NalLayout.of("h264", bytes([1, 100, 0, 31, 0xFF, 0xE1, 0]))
    assert avc.length_size == 4 and not avc.hevc
    assert pyav._unreferenced(avc, units(b"\x01\x9a\x00"))                   # non-ref P/B slice
    assert pyav._unreferenced(avc, units(b"\x09\xf0", b"\x01\x9a"))         # with an access unit delimiter
    assert not pyav._unreferenced(avc, units(b"\x21\x9a\x00"))               # nal_ref_idc 1
    assert not pyav._unreferenced(avc, units(b"\x65\x88"))                    # IDR
    assert not pyav._unreferenced(avc, units(b"\x06\x05", b"\x01\x9a"))     # SEI
    assert not pyav._unreferenced(avc, units(b"\x01\x9a", b"\x21\x9a"))     # one slice referenced
    assert not pyav._unreferenced(avc, b"")
    two = pyav.NalLayout.of("h264", bytes([1, 100, 0, 31, 0xFD, 0xE1, 0]))
    assert two.length_size == 2 and pyav._unreferenced(two, units(b"\x01\x9a", size=2))
    assert pyav.NalLayout.of("h264", b"\x00\x00\x00\x01\x67") is None   # Annex B
    assert not pyav._unreferenced(None, units(b"\x01\x9a"))

    hvcc = bytearray(23)
    hvcc[0], hvcc[21] = 1, (1 << 3) | 3                                       # one temporal layer, 4-byte lengths
    hevc = pyav.NalLayout.of("hevc", bytes(hvcc))
    assert hevc.hevc and hevc.length_size == 4 and hevc.temporal_layers == 1
    nal = lambda t: bytes([t << 1, 1, 0xAF])                                  # noqa: E731 - header + payload
    assert pyav._unreferenced(hevc, units(nal(0)))                            # TRAIL_N
    assert pyav._unreferenced(hevc, units(nal(35), nal(8), nal(40)))          # AUD, RASL_N, suffix SEI
    assert not pyav._unreferenced(hevc, units(nal(1)))                        # TRAIL_R
    assert not pyav._unreferenced(hevc, units(nal(19)))                       # IDR
    assert not pyav._unreferenced(hevc, units(nal(39), nal(0)))               # prefix SEI
    hvcc[21] = (2 << 3) | 3
    assert not pyav._unreferenced(pyav.NalLayout.of("hevc", bytes(hvcc)), units(nal(0)))  # two temporal layers
    assert pyav._resets_references("hevc", pyav.NalLayout.of("hevc", bytes(hvcc)), units(nal(19)))
    assert pyav._resets_references("h264", avc, units(b"\x65\x88"))
    assert not pyav._resets_references("h264", avc, units(b"\x01\x9a"))


def test_keyframe_aware_decode_falls_back_when_a_frame_does_not_appear(video8, monkeypatch):
    """If a picked PTS never comes out of the decoder, the sequential pass decides: same result."""
    index = pyav.index_packets(video8)
    shifted = pyav.PacketIndex(index.pts * 2, index.end * 2, index.gop, index.closed, index.time_base / 2, index.origin)
    monkeypatch.setattr(pyav, "index_packets", lambda path: shifted)
    with pytest.raises(pyav.GaveUp):
        pyav.decode_indexed(video8, 2, 32, ArraySink(), shifted)
    got = decode_frames(video8, 2, 32, "pyav")
    monkeypatch.undo()
    want = decode_frames(video8, 2, 32, "pyav")
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(got.pts_s, want.pts_s)


def test_isolated_decode_streams_frames_in_chunks(video8):
    whole = decode_frames(video8, 2, 32, "pyav")
    with decode_isolated(video8, 2, 32, "pyav", 60) as result:
        chunks = list(result.in_chunks(3))
        assert os.path.exists(result.frames_path)
    assert not os.path.exists(result.frames_path), "the child's files are removed with the context"
    assert [len(c) for c in chunks] == [3, 3, 3, 3, 1]  # 13 samples at 2 Hz in 6.5 s
    np.testing.assert_array_equal(np.concatenate(chunks), whole.frames)
    np.testing.assert_array_equal(result.pts_s, whole.pts_s)


def test_the_default_backend_is_pyav(video8):
    """The in-process decode defaults to the pipeline's default backend (decode.backend: pyav)."""
    from pipeline.config import DecodeConfig

    default = decode_frames(video8, 2, 32)
    np.testing.assert_array_equal(default.frames, decode_frames(video8, 2, 32, DecodeConfig().backend).frames)
    assert DecodeConfig().backend == "pyav"


# ------------------------------------------------------------ the plan of the keyframe-aware path


def _index(gops: list[list[int]], closed: list[bool], ticks_per_s: int = 8) -> pyav.PacketIndex:
    """A PacketIndex of frames at ``ticks_per_s`` ticks per second, packets in the given decode
    order (a list per group of pictures, keyframe first), each one tick long."""
    pts = np.array([p for group in gops for p in group], np.int64)
    gop = np.array([g for g, group in enumerate(gops) for _ in group], np.int64)
    return pyav.PacketIndex(pts, pts + 1, gop, np.array(closed + [True], bool), 1.0 / ticks_per_s, 0)


def test_plan_picks_the_nearest_frame_per_sample_and_counts_picks_per_group():
    """Two 2-s groups at 8 fps with B-frames in decode order; 1 Hz targets 0.5, 1.5, 2.5, 3.5 s
    are frames 4, 12, 20, 28: two picks in each group."""
    gops = [[0, 3, 1, 2, 7, 5, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15],
            [16, 19, 17, 18, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]]
    plan = pyav.plan_indexed_decode(_index(gops, [True, True]), 1.0)
    assert plan.pick_pts.tolist() == [4, 12, 20, 28]
    np.testing.assert_array_equal(plan.pick_s, [0.5, 1.5, 2.5, 3.5])
    assert plan.duration_s == 4.0
    assert plan.picks_per_gop.tolist() == [2, 2, 0]
    assert plan.gop_of_pick == {4: 0, 12: 0, 20: 1, 28: 1}


def test_plan_repeats_a_frame_for_several_samples_and_ties_go_to_the_earlier():
    """Frames every 0.5 s (0, 0.5, 1.0, 1.5 s; the last ends at 1.625 s). At 4 Hz two targets
    share each frame; at 2 Hz every target (0.25, 0.75, 1.25 s) lies midway: the earlier wins."""
    index = _index([[0, 4, 8, 12]], [True])
    plan = pyav.plan_indexed_decode(index, 4.0)
    assert plan.pick_pts.tolist() == [0, 4, 4, 8, 8, 12]
    assert plan.picks_per_gop.tolist() == [4, 0] and sorted(plan.gop_of_pick) == [0, 4, 8, 12]
    assert pyav.plan_indexed_decode(index, 2.0).pick_pts.tolist() == [0, 4, 8]


def test_plan_gives_up_on_shared_pts_and_zero_duration():
    with pytest.raises(pyav.GaveUp, match="share a PTS"):
        pyav.plan_indexed_decode(_index([[0, 1, 1, 2]], [True]), 1.0)
    empty = pyav.PacketIndex(np.array([0], np.int64), np.array([0], np.int64), np.array([0], np.int64),
                             np.array([True, True]), 0.125, 0)
    with pytest.raises(pyav.GaveUp, match="zero duration"):
        pyav.plan_indexed_decode(empty, 1.0)


def test_approximate_decode_uses_nearby_reference_frames(tmp_path):
    """decode.exact: false: as many samples as the exact decode, each a decoded reference frame
    (never a picture nothing references) within one B-frame run of the exact pick, its own PTS
    recorded; the same in the decode child and on the sequential path; no unreferenced picture
    decoded."""
    from pipeline.media.isolated import decode_isolated

    codec, options, *_ = KEYFRAME_CASES["h264_bframes"]
    path = make_video(str(tmp_path / "b.mp4"), 12, fps=SRC_FPS, size=(96, 64), codec=codec, options=options)
    index = pyav.index_packets(path)
    unreferenced_s = set(((index.pts[index.unreferenced] - index.origin) * index.time_base).round(6).tolist())
    exact = decode_frames(path, 3.0, 32, "pyav")
    approx = decode_frames(path, 3.0, 32, "pyav", exact=False)
    assert approx.frames.shape == exact.frames.shape and approx.duration_s == exact.duration_s
    assert not set(approx.pts_s.round(6).tolist()) & unreferenced_s
    assert set(exact.pts_s.round(6).tolist()) & unreferenced_s  # the exact picks do use such pictures
    assert np.abs(approx.pts_s - exact.pts_s).max() <= 4 / SRC_FPS + 1e-9   # 3 B-frames + 1
    changed = approx.pts_s != exact.pts_s
    assert changed.any() and not changed.all()
    # a frame's index is drawn into it: an approximate sample shows the frame its PTS names
    assert frame_index_of(approx.frames, 96).tolist() == np.round(approx.pts_s * SRC_FPS).astype(int).tolist()
    with decode_isolated(path, 3.0, 32, "pyav", 60, exact=False) as child:
        np.testing.assert_array_equal(child.pts_s, approx.pts_s)
        np.testing.assert_array_equal(np.concatenate(list(child.in_chunks(64))), approx.frames)
    # the keyframe-aware approximate path (which that was) and the sequential one agree
    seq, stats = ArraySink(), {}
    pts_seq, dur_seq = pyav.decode_sequential(path, 3.0, 32, seq, approximate=True)
    np.testing.assert_array_equal(pts_seq, approx.pts_s)
    np.testing.assert_array_equal(seq.array(32), approx.frames)
    assert dur_seq == approx.duration_s
    pyav.decode_indexed(path, 3.0, 32, ArraySink(), index, stats, approximate=True)
    assert stats["unreferenced"] == index.unreferenced.sum()


def test_approximate_decode_of_a_counted_stream_is_exact(tmp_path):
    """AVI frame times are counted, so skipping frames would shift them: decoded exactly."""
    path = make_video(str(tmp_path / "c.avi"), 4, fps=SRC_FPS, size=(96, 64), codec="mpeg4",
                      options={"bf": "2", "g": "8"})
    exact, approx = decode_frames(path, 2.0, 32, "pyav"), decode_frames(path, 2.0, 32, "pyav", exact=False)
    np.testing.assert_array_equal(approx.pts_s, exact.pts_s)
    np.testing.assert_array_equal(approx.frames, exact.frames)
