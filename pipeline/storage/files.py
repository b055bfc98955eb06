"""Every file nccurate reads or writes, on local disk or in an object store, through one owner.

A path is local (``/data/x``, ``rel/x``, ``file:///data/x``) or a URI whose protocol fsspec knows
(``gs://`` with gcsfs, ``s3://`` with s3fs, ``az://``, ``hdfs://``, ``memory://`` ...). Local
paths use the ``os`` module; URIs go through fsspec, which finds credentials and endpoints the
way each store's own tools do (gcsfs: Application Default Credentials, ``STORAGE_EMULATOR_HOST``;
s3fs: the boto chain, ``AWS_ENDPOINT_URL``) and takes further options from fsspec's config
(``FSSPEC_GS_TOKEN=anon``, ``~/.config/fsspec/conf.json``), so the same path works in the
driver, on Beam workers, in the decode child and in ``nccurate inspect``/``train``.

Why fsspec and not Beam's ``FileSystems``: it works outside a pipeline (the decode child, the
CLI tools, DataLoader workers) without pipeline options; Beam's S3 filesystem needs
``--s3_endpoint_url`` and friends passed to every caller, and its GCS batch delete fails
against fake-gcs-server, the emulator the tests use.

Writes go through :mod:`pipeline.storage.atomic`: a file appears whole or not at all. Transient
errors (timeouts, resets, HTTP 429 and 5xx) are retried under a
:class:`~pipeline.storage.retry.RetryPolicy`.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator

from pipeline.storage.retry import RetryPolicy, with_retries

FILE_PREFIX = "file://"
_CHUNK_BYTES = 8 << 20


# ------------------------------------------------------------------------------------ paths


def is_uri(path: str) -> bool:
    """Whether ``path`` names an object in a store (``scheme://...``, not ``file://``).

    >>> is_uri("gs://bucket/out"), is_uri("/data/out"), is_uri("file:///data/out")
    (True, False, False)
    """
    return "://" in path and not path.startswith(FILE_PREFIX)


def local(path: str) -> str:
    """A local path without its ``file://`` prefix (other paths as given)."""
    return path[len(FILE_PREFIX):] if path.startswith(FILE_PREFIX) else path


def join(root: str, *parts: str) -> str:
    """``root`` joined with ``parts``: ``/`` for URIs (``gs://b/out`` + ``shards`` ->
    ``gs://b/out/shards``), :func:`os.path.join` for local paths.

    >>> join("gs://b/out/", "shards", "x.tar")
    'gs://b/out/shards/x.tar'
    """
    if is_uri(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)]) if parts else root
    return os.path.join(root, *parts)


def parent(path: str) -> str:
    """The folder holding ``path`` (``gs://b/out`` for ``gs://b/out/summary.json``)."""
    return path.rstrip("/").rsplit("/", 1)[0] if is_uri(path) else os.path.dirname(path)


def absolute(path: str) -> str:
    """URIs as given; local paths made absolute."""
    return path if is_uri(path) else os.path.abspath(local(path))


def filesystem(path: str):
    """``(fsspec filesystem, path inside it)`` of a URI; fsspec caches the instances."""
    import fsspec

    return fsspec.core.url_to_fs(path)


def _uri_of(fs, inner: str, like: str) -> str:
    """The URI of ``inner`` (a path inside ``fs``) with the protocol spelling of ``like``."""
    scheme, rest = like.split("://", 1)
    stripped = fs._strip_protocol(inner)
    return f"{scheme}://{stripped if rest.startswith('/') else stripped.lstrip('/')}"


# ------------------------------------------------------------------------------------ reads


def read_bytes(path: str, retry: RetryPolicy = RetryPolicy()) -> bytes:
    """The whole file; ``FileNotFoundError`` when there is none. Transient errors are retried."""
    def read() -> bytes:
        if not is_uri(path):
            with open(local(path), "rb") as handle:
                return handle.read()
        fs, inner = filesystem(path)
        return fs.cat_file(inner)

    return with_retries(read, retry)


def read_bytes_or_none(path: str, retry: RetryPolicy = RetryPolicy()) -> bytes | None:
    """:func:`read_bytes`, or None when the file does not exist."""
    try:
        return read_bytes(path, retry)
    except FileNotFoundError:
        return None


def compression_of(path: str) -> str | None:
    """The compression a file name says (``gzip`` for ``.gz``, ``bz2``, ``xz``, ``zstd`` ...), or None."""
    from fsspec.utils import infer_compression

    return infer_compression(path)


