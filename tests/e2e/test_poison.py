"""A poison corpus in video mode: one run over good videos mixed with every kind of bad input a
crawl produces (empty, truncated, mislabelled and audio-only files, a decoder that crashes,
malformed and empty captions, bad caption features, bad and duplicate video_ids). Each poison
item must fail *its* video with a closed-vocabulary ``error_class`` and a one-line message naming
it; every good video, including VP8/VP9 webm and videos that their captions outlast, must
complete; the books must balance, and ``max_failure_ratio`` decides the exit status.

The decoder crash is real: a watcher thread finds the ``python -m pipeline.media.isolated`` child that
is decoding one FIFO (the child blocks opening it) through ``/proc`` and sends it SIGSEGV, as a
native crash in libavcodec would. The pipeline has no hook for it.
"""

from __future__ import annotations

import io
import math
import json
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from curation.errors import ERROR_CLASSES, InputError
from pipeline.synth.feature_corpus import captions_text
from tests import helpers
from tests.e2e.test_video_run import MODEL
from tests.videos import make_audio_only, make_video

#: Every caption is kept (min_alignability 0), so a clip is cut for every caption of every good
#: video, including those whose captions outlast the footage; the crash watcher kills the child
#: within a fraction of a second, long before decode_timeout_s.
OVERRIDES = MODEL + ("align.min_alignability=0", "decode_timeout_s=30")
SAMPLE_FPS = 1.0  # decode.sample_fps of OVERRIDES (checked in the poison_run fixture)
FPS, SIZE = 8, (96, 64)
LONG_S, SHORT_S = 12.0, 6.0
EMBED_DIM = 64  # nccurate-tiny's embed_dim (models/configs/nccurate-tiny.json)

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the crash watcher reads /proc")


# ------------------------------------------------------------------------ the crash watcher


def _decoder_children(path: str) -> list[int]:
    """Pids of this process's ``python -m pipeline.media.isolated PATH ...`` children."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if int(handle.read().rsplit(b")", 1)[1].split()[1]) != os.getpid():  # field 4: ppid
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except (OSError, IndexError, ValueError):  # exited meanwhile, or not ours to read
            continue
        if "pipeline.media.isolated" in argv and path in argv:
            pids.append(int(entry))
    return pids


class DecoderKiller(threading.Thread):
    """While active (a context manager), sends ``sig`` to every decoder child decoding
    ``path``; ``killed`` lists their pids."""

    def __init__(self, path: str, sig: signal.Signals):
        super().__init__(daemon=True)
        self.path, self.sig = path, sig
        self.killed: list[int] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in _decoder_children(self.path):
                if pid not in self.killed:
                    os.kill(pid, self.sig)
                    self.killed.append(pid)
            self._done.wait(0.05)

    def __enter__(self) -> DecoderKiller:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join()


@needs_proc
@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_a_decoder_killed_by_a_signal_is_a_decode_error_naming_it(tmp_path, monkeypatch, sig):
    """Unit level: ``decode_frames_isolated`` maps a child's death by signal to decode_error
    (not timeout, not an exception escaping) and removes its temporary directory."""
    from pipeline.media.isolated import decode_frames_isolated

    fifo = str(tmp_path / "crash.mp4")
    os.mkfifo(fifo)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with DecoderKiller(fifo, sig) as killer, pytest.raises(InputError) as info:
        decode_frames_isolated(fifo, 1, 32, "decord", timeout_s=30)
    assert len(killer.killed) == 1
    assert info.value.error_class == "decode_error", str(info.value)
    assert fifo in info.value.message and sig.name in info.value.message
    assert list(scratch.iterdir()) == []


# ------------------------------------------------------------------------ the corpus


@dataclass(frozen=True)
class Poison:
    """One poison manifest row and the failure rows it must produce."""

    video_id: str
    error_class: str
    stage: str
    names: str             # the message must contain this (a file name or the video_id)
    index_rows: int = 0    # video_failed rows (captions parsed, the video failed later)
    copies: int = 1        # manifest lines with this row


def _captions(starts, ends, fmt: str) -> str:
    """Captions text in ``fmt`` (json, vtt or srt), via the synthetic corpus writer."""
    texts = [f"caption {i} about step {i}" for i in range(len(starts))]
    return captions_text(SimpleNamespace(asr_start_s=np.array(starts, float), asr_end_s=np.array(ends, float),
                                         texts=tuple(texts)), fmt)


def _faststart_video(path: str, duration_s: float) -> str:
    """An H.264 mp4 with its moov atom *before* mdat (``movflags=faststart``)."""
    import av

    rng = np.random.default_rng(1)
    with av.open(path, "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for k in range(round(duration_s * FPS)):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8), format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _top_level_atoms(path: str) -> dict[bytes, tuple[int, int]]:
    """``{type: (offset, size)}`` of an mp4's top-level boxes."""
    with open(path, "rb") as handle:
        data = handle.read()
    atoms, offset = {}, 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        atoms[data[offset + 4:offset + 8]] = (offset, size)
        if size < 8:
            break
        offset += size
    return atoms


