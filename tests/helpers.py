"""Helpers for the pipeline tests (a plain module: ``from tests import helpers``): small synthetic corpora on disk, a
pipeline runner, and readers for every file of an output directory (DESIGN §5).

Everything here reads outputs with independent tools (pyarrow, webdataset, hashlib, tarfile)
so the tests check the files a user gets, not the pipeline's in-memory values.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from dataclasses import dataclass, field

import numpy as np

#: Small videos keep one DirectRunner run at a few seconds.
SMALL_WORLD = dict(dim=512, duration_s=(120, 180))


def small_corpus(n_videos: int, seed: int):
    """``n_videos`` synthetic videos of a small world (D = 32, 2-3 minutes each)."""
    from curation.synth.features import WorldParams, make_corpus

    return make_corpus(n_videos, seed, WorldParams(**SMALL_WORLD))


@dataclass
class Output:
    """Everything one run wrote, read back from disk."""

    path: str
    summary: dict
    index: list[dict]              # all index rows, sorted by (video_id, caption_idx)
    index_table: object            # pyarrow.Table of every index file, concatenated in file-name order
    index_files: list[str]
    failures: list[dict]
    shardindex: dict
    shardindex_bytes: bytes
    shard_files: list[str]         # absolute paths, sorted
    samples: list[dict] = field(default_factory=list)  # webdataset samples in read order

    def file_bytes(self, rel: str) -> bytes:
        with open(os.path.join(self.path, rel), "rb") as handle:
            return handle.read()

    def rows_of(self, video_id: str) -> list[dict]:
        return [r for r in self.index if r["video_id"] == video_id]


def read_output(path: str) -> Output:
    """Read an output directory with pyarrow / webdataset / json only."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    with open(os.path.join(path, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    with open(os.path.join(path, "shardindex.json"), "rb") as handle:
        shardindex_bytes = handle.read()
    index_files = sorted(glob.glob(os.path.join(path, "index", "*.parquet")))
    tables = [pq.read_table(f) for f in index_files]
    table = pa.concat_tables(tables) if tables else None
    rows = sorted(table.to_pylist() if table is not None else [],
                  key=lambda r: (r["video_id"], r["caption_idx"]))
    failures = pq.read_table(os.path.join(path, "failures", "part-00000.parquet")).to_pylist()
    shard_files = sorted(glob.glob(os.path.join(path, "shards", "*.tar")))
    samples = []
    if shard_files:
        samples = list(wds.WebDataset(shard_files, shardshuffle=False, empty_check=False))
    return Output(path=path, summary=summary, index=rows, index_table=table, index_files=index_files,
                  failures=failures, shardindex=json.loads(shardindex_bytes),
                  shardindex_bytes=shardindex_bytes, shard_files=shard_files, samples=samples)


def run_pipeline(manifest: str, output: str, overrides=(), overwrite: bool = False) -> Output:
    """Run the whole pipeline on the DirectRunner and read its output back."""
    from pipeline.config import load_config
    from pipeline.run import run

    summary = run(manifest, output, load_config(None, list(overrides)), overwrite=overwrite)
    out = read_output(output)
    assert out.summary == summary, "run() must return exactly what summary.json holds"
    return out


def md5_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def merge_manifests(target_dir: str, parts: dict[str, str]) -> str:
    """One manifest at ``target_dir/manifest.jsonl`` joining the manifests of corpora written in
    sub-directories ``{subdir: manifest path}``; relative paths are re-rooted at ``target_dir``."""
    lines = []
    for subdir, manifest in parts.items():
        with open(manifest, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                row = json.loads(line)
                for key in ("features", "captions", "caption_features"):
                    row[key] = f"{subdir}/{row[key]}"
                lines.append(json.dumps(row))
    path = os.path.join(target_dir, "manifest.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
