"""``pipeline.storage.files`` and the remote branch of ``pipeline.storage.atomic``: the same
operations on local paths and on URIs (fsspec's in-process ``memory://`` store here; real object
stores in tests/e2e/test_remote.py), checked against the os module and fsspec directly."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest

from pipeline.storage import files
from pipeline.storage.atomic import open_atomic, write_bytes_atomic


@pytest.fixture
def roots(tmp_path):
    """(local root, memory:// root), both empty; the memory store is cleaned after the test."""
    remote = f"memory://nccurate-{uuid.uuid4().hex}"
    yield str(tmp_path / "root"), remote
    fs = fsspec.filesystem("memory")
    if fs.exists(remote.split("://", 1)[1]):
        fs.rm(remote.split("://", 1)[1], recursive=True)


def test_paths():
    assert files.join("s3://b/out", "shards", "x.tar") == "s3://b/out/shards/x.tar"
    assert files.join("/data/out", "x") == os.path.join("/data/out", "x")
    assert files.parent("gs://b/out/summary.json") == "gs://b/out" and files.parent("/a/b") == "/a"
    assert files.absolute("gs://b/x") == "gs://b/x" and files.absolute("rel") == os.path.abspath("rel")
    assert files.local("file:///data/x") == "/data/x" and not files.is_uri("file:///data/x")


@pytest.mark.parametrize("which", [0, 1], ids=["local", "memory"])
def test_write_read_list_glob_and_remove_agree_on_both(roots, which):
    root = roots[which]
    write_bytes_atomic(files.join(root, "shards", "b.tar"), b"bee")
    write_bytes_atomic(files.join(root, "shards", "a.tar"), b"a")
    write_bytes_atomic(files.join(root, "summary.json"), b"{}")
    assert files.read_bytes(files.join(root, "shards", "b.tar")) == b"bee"
    assert files.read_bytes_or_none(files.join(root, "nope")) is None
    with pytest.raises(FileNotFoundError):
        files.read_bytes(files.join(root, "nope"))
    assert files.listdir(root) == ["shards", "summary.json"]
    assert files.listdir(files.join(root, "missing")) == []
    assert files.glob(files.join(root, "shards", "*.tar")) == [files.join(root, "shards", n) for n in ("a.tar", "b.tar")]
    assert files.size(files.join(root, "shards", "b.tar")) == 3 and files.exists(files.join(root, "summary.json"))
    assert files.isdir(files.join(root, "shards"))
    with files.open_read(files.join(root, "shards", "b.tar")) as handle:
        assert handle.read() == b"bee"
    files.rmtree(files.join(root, "shards"))
    assert files.listdir(root) == ["summary.json"] and not files.exists(files.join(root, "shards", "a.tar"))
    files.remove(files.join(root, "summary.json"))
    files.remove(files.join(root, "summary.json"))  # gone already: no error
    assert files.listdir(root) == []


def test_a_failed_remote_write_leaves_no_object(roots):
    _, remote = roots
    target = files.join(remote, "shards", "x.tar")
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with open_atomic(target) as handle:
            handle.write(b"partial")
            raise RuntimeError("writer died")
    assert files.read_bytes(target) == b"old"
    assert [p.lstrip("/") for p in fsspec.filesystem("memory").find(remote.split("://", 1)[1])] == [target.split("://", 1)[1]]


def test_local_copy_of_a_remote_file_is_bounded_and_removed(roots):
    _, remote = roots
    path = files.join(remote, "v.mp4")
    write_bytes_atomic(path, b"x" * 5000)
    with files.local_copy(path, max_bytes=5000) as copy:
        assert not files.is_uri(copy) and open(copy, "rb").read() == b"x" * 5000
    assert not os.path.exists(copy)
    with pytest.raises(files.TooLarge, match="decode.max_bytes"):
        with files.local_copy(path, max_bytes=4999):
            pass
    with pytest.raises(FileNotFoundError):
        with files.local_copy(files.join(remote, "gone.mp4")):
            pass
    with files.local_copy("/some/local/file.mp4") as same:  # a local path is read in place
        assert same == "/some/local/file.mp4"


def test_media_input_classes_remote_failures(roots):
    from curation.errors import InputError
    from pipeline.media.failures import media_input

    _, remote = roots
    path = files.join(remote, "v.mp4")
    write_bytes_atomic(path, b"x" * 100)
    with pytest.raises(InputError) as too_large:
        with media_input(path, max_bytes=10):
            pass
    assert too_large.value.error_class == "too_large" and path in too_large.value.message
    with pytest.raises(InputError) as missing:
        with media_input(files.join(remote, "gone.mp4")):
            pass
    assert missing.value.error_class == "missing_file"
    with pytest.raises(InputError) as inside:  # an error about the copy names the remote file
        with media_input(path) as copy:
            raise InputError("decode_error", f"cannot decode {copy}: no video stream")
    assert inside.value.message == f"cannot decode {path}: no video stream"