def _truncate(path: str, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def _decodable_s(path: str) -> float:
    """Seconds of frames PyAV can decode from ``path`` (frames / FPS), errors ending the count."""
    import av

    n = 0
    with av.open(path) as container:
        try:
            for _ in container.decode(video=0):
                n += 1
        except av.FFmpegError:
            pass
    return n / FPS


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.65, 0.9])
def test_both_backends_keep_the_frames_before_an_mdat_cut(tmp_path, fraction):
    """decord's bundled FFmpeg fails on a packet cut in half, or not, depending on where the cut
    lands; decode_frames then uses PyAV, so both backends give the frames that exist."""
    from pipeline.media.decode import BACKENDS, decode_frames

    path = _faststart_video(str(tmp_path / "cut.mp4"), LONG_S)
    offset, size = _top_level_atoms(path)[b"mdat"]
    _truncate(path, offset + int(size * fraction))
    decodable_s = _decodable_s(path)
    assert 0 < decodable_s < LONG_S
    decoded = {b: decode_frames(path, 1.0, 32, b) for b in BACKENDS}
    for backend, dec in decoded.items():
        # decord may count the cut packet's frame in its duration: one frame period more
        assert decodable_s <= dec.duration_s <= decodable_s + 1 / FPS, backend
    np.testing.assert_allclose(decoded["decord"].pts_s, decoded["pyav"].pts_s, atol=1e-4)


GOOD_CAPS = ([0.5, 3.0, 6.0, 9.0], [3.0, 5.5, 8.5, 11.5])   # inside a LONG_S video
SHORT_CAPS = ([0.5, 3.0], [2.5, 5.5])                         # inside a SHORT_S video
OUTLASTED_CAPS = ([0.0, 2.0, 4.5, 7.0], [2.5, 5.0, 9.0, 12.0])  # a SHORT_S video; the last two run past its end
AFTER_END_CAPS = ([20.0, 30.0, 40.0], [23.0, 34.0, 41.0])    # a SHORT_S video; all of them after its end


