"""Captions made from the video file itself (``captions: embedded | asr``, or a row without
captions): its text subtitle track, or speech recognition of its audio, in a child process
(``python -m pipeline.media.media_captions``) with a wall-clock limit, as decoding is, so a hang
or a crash in a demuxer or in the recogniser fails only its video.

What is made is written by the pipeline to ``OUT/captions/{video_id}.json``
(:func:`made_captions_json`: HowTo100M json plus a ``made_by`` record of the source and its
settings) and reused when a resumed run finds one made with the same settings
(:func:`reusable`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

from curation.errors import InputError
from pipeline.media.failures import check_file, media_input

#: This module, as the child's ``python -m`` argument.
CHILD_MODULE = "pipeline.media.media_captions"
#: Sources a child is asked for: ``auto`` = the text track when there is one, else ASR.
SOURCES = ("auto", "embedded", "asr")


class MadeCaptions(NamedTuple):
    """Captions made from a video: ``source`` is ``embedded`` or ``asr``; ``cues`` a list of
    ``pipeline.inputs.captions.CaptionCue``; ``made_by`` the settings that made them."""

    source: str
    cues: list
    made_by: dict


def settings(source: str, languages, asr) -> dict:
    """What decides a video's made captions: the source asked for, the track languages and, where
    speech recognition may run, its ``asr`` config (``pipeline.config.AsrConfig``) without its timeout."""
    out = {"asked": source, "languages": list(languages)}
    if source != "embedded":
        out["asr"] = {k: getattr(asr, k) for k in ("model", "device", "compute_type", "language", "beam_size")}
    return out


def make_captions(path: str, source: str, job: dict, max_bytes: int | None = None) -> MadeCaptions:
    """In-process work of the child: the captions of ``path`` (local or a URI, copied at most
    ``max_bytes``) from ``source`` with ``job`` = :func:`settings`. Raises InputError:
    ``no_captions`` (``embedded`` asked, no text track), ``no_audio``, ``asr_unavailable``,
    ``asr_error``, the file's ``missing_file``/``decode_error``, a track's ``bad_captions``."""
    from pipeline.media.subtitles import has_text_subtitles, read_track_captions

    with media_input(path, max_bytes) as local:
        if source in ("auto", "embedded") and has_text_subtitles(local):
            return MadeCaptions("embedded", read_track_captions(local, job["languages"], name=path),
                                {**job, "source": "embedded"})
        if source == "embedded":
            raise InputError("no_captions", f"{path}: no text subtitle track (captions: embedded)")
        from pipeline.media.speech import transcribe_file

        asr = job["asr"]
        cues = transcribe_file(local, asr["model"], asr["device"], asr["compute_type"], asr["language"], asr["beam_size"])
        if not cues:
            raise InputError("no_captions", f"{path}: speech recognition heard no words")
        return MadeCaptions("asr", cues, {**job, "source": "asr"})


def made_captions_json(made: MadeCaptions) -> bytes:
    """``OUT/captions/{video_id}.json``: HowTo100M json (``start``, ``end``, ``text``) that the
    captions parser reads back to the same captions, plus ``made_by``."""
    body = {"start": [c.start_s for c in made.cues], "end": [c.end_s for c in made.cues],
            "text": [c.text for c in made.cues], "made_by": made.made_by}
    return (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read_made_captions(data: bytes, name: str) -> MadeCaptions:
    """:func:`made_captions_json`'s bytes back to :class:`MadeCaptions` (``name`` for messages)."""
    from pipeline.inputs.captions import parse_howto100m_json

    made_by = json.loads(data)["made_by"]
    return MadeCaptions(made_by["source"], parse_howto100m_json(name, data), made_by)


def reusable(data: bytes, job: dict, name: str) -> MadeCaptions | None:
    """The captions of an earlier ``OUT/captions`` file when it was made with the settings ``job``
    asks for (an ``auto`` file serves ``auto`` only), else None."""
    try:
        made_by = json.loads(data).get("made_by")
    except (ValueError, AttributeError):
        return None
    if not isinstance(made_by, dict) or {k: v for k, v in made_by.items() if k != "source"} != job:
        return None
    return read_made_captions(data, name)


def captions_isolated(path: str, source: str, job: dict, timeout_s: float, max_bytes: int | None = None) -> MadeCaptions:
    """:func:`make_captions` in a child process killed after ``timeout_s`` seconds of wall clock.
    Raises the child's InputError; ``timeout`` at the limit; ``decode_error`` when it dies."""
    from pipeline.media.isolated import child_env, child_failure
    from pipeline.storage import files

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not files.is_uri(path):
        check_file(files.local(path))
    tmp = tempfile.mkdtemp(prefix="nccurate-captions-")
    try:
        out, err, log = (os.path.join(tmp, name) for name in ("captions.json", "error.json", "stderr.txt"))
        cmd = [sys.executable, "-m", CHILD_MODULE, path, "--source", source, "--job", json.dumps(job),
               "--out", out, "--error", err] + (["--max-bytes", str(int(max_bytes))] if max_bytes is not None else [])
        with open(log, "wb") as stderr:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                      env=child_env(), timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise InputError("timeout", f"captions of {path} ({source}) exceeded {timeout_s:g} s") from None
        if proc.returncode == 0 and os.path.exists(out):
            with open(out, "rb") as handle:
                return read_made_captions(handle.read(), path)
        raise child_failure(path, proc.returncode, err, log, "captions")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _main(argv: list[str] | None = None) -> int:
    """Child entry point: make one video's captions and write them as JSON, or its InputError."""
    from pipeline.media.isolated import write_child_error

    parser = argparse.ArgumentParser(prog=f"python -m {CHILD_MODULE}", description=_main.__doc__)
    parser.add_argument("path")
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--job", required=True, help="the settings (JSON) of pipeline.media.media_captions.settings")
    parser.add_argument("--out", required=True)
    parser.add_argument("--error", required=True)
    parser.add_argument("--max-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        made = make_captions(args.path, args.source, json.loads(args.job), args.max_bytes)
    except InputError as exc:
        return write_child_error(args.error, exc)
    with open(args.out + ".part", "wb") as handle:
        handle.write(made_captions_json(made))
    os.replace(args.out + ".part", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
