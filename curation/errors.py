"""The closed vocabulary of failure classes and the error type that carries one.

Every stage that can fail on data raises :class:`InputError` (or has its exception mapped
to one); the pipeline writes ``video_id, stage, error_class, message`` to the failures table.
"""

from __future__ import annotations

#: error_class -> what it means. Nothing outside this table is ever written as a class.
ERROR_CLASSES: dict[str, str] = {
    "bad_manifest_row": "a manifest line is not a JSON object or lacks a required field",
    "invalid_video_id": "video_id is not [A-Za-z0-9_-]{1,128}",
    "duplicate_video_id": "the same video_id appears on more than one manifest line",
    "missing_file": "a referenced file does not exist",
    "unreadable_file": "a referenced file exists but cannot be read",
    "bad_captions": "the captions file is malformed (syntax, timestamps, fields)",
    "empty_captions": "the captions file parses but holds no caption",
    "bad_features": "a features file is not a finite float array of the expected shape",
    "dim_mismatch": "caption and frame embeddings have different dimensions, or counts disagree",
    "decode_error": "the video could not be decoded",
    "timeout": "a stage exceeded its wall-clock limit",
    "too_large": "a remote video is larger than decode.max_bytes, the most its local copy may take",
    "clip_failed": "a kept caption's clip could not be cut from its video (span outside it, decoder error)",
    "no_captions": "a video has no captions file, no text subtitle track, and speech recognition is off",
    "no_audio": "speech recognition was asked for a video without an audio stream",
    "asr_unavailable": "speech recognition was asked for but nccurate[asr] (faster-whisper) is not installed",
    "asr_error": "speech recognition failed on the video's audio (model load or transcription)",
    "internal_error": "an unexpected exception in nccurate itself (a bug: please report it)",
    # notes: rows about a usable video (it is not counted as failed)
    "truncated": "note: the decoded footage ends well before the end the file's header declares",
    "backend_fallback": "note: decord was not trusted with the file (or hung) and PyAV decoded it",
}


class InputError(ValueError):
    """Bad input for one video: carries a closed-vocabulary ``error_class`` and a one-line message.

    >>> str(InputError("missing_file", "captions file not found: a.vtt"))
    'missing_file: captions file not found: a.vtt'
    """

    def __init__(self, error_class: str, message: str):
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error_class {error_class!r}; allowed: {sorted(ERROR_CLASSES)}")
        self.error_class = error_class
        self.message = " ".join(str(message).split())  # always one line
        super().__init__(f"{error_class}: {self.message}")