@pytest.fixture(scope="module")
def poison_world(tmp_path_factory):
    """The corpus on disk: ``root``, ``manifest``, ``good`` (video_id -> decodable seconds,
    ASR spans), ``poison`` (:class:`Poison` list), ``lines`` (manifest line per video_id)."""
    root = tmp_path_factory.mktemp("poison")
    lines: dict[str, list[str]] = {}

    def add(video_id: str, video: str, captions: str, copies: int = 1, **extra) -> None:
        row = json.dumps({"video_id": video_id, "video": video, "captions": captions, **extra})
        lines.setdefault(video_id, []).extend([row] * copies)

    def write(name: str, text: str) -> str:
        (root / name).write_text(text, encoding="utf-8")
        return name

    # good videos: H.264 with json / vtt / srt captions, VP8 and VP9 webm
    good = {}
    for vid, ext, codec, duration, fmt in [("h264_json", "mp4", "libx264", LONG_S, "json"),
                                           ("h264_vtt", "mp4", "libx264", LONG_S, "vtt"),
                                           ("h264_srt", "mp4", "libx264", LONG_S, "srt"),
                                           ("vp8", "webm", "libvpx", SHORT_S, "json"),
                                           ("vp9", "webm", "libvpx-vp9", SHORT_S, "json")]:
        make_video(str(root / f"{vid}.{ext}"), duration, fps=FPS, size=SIZE, codec=codec, pattern="noise")
        caps = GOOD_CAPS if duration == LONG_S else SHORT_CAPS
        add(vid, f"{vid}.{ext}", write(f"{vid}.{fmt}", _captions(*caps, fmt)))
        good[vid] = (duration, caps)
    # captions outlast the footage: spans stay inside the video (curation.timeline clips ASR
    # centres into it, curation.spans.span_around shifts spans inside [0, duration]); captions
    # that start after the last scored frame are dropped as past_footage
    for vid, caps in (("outlasted", OUTLASTED_CAPS), ("after_end", AFTER_END_CAPS)):
        make_video(str(root / f"{vid}.mp4"), SHORT_S, fps=FPS, size=SIZE, pattern="noise")
        add(vid, f"{vid}.mp4", write(f"{vid}.json", _captions(*caps, "json")))
        good[vid] = (SHORT_S, caps)
    # mdat cut in half, moov intact (faststart): the index promises LONG_S seconds but only the
    # first half of the frames exist. Decision: a good, shorter video. The frames before the cut
    # are intact and decode (as in ffmpeg and players); its captions past the cut are treated
    # like any captions that outlast the footage; the decode notes it as `truncated` (a failures
    # row that does not fail the video: the footage ends well before the header's duration).
    # pipeline.media.decode falls back from decord to PyAV for it, see
    # test_both_backends_keep_the_frames_before_an_mdat_cut.
    _faststart_video(str(root / "cut_mdat.mp4"), LONG_S)
    offset, size = _top_level_atoms(str(root / "cut_mdat.mp4"))[b"mdat"]
    _truncate(str(root / "cut_mdat.mp4"), offset + size // 2)
    add("cut_mdat", "cut_mdat.mp4", write("cut_mdat.json", _captions(*GOOD_CAPS, "json")))
    good["cut_mdat"] = (_decodable_s(str(root / "cut_mdat.mp4")), GOOD_CAPS)

    n_caps = len(GOOD_CAPS[0])
    caps_json = write("caps.json", _captions(*GOOD_CAPS, "json"))
    poison = []

    def bad_video(vid: str, video: str, error_class: str) -> None:
        add(vid, video, caps_json)
        poison.append(Poison(vid, error_class, "decode", video, index_rows=n_caps))

    # unusable media: the captions parse, so the index keeps them as video_failed
    (root / "empty.mp4").write_bytes(b"")
    bad_video("empty_file", "empty.mp4", "decode_error")
    for vid, keep in (("cut_moov", 0.5), ("no_moov", 0.0)):  # an interrupted download: moov comes last
        make_video(str(root / f"{vid}.mp4"), LONG_S, fps=FPS, size=SIZE, pattern="noise")
        offset, size = _top_level_atoms(str(root / f"{vid}.mp4"))[b"moov"]
        _truncate(str(root / f"{vid}.mp4"), offset + int(size * keep))  # half the moov, or none of it
        bad_video(vid, f"{vid}.mp4", "decode_error")
    write("notes.mp4", "these are my notes, not a video\n" * 20)
    bad_video("text_file", "notes.mp4", "decode_error")
    make_audio_only(str(root / "audio.mp4"), 2.0)
    bad_video("audio_only", "audio.mp4", "decode_error")
    bad_video("missing", "missing.mp4", "missing_file")
    os.mkfifo(root / "crash.mp4")  # its decoder child is killed by SIGSEGV (see poison_run)
    bad_video("crash", "crash.mp4", "decode_error")

    # unusable captions on a good video: no index rows (nothing parsed)
    for vid, name, text, error_class in [
        ("caps_zero_bytes", "zero.json", "", "empty_captions"),
        ("caps_no_cues", "nocues.json", json.dumps({"start": [], "end": [], "text": []}), "empty_captions"),
        ("caps_bad_json", "broken.json", _captions(*GOOD_CAPS, "json")[:40], "bad_captions"),
        ("caps_bad_vtt", "broken.vtt", _captions(*GOOD_CAPS, "vtt").replace("06.000 -->", "6.0 -->"), "bad_captions"),
        ("caps_bad_srt", "broken.srt", _captions(*GOOD_CAPS, "srt").replace("-->", "->", 1), "bad_captions"),
    ]:
        add(vid, "h264_json.mp4", write(name, text))
        poison.append(Poison(vid, error_class, "captions", name))
    rng = np.random.default_rng(0)
    nan = rng.standard_normal((n_caps, EMBED_DIM)).astype(np.float32)
    nan[2, 7] = np.nan
    np.save(root / "nan.npy", nan)
    add("capfeat_nan", "h264_json.mp4", caps_json, caption_features="nan.npy")
    poison.append(Poison("capfeat_nan", "bad_features", "captions", "nan.npy"))
    np.save(root / "wide.npy", rng.standard_normal((n_caps, EMBED_DIM + 1)).astype(np.float32))
    add("capfeat_wide", "h264_json.mp4", caps_json, caption_features="wide.npy")
    poison.append(Poison("capfeat_wide", "dim_mismatch", "realign", "capfeat_wide", index_rows=n_caps))

    # manifest-level: the ids never become videos
    add("dup", "h264_json.mp4", caps_json, copies=2)
    poison.append(Poison("dup", "duplicate_video_id", "manifest", "dup", copies=2))
    for vid in ("dir/vid", "../escape", "vid.mp4", "x" * 300):
        add(vid, "h264_json.mp4", caps_json)
        poison.append(Poison(vid, "invalid_video_id", "manifest", vid[:100]))

    order = sorted(lines)  # good and poison rows interleaved
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(line + "\n" for vid in order for line in lines[vid]), encoding="utf-8")
    return {"root": root, "manifest": str(manifest), "good": good, "poison": poison, "lines": lines}


