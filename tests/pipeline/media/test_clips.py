"""Tests for pipeline.media.clips: a cut decodes to the span's duration with the source frames of the
span's times, honours fps and size, is byte-identical on repeat, clamps spans that outlast the
video, and turns bad files and spans into InputError('clip_failed')."""

from __future__ import annotations

import io

import numpy as np
import pytest

from curation.errors import InputError
from pipeline.media.clips import X86_64_ASM, clip_dims, cut_clip, encode_h264, x264_asm
from tests.videos import colour_of, frame_index_of, make_video

SRC_FPS = 8
DURATION_S = 20.0  # 160 frames


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """20 s, 8 fps, 96 x 64, frame_index pattern, a keyframe every 10 frames (cuts must seek)."""
    path = str(tmp_path_factory.mktemp("clips") / "src.mp4")
    return make_video(path, DURATION_S, fps=SRC_FPS, size=(96, 64), options={"g": "10"})


def _read_mp4(data: bytes) -> tuple[np.ndarray, np.ndarray, float]:
    """(frames (n, h, w, 3), pts_s (n,), the stream's frame rate) of an in-memory mp4, via PyAV."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        rate = float(stream.average_rate)
        pts = np.array([float((f.pts - (stream.start_time or 0)) * stream.time_base) for f in frames])
        return np.stack([f.to_ndarray(format="rgb24") for f in frames]), pts, rate


def _expected(start_s: float, n: int, fps: float) -> list[int]:
    """Source frames nearest to ``start_s + (k + 0.5) / fps`` (the grids here have no ties)."""
    return np.floor((start_s + (np.arange(n) + 0.5) / fps) * SRC_FPS + 0.5).astype(int).tolist()


@pytest.mark.parametrize("start_s,end_s,fps", [(3.0, 7.0, 5.0), (11.3, 13.9, 2.0), (0.0, 1.0, 16.0)])
def test_mp4_clip_covers_the_span_with_the_right_frames(video, start_s, end_s, fps):
    out = cut_clip(video, start_s, end_s, "mp4", 32, fps)
    assert list(out) == ["mp4"]
    frames, pts, rate = _read_mp4(out["mp4"])
    n = round((end_s - start_s) * fps)
    assert len(frames) == n and rate == pytest.approx(fps)
    assert abs(len(frames) / fps - (end_s - start_s)) <= 0.5
    np.testing.assert_allclose(pts, np.arange(n) / fps, atol=1e-3)
    assert frames.shape[1:] == (32, 48, 3)  # shorter side 32, aspect 3:2 kept, no crop
    assert frame_index_of(frames, 160).tolist() == _expected(start_s, n, fps)


def test_mp4_clip_reads_back_with_decord(video, tmp_path):
    import decord

    path = tmp_path / "clip.mp4"
    path.write_bytes(cut_clip(video, 4.0, 9.0, "mp4", 32, 4.0)["mp4"])
    reader = decord.VideoReader(str(path))
    assert len(reader) == 20 and reader.get_avg_fps() == pytest.approx(4.0)
    assert float(reader.get_frame_timestamp(19)[1]) == pytest.approx(5.0, abs=1e-3)


def test_size_is_the_shorter_side_rounded_to_even(video):
    assert clip_dims(96, 64, 32) == (48, 32)
    assert clip_dims(64, 96, 32) == (32, 48)
    assert clip_dims(96, 64, 33) == (50, 34)  # yuv420p needs even sides
    assert clip_dims(1920, 1080, 128) == (228, 128)
    frames, _, _ = _read_mp4(cut_clip(video, 1.0, 2.0, "mp4", 33, 8.0)["mp4"])
    assert frames.shape[1:] == (34, 50, 3)
    frames, _, _ = _read_mp4(cut_clip(video, 1.0, 2.0, "mp4", 128, 8.0)["mp4"])  # upscaled
    assert frames.shape[1:] == (128, 192, 3)


def test_cuts_are_byte_identical(video):
    first = cut_clip(video, 5.2, 8.7, "mp4", 32, 8.0)
    assert cut_clip(video, 5.2, 8.7, "mp4", 32, 8.0) == first
    assert cut_clip(video, 5.2, 8.7, "jpg", 32, 8.0) == cut_clip(video, 5.2, 8.7, "jpg", 32, 8.0)
    assert b"Lavf" not in first["mp4"]  # bit-exact muxing: no FFmpeg version string


def _h264(frames, options) -> bytes:
    buffer = io.BytesIO()
    encode_h264(buffer, frames, 4.0, frames[0].shape[1], frames[0].shape[0], options, container_format="mp4")
    return buffer.getvalue()


@pytest.mark.parametrize("width,height", [(64, 48), (152, 48)])
def test_h264_bytes_do_not_depend_on_heap_contents_and_equal_x264s_c_code(width, height):
    """x264's AVX2/AVX-512 code gave different bytes for the same frames from one encode to the
    next at these widths (it reads memory it never wrote); the portable SIMD level must give one
    result, and the same as x264's plain C code (asm=0), which runs on every machine."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (height, width + 40, 3), dtype=np.uint8)
    frames = [np.ascontiguousarray(np.roll(base, 2 * i, axis=1)[:, :width]) for i in range(8)]
    options = {"preset": "veryfast", "crf": "23"}
    outputs = set()
    for _ in range(40):
        churn = [rng.integers(0, 256, int(n), dtype=np.uint8) for n in rng.integers(1000, 200000, 20)]
        del churn  # freed blocks full of noise: what an encoder reading unwritten memory would see
        outputs.add(_h264(frames, options))
    assert len(outputs) == 1
    assert outputs == {_h264(frames, {**options, "x264-params": "asm=0"})}