@contextlib.contextmanager
def open_read(path: str) -> Iterator:
    """A binary file object reading ``path`` (decompressed when its name says it is compressed:
    :func:`compression_of`); seekable when uncompressed."""
    import fsspec

    with fsspec.open(local(path) if not is_uri(path) else path, "rb", compression=compression_of(path)) as handle:
        yield handle


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(local(path))
    fs, inner = filesystem(path)
    return fs.exists(inner)


def isdir(path: str) -> bool:
    """A local directory, or a URI prefix that holds at least one object."""
    if not is_uri(path):
        return os.path.isdir(local(path))
    fs, inner = filesystem(path)
    return fs.isdir(inner)


def size(path: str) -> int:
    """Size in bytes; ``FileNotFoundError`` when there is no such file."""
    if not is_uri(path):
        return os.path.getsize(local(path))
    fs, inner = filesystem(path)
    return int(fs.size(inner))


def listdir(path: str) -> list[str]:
    """Sorted names of the entries directly under the folder ``path`` (files and folders);
    ``[]`` when there is none. On a store a folder is a prefix that holds objects."""
    if not is_uri(path):
        folder = local(path)
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    fs, inner = filesystem(path)
    fs.invalidate_cache(inner)
    try:
        entries = fs.ls(inner, detail=False)
    except FileNotFoundError:
        return []
    base = fs._strip_protocol(inner).rstrip("/")
    return sorted({posixpath.basename(e.rstrip("/")) for e in entries if fs._strip_protocol(e).rstrip("/") != base})


def glob(pattern: str) -> list[str]:
    """Sorted paths matching ``pattern`` (``*`` within one folder), as URIs for a URI pattern."""
    if not is_uri(pattern):
        import glob as globmod

        return sorted(globmod.glob(local(pattern)))
    fs, inner = filesystem(pattern)
    fs.invalidate_cache()
    return sorted(_uri_of(fs, p, pattern) for p in fs.glob(inner))


# ------------------------------------------------------------------------------------ writes


def remove(path: str) -> None:
    """Delete the file ``path`` if it exists."""
    if not is_uri(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(local(path))
        return
    fs, inner = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(inner)


def rmtree(path: str) -> None:
    """Delete the folder ``path`` and everything under it (on a store: every object under the
    prefix, one by one, which every store and emulator supports); nothing when it is absent."""
    if not is_uri(path):
        folder = local(path)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        elif os.path.exists(folder):
            os.remove(folder)
        return
    fs, inner = filesystem(path)
    fs.invalidate_cache()
    try:
        found = fs.find(inner.rstrip("/") + "/")
    except FileNotFoundError:
        return
    for name in sorted(found):
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(name)
    fs.invalidate_cache()


def makedirs(path: str) -> None:
    """Create the local folder ``path`` (a no-op for URIs: stores have no folders)."""
    if not is_uri(path):
        os.makedirs(local(path), exist_ok=True)


# ------------------------------------------------------------------------------------ videos


class TooLarge(Exception):
    """A remote file is larger than the limit a local copy may take."""


@contextlib.contextmanager
def local_copy(path: str, max_bytes: int | None = None, retry: RetryPolicy = RetryPolicy()) -> Iterator[str]:
    """A local path to read ``path`` from: the file itself when it is local, else a temporary copy
    streamed in chunks (at most ``max_bytes`` bytes, :class:`TooLarge` beyond) that is removed on
    every way out of the block. ``FileNotFoundError`` when the file does not exist."""
    if not is_uri(path):
        yield local(path)
        return
    fs, inner = filesystem(path)
    suffix = os.path.splitext(inner)[1][:16]
    handle, tmp = tempfile.mkstemp(prefix="nccurate-", suffix=suffix)
    os.close(handle)
    try:
        with_retries(lambda: _download(fs, inner, tmp, max_bytes, path), retry)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _download(fs, inner: str, target: str, max_bytes: int | None, path: str) -> None:
    if max_bytes is not None:
        total = int(fs.size(inner))
        if total > max_bytes:
            raise TooLarge(f"{path}: {total} bytes, more than decode.max_bytes = {max_bytes}")
    copied = 0
    with fs.open(inner, "rb", block_size=_CHUNK_BYTES) as src, open(target, "wb") as dst:
        while chunk := src.read(_CHUNK_BYTES):
            copied += len(chunk)
            if max_bytes is not None and copied > max_bytes:
                raise TooLarge(f"{path}: more than decode.max_bytes = {max_bytes} bytes")
            dst.write(chunk)
