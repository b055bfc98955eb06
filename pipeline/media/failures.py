"""The data errors of a media file: :func:`check_file` before anything opens it, and
:func:`decode_error`, the one-line ``decode_error`` naming the file, for every decode path."""

from __future__ import annotations

import os

from curation.errors import InputError


def check_file(path: str) -> None:
    """``missing_file`` when ``path`` does not exist, ``unreadable_file`` when it is a directory
    or not readable. Never opens the file (a FIFO would block)."""
    if not os.path.exists(path):
        raise InputError("missing_file", f"video file not found: {path}")
    if os.path.isdir(path) or not os.access(path, os.R_OK):
        raise InputError("unreadable_file", f"video file is not a readable file: {path}")


def decode_error(path: str, what: str, exc: BaseException | None = None, cls: type = InputError) -> InputError:
    """``cls('decode_error', 'cannot decode PATH: WHAT[: ExcType: exc]')``, at most 500 characters."""
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return cls("decode_error", f"cannot decode {path}: {what}{detail}"[:500])
