"""``pipeline.storage.atomic``: a file appears whole or not at all, and no temporary file is left."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.storage import atomic
from pipeline.storage.atomic import open_atomic, write_bytes_atomic, write_json_atomic


class Boom(Exception):
    pass


def test_target_appears_whole_and_no_temp_is_left(tmp_path):
    path = tmp_path / "sub" / "f.bin"  # the parent is created
    with open_atomic(str(path)) as handle:
        handle.write(b"a" * 1000)
        assert not path.exists(), "the target must not be visible before the block ends"
        assert os.listdir(tmp_path / "sub") == [os.path.basename(atomic.temp_path(str(path)))]
        handle.write(b"b" * 1000)
    assert path.read_bytes() == b"a" * 1000 + b"b" * 1000
    assert os.listdir(tmp_path / "sub") == ["f.bin"]


def test_a_write_that_raises_leaves_neither_target_nor_temp(tmp_path):
    path = tmp_path / "f.bin"
    with pytest.raises(Boom):
        with open_atomic(str(path)) as handle:
            handle.write(b"partial")
            raise Boom
    assert os.listdir(tmp_path) == []


def test_a_write_that_raises_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.json"
    write_json_atomic(str(path), {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"a": object()})  # fails before any file is opened
    with pytest.raises(Boom):
        with open_atomic(str(path)) as handle:
            handle.write(b"{")
            raise Boom
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_rename_removes_the_temp(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(str(tmp_path / "f.bin"), b"x")
    assert os.listdir(tmp_path) == []


def test_file_and_directory_are_fsynced_before_the_file_counts_as_written(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None)
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    write_bytes_atomic(str(tmp_path / "f.bin"), b"x")
    assert len(synced) == 2  # the file's data, then the directory entry of the rename
    if synced[0] is not None:
        assert synced == [False, True]


def test_json_format(tmp_path):
    path = tmp_path / "index.json"
    obj = {"b": [1, 2], "a": {"z": 1, "y": "é"}}
    write_json_atomic(str(path), obj)
    assert path.read_text(encoding="utf-8") == json.dumps(obj, sort_keys=True, indent=2) + "\n"


def test_parquet_through_a_file_object_equals_a_direct_write(tmp_path):
    """pyarrow writes the same bytes to the atomic file object as to a path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    pq.write_table(table, str(tmp_path / "direct.parquet"), compression="zstd")
    with open_atomic(str(tmp_path / "atomic.parquet")) as handle:
        pq.write_table(table, handle, compression="zstd")
    assert (tmp_path / "atomic.parquet").read_bytes() == (tmp_path / "direct.parquet").read_bytes()
