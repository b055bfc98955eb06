"""Thumbnails of kept clips for the report, read from the run's WebDataset shards.

Shards are read with webdataset's own tar iteration (``webdataset.tariterators``), so a member
name splits into sample key and extension exactly as webdataset readers split it.
"""

from __future__ import annotations

import io
import tarfile
from collections import defaultdict
from collections.abc import Iterator

from curation.report_data import middle_index
from pipeline.storage import files


def is_media(ext: str) -> bool:
    """Whether a sample member with extension ``ext`` holds a picture to thumbnail: an ``mp4``
    clip or a ``jpg`` frame (``f0000.jpg``, ...); ``npy`` payloads do not."""
    return ext == "mp4" or ext.endswith("jpg")


def media_samples(shard_path: str, keys: set[str]) -> Iterator[dict]:
    """The samples of ``keys`` in one shard, in tar order, each ``{"__key__": key, ext: bytes}``
    with its media members only; stops once every key was seen. OSError/tarfile.TarError when
    the shard cannot be read."""
    from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

    def wanted(name: str) -> bool:
        key, ext = base_plus_ext(name)
        return key in keys and is_media(ext)

    left = set(keys)
    with files.open_read(shard_path) as stream:
        members = tar_file_expander([{"url": shard_path, "stream": stream}], select_files=wanted)
        for sample in group_by_keys(members):
            yield sample
            left.discard(sample["__key__"])
            if not left:
                return


def thumbnails(shards_dir: str, kept_rows: list[dict]) -> dict[str, object]:
    """sample key -> PIL image: the middle frame of its ``mp4`` clip, or its first ``jpg``
    frame (the first member, in tar order, that decodes); nothing for ``npy`` payloads, shards
    that cannot be read or media that do not decode. ``kept_rows``: index rows (``shard``, ``key``)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in kept_rows:
        if row["shard"] and row["key"]:
            wanted[row["shard"]].add(row["key"])
    out: dict[str, object] = {}
    for shard, keys in sorted(wanted.items()):
        try:
            for sample in media_samples(files.join(shards_dir, shard), keys):
                image = _first_image(sample)
                if image is not None and sample["__key__"] not in out:
                    out[sample["__key__"]] = image
        except (OSError, tarfile.TarError, ValueError):  # a gone, truncated or malformed shard
            continue
    return out


def _first_image(sample: dict):
    """The first media member of ``sample`` (tar order) that decodes, as a PIL image; None if none."""
    for ext, data in sample.items():
        if ext.startswith("__"):
            continue
        image = middle_frame(data) if ext == "mp4" else jpeg(data)
        if image is not None:
            return image
    return None


def middle_frame(mp4: bytes):
    """The middle decoded frame of an mp4 clip as a PIL image; None when it has none."""
    import av

    try:
        with av.open(io.BytesIO(mp4)) as clip:
            frames = list(clip.decode(video=0))
    except (av.FFmpegError, OSError, ValueError):
        return None
    return frames[middle_index(len(frames))].to_image() if frames else None


def jpeg(data: bytes):
    """A jpg frame as a PIL image; None when it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None
