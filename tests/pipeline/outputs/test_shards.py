"""Tests for pipeline.outputs.shards: reproducible WebDataset tars and the wids index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time

import numpy as np
import pytest
import webdataset as wds

from pipeline.outputs.shards import (
    KEY_RE,
    KEY_STEM_MAX,
    USTAR_NAME_MAX,
    ShardInfo,
    key_parts,
    key_stem,
    sample_key,
    shard_index,
    shard_name,
    shuffled_order,
    write_tar_shard,
)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _samples() -> list[dict]:
    """Three samples with differing field sets, given in a non-sorted key order."""
    rng = np.random.default_rng(0)
    return [
        {
            "__key__": sample_key("vidB", 1),
            "txt": "a dog runs — fast",
            "npy": _npy_bytes(rng.standard_normal(8).astype(np.float32)),
            "json": json.dumps({"start": 1.5, "end": 3.0}).encode(),
        },
        {
            "__key__": sample_key("vidA", 0),
            "txt": b"a cat sleeps",
            "npy": _npy_bytes(rng.standard_normal(8).astype(np.float32)),
            "json": b"{}",
            "mp4": bytes(range(256)) * 4,
        },
        {"__key__": sample_key("vid_C-2", 12), "txt": b""},
    ]


def _expected_bytes(sample: dict) -> dict[str, bytes]:
    return {
        k: (v.encode("utf-8") if isinstance(v, str) else v)
        for k, v in sample.items()
        if k != "__key__"
    }


def _read_back(path: str) -> list[dict]:
    ds = wds.WebDataset(str(path), shardshuffle=False, empty_check=False)
    return list(ds)


def _consecutive_chunks(n: int, per: int) -> list[list[int]]:
    """``range(n)`` in consecutive chunks of at most ``per`` indices."""
    return [list(range(start, min(start + per, n))) for start in range(0, n, per)]


def _dir_names(tmp_path) -> list[str]:
    return sorted(os.listdir(tmp_path))


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- sample_key / shard_name


def test_sample_key_format():
    assert sample_key("abc", 0) == "abc_00000"
    assert sample_key("A-b_9", 42) == "A-b_9_00042"
    assert sample_key("x", 123456) == "x_123456"
    assert KEY_RE.match(sample_key("vid-1", 3))


@pytest.mark.parametrize("bad", ["a.b", "a/b", "", "a b", "../x", "vid.mp4", "ü"])
def test_sample_key_rejects_bad_video_id(bad):
    with pytest.raises(ValueError):
        sample_key(bad, 0)


def test_sample_key_rejects_negative_index():
    with pytest.raises(ValueError):
        sample_key("abc", -1)


def test_shard_name():
    assert shard_name(0) == "shard-000000.tar"
    assert shard_name(3) == "shard-000003.tar"
    assert shard_name(1234567) == "shard-1234567.tar"
    with pytest.raises(ValueError):
        shard_name(-1)


# ---------------------------------------------------------------- write_tar_shard


def test_shard_reads_back_with_webdataset_in_order(tmp_path):
    samples = _samples()
    path = tmp_path / shard_name(3)
    info = write_tar_shard(str(path), samples)

    got = _read_back(path)
    assert [s["__key__"] for s in got] == [s["__key__"] for s in samples]
    for g, s in zip(got, samples):
        fields = {k: v for k, v in g.items() if not k.startswith("__")}
        assert fields == _expected_bytes(s)
    # the npy payload round-trips to the same array
    arr = np.load(io.BytesIO(got[0]["npy"]), allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (8,)
    assert got[0]["txt"].decode("utf-8") == "a dog runs — fast"

    assert info == ShardInfo(
        url="shard-000003.tar",
        nsamples=3,
        filesize=os.path.getsize(path),
        md5sum=_md5(path),
    )


def test_members_sorted_by_extension_within_sample_and_samples_in_given_order(tmp_path):
    path = tmp_path / "s.tar"
    write_tar_shard(str(path), _samples())
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == [
        "vidB_00001.json", "vidB_00001.npy", "vidB_00001.txt",
        "vidA_00000.json", "vidA_00000.mp4", "vidA_00000.npy", "vidA_00000.txt",
        "vid_C-2_00012.txt",
    ]


def test_member_metadata_is_fixed(tmp_path):
    path = tmp_path / "s.tar"
    write_tar_shard(str(path), _samples())
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert members
        for m in members:
            assert m.isreg()
            assert m.mtime == 0
            assert m.uid == 0 and m.gid == 0
            assert m.uname == "" and m.gname == ""
            assert m.mode == 0o444
            assert m.pax_headers == {}
    # no PAX extended headers anywhere in the stream
    raw = path.read_bytes()
    assert b"PaxHeader" not in raw and b"mtime=" not in raw


def test_two_writes_are_byte_identical(tmp_path, monkeypatch):
    p1, p2 = tmp_path / "a.tar", tmp_path / "b.tar"
    info1 = write_tar_shard(str(p1), _samples())
    # make wall-clock time visibly different for the second write
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86400.0 * 400)
    time.sleep(1.1)
    info2 = write_tar_shard(str(p2), _samples())
    assert p1.read_bytes() == p2.read_bytes()
    assert info1.md5sum == info2.md5sum == _md5(p1)
    assert info1.filesize == info2.filesize
    assert info1.url == "a.tar" and info2.url == "b.tar"


def test_ids_up_to_the_stem_limit_are_kept_as_is_and_longer_ones_shortened_stably():
    assert key_stem("v" * KEY_STEM_MAX) == "v" * KEY_STEM_MAX
    long_a, long_b = "a" * 60 + "x" * 68, "a" * 60 + "y" * 68  # same first 60 characters
    stem_a = key_stem(long_a)
    # independent reference: 48 characters, '-', 16 hex digits of the id's sha256
    assert stem_a == long_a[:48] + "-" + hashlib.sha256(long_a.encode()).hexdigest()[:16]
    assert len(stem_a) == KEY_STEM_MAX + 1  # longer than any id kept as is: never equal to one
    assert key_stem(long_a) == stem_a and key_stem(long_b) != stem_a
    assert KEY_RE.match(stem_a) and "." not in stem_a
    assert key_parts(sample_key(long_a, 7)) == (stem_a, 7)
    assert key_parts(sample_key("vid_9_x", 12)) == ("vid_9_x", 12)


@pytest.mark.parametrize("idx", [0, 99_999_999])
def test_every_member_name_of_a_128_character_id_fits_ustar(tmp_path, idx):
    vid = "v" * 128  # the longest video_id the manifest allows
    samples = [{"__key__": sample_key(vid, idx), "txt": b"long", "json": b"{}", "f0000.jpg": b"j",
                "e" * 16: b"x"}]
    path = tmp_path / "a.tar"
    write_tar_shard(str(path), samples)
    # independent reader: ustar headers only (no GNU @LongLink, no PAX), names as written
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert all(m.type == tarfile.REGTYPE and len(m.name.encode()) <= USTAR_NAME_MAX for m in members)
    data = path.read_bytes()
    assert b"././@LongLink" not in data and b"PaxHeader" not in data
    got = _read_back(path)
    assert [(g["__key__"], g["txt"]) for g in got] == [(sample_key(vid, idx), b"long")]


def test_a_member_name_over_the_ustar_limit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        write_tar_shard(str(tmp_path / "s.tar"), [{"__key__": "k" * 96, "json": b"{}"}])
    with pytest.raises(ValueError, match="bad field name"):
        write_tar_shard(str(tmp_path / "s.tar"), [{"__key__": "k", "e" * 17: b"x"}])
    with pytest.raises(ValueError):
        sample_key("abc", 10**8)
    assert _dir_names(tmp_path) == []


def test_no_temp_files_after_success(tmp_path):
    write_tar_shard(str(tmp_path / "s.tar"), _samples())
    assert _dir_names(tmp_path) == ["s.tar"]
    assert not any(".tmp" in n for n in _dir_names(tmp_path))


def test_overwrite_replaces_existing_shard(tmp_path):
    path = tmp_path / "s.tar"
    write_tar_shard(str(path), _samples())
    info = write_tar_shard(str(path), _samples()[:1])
    assert info.nsamples == 1
    assert [g["__key__"] for g in _read_back(path)] == ["vidB_00001"]
    assert _dir_names(tmp_path) == ["s.tar"]


def test_failure_mid_way_leaves_no_files(tmp_path):
    samples = _samples()
    samples.append({"__key__": "bad_00000", "txt": b"ok", "npy": 3.14})  # bad type, after 3 good
    path = tmp_path / "s.tar"
    with pytest.raises(TypeError):
        write_tar_shard(str(path), samples)
    assert _dir_names(tmp_path) == []


def test_failure_keeps_previous_shard_intact(tmp_path):
    path = tmp_path / "s.tar"
    write_tar_shard(str(path), _samples())
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_tar_shard(str(path), [{"__key__": "k", "txt": ["not", "bytes"]}])
    assert path.read_bytes() == before
    assert _dir_names(tmp_path) == ["s.tar"]


def test_duplicate_keys_rejected(tmp_path):
    path = tmp_path / "s.tar"
    samples = [{"__key__": "k_00000", "txt": b"a"}, {"__key__": "k_00000", "txt": b"b"}]
    with pytest.raises(ValueError, match="duplicate"):
        write_tar_shard(str(path), samples)
    assert _dir_names(tmp_path) == []


@pytest.mark.parametrize(
    "sample",
    [
        {"__key__": "a.b", "txt": b"x"},  # dot would split key/extension
        {"__key__": "a/b", "txt": b"x"},
        {"txt": b"x"},  # no key
        {"__key__": "k"},  # no fields
        {"__key__": "k", "": b"x"},
        {"__key__": "k", "a/b": b"x"},
    ],
)
def test_bad_samples_rejected(tmp_path, sample):
    with pytest.raises(ValueError):
        write_tar_shard(str(tmp_path / "s.tar"), [sample])
    assert _dir_names(tmp_path) == []


@pytest.mark.parametrize("value", [None, 1, bytearray(b"x"), np.zeros(2)])
def test_non_bytes_values_rejected(tmp_path, value):
    with pytest.raises(TypeError):
        write_tar_shard(str(tmp_path / "s.tar"), [{"__key__": "k", "npy": value}])
    assert _dir_names(tmp_path) == []


def test_str_values_written_as_utf8(tmp_path):
    path = tmp_path / "s.tar"
    write_tar_shard(str(path), [{"__key__": "k", "txt": "héllo ✓"}])
    with tarfile.open(path) as tar:
        assert tar.extractfile("k.txt").read() == "héllo ✓".encode("utf-8")


def test_empty_shard(tmp_path):
    path = tmp_path / "s.tar"
    info = write_tar_shard(str(path), [])
    assert info.nsamples == 0 and info.filesize == os.path.getsize(path) > 0
    with tarfile.open(path) as tar:
        assert tar.getmembers() == []


# ---------------------------------------------------------------- shard_index


def test_shard_index_structure_and_md5(tmp_path):
    samples = _samples()
    infos = []
    for shard_idx, idxs in enumerate(_consecutive_chunks(len(samples), 2)):
        path = tmp_path / shard_name(shard_idx)
        infos.append(write_tar_shard(str(path), [samples[i] for i in idxs]))
    index = shard_index(infos)
    assert index["__kind__"] == "wids-shard-index-v1"
    assert index["wids_version"] == 1
    assert set(index) == {"__kind__", "wids_version", "shardlist"}
    assert [e["url"] for e in index["shardlist"]] == ["shard-000000.tar", "shard-000001.tar"]
    assert [e["nsamples"] for e in index["shardlist"]] == [2, 1]
    for entry in index["shardlist"]:
        assert set(entry) == {"url", "nsamples", "filesize", "md5sum"}
        path = tmp_path / entry["url"]
        assert entry["md5sum"] == hashlib.md5(path.read_bytes()).hexdigest()
        assert entry["filesize"] == os.path.getsize(path)
        assert len(_read_back(path)) == entry["nsamples"]
    # given order is kept
    reversed_urls = [e["url"] for e in shard_index(infos[::-1])["shardlist"]]
    assert reversed_urls == ["shard-000001.tar", "shard-000000.tar"]
    # JSON-serializable as is
    json.dumps(index)


def test_shard_index_empty():
    expected = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "shardlist": []}
    assert shard_index([]) == expected


# ---------------------------------------------------------------- shuffled_order


def _keys(n: int) -> list[str]:
    return [sample_key(f"vid{i // 3}", i % 3) for i in range(n)]


def test_shuffled_order_is_permutation():
    keys = _keys(50)
    order = shuffled_order(keys, seed=0)
    assert sorted(order) == list(range(50))
    assert order != list(range(50))
    assert shuffled_order([], seed=0) == []


def test_shuffled_order_matches_definition():
    keys = _keys(20)
    order = shuffled_order(keys, seed=7)
    digests = [hashlib.sha256(f"7:{keys[i]}".encode()).hexdigest() for i in order]
    assert digests == sorted(digests)


def test_shuffled_order_independent_of_input_order():
    keys = _keys(40)
    rev = keys[::-1]
    rotated = keys[13:] + keys[:13]
    ref = [keys[i] for i in shuffled_order(keys, seed=3)]
    assert [rev[i] for i in shuffled_order(rev, seed=3)] == ref
    assert [rotated[i] for i in shuffled_order(rotated, seed=3)] == ref


def test_shuffled_order_is_deterministic_and_changes_with_seed():
    keys = _keys(40)
    assert shuffled_order(keys, seed=1) == shuffled_order(list(keys), seed=1)
    assert shuffled_order(keys, seed=1) != shuffled_order(keys, seed=2)


def _tarfile_bytes(members) -> bytes:
    """The reference: the same members written by the standard library's tarfile."""
    from pipeline.outputs.shards import TAR_FORMAT, _tarinfo

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=TAR_FORMAT) as tar:
        for name, data in members:
            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("seed", range(40))
def test_the_tar_writer_writes_the_bytes_tarfile_writes(seed):
    """write_tar_members builds its headers itself (tarfile's cost ~70 us a member): the stream
    is byte-identical to tarfile's for names up to 100 bytes (non-ASCII ones too), sizes at and
    around block boundaries, empty members and archives, and it reads back with tarfile."""
    import random

    from pipeline.outputs.shards import write_tar_members

    rng = random.Random(seed)
    names = ["v_00001.json", "é" * 50, "x" * 100, "a.b", "key_00012.npy"]
    members = [(rng.choice(names) if rng.random() < 0.5 else "n" * rng.randint(1, 99),
                rng.randbytes(rng.choice([0, 1, 511, 512, 513, 10240, rng.randint(0, 20000)])))
               for _ in range(rng.randint(0, 9))]
    out = io.BytesIO()
    write_tar_members(out, members)
    assert out.getvalue() == _tarfile_bytes(members)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == members


def test_the_tar_writer_refuses_a_name_longer_than_ustar():
    from pipeline.outputs.shards import write_tar_members

    with pytest.raises(ValueError, match="longer than 100 bytes"):
        write_tar_members(io.BytesIO(), [("y" * 101, b"")])
