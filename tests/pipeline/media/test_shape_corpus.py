"""The real-world shape corpus (issue 18, point 8): every shape of
:mod:`pipeline.synth.media_shapes` decoded on both backends and clipped, every model frame and
clip frame compared with what a player shows (:mod:`pipeline.bench.media`); and the checker
itself shown to fail on a wrong decode (frames shifted by one, rotated, squashed, late PTS), a
wrong clip and a wrong outcome, and the frame code to be unreadable rather than wrong on a blend."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from curation.errors import InputError
from pipeline.bench.media import check_shape, format_table
from pipeline.synth.media_shapes import (ORIENTATIONS, SHAPES, SMALL, check_bits, code_cells, draw_code, read_code,
                                         write_shape)

BACKENDS = ("pyav", "decord")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Shape name -> its truth, written on first use (each file once per module)."""
    directory = str(tmp_path_factory.mktemp("shapes"))
    made = {}

    def get(name: str):
        if name not in made:
            made[name] = write_shape(name, directory, SMALL)
        return made[name]

    return get


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_model_frame_and_clip_frame_is_what_a_player_shows(corpus, shape, backend):
    """Clips are cut with PyAV whatever the backend: they are checked on the pyav row."""
    truth = corpus(shape)
    result = check_shape(truth, backend, clips=backend == "pyav")
    assert not result.mismatches, f"{truth.note}\n" + format_table([result], details=8)
    may_fail = truth.error_class or truth.allowed_errors
    assert may_fail or (result.model_frames > 0 and (result.clip_frames > 0 or backend != "pyav"))


# ---------------------------------------------------------------------------------- the frame code


def test_the_code_reads_back_at_model_size_in_every_orientation():
    from PIL import Image

    for code in (0, 1, 2, 255, 256, 4095, 30000, 65535):
        picture = draw_code(code, 160, 90)
        small = np.asarray(Image.fromarray(picture).resize((85, 48), Image.BILINEAR))
        assert read_code(small).code == code
        for name, turn in ORIENTATIONS.items():
            seen = read_code(np.ascontiguousarray(turn(small)))
            assert (seen.code, seen.orientation) == (code, name)


