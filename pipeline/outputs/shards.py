"""Reproducible WebDataset tar shards and their wids index.

A shard is a plain tar whose members are named ``{key}.{ext}``; WebDataset groups
consecutive members with the same key into one sample (splitting at the *first* dot, so
keys never contain a dot). Every member name fits ustar's 100-byte name field
(:data:`USTAR_NAME_MAX`), for any valid video_id (:func:`key_stem`): a longer name would need a
GNU ``@LongLink`` or PAX header, which some readers (wids) skip, misreading the sample. Every member is written with fixed metadata (mtime 0, uid/gid 0,
empty owner names, mode 0o444) in GNU format, so the same samples always give the same
bytes and the same md5. Files are written through :func:`pipeline.storage.atomic.open_atomic`:
a reader never sees a partial file.

Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from typing import Any, IO

from pipeline.storage.atomic import open_atomic
from pipeline.outputs.layout import shard_name  # noqa: F401 (the layout owns file names)

#: What a sample key (and a video_id inside one) may contain: no dots, no slashes.
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")

#: Longest video_id that a sample key holds as is. A longer one (the manifest allows 128
#: characters) is shortened to :data:`LONG_STEM_LEN` characters; the full id is in the json.
KEY_STEM_MAX = 64
#: A shortened stem: the id's first 48 characters, ``-``, 16 hex digits of the id's sha256. It is
#: longer than :data:`KEY_STEM_MAX`, so it never equals an id that is kept as is.
_LONG_PREFIX, _LONG_HASH_HEX = 48, 16
LONG_STEM_LEN = _LONG_PREFIX + 1 + _LONG_HASH_HEX
#: Largest caption index a key holds (8 digits), and the longest member extension.
MAX_CAPTION_IDX, MAX_EXT_LEN = 10**8 - 1, 16
#: ustar's name field: every member name is at most this many bytes (checked when writing).
USTAR_NAME_MAX = 100

#: Mode bits of every tar member (read-only for everyone).
MEMBER_MODE = 0o444

#: tar format: GNU writes a name longer than ustar's 100 bytes as a ././@LongLink entry. PAX
#: would be as reproducible (with fixed metadata its extended headers hold only what does not
#: fit in ustar, no timestamps); GNU stays so that shards keep their bytes and md5s.
TAR_FORMAT = tarfile.GNU_FORMAT


@dataclass(frozen=True)
class ShardInfo:
    """One written shard, as listed in the wids shard index.

    url: shard file name relative to the output's ``shards/`` dir, e.g. ``'shard-000003.tar'``.
    nsamples: number of samples (keys) in the shard.
    filesize: size of the tar file in bytes.
    md5sum: hex MD5 digest of the whole tar file.
    """

    url: str
    nsamples: int
    filesize: int
    md5sum: str


def key_stem(video_id: str) -> str:
    """The video part of a sample key: ``video_id`` itself when it has at most
    :data:`KEY_STEM_MAX` characters, else its first 48 characters, ``-`` and the first 16 hex
    digits of its sha256 (:data:`LONG_STEM_LEN` = 65 characters), so a key plus the longest
    extension fits ustar's 100-byte name. Stable: the same id gives the same stem in every run.

    Raises ValueError if ``video_id`` is empty or has characters outside ``[A-Za-z0-9_-]``.

    >>> key_stem("vid-1")
    'vid-1'
    >>> key_stem("v" * 128) == "v" * 48 + "-d9f835eb7a2b575e"
    True
    """
    if not isinstance(video_id, str) or not KEY_RE.match(video_id):
        raise ValueError(f"video_id must match {KEY_RE.pattern}, got {video_id!r}")
    if len(video_id) <= KEY_STEM_MAX:
        return video_id
    digest = hashlib.sha256(video_id.encode("ascii")).hexdigest()[:_LONG_HASH_HEX]
    return f"{video_id[:_LONG_PREFIX]}-{digest}"


def sample_key(video_id: str, caption_idx: int) -> str:
    """The WebDataset key of one (video, caption) sample: ``'{key_stem(video_id)}_{caption_idx:05d}'``
    (the video_id itself for ids of at most :data:`KEY_STEM_MAX` characters).

    Raises ValueError for a bad ``video_id`` (:func:`key_stem`; keys must contain no dots:
    webdataset splits key/extension at the first dot) or ``caption_idx`` outside
    ``[0, MAX_CAPTION_IDX]``; TypeError if ``caption_idx`` is not an int.

    >>> sample_key("vid-1", 7)
    'vid-1_00007'
    """
    stem = key_stem(video_id)
    if isinstance(caption_idx, bool) or not isinstance(caption_idx, int):
        raise TypeError(f"caption_idx must be an int, got {type(caption_idx).__name__}")
    if not 0 <= caption_idx <= MAX_CAPTION_IDX:
        raise ValueError(f"caption_idx must be in [0, {MAX_CAPTION_IDX}], got {caption_idx}")
    return f"{stem}_{caption_idx:05d}"


def key_parts(key: str) -> tuple[str, int]:
    """``(stem, caption_idx)`` of a :func:`sample_key`: the video part and the caption index.

    >>> key_parts("vid_1_00012")
    ('vid_1', 12)
    """
    stem, idx = key.rsplit("_", 1)
    return stem, int(idx)


class _HashingWriter:
    """A binary sink that hashes (MD5) and counts what passes through it to ``sink``, so a shard's
    md5 and size are known without reading it back (from an object store, a second download)."""

    def __init__(self, sink: IO[bytes]):
        self.sink, self.md5, self.size = sink, hashlib.md5(), 0

    def write(self, data) -> int:
        self.md5.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def tell(self) -> int:
        return self.size


def _member_bytes(key: str, ext: str, value: Any) -> bytes:
    """The payload of member ``{key}.{ext}``: bytes as is, str as UTF-8; TypeError otherwise."""
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"sample {key!r} field {ext!r}: value must be bytes or str, got {type(value).__name__}"
    )


def _check_ext(key: str, ext: Any) -> None:
    """ValueError unless ``ext`` is a usable member extension (non-empty str of at most
    :data:`MAX_EXT_LEN` characters, no '/', not starting with '.' or '_') and ``{key}.{ext}``
    fits ustar's name field (:data:`USTAR_NAME_MAX` bytes)."""
    if not isinstance(ext, str) or not ext or len(ext) > MAX_EXT_LEN or "/" in ext or ext[0] in "._":
        raise ValueError(f"sample {key!r}: bad field name {ext!r}")
    if len(f"{key}.{ext}".encode("utf-8")) > USTAR_NAME_MAX:
        raise ValueError(f"sample {key!r}: member name {key}.{ext} is longer than {USTAR_NAME_MAX} bytes "
                         f"(a ustar name; make keys with sample_key)")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file TarInfo with fixed, reproducible metadata; ``size`` in bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = MEMBER_MODE
    info.uid = 0
    info.gid = 0
    info.uname = ""
    info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _octal(n: int, digits: int) -> bytes:
    """A tar number field: ``digits - 1`` octal digits and a NUL (``tarfile.itn``'s form)."""
    return b"%0*o\0" % (digits - 1, n)


