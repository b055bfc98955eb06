"""The data errors of a media file: :func:`check_file` before anything opens it,
:func:`media_input`, the local file a decoder reads (a bounded copy of a remote video), and
:func:`decode_error`, the one-line ``decode_error`` naming the file, for every decode path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from curation.errors import InputError
from pipeline.storage import files
from pipeline.storage.retry import RetryPolicy


def check_file(path: str) -> None:
    """``missing_file`` when ``path`` does not exist, ``unreadable_file`` when it is a directory
    or not readable. Never opens the file (a FIFO would block)."""
    if not os.path.exists(path):
        raise InputError("missing_file", f"video file not found: {path}")
    if os.path.isdir(path) or not os.access(path, os.R_OK):
        raise InputError("unreadable_file", f"video file is not a readable file: {path}")


@contextlib.contextmanager
def media_input(path: str, max_bytes: int | None = None, retry: RetryPolicy = RetryPolicy()) -> Iterator[str]:
    """The local file to decode ``path`` from: ``path`` itself (after :func:`check_file`), or for
    a URI a temporary copy streamed from the store (removed on every way out; transient errors
    retried). Raises ``InputError``: ``missing_file``, ``too_large`` (over ``max_bytes``) or
    ``unreadable_file`` (a permanent store error, or retries exhausted). An ``InputError``
    raised inside the block names ``path``, not the copy (:func:`named_for`)."""
    if not files.is_uri(path):
        check_file(files.local(path))
        yield files.local(path)
        return
    with contextlib.ExitStack() as stack:
        try:
            copy = stack.enter_context(files.local_copy(path, max_bytes, retry))
        except FileNotFoundError:
            raise InputError("missing_file", f"video file not found: {path}") from None
        except files.TooLarge as exc:
            raise InputError("too_large", f"video file {exc}") from None
        except Exception as exc:  # a store's permanent error, or transient ones past the retries
            raise InputError("unreadable_file", f"video file {path}: cannot be copied from the store "
                                                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
        try:
            yield copy
        except InputError as exc:
            raise named_for(exc, copy, path) from None


def named_for(exc: InputError, copy: str, path: str) -> InputError:
    """``exc`` with the local ``copy``'s name replaced by the ``path`` it was copied from."""
    return exc if copy == path else InputError(exc.error_class, exc.message.replace(copy, path))


def decode_error(path: str, what: str, exc: BaseException | None = None, cls: type = InputError) -> InputError:
    """``cls('decode_error', 'cannot decode PATH: WHAT[: ExcType: exc]')``, at most 500 characters."""
    detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
    return cls("decode_error", f"cannot decode {path}: {what}{detail}"[:500])