def test_a_blend_of_two_frames_or_a_flipped_bit_is_unreadable_not_a_wrong_code():
    for i in (0, 7, 127, 1000):
        blend = ((draw_code(i, 96, 96).astype(int) + draw_code(i + 1, 96, 96)) // 2).astype(np.uint8)
        assert read_code(blend).code is None
    cells = code_cells(12345)
    assert check_bits(12345) != check_bits(12345 ^ 1)
    flipped = cells.copy()
    flipped[1, 1] = 255 - flipped[1, 1]  # one code bit
    big = np.kron(flipped, np.ones((16, 16, 1), np.uint8))
    reading = read_code(np.pad(big, ((8, 8), (8, 8), (0, 0)), constant_values=128))
    assert reading.code is None and "check bits" in reading.why


def test_a_squashed_picture_shows_in_the_aspect():
    from PIL import Image

    squashed = np.asarray(Image.fromarray(draw_code(5, 128, 128)).resize((96, 128), Image.BILINEAR))
    reading = read_code(squashed)
    assert reading.code == 5 and abs(reading.aspect - 0.75) < 0.05


# ------------------------------------------------------------------------------ the checker fails


def _wrapped_decode(change):
    """decode_frames whose result is passed through ``change(decoded) -> decoded``."""
    from pipeline.media.decode import decode_frames

    return lambda *args, **kwargs: change(decode_frames(*args, **kwargs))


def _frames(decoded, frames=None, pts_s=None):
    return dataclasses.replace(decoded, frames=decoded.frames if frames is None else frames,
                               pts_s=decoded.pts_s if pts_s is None else pts_s)


def _squash(frame: np.ndarray) -> np.ndarray:
    """The frame's picture 3/4 as wide, centred on mid-grey: non-square pixels."""
    from PIL import Image

    h, w = frame.shape[:2]
    narrow = np.asarray(Image.fromarray(frame).resize((w * 3 // 4, h), Image.BILINEAR))
    out = np.full_like(frame, 128)
    out[:, (w - narrow.shape[1]) // 2:(w - narrow.shape[1]) // 2 + narrow.shape[1]] = narrow
    return out


WRONG_DECODES = {
    "shifted by one": lambda d: _frames(d, frames=np.concatenate([d.frames[1:], d.frames[-1:]])),
    "rotated": lambda d: _frames(d, frames=np.ascontiguousarray(np.rot90(d.frames, 1, axes=(1, 2)))),
    "mirrored": lambda d: _frames(d, frames=np.ascontiguousarray(d.frames[:, :, ::-1])),
    "squashed": lambda d: _frames(d, frames=np.stack([_squash(f) for f in d.frames])),
    "late pts": lambda d: _frames(d, pts_s=d.pts_s + 0.04),
    "one sample short": lambda d: _frames(d, frames=d.frames[:-1], pts_s=d.pts_s[:-1]),
}
EXPECTED_PROBLEM = {"shifted by one": "shows code", "rotated": "shown rot90", "mirrored": "shown hflip",
                    "squashed": "pixels not square", "late pts": "pts_s", "one sample short": "samples, expected"}


@pytest.mark.parametrize("wrong", list(WRONG_DECODES))
def test_the_checker_reports_a_wrong_decode(corpus, wrong):
    truth = corpus("h264_bpyramid_long_gop")
    result = check_shape(truth, "pyav", clips=False, decode=_wrapped_decode(WRONG_DECODES[wrong]))
    assert result.outcome == "MISMATCH"
    problems = [p for m in result.mismatches for p in m.problems]
    assert any(EXPECTED_PROBLEM[wrong] in p for p in problems), problems[:5]
    if wrong != "one sample short":  # (its samples but the last are right)
        assert len(result.mismatches) >= result.model_frames // 2


def _wrapped_cut(change):
    from pipeline.media.clips import cut_clip

    return lambda source, start_s, end_s, fmt, size, fps: change(cut_clip(source, start_s, end_s, fmt, size, fps), fmt)


def _drop_last_jpg(members, fmt):
    return dict(sorted(members.items())[:-1]) if fmt == "jpg" and len(members) > 1 else members


def _jpgs_rotated(members, fmt):
    import io

    from PIL import Image

    if fmt != "jpg":
        return members
    out = {}
    for name, data in members.items():
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_180).save(buffer, format="JPEG", quality=90)
        out[name] = buffer.getvalue()
    return out


@pytest.mark.parametrize("change, problem", [(_drop_last_jpg, "frames, expected"), (_jpgs_rotated, "shown rot180")])
def test_the_checker_reports_a_wrong_clip(corpus, change, problem):
    truth = corpus("h264_bpyramid_long_gop")
    result = check_shape(truth, "pyav", decode=_wrapped_decode(lambda d: d), cut=_wrapped_cut(change))
    problems = [p for m in result.mismatches for p in m.problems]
    assert result.outcome == "MISMATCH" and any(problem in p for p in problems), problems[:5]
    assert all(m.where.startswith("clip jpg") for m in result.mismatches)


def test_the_checker_reports_a_wrong_outcome(corpus):
    from pipeline.media.decode import decode_frames

    def fails(*args, **kwargs):
        raise InputError("decode_error", "no")

    result = check_shape(corpus("vfr_mp4"), "pyav", clips=False, decode=fails)
    assert result.outcome == "MISMATCH" and "failed: decode_error" in result.mismatches[0].problems[0]
    cover = corpus("audio_cover_art")
    assert check_shape(cover, "pyav").outcome == "failed as expected (clip_failed, decode_error)"
    other = decode_frames(corpus("vfr_mp4").path, 1.0, 48)
    decoded = check_shape(cover, "pyav", clips=False, decode=lambda *args, **kwargs: other)
    assert decoded.outcome == "MISMATCH" and "expected decode_error" in decoded.mismatches[0].problems[0]


def test_bench_media_prints_the_table(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    done = CliRunner().invoke(main, ["bench", "media", "--backend", "pyav", "--workdir", str(tmp_path),
                                     "--shape", "h264_mkv", "--shape", "audio_cover_art"])
    assert done.exit_code == 0, done.output
    assert "h264_mkv" in done.stdout and "failed as expected" in done.stdout and "total" in done.stdout
    done = CliRunner().invoke(main, ["bench", "media", "--workdir", str(tmp_path), "--shape", "no_such_shape"])
    assert done.exit_code == 2 and "nccurate: error: unknown shape(s) ['no_such_shape']" in done.stderr
