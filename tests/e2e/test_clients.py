"""The outputs read by the clients users already have (issue 16): the README's "Reading the
outputs with other tools" snippets run as written on a demo output, and a run whose video_ids
are 128, 90 and 64 characters long round-trips through GNU tar, webdataset (with DataLoader
workers), wids, Hugging Face datasets, duckdb and polars.

The reference for every check is the index table read with pyarrow, and tar members listed by
GNU tar itself, not the pipeline's own reader."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
SECTION = "### Reading the outputs with other tools"
LONG_IDS = ("L" * 128, "m" * 90, "s" * 64)  # the manifest's longest id, one past ustar with GNU names, the stem limit


def readme_snippets() -> list[str]:
    """The ```python blocks of the README section, in order."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index(SECTION)
    end = text.index("\n### ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


SNIPPETS = readme_snippets()


CLIENTS = ("wids", "webdataset", "datasets", "duckdb", "polars")


def _snippet_id(code: str) -> str:
    """The client a snippet imports (``import X`` anywhere in an import line, or ``from X``)."""
    imported = set(re.findall(r"^from (\w+)", code, flags=re.M))
    for line in re.findall(r"^import (.+)$", code, flags=re.M):
        imported |= {part.split()[0] for part in line.split(",")}
    return next((c for c in CLIENTS if c in imported), "none")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``nccurate demo --videos 6`` run in a fresh folder, as a user runs it: (folder, summary)."""
    folder = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--videos", "6"], cwd=folder, check=True,
                   capture_output=True, timeout=500)
    with open(folder / "nccurate-demo" / "curated" / "summary.json", encoding="utf-8") as handle:
        return folder, json.load(handle)


def _long_id_corpus():
    videos = helpers.small_corpus(6, seed=7)
    return [dataclasses.replace(v, video_id=LONG_IDS[i]) if i < len(LONG_IDS) else v for i, v in enumerate(videos)]


@pytest.fixture(scope="module")
def long_ids(tmp_path_factory):
    """A feature-mode run of 6 videos, three with long ids: its output read back by helpers."""
    from pipeline.synth.feature_corpus import write_corpus

    manifest, _ = write_corpus(str(tmp_path_factory.mktemp("long-inputs")), _long_id_corpus())
    # method norton keeps captions of every video of so small a run (posterior's run-level
    # calibration may keep none of a video's): these tests are about the files' names
    out = helpers.run_pipeline(manifest, str(tmp_path_factory.mktemp("long") / "out"), ["align.method=norton"])
    kept = [r for r in out.index if r["kept"]]
    assert {r["video_id"] for r in kept} >= set(LONG_IDS), "every long id must have kept captions"
    return out


def _expected(out) -> dict[str, tuple[str, int]]:
    """``{key: (video_id, caption_idx)}`` of the kept rows, from the index (pyarrow)."""
    return {r["key"]: (r["video_id"], r["caption_idx"]) for r in out.index if r["kept"]}


# ----------------------------------------------------------------------------- README snippets


def test_the_readme_section_has_a_snippet_for_every_client():
    assert [_snippet_id(c) for c in SNIPPETS] == list(CLIENTS)


@pytest.mark.slow
@pytest.mark.parametrize("code", SNIPPETS, ids=_snippet_id)
def test_readme_snippet_reads_every_kept_sample_of_the_demo(demo, code, monkeypatch, tmp_path):
    import tempfile

    folder, summary = demo
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the wids snippet's cache folder
    namespace: dict = {}
    exec(compile(code, f"README:{_snippet_id(code)}", "exec"), namespace)
    assert summary["captions_kept"] > 0 and namespace["n"] == summary["captions_kept"]
    assert len(glob.glob(str(folder / "nccurate-demo" / "curated" / "shards" / "*.tar"))) >= 2, \
        "the demo must give DataLoader workers a shard each"


# ----------------------------------------------------------------------------- 128-character ids


def test_gnu_tar_lists_and_extracts_long_id_samples_by_their_names(long_ids, tmp_path):
    expected = _expected(long_ids)
    names = []
    for path in long_ids.shard_files:
        listed = subprocess.run(["tar", "-tf", path], check=True, capture_output=True, text=True)
        assert listed.stderr == ""
        names += listed.stdout.split()
        subprocess.run(["tar", "-xf", path, "-C", str(tmp_path)], check=True, capture_output=True)
    assert all(len(name.encode()) <= 100 for name in names)
    assert sorted(names) == sorted(f"{key}.{ext}" for key in expected for ext in ("json", "npy", "txt"))
    for key, (video_id, idx) in expected.items():
        with open(tmp_path / f"{key}.json", encoding="utf-8") as handle:
            meta = json.load(handle)
        assert (meta["video_id"], meta["caption_idx"]) == (video_id, idx)
    assert any(len(video_id) == 128 for video_id, _ in expected.values())


def test_webdataset_reads_long_id_samples_with_dataloader_workers(long_ids):
    import torch
    import webdataset as wds

    from models.data import collate_samples

    expected = _expected(long_ids)
    assert len(long_ids.shard_files) >= 2
    loader = torch.utils.data.DataLoader(wds.WebDataset(long_ids.shard_files, shardshuffle=False), batch_size=4,
                                         num_workers=2, collate_fn=collate_samples)
    got = {}
    for batch in loader:
        assert batch["npy"].shape[0] == len(batch["__key__"]) and batch["npy_mask"].any(1).all()
        for key, meta, n_rows in zip(batch["__key__"], batch["json"], batch["npy_mask"].sum(1).tolist()):
            assert n_rows >= 1
            got[key] = (meta["video_id"], meta["caption_idx"])
    assert got == expected


def test_wids_reads_long_id_samples_whole(long_ids, tmp_path):
    import wids

    expected = _expected(long_ids)
    ds = wids.ShardListDataset(os.path.join(long_ids.path, "shardindex.json"), cache_dir=str(tmp_path / "cache"))
    assert len(ds) == len(expected)
    got = {}
    for i in range(len(ds)):
        sample = ds[i]
        assert {k for k in sample if not k.startswith("__")} == {".json", ".npy", ".txt"}, sample.keys()
        got[sample["__key__"]] = (sample[".json"]["video_id"], sample[".json"]["caption_idx"])
        assert sample[".txt"] == sample[".json"]["text"]
    assert got == expected


def test_hf_datasets_reads_long_id_samples_and_features_as_arrays(long_ids, tmp_path, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = _expected(long_ids)
    ds = load_dataset("webdataset", data_files={"train": long_ids.shard_files}, split="train",
                      cache_dir=str(tmp_path / "hf")).with_format("numpy")
    assert len(ds) == len(expected)
    by_key = {s["__key__"]: s for s in long_ids.samples}
    got = {}
    for row in ds:
        got[row["__key__"]] = (row["json"]["video_id"], int(row["json"]["caption_idx"]))
        npy = np.stack(row["npy"]) if row["npy"].dtype == object else row["npy"]
        assert np.array_equal(npy, helpers.load_npy(by_key[row["__key__"]]["npy"]))
    assert got == expected


def test_duckdb_and_polars_read_the_full_long_ids_from_the_index(long_ids):
    import duckdb
    import polars as pl

    expected = sorted((video_id, idx, key) for key, (video_id, idx) in _expected(long_ids).items())
    pattern = os.path.join(long_ids.path, "index", "*.parquet")
    assert duckdb.sql(f"SELECT video_id, caption_idx, key FROM '{pattern}' WHERE kept ORDER BY ALL").fetchall() == expected
    frame = pl.read_parquet(pattern).filter(pl.col("kept")).sort("video_id", "caption_idx", "key")
    assert list(frame.select("video_id", "caption_idx", "key").iter_rows()) == expected
    assert max(len(v) for v, _, _ in expected) == 128


# ----------------------------------------------------------------------------- wids' cache (the README note)


def test_wids_default_cache_is_stale_after_a_rerun_and_the_readme_cache_folder_is_not(long_ids, tmp_path, monkeypatch):
    """What the README warns of: wids' default cache serves the old shard after a rerun into the
    same output; a cache folder named by the index's hash reads the new one."""
    import hashlib

    import wids

    from pipeline.synth.feature_corpus import write_corpus

    out = str(tmp_path / "out")
    shutil.copytree(long_ids.path, out)
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "default-cache"))
    index = os.path.join(out, "shardindex.json")
    old = wids.ShardListDataset(index)
    starts = np.concatenate([[0], np.cumsum(old.lengths)[:-1]])
    old_first = {}  # shard url -> key of its first sample; reading one sample caches the whole shard
    for start in starts.tolist():
        sample = old[start]
        old_first[sample["__shard__"]] = sample["__key__"]
    manifest, _ = write_corpus(str(tmp_path / "inputs"), helpers.small_corpus(6, seed=11))  # other videos
    rerun = helpers.run_pipeline(manifest, out, overwrite=True)
    new_keys = set(_expected(rerun))
    stale = wids.ShardListDataset(index)
    url = stale.shards[0]["url"]
    assert url in old_first, "precondition: the rerun's first shard has a name the first run used"
    first = stale[0]["__key__"]
    assert first == old_first[url] and first not in new_keys, "wids no longer caches by path: update the README note"
    cache = str(tmp_path / ("wids-" + hashlib.md5(open(index, "rb").read()).hexdigest()))
    fresh = wids.ShardListDataset(index, cache_dir=cache)
    assert {fresh[i]["__key__"] for i in range(len(fresh))} == new_keys