@pytest.fixture(scope="module")
def poison_run(poison_world, tmp_path_factory):
    """The one full run (the failure ratio is under max_failure_ratio, so it succeeds)."""
    from pipeline.config import load_config

    assert load_config(None, OVERRIDES).decode.sample_fps == SAMPLE_FPS
    fifo = str(poison_world["root"] / "crash.mp4")
    with DecoderKiller(fifo, signal.SIGSEGV) as killer:
        out = helpers.run_pipeline(poison_world["manifest"], str(tmp_path_factory.mktemp("run") / "out"),
                                          OVERRIDES + ("max_failure_ratio=0.8",))
    out.killed = killer.killed
    return out


def _failures_of(out, poison: Poison) -> list[dict]:
    # failure rows carry at most a prefix of an over-long video_id
    if len(poison.video_id) > 128:
        return [f for f in out.failures if f["video_id"] and poison.video_id.startswith(f["video_id"])]
    return [f for f in out.failures if f["video_id"] == poison.video_id]


POISON_IDS = ["empty_file", "cut_moov", "no_moov", "text_file", "audio_only", "missing", "crash", "caps_zero_bytes",
              "caps_no_cues", "caps_bad_json", "caps_bad_vtt", "caps_bad_srt", "capfeat_nan", "capfeat_wide",
              "dup", "dir/vid", "../escape", "vid.mp4", "x" * 300]


@pytest.mark.parametrize("which", range(len(POISON_IDS)), ids=[v[:12] for v in POISON_IDS])
def test_each_poison_item_fails_with_its_class(poison_run, poison_world, which):
    assert [p.video_id for p in poison_world["poison"]] == POISON_IDS
    poison = poison_world["poison"][which]
    rows = _failures_of(poison_run, poison)
    assert len(rows) == poison.copies, rows
    for f in rows:
        assert (f["error_class"], f["stage"]) == (poison.error_class, poison.stage), f
        assert f["error_class"] in ERROR_CLASSES
        msg = f["message"]
        assert msg and "\n" not in msg and "\r" not in msg and "Traceback" not in msg, msg
        assert poison.names in msg, f"message does not name {poison.names!r}: {msg}"
    index_rows = poison_run.rows_of(poison.video_id)
    assert len(index_rows) == poison.index_rows
    assert all(r["drop_reason"] == "video_failed" and not r["kept"] and r["weight"] == 0.0 for r in index_rows)


