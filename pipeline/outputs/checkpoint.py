"""Per-video checkpoints under ``OUT/_work/`` so a killed run resumes where it stopped.

A run writes these checkpoints, each through :func:`pipeline.storage.atomic.open_atomic`, as soon as
the work it saves is done:

* ``_work/frames/{video_id}.pts.npz`` then ``{video_id}.emb-{chunk:05d}.npy`` (video mode):
  the decoded frames' ``pts_s: (T,)``, ``source`` path and number of chunks (written by decode),
  then each chunk's frame embeddings ``(n, D)`` float32 (written right after embedding, in the
  same fused step: decode + embed is the expensive part of a run); a video's decode is complete
  when every chunk is there. Or ``{video_id}.failure.json`` when decoding failed (so a timeout
  is not waited out twice).
* ``_work/results/{video_id}.tar``: everything the video contributes to the outputs: its index
  rows, its kept samples (clip bytes included), its failure rows, its outcome counts and, for
  ``align.prompt_mode=run``, its paired-similarity histogram; its last member, ``crc32.json``,
  holds every other member's CRC-32.
* ``_work/calibration/{video_id}.npz`` (``align.method=posterior``): the video's share of the
  run-level calibration (``curation.calibration.VideoStats``) and its candidates for the run's
  decoy pool (with its smallest caption keys, for the run's sample bound), written by the
  calibration pass, so before the video's result (a zip: CRC-32s of
  its members are checked as they are read).

These two are written without fsync (``checked=True``, :mod:`pipeline.storage.atomic`): one that
fails its CRC-32s, or cannot be parsed, reads as absent, and its video is redone.

Every output file (shards, index, failures, summary, shardindex) is a deterministic function of
these per-video results, so a resumed run writes the same bytes as an uninterrupted one.
``_work/run.json`` names the manifest (sha256) and configuration (hash) the checkpoints belong
to; a run on different inputs refuses to resume from them. ``_work`` is removed when the run
completes. Checkpoints are read with ``allow_pickle=False`` and JSON only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from pipeline.storage.atomic import open_atomic, write_bytes_atomic
from pipeline.outputs.layout import OutputLayout
from pipeline.outputs.shards import write_tar_members
from pipeline.storage import files


def _read(path: str) -> bytes | None:
    return files.read_bytes_or_none(path)


# ------------------------------------------------------------------------------- run identity


def run_identity(manifest_sha256: str, config_hash: str) -> dict:
    from pipeline.results import PIPELINE_VERSION

    return {"manifest_sha256": manifest_sha256, "config_hash": config_hash, "pipeline_version": PIPELINE_VERSION}


def write_run_identity(output: str, identity: dict) -> None:
    write_bytes_atomic(OutputLayout(output).run_file, json.dumps(identity, sort_keys=True).encode("utf-8"))


def read_run_identity(output: str) -> dict | None:
    data = _read(OutputLayout(output).run_file)
    return None if data is None else json.loads(data)


def remove_work(output: str) -> None:
    """Delete ``OUT/_work`` (a completed run's checkpoints)."""
    files.rmtree(OutputLayout(output).work_dir)


# ------------------------------------------------------------------------- frame embeddings


def _frames_file(output: str, video_id: str, suffix: str) -> str:
    return OutputLayout(output).frames_file(video_id, suffix)


def save_pts(output: str, video_id: str, pts_s: np.ndarray, source: str, n_chunks: int,
             notes: list[dict] = ()) -> None:
    """Checkpoint the decoded frames' ``pts_s: (T,)`` seconds, the media ``source``, how many
    embedding chunks complete the video and the decode's ``notes`` (failures-table rows of a usable video)."""
    buf = io.BytesIO()
    np.savez(buf, pts_s=pts_s, source=np.array(source), n_chunks=np.int64(n_chunks),
             notes=np.array(json.dumps(list(notes), sort_keys=True)))
    write_bytes_atomic(_frames_file(output, video_id, "pts.npz"), buf.getvalue())


def save_emb_chunk(output: str, video_id: str, chunk: int, emb: np.ndarray) -> None:
    """Checkpoint chunk ``chunk``'s frame embeddings ``emb: (n, D)`` (after :func:`save_pts`)."""
    from pipeline.results import npy_bytes

    write_bytes_atomic(_frames_file(output, video_id, f"emb-{chunk:05d}.npy"), npy_bytes(emb), lasting=False)


def load_frames(output: str, video_id: str) -> tuple[np.ndarray, np.ndarray, str, list[dict]] | None:
    """``(emb (T, D), pts_s, source, notes)`` of a complete frames checkpoint (times and every
    chunk), or None."""
    pts = _read(_frames_file(output, video_id, "pts.npz"))
    if pts is None:
        return None
    with np.load(io.BytesIO(pts), allow_pickle=False) as npz:
        pts_s, source, n_chunks = npz["pts_s"], str(npz["source"]), int(npz["n_chunks"])
        notes = json.loads(str(npz["notes"])) if "notes" in npz.files else []
    chunks = [_read(_frames_file(output, video_id, f"emb-{chunk:05d}.npy")) for chunk in range(n_chunks)]
    if any(data is None for data in chunks):
        return None
    emb = [np.load(io.BytesIO(data), allow_pickle=False) for data in chunks]
    return (emb[0] if n_chunks == 1 else np.concatenate(emb)), pts_s, source, notes


def save_decode_failure(output: str, video_id: str, failure: dict) -> None:
    write_bytes_atomic(_frames_file(output, video_id, "failure.json"), json.dumps(failure, sort_keys=True).encode("utf-8"))


def load_decode_failure(output: str, video_id: str) -> dict | None:
    data = _read(_frames_file(output, video_id, "failure.json"))
    return None if data is None else json.loads(data)


# ---------------------------------------------------------------------------- video results


def result_file(output: str, video_id: str) -> str:
    return OutputLayout(output).result_file(video_id)


def save_result(output: str, result, histogram: np.ndarray | None = None) -> None:
    """Checkpoint one video's ``pipeline.results.VideoResult`` and, for ``prompt_mode=run``, its
    paired-similarity ``histogram``: a tar of ``result.json`` (rows, failures, outcome counts,
    each sample's key and member names), ``histogram.npy`` when given, and one member
    ``{i:05d}.{name}`` per sample payload."""
    from pipeline.results import npy_bytes

    meta = {"rows": [row._asdict() for row in result.rows],
            "failures": [dataclasses.asdict(f) for f in result.failures], "outcome": result.outcome.counts(),
            "samples": [{"__key__": s["__key__"], "members": sorted(k for k in s if k != "__key__")}
                        for s in result.samples]}
    members = [("result.json", json.dumps(meta, sort_keys=True).encode("utf-8"))]
    if histogram is not None:
        members.append(("histogram.npy", npy_bytes(histogram)))
    for i, sample in enumerate(result.samples):
        members.extend((f"{i:05d}.{name}", sample[name]) for name in sorted(sample) if name != "__key__")
    members.append((CRC_MEMBER, json.dumps(_crcs(members), sort_keys=True).encode("utf-8")))
    with open_atomic(result_file(output, result.video_id), checked=True) as handle:
        write_tar_members(handle, members)


#: The last member of a result checkpoint: ``{member name: CRC-32}`` of every other member.
CRC_MEMBER = "crc32.json"


def _crcs(members) -> dict[str, int]:
    return {name: zlib.crc32(data) for name, data in members if name != CRC_MEMBER}


def result_outcome(path: str):
    """The ``pipeline.results.Outcome`` of the result checkpoint at ``path`` (a
    :func:`result_file`), reading the tar only up to ``result.json``, which :func:`save_result`
    writes first; None when it cannot be read (gone, or not complete)."""
    from pipeline.results import Outcome

    try:  # streamed: a remote checkpoint is read only up to result.json
        with files.open_read(path) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                if member.name == "result.json":
                    return Outcome.from_counts(json.loads(tar.extractfile(member).read())["outcome"])
    except (OSError, tarfile.TarError, ValueError, KeyError):
        pass  # a checkpoint being replaced or removed reads as none
    return None


class SavedResult(NamedTuple):
    result: object  # pipeline.results.VideoResult
    histogram: np.ndarray | None


def load_result(output: str, video_id: str) -> SavedResult | None:
    """What :func:`save_result` wrote for ``video_id``, or None when there is none."""
    from curation.records import Failure
    from pipeline.results import IndexRow, Outcome, VideoResult

    data = _read(result_file(output, video_id))
    if data is None:
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        intact = json.loads(members.pop(CRC_MEMBER)) == _crcs(members.items())
    except (tarfile.TarError, KeyError, ValueError, EOFError):
        intact = False
    if not intact:  # written without fsync (module docstring): broken by a crash, so redone
        return None
    meta = json.loads(members["result.json"])
    samples = tuple({"__key__": s["__key__"], **{name: members[f"{i:05d}.{name}"] for name in s["members"]}}
                    for i, s in enumerate(meta["samples"]))
    histogram = None
    if "histogram.npy" in members:
        histogram = np.load(io.BytesIO(members["histogram.npy"]), allow_pickle=False)
    result = VideoResult(video_id, tuple(IndexRow(**row) for row in meta["rows"]), samples,
                         tuple(Failure(**f) for f in meta["failures"]), Outcome.from_counts(meta["outcome"]))
    return SavedResult(result, histogram)


# ------------------------------------------------------------------------- run-level calibration


def calibration_file(output: str, video_id: str) -> str:
    return OutputLayout(output).calibration_file(video_id)


def save_calibration(output: str, video_id: str, stats, pool) -> None:
    """Checkpoint a video's ``curation.calibration.VideoStats`` and decoy-pool candidates."""
    buf = io.BytesIO()
    np.savez(buf, **{f"stats_{name}": getattr(stats, name) for name in stats._fields},
             pool_keys=pool.keys, pool_emb=pool.emb, pool_run_keys=pool.run_keys)
    write_bytes_atomic(calibration_file(output, video_id), buf.getvalue(), checked=True)


def load_calibration(output: str, video_id: str):
    """``(VideoStats, DecoyPool)`` that :func:`save_calibration` wrote, or None."""
    from curation.calibration import DecoyPool, VideoStats

    data = _read(calibration_file(output, video_id))
    if data is None:
        return None
    try:  # a zip: reading a member checks its CRC-32
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            stats = VideoStats(*(arrays[f"stats_{name}"] for name in VideoStats._fields))
            keys = arrays["pool_keys"]
            return stats, DecoyPool(keys, (video_id,) * len(keys), arrays["pool_emb"], arrays["pool_run_keys"])
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError):
        return None  # written without fsync (module docstring): broken by a crash, so redone