def test_x264_asm_is_portable_per_architecture():
    assert x264_asm("x86_64") == x264_asm("AMD64") == X86_64_ASM
    assert x264_asm("aarch64") == x264_asm("arm64") == "0"


@pytest.mark.parametrize("start_s,end_s,fps", [(2.0, 5.0, 4.0), (6.1, 7.3, 5.0)])
def test_jpg_members_are_the_same_frames(video, start_s, end_s, fps):
    from PIL import Image

    out = cut_clip(video, start_s, end_s, "jpg", 32, fps)
    n = round((end_s - start_s) * fps)
    assert abs(len(out) - (end_s - start_s) * fps) <= 1 and len(out) == n
    assert list(out) == [f"f{k:04d}.jpg" for k in range(n)]
    frames = np.stack([np.asarray(Image.open(io.BytesIO(out[k])).convert("RGB")) for k in sorted(out)])
    assert frames.shape == (n, 32, 48, 3)
    indices = frame_index_of(frames, 160)
    assert indices.tolist() == _expected(start_s, n, fps)
    assert np.abs(frames.astype(int) - colour_of(indices)[:, None, None].astype(int)).max() <= 12


def test_span_past_the_end_is_clamped_to_the_last_frame(video):
    frames, _, _ = _read_mp4(cut_clip(video, 18.5, 25.0, "mp4", 32, 8.0)["mp4"])
    assert len(frames) == 12  # 1.5 s of the 6.5 s asked for
    assert frame_index_of(frames, 160).tolist() == list(range(148, 160))
    out = cut_clip(video, 19.9, 20.4, "jpg", 32, 4.0)  # a sliver inside: still one frame
    assert list(out) == ["f0000.jpg"]


def test_times_count_from_the_stream_start(tmp_path):
    path = make_video(str(tmp_path / "late.mp4"), 4.0, fps=SRC_FPS, size=(96, 64), start_pts=8)
    frames, _, _ = _read_mp4(cut_clip(path, 1.0, 2.0, "mp4", 32, 8.0)["mp4"])
    assert frame_index_of(frames, 32).tolist() == list(range(8, 16))


def _clip_failed(*args) -> InputError:
    with pytest.raises(InputError) as info:
        cut_clip(*args)
    assert info.value.error_class == "clip_failed", str(info.value)
    assert "\n" not in info.value.message
    return info.value


def test_bad_inputs_raise_clip_failed_naming_file_and_span(video, tmp_path):
    missing = str(tmp_path / "gone.mp4")
    exc = _clip_failed(missing, 1.0, 2.0, "mp4", 32, 8.0)
    assert missing in exc.message and "1.000" in exc.message and "2.000" in exc.message
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    assert str(text) in _clip_failed(str(text), 1.0, 2.0, "jpg", 32, 8.0).message
    for start_s, end_s in [(5.0, 3.0), (4.0, 4.0), (21.0, 23.0), (-3.0, -1.0), (float("nan"), 2.0)]:
        assert video in _clip_failed(video, start_s, end_s, "mp4", 32, 8.0).message


def test_bad_settings_are_value_errors(video):
    with pytest.raises(ValueError):
        cut_clip(video, 1.0, 2.0, "gif", 32, 8.0)
    with pytest.raises(ValueError):
        cut_clip(video, 1.0, 2.0, "mp4", 32, 0.0)


@pytest.mark.parametrize("start_s", [0.5, 3.0])
def test_no_decoded_frame_outlives_its_clip(video, start_s):
    """A frame whose side data was read sits in a reference cycle: without a collection after
    each clip, a worker cutting hundreds of clips holds every picked frame until Python's cyclic
    collector happens to run (a 1-hour 720p video's 600 clips took the run from 1.8 to 2.7 GB)."""
    import gc

    import av

    def frames() -> int:
        return sum(type(o) is av.video.frame.VideoFrame for o in gc.get_objects())

    gc.collect()
    before = frames()
    gc.disable()
    try:
        for _ in range(3):
            assert "mp4" in cut_clip(video, start_s, start_s + 1.0, "mp4", 32, 4.0)
        assert frames() == before
    finally:
        gc.enable()