@needs_proc
def test_the_crashed_decoder_fails_only_its_video(poison_run):
    """Exactly one child was killed and its video is a decode_error naming the signal; the run
    went on (every other video has its own outcome: the tests above and below)."""
    assert len(poison_run.killed) == 1
    (crash,) = [f for f in poison_run.failures if f["video_id"] == "crash"]
    assert "SIGSEGV" in crash["message"] and "crash.mp4" in crash["message"]


def _notes(run) -> list[dict]:
    from pipeline.media.decode import NOTE_CLASSES

    return [f for f in run.failures if f["error_class"] in NOTE_CLASSES]


def _footage_s(decodable_s: float) -> float:
    """The scored footage of a video with ``decodable_s`` seconds of frames: whole samples."""
    return math.floor(decodable_s * SAMPLE_FPS + 1e-9) / SAMPLE_FPS


def test_nothing_else_fails(poison_run, poison_world):
    expected = sum(p.copies for p in poison_world["poison"])
    failures = [f for f in poison_run.failures if f not in _notes(poison_run)]
    assert len(failures) == expected, [f for f in failures if f["video_id"] not in POISON_IDS]
    failed = {f["video_id"] for f in failures}
    assert not failed & set(poison_world["good"])


def test_the_truncated_download_is_noted_not_failed(poison_run):
    """The mdat cut in half: the decode notes it (the header says 12 s), the video is used."""
    (note,) = _notes(poison_run)
    assert (note["video_id"], note["stage"], note["error_class"]) == ("cut_mdat", "decode", "truncated")
    assert "cut_mdat.mp4" in note["message"] and "12.000 s" in note["message"], note


def test_every_good_video_is_ok_with_rows_and_samples(poison_run, poison_world):
    for vid, (_, (starts, ends)) in poison_world["good"].items():
        rows = poison_run.rows_of(vid)
        assert [r["caption_idx"] for r in rows] == list(range(len(starts))), vid
        assert [(r["asr_start"], r["asr_end"]) for r in rows] == list(zip(starts, ends)), vid
        footage_s = _footage_s(poison_world["good"][vid][0])
        for r in rows:  # every caption with footage is kept; those after it are dropped
            if r["asr_start"] < footage_s:
                assert r["kept"] and r["drop_reason"] is None and 0.0 <= r["weight"] <= 1.0, (vid, r)
            else:
                assert not r["kept"] and r["drop_reason"] == "past_footage" and r["weight"] == 0.0, (vid, r)
    kept = {r["key"]: r for r in poison_run.index if r["kept"]}
    assert {r["video_id"] for r in kept.values()} == set(poison_world["good"]) - {"after_end"}
    assert {s["__key__"] for s in poison_run.samples} == set(kept)
    for sample in poison_run.samples:
        assert {"mp4", "txt", "json"} <= set(sample)
        assert sample["txt"].decode("utf-8") == kept[sample["__key__"]]["text"]


