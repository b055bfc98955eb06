"""The one atomic file writer behind every file nccurate writes, locally or in an object store.

Locally, :func:`open_atomic` gives a binary file at a temporary sibling of the target; when the
``with`` block ends normally the file is flushed and fsynced, renamed onto the target with
:func:`os.replace` (atomic within one directory) and the directory entry is fsynced where the
platform allows it. On an object store (a URI, :func:`pipeline.storage.files.is_uri`) the block
writes to memory and the file is uploaded in one request when it ends: a single upload is atomic
(the object exists only once it completes), so no rename is emulated (stores do that with copy +
delete) and no temporary object is ever visible. Either way a reader, or a run resumed after a
crash or a power cut, sees the whole new file or the previous state, never a partial file. When
the block raises, nothing is written and the target is left as it was. Uploads retry transient
errors (:mod:`pipeline.storage.retry`).

Decode checkpoints (``pipeline.outputs.checkpoint``) pass ``lasting=False``: their data is
fsynced before the rename, as every file's, but their directory entry is not (the second fsync
of each file, ~1 ms here). After a power cut such a checkpoint is whole or absent, never
partial, and an absent one is only work redone. The result and calibration checkpoints pass
``checked=True``: nothing is fsynced (~0.8 ms a file here; a feature-mode run writes two a
video), because they carry CRC-32s of their content that their reader checks: after a power
cut such a file is whole, absent, or fails its check and reads as absent; either way the video
is redone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from collections.abc import Iterator
from typing import IO, Any

from pipeline.storage.files import filesystem, is_uri, local
from pipeline.storage.retry import RetryPolicy, with_retries


def temp_path(path: str) -> str:
    """Temporary sibling of ``path``: same directory (so the rename is atomic), unique per process
    and thread, and never ending like the target (a reader that globs ``*.tar`` skips it)."""
    return f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself stays atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_atomic(path: str, lasting: bool = True, checked: bool = False) -> Iterator[IO[bytes]]:
    """``with open_atomic(path) as f: f.write(...)``: ``path`` appears whole when the block ends,
    or not at all (nor its temporary file) when it raises. A local parent directory is created.
    ``lasting=False`` skips the directory fsync (module docstring): after a power cut the file
    may be absent, never partial. ``checked=True`` skips both fsyncs, for a file whose reader
    checks its content's checksums: after a power cut it may also be broken (and read as absent)."""
    if is_uri(path):
        buffer = io.BytesIO()
        yield buffer
        upload(path, buffer.getbuffer())
        return
    path = local(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            if not checked:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    if lasting and not checked:
        _fsync_dir(directory)


def upload(path: str, data, retry: RetryPolicy = RetryPolicy()) -> None:
    """``data`` (bytes-like) as the object ``path`` in one upload, retrying transient errors."""
    fs, inner = filesystem(path)
    with_retries(lambda: fs.pipe_file(inner, bytes(data)), retry)


def write_bytes_atomic(path: str, data: bytes, lasting: bool = True, checked: bool = False) -> None:
    """``data`` to ``path`` through :func:`open_atomic`."""
    with open_atomic(path, lasting, checked) as handle:
        handle.write(data)


def json_bytes(obj: Any) -> bytes:
    """``json.dumps(obj, sort_keys=True, indent=2) + '\\n'`` as UTF-8: how nccurate writes JSON files."""
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode("utf-8")


def write_json_atomic(path: str, obj: Any) -> None:
    """:func:`json_bytes` of ``obj`` to ``path`` through :func:`open_atomic`; a value that cannot
    be serialised raises before any file is created."""
    write_bytes_atomic(path, json_bytes(obj))