#: The parts of a member header that do not depend on the member: mode, uid, gid (before the
#: size) and mtime 0, the checksum placeholder, type, empty linkname, GNU magic, empty
#: uname/gname/devmajor/devminor/prefix (after it).
_HEAD_FIXED = _octal(MEMBER_MODE, 8) + _octal(0, 8) + _octal(0, 8)
_TAIL_FIXED = (_octal(0, 12) + b" " * 8 + tarfile.REGTYPE + b"\0" * 100 + tarfile.GNU_MAGIC + b"\0" * 32 * 2
               + b"\0" * 8 * 2 + b"\0" * 155)


def member_header(name: str, size: int) -> bytes:
    """The 512-byte GNU tar header of a regular file ``name`` (at most :data:`USTAR_NAME_MAX`
    UTF-8 bytes) of ``size`` bytes with :func:`_tarinfo`'s metadata: the same bytes as
    ``_tarinfo(name, size).tobuf(TAR_FORMAT)``, built without tarfile's general machinery (which
    costs ~70 us a member; a run writes every sample twice, into its shard and its checkpoint)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > USTAR_NAME_MAX:
        raise ValueError(f"tar member name {name!r} is longer than {USTAR_NAME_MAX} bytes")
    if not 0 <= size < 8 ** 11:
        raise ValueError(f"tar member {name!r}: size {size} does not fit a tar header")
    header = raw.ljust(100, b"\0") + _HEAD_FIXED + _octal(size, 12) + _TAIL_FIXED
    header = header.ljust(tarfile.BLOCKSIZE, b"\0")
    checksum = 256 + sum(header[:148]) + sum(header[156:])  # the checksum field counts as 8 spaces
    return header[:148] + b"%06o\0 " % checksum + header[156:]


def write_tar_members(f: IO[bytes], members) -> None:
    """``members``, an iterable of ``(name, bytes)``, as a reproducible tar stream to ``f``:
    in the order given, each with the fixed metadata of :func:`_tarinfo` (the bytes tarfile
    writes in :data:`TAR_FORMAT`, end-of-archive blocks and record padding included)."""
    offset = 0
    for name, data in members:
        pad = -len(data) % tarfile.BLOCKSIZE
        f.write(member_header(name, len(data)))
        f.write(data)
        if pad:
            f.write(b"\0" * pad)
        offset += tarfile.BLOCKSIZE + len(data) + pad
    end = offset + 2 * tarfile.BLOCKSIZE
    f.write(b"\0" * (2 * tarfile.BLOCKSIZE + (-end % tarfile.RECORDSIZE)))


def _sample_members(samples: list[dict[str, bytes]]):
    """``(name, bytes)`` of every member of ``samples``, checked (see :func:`write_tar_shard`)."""
    seen: set[str] = set()
    for sample in samples:
        if not isinstance(sample, dict):
            raise TypeError(f"a sample must be a dict, got {type(sample).__name__}")
        key = sample.get("__key__")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ValueError(
                f"sample __key__ must be a str matching {KEY_RE.pattern}, got {key!r}"
            )
        if key in seen:
            raise ValueError(f"duplicate sample key in one shard: {key!r}")
        seen.add(key)
        exts = [k for k in sample if k != "__key__"]
        if not exts:
            raise ValueError(f"sample {key!r} has no fields to write")
        for ext in exts:
            _check_ext(key, ext)
        for ext in sorted(exts):
            yield f"{key}.{ext}", _member_bytes(key, ext, sample[ext])


def write_tar_shard(path: str, samples: list[dict[str, bytes]]) -> ShardInfo:
    """Write a reproducible WebDataset tar at ``path`` and return its :class:`ShardInfo`.

    samples: each dict has ``'__key__'`` (str matching :data:`KEY_RE`) and extension -> value
    entries such as ``'npy'``, ``'txt'``, ``'json'``, ``'mp4'``. Values that are bytes are
    written as is, str as UTF-8; anything else raises TypeError.

    Members are named ``f'{key}.{ext}'``. Samples are written in the order given (the caller
    decides grouped vs shuffled order); within a sample, members are sorted by extension.
    Every member is a regular file with mtime 0, uid = gid = 0, empty uname/gname and mode
    0o444, in GNU tar format (:data:`TAR_FORMAT`), so equal inputs give byte-identical files.

    The tar is written through :func:`pipeline.storage.atomic.open_atomic`: on failure neither
    ``path`` nor a temporary file is left. Duplicate keys within one shard, a bad key or a sample with no
    fields raise ValueError.

    Returns ShardInfo(url=basename(path), nsamples=len(samples), filesize in bytes, hex md5).
    """
    with open_atomic(path) as f:
        sink = _HashingWriter(f)
        write_tar_members(sink, _sample_members(samples))
    return ShardInfo(url=path.rstrip("/").rsplit("/", 1)[-1], nsamples=len(samples), filesize=sink.size,
                     md5sum=sink.md5.hexdigest())


def shard_index(shards: list[ShardInfo]) -> dict:
    """The ``wids-shard-index-v1`` dict for ``shards``, in the given order::

        {"__kind__": "wids-shard-index-v1", "wids_version": 1,
         "shardlist": [{"url": ..., "nsamples": ..., "filesize": ..., "md5sum": ...}, ...]}

    ``filesize`` is in bytes; ``url`` as given (the run lists ``shards/<name>``, relative to the
    directory holding the index, as wids resolves it).
    """
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "shardlist": [
            {"url": s.url, "nsamples": s.nsamples, "filesize": s.filesize, "md5sum": s.md5sum}
            for s in shards
        ],
    }


def _shuffle_rank(seed: int, key: str) -> str:
    """Sort key of ``key`` in the shuffled layout: hex sha256 of ``f'{seed}:{key}'``."""
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def shuffled_order(keys: list[str], seed: int) -> list[int]:
    """Deterministic permutation of ``range(len(keys))`` for the 'shuffled' layout: indices
    sorted by the sha256 hex digest of ``f'{seed}:{key}'`` (ties, i.e. equal keys, by index).

    Independent of input order: the same set of keys gives the same output order of keys.
    Changes with ``seed``.
    """
    ranks = [_shuffle_rank(seed, k) for k in keys]
    return sorted(range(len(keys)), key=lambda i: (ranks[i], i))