def _clip_frames(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_captions_that_outlast_the_video_get_spans_inside_it(poison_run, poison_world):
    """Captions that run past the end (or past a truncated mdat) but start inside the footage
    are neither failures nor dropped: the aligner puts each span inside the decoded video, and its
    clip holds the span. Those that start after it are dropped as past_footage (all of after_end's)."""
    samples = {s["__key__"]: s for s in poison_run.samples}
    for vid in ("outlasted", "after_end", "cut_mdat"):
        decodable_s, (starts, ends) = poison_world["good"][vid]
        assert max(ends) > decodable_s  # the premise: captions run past what decodes
        rows = poison_run.rows_of(vid)
        assert [r["drop_reason"] for r in rows if not r["kept"]] == ["past_footage"] * sum(
            s >= _footage_s(decodable_s) for s in starts), vid
        for r in (r for r in rows if r["kept"]):
            assert 0.0 <= r["start"] < r["end"] <= decodable_s + 1e-6, (vid, r)
            meta = json.loads(samples[r["key"]]["json"])
            assert meta["span"] == [r["start"], r["end"]]
            assert all(t < decodable_s for t in meta["score_frame_pts_s"]), (vid, meta["score_frame_pts_s"])
            expected = max(1, round((r["end"] - r["start"]) * 4))  # clips.fps=4 (MODEL)
            assert abs(_clip_frames(samples[r["key"]]["mp4"]) - expected) <= 1, (vid, r)
    assert poison_world["good"]["cut_mdat"][0] <= LONG_S / 2 + 1  # the truncation did remove frames
    assert not any(r["kept"] for r in poison_run.rows_of("after_end"))


def test_summary_reconciles(poison_run, poison_world):
    s = poison_run.summary
    n_poison = sum(p.copies for p in poison_world["poison"])
    n_good = len(poison_world["good"])
    assert s["videos_in"] == n_good + n_poison == sum(len(v) for v in poison_world["lines"].values())
    assert (s["videos_ok"], s["videos_failed"]) == (n_good, n_poison)
    assert s["failure_ratio"] == pytest.approx(n_poison / (n_good + n_poison))
    classes = {}
    for p in poison_world["poison"]:
        classes[p.error_class] = classes.get(p.error_class, 0) + p.copies
    assert s["failures"] == {**classes, "truncated": 1}  # the note on cut_mdat (a usable video)
    good_captions = sum(len(starts) for _, (starts, _) in poison_world["good"].values())
    past = sum(s_ >= _footage_s(d) for d, (starts, _) in poison_world["good"].values() for s_ in starts)
    failed_captions = sum(p.index_rows for p in poison_world["poison"])
    assert s["captions_in"] == len(poison_run.index) == good_captions + failed_captions
    assert s["captions_kept"] == good_captions - past == s["samples_written"] == len(poison_run.samples)
    assert s["captions_dropped"] == {"video_failed": failed_captions, "past_footage": past} and past >= 5
    assert s["reconciled"] is True and s["problems"] == []


# ------------------------------------------------------------------------ max_failure_ratio


@pytest.fixture(scope="module")
def small_manifest(poison_world):
    """A cheap slice of the corpus: one good video and three poison rows (ratio 3 / 4)."""
    path = poison_world["root"] / "small.jsonl"
    ids = ("h264_json", "missing", "vid.mp4", "../escape")
    path.write_text("".join(line + "\n" for vid in ids for line in poison_world["lines"][vid]), encoding="utf-8")
    return str(path)


def test_a_failure_ratio_over_the_maximum_fails_the_run(small_manifest, tmp_path):
    """(The full poison run above is the passing case: its ratio is under its maximum.)"""
    from pipeline.config import load_config
    from pipeline.run import RunError, run

    with pytest.raises(RunError, match="max_failure_ratio") as info:
        run(small_manifest, str(tmp_path / "out"), load_config(None, list(OVERRIDES) + ["max_failure_ratio=0.7"]))
    assert "3 of 4 videos failed" in str(info.value) and "\n" not in str(info.value)
    with open(tmp_path / "out" / "summary.json", encoding="utf-8") as handle:  # the records explain it
        assert json.load(handle)["failure_ratio"] == pytest.approx(3 / 4)


def test_the_cli_exits_2_when_the_failure_ratio_is_over_the_maximum(small_manifest, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    sets = [arg for o in OVERRIDES + ("max_failure_ratio=0.7",) for arg in ("--set", o)]
    result = CliRunner().invoke(main, ["run", "--manifest", small_manifest, "--output", str(tmp_path / "out"), *sets])
    assert result.exit_code == 2, result.output
    assert "max_failure_ratio" in result.output and "3 of 4 videos failed" in result.output
