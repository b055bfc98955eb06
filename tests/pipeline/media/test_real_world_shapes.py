"""Real-world file shapes (issue 18, first part): which video stream is decoded, attached
pictures, display rotation, containers and timestamps decord gets wrong, and decord hangs. Files
are written here with PyAV; frame content identifies the frame (tests/videos.py colours) or its
orientation (four coloured quadrants), so every check compares with what a player shows."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from curation.errors import InputError
from pipeline.media.decode import decode_frames
from tests.videos import colour_of, frame_index_of, make_audio_only, make_video

BACKENDS = ("pyav", "decord")
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _quadrants(height: int, width: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2, : width // 2], img[: height // 2, width // 2:] = RED, GREEN
    img[height // 2:, : width // 2], img[height // 2:, width // 2:] = BLUE, WHITE
    return img


def _corner_colours(rgb: np.ndarray) -> list[tuple[int, ...]]:
    """The colours nearest to each corner's mean (top-left, top-right, bottom-left, bottom-right)."""
    h, w = rgb.shape[:2]
    q = [rgb[: h // 4, : w // 4], rgb[: h // 4, -w // 4:], rgb[-h // 4:, : w // 4], rgb[-h // 4:, -w // 4:]]
    palette = np.array([RED, GREEN, BLUE, WHITE], float)
    return [tuple(int(v) for v in palette[np.argmin(np.linalg.norm(palette - c.reshape(-1, 3).mean(0), axis=1))])
            for c in q]


def _write(path: str, streams: list[dict], n: int = 16, fps: int = 8) -> str:
    """A video file with one stream per dict: ``content(k) -> (h, w, 3)``, optional ``default``
    (disposition), ``rotation`` (degrees, the display matrix) or ``matrix`` (9 ints, FFmpeg's
    display matrix layout)."""
    import av
    from av.stream import Disposition

    with av.open(path, "w") as container:
        outs = []
        for spec in streams:
            first = spec["content"](0)
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.height, stream.width = first.shape[:2]
            stream.pix_fmt = "yuv444p" if spec.get("exact") else "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "0" if spec.get("exact") else "18"}
            stream.disposition = Disposition.default if spec.get("default") else Disposition(0)
            if spec.get("rotation"):
                stream.set_display_rotation(spec["rotation"])
            if spec.get("matrix"):
                stream.set_display_matrix(spec["matrix"])
            outs.append((stream, spec["content"]))
        for k in range(n):
            for stream, content in outs:
                frame = av.VideoFrame.from_ndarray(content(k), format="rgb24")
                frame.pts = k
                container.mux(stream.encode(frame))
        for stream, _ in outs:
            container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_default_disposition_stream_is_decoded_by_both_backends(tmp_path, backend):
    """Stream 0 shows colours 0.., stream 1 (default) colours 40..: every model frame is stream 1's."""
    path = _write(str(tmp_path / "two.mkv"), [
        {"content": lambda k: np.broadcast_to(colour_of(k), (64, 96, 3)).copy()},
        {"content": lambda k: np.broadcast_to(colour_of(k + 40), (64, 96, 3)).copy(), "default": True}])
    decoded = decode_frames(path, 1.0, 32, backend)
    assert len(decoded.frames) == 2
    assert frame_index_of(decoded.frames, 64).tolist() == [int(t * 8) + 40 for t in decoded.pts_s]


def test_clips_are_cut_from_the_same_stream(tmp_path):
    import io

    import av

    from pipeline.media.clips import cut_clip

    path = _write(str(tmp_path / "two.mkv"), [
        {"content": lambda k: np.broadcast_to(colour_of(k), (64, 96, 3)).copy()},
        {"content": lambda k: np.broadcast_to(colour_of(k + 40), (64, 96, 3)).copy(), "default": True}])
    clip = cut_clip(path, 0.0, 1.0, "mp4", 32, 8.0)["mp4"]
    with av.open(io.BytesIO(clip)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frame_index_of(frames, 64).tolist() == list(range(40, 48))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_audio_file_with_cover_art_has_no_video_stream(tmp_path, backend):
    import av
    from av.stream import Disposition

    path = str(tmp_path / "song.m4a")
    with av.open(path, "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16000, layout="mono")
        cover = container.add_stream("mjpeg")
        cover.width = cover.height = 64
        cover.pix_fmt, cover.disposition = "yuvj420p", Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24").reformat(format="yuvj420p")
        picture.pts = 0
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        for i in range(40):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    for file in (path, make_audio_only(str(tmp_path / "plain.m4a"), 2.0)):
        with pytest.raises(InputError) as err:
            decode_frames(file, 1.0, 32, backend)
        assert err.value.error_class == "decode_error" and "no video stream" in err.value.message


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_is_decoded_and_clipped_upright(tmp_path, backend, rotation):
    """Stored 96x64 with a display rotation: the model frame and the clip show what a player shows
    (np.rot90 of the stored picture by rotation/90 counterclockwise quarter turns), square, unsquashed."""
    import io

    import av

    from pipeline.media.clips import cut_clip

    stored = _quadrants(64, 96)
    path = _write(str(tmp_path / "phone.mp4"), [{"content": lambda k: stored, "rotation": rotation, "exact": True}])
    upright = np.rot90(stored, rotation // 90 % 4)
    decoded = decode_frames(path, 1.0, upright.shape[1] if upright.shape[1] < upright.shape[0] else upright.shape[0], backend)
    h, w = upright.shape[:2]
    side = min(h, w)
    expect = upright[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    assert _corner_colours(decoded.frames[0]) == _corner_colours(expect)
    clip = cut_clip(path, 0.0, 1.0, "mp4", 32, 8.0)["mp4"]
    with av.open(io.BytesIO(clip)) as container:
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        assert not first.rotation
        got = first.to_ndarray(format="rgb24")
    assert (got.shape[0] > got.shape[1]) == (h > w), got.shape  # portrait stays portrait
    assert abs(got.shape[1] / got.shape[0] - w / h) < 0.1  # not squashed
    assert _corner_colours(got) == _corner_colours(upright)


def test_decord_leaves_mpegts_and_avi_to_pyav_and_frames_are_at_their_times(tmp_path):
    """With B-frames, FFmpeg's guessed AVI PTS come out shuffled (PyAV's times were 3 frames off
    here): AVI times are counted at the frame rate; both backends give the player's frames."""
    import io

    import av

    from pipeline.media.clips import cut_clip

    for name in ("clip.ts", "clip.avi"):
        path = make_video(str(tmp_path / name), 4.0, fps=8, size=(96, 64), options={"bf": "3"})
        from pipeline.media.decord import DecordRejected, decord_header

        with pytest.raises(DecordRejected, match="PyAV decodes it"):
            decord_header(path)
        pyav, decord = decode_frames(path, 1.0, 32, "pyav"), decode_frames(path, 1.0, 32, "decord")
        assert np.array_equal(pyav.frames, decord.frames) and np.array_equal(pyav.pts_s, decord.pts_s)
        assert frame_index_of(pyav.frames, 64).tolist() == [round(t * 8) for t in pyav.pts_s]
        clip = cut_clip(path, 1.0, 2.0, "mp4", 32, 8.0)["mp4"]  # frame k of the clip: source frame 8 + k
        with av.open(io.BytesIO(clip)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert frame_index_of(frames, 64).tolist() == list(range(8, 16)), name


@pytest.mark.parametrize("ts, header, ok", [
    ([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3]], 3, True),
    ([[0.0, 0.1], [-1.0, -1.0], [0.2, 0.3]], 3, False),   # NOPTS
    ([[0.0, 0.1], [0.3, 0.4], [0.2, 0.3]], 3, False),     # out of order (shifted B-frame times)
    ([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3]], 9, False),     # a third of the frames
    ([[0.0, 0.1], [0.1, 0.2], [0.2, 0.3]], 0, True),      # no count in the header
])
def test_decord_times_are_checked(ts, header, ok):
    from pipeline.media.decord import DecordRejected, check_decord_times

    if ok:
        check_decord_times("f.avi", np.array(ts), header)
    else:
        with pytest.raises(DecordRejected):
            check_decord_times("f.avi", np.array(ts), header)


def test_a_decord_timeout_retries_with_pyav_within_the_same_limit(tmp_path, monkeypatch):
    from pipeline.media import isolated

    path = make_video(str(tmp_path / "v.mp4"), 1.0)
    calls = []

    class Decoded:
        notes = (("truncated", "earlier note"),)

    def fake(path, backend, timeout_s, *child):
        calls.append((backend, timeout_s))
        if backend == "decord" or len(calls) > 2:
            raise InputError("timeout", "hung")
        return Decoded()

    monkeypatch.setattr(isolated, "_decode_in_child", fake)
    result = isolated.decode_isolated(path, 1.0, 32, "decord", 10.0)
    # the fallback is noted for the failures table, before what the PyAV child noted itself
    assert [c for c, _ in result.notes] == ["backend_fallback", "truncated"]
    assert "decord did not finish" in result.notes[0][1] and path in result.notes[0][1]
    # decord gets half the limit; PyAV what is left of the whole (the fake decord returned at once)
    assert calls[0] == ("decord", 5.0) and calls[1][0] == "pyav" and 9.5 < calls[1][1] <= 10.0
    calls.append(None)  # from now on PyAV hangs too
    with pytest.raises(InputError, match="decord for 5 s, then PyAV") as err:
        isolated.decode_isolated(path, 1.0, 32, "decord", 10.0)
    assert err.value.error_class == "timeout"


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_square_pixels_are_made_square_for_the_encoder_and_in_clips(tmp_path, backend):
    """Stored 72x64 with pixel aspect 4:3 (displayed 96x64), its left quarter red: the model
    frame (shorter side 32, centre crop) keeps 4 red columns, as the 48x32 displayed picture
    does (a squeezed 36x32 one keeps 7); the clip is 48x32 with square pixels."""
    import io

    import av

    from pipeline.media.clips import cut_clip

    stored = np.full((64, 72, 3), 255, np.uint8)
    stored[:, :18] = RED
    path = str(tmp_path / "anamorphic.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 72, 64, "yuv444p"
        stream.options = {"preset": "ultrafast", "crf": "0"}
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for k in range(16):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    frame = decode_frames(path, 1.0, 32, backend).frames[0]
    red_columns = int((frame[16, :, 1] < 128).sum())
    assert red_columns in (3, 4, 5), red_columns
    clip = cut_clip(path, 0.0, 1.0, "mp4", 32, 8.0)["mp4"]
    with av.open(io.BytesIO(clip)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (48, 32)
        assert stream.sample_aspect_ratio in (None, 0, 1) or float(stream.sample_aspect_ratio) in (0.0, 1.0)


# ---------------------------------------------------------------- one timeline, duration, deinterlacing


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_video_stream_that_starts_late_is_placed_at_its_delay(tmp_path, backend, ext):
    """Audio from 0 s, video frames from 1.5 s (8 fps, frame k at 1.5 + k/8): the model frames
    are at their times on the file's timeline (those before 1.5 s use the first frame, the
    nearest), and a clip of [1, 3) s shows frame 0 until 1.5 s, then frame k at 1.5 + k/8."""
    import io

    import av

    from pipeline.media.clips import cut_clip

    path = make_video(str(tmp_path / f"late.{ext}"), 4.0, fps=8, start_pts=12, audio_s=6.0)
    decoded = decode_frames(path, 2.0, 32, backend)
    k = frame_index_of(decoded.frames, 64)
    expected_k = np.clip(np.floor((np.arange(len(k)) / 2 + 0.25 - 1.5) * 8 + 0.5), 0, 31).astype(int)
    assert k.tolist() == expected_k.tolist()
    assert decoded.pts_s.tolist() == pytest.approx((1.5 + expected_k / 8).tolist(), abs=1e-3)
    assert decoded.duration_s == pytest.approx(5.5, abs=1e-3)
    with av.open(io.BytesIO(cut_clip(path, 1.0, 3.0, "mp4", 32, 4.0)["mp4"])) as clip:
        got = frame_index_of(np.stack([f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]), 64)
    targets = 1.0 + (np.arange(8) + 0.5) / 4
    assert got.tolist() == np.clip(np.round((targets - 1.5) * 8), 0, 31).astype(int).tolist()


def _interlaced(path: str, n: int = 16, fps: int = 8) -> str:
    """Top-field-first interlaced H.264: frame k's top field (even lines) is grey level
    :func:`_top_level` (k), its bottom field level 255 - that (a player shows the top field first;
    grey, so 4:2:0 chroma cannot mix the fields)."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10", "x264-params": "interlaced=1:tff=1"}
        for k in range(n):
            img = np.empty((64, 96, 3), np.uint8)
            img[0::2], img[1::2] = _top_level(k), 255 - _top_level(k)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _top_level(k):
    return 16 + 12 * np.asarray(k)


def _grey_index(frames: np.ndarray) -> np.ndarray:
    """``(N,)`` frame k whose top-field level is nearest each frame's centre mean."""
    h, w = frames.shape[1:3]
    mean = frames[:, h // 4: h - h // 4, w // 4: w - w // 4].reshape(len(frames), -1).mean(axis=1)
    return np.argmin(np.abs(mean[:, None] - _top_level(np.arange(16))[None]), axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interlaced_frames_show_their_first_field_for_the_encoder_and_in_clips(tmp_path, backend):
    import io

    import av

    from pipeline.media.clips import cut_clip

    path = _interlaced(str(tmp_path / "tff.mp4"))
    decoded = decode_frames(path, 2.0, 32, backend)
    assert _grey_index(decoded.frames).tolist() == [int(t * 8) for t in decoded.pts_s]
    # every line of a deinterlaced frame is the first field's: flat, not combed
    assert decoded.frames.astype(int)[:, 4:-4].std(axis=1).max() < 6
    combed = decode_frames(path, 2.0, 32, backend, deinterlace=False)
    assert np.abs(combed.frames.astype(int) - decoded.frames.astype(int)).mean() > 20  # the fields blend
    with av.open(io.BytesIO(cut_clip(path, 0.5, 1.5, "mp4", 64, 4.0)["mp4"])) as clip:
        got = _grey_index(np.stack([f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]))
    assert got.tolist() == [int((0.5 + (j + 0.5) / 4) * 8) for j in range(4)]


def test_a_truncated_file_and_a_backend_fallback_are_noted(tmp_path):
    """An mkv cut to 60% of its bytes keeps its header's 8 s duration: the footage that is left
    decodes and the decode notes ``truncated``; decord hands an AVI to PyAV, noted as such."""
    from pipeline.media.decode import ArraySink, decode_into

    path = make_video(str(tmp_path / "v.mkv"), 8.0, fps=8, pattern="noise")
    with open(path, "r+b") as f:
        f.truncate(int(0.6 * f.seek(0, 2)))
    decoded = decode_into(path, 1.0, 32, "pyav", ArraySink())
    assert 2.0 < decoded.duration_s < 6.0
    assert [c for c, _ in decoded.notes] == ["truncated"]
    assert path in decoded.notes[0][1] and "8.000 s" in decoded.notes[0][1]
    whole = make_video(str(tmp_path / "w.mkv"), 8.0, fps=8)
    assert decode_into(whole, 1.0, 32, "decord", ArraySink()).notes == ()
    avi = make_video(str(tmp_path / "v.avi"), 2.0, fps=8, codec="mpeg4")
    notes = decode_into(avi, 1.0, 32, "decord", ArraySink()).notes
    assert [c for c, _ in notes] == ["backend_fallback"] and "PyAV" in notes[0][1]


#: The eight display matrices that map the picture onto itself (rotations, mirrors): (a, b, c, d).
SIGNED_PERMUTATIONS = [(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0),
                       (-1, 0, 0, 1), (1, 0, 0, -1), (0, 1, 1, 0), (0, -1, -1, 0)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("abcd", SIGNED_PERMUTATIONS)
def test_the_display_matrix_is_applied_as_documented_rotations_and_mirrors(tmp_path, backend, abcd):
    """FFmpeg documents the display matrix as mapping a source point (p, q) to
    (a p + c q, b p + d q) (+ a translation), image coordinates y down. Each display corner of
    the model frame and of the clip must show the colour of the source corner that maps there."""
    import io

    import av

    from pipeline.media.clips import cut_clip

    a, b, c, d = abcd
    matrix = [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30]
    path = _write(str(tmp_path / "m.mp4"), [{"content": lambda k: _quadrants(64, 64), "matrix": matrix,
                                             "exact": True}])
    source = {(-1, -1): RED, (1, -1): GREEN, (-1, 1): BLUE, (1, 1): WHITE}  # (p, q) of each corner
    mapped = {(a * p + c * q, b * p + d * q): colour for (p, q), colour in source.items()}
    expected = [mapped[(-1, -1)], mapped[(1, -1)], mapped[(-1, 1)], mapped[(1, 1)]]
    assert _corner_colours(decode_frames(path, 1.0, 32, backend).frames[0]) == expected
    with av.open(io.BytesIO(cut_clip(path, 0.0, 1.0, "mp4", 32, 2.0)["mp4"])) as clip:
        assert "DISPLAYMATRIX" not in str(list(next(clip.decode(video=0)).side_data))
        clip.seek(0)
        assert _corner_colours(next(clip.decode(video=0)).to_ndarray(format="rgb24")) == expected


def test_frame_times_that_go_backwards_fail_loudly(tmp_path):
    """Intra-only H.264 in mkv (each packet one frame, shown in packet order) whose first four
    packets claim 0.5 s more than their slot (frame 3 at 0.875 s, frame 4 at 0.625 s): nearest-frame
    picks over such times would be silently wrong, so the model frames fail as decode_error and a
    clip as clip_failed, both naming the file."""
    import av

    from pipeline.media.clips import cut_clip

    plain = make_video(str(tmp_path / "plain.mkv"), 2.0, fps=8, options={"x264-params": "keyint=1:bframes=0"})
    path = str(tmp_path / "backwards.mkv")
    with av.open(plain) as src, av.open(path, "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for i, packet in enumerate(src.demux(src.streams.video[0])):
            if packet.size:
                ticks = int(0.125 / float(packet.time_base))
                packet.dts = i * ticks
                packet.pts = packet.dts + (4 if i < 4 else 1) * ticks
                packet.stream = out
                dst.mux(packet)
    with pytest.raises(InputError, match="go backwards") as err:
        decode_frames(path, 1.0, 32, "pyav")
    assert err.value.error_class == "decode_error" and path in err.value.message
    with pytest.raises(InputError, match="go backwards") as err:
        cut_clip(path, 0.0, 1.5, "jpg", 32, 4.0)
    assert err.value.error_class == "clip_failed"
