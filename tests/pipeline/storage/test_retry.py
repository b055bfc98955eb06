"""Transient IO errors are retried a bounded number of times; permanent ones are not
(``pipeline.storage.retry``, used by ``pipeline.inputs.read_bytes`` for captions and features)."""

from __future__ import annotations

import builtins
import errno
import json
import os

import pytest

import pipeline.storage.files
from curation.errors import InputError
from pipeline.inputs.arrays import read_bytes
from pipeline.storage.retry import (
    RetriesExhausted,
    RetryPolicy,
    is_transient,
    with_retries,
)
from pipeline.synth.feature_corpus import write_corpus
from tests import helpers


class Flaky:
    """A callable that raises ``errors`` in turn, then returns ``value``; counts its calls."""

    def __init__(self, errors, value="ok"):
        self.errors, self.value, self.calls = list(errors), value, 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class HttpError(Exception):
    """Shaped like gcsfs' HttpError: an HTTP status in ``code``."""

    def __init__(self, code: int):
        super().__init__(f"HTTP {code}")
        self.code = code


class ServerDisconnectedError(Exception):
    """Named like aiohttp's (matched by class name, aiohttp is not imported)."""


class ReadTimeoutError(ServerDisconnectedError.__base__):
    pass


@pytest.mark.parametrize("exc, transient", [
    (_os_error(errno.EIO), True), (_os_error(errno.ESTALE), True), (_os_error(errno.EAGAIN), True),
    (TimeoutError("read timed out"), True), (ConnectionResetError(errno.ECONNRESET, "reset"), True),
    (FileNotFoundError(errno.ENOENT, "gone"), False), (PermissionError(errno.EACCES, "denied"), False),
    (IsADirectoryError(errno.EISDIR, "dir"), False), (_os_error(errno.ENOSPC), False), (ValueError("x"), False),
    (HttpError(503), True), (HttpError(429), True), (HttpError(500), True), (HttpError(404), False),
    (HttpError(403), False), (ServerDisconnectedError(), True), (ReadTimeoutError(), True),
])
def test_transient_classification(exc, transient):
    assert is_transient(exc) is transient


def test_transient_errors_are_retried_with_doubling_waits():
    waits = []
    read = Flaky([_os_error(errno.EIO), TimeoutError("slow")])
    assert with_retries(read, RetryPolicy(attempts=3, backoff_s=0.5), sleep=waits.append) == "ok"
    assert read.calls == 3 and waits == [0.5, 1.0]


def test_permanent_errors_are_not_retried():
    waits = []
    read = Flaky([PermissionError(errno.EACCES, "denied")])
    with pytest.raises(PermissionError):
        with_retries(read, RetryPolicy(attempts=5), sleep=waits.append)
    assert read.calls == 1 and waits == []


def test_retries_are_bounded():
    waits = []
    read = Flaky([_os_error(errno.EIO)] * 10)
    with pytest.raises(RetriesExhausted, match="after 4 attempts") as info:
        with_retries(read, RetryPolicy(attempts=4, backoff_s=0.1), sleep=waits.append)
    assert read.calls == 4 and len(waits) == 3
    assert info.value.errno == errno.EIO


def test_one_attempt_means_no_retry():
    read = Flaky([_os_error(errno.EIO)])
    with pytest.raises(RetriesExhausted):
        with_retries(read, RetryPolicy(attempts=1), sleep=lambda _s: None)
    assert read.calls == 1


def _flaky_open(faults: dict[str, list[BaseException]], calls: dict[str, int]):
    """An ``open`` that raises the queued errors of a file (by basename) before opening it."""
    def fake_open(path, *args, **kwargs):
        name = os.path.basename(str(path))
        calls[name] = calls.get(name, 0) + 1
        if faults.get(name):
            raise faults[name].pop(0)
        return builtins.open(path, *args, **kwargs)
    return fake_open


def test_read_bytes_retries_then_reads(tmp_path, monkeypatch):
    path = tmp_path / "caps.json"
    path.write_bytes(b"{}")
    calls = {}
    monkeypatch.setattr(pipeline.storage.files, "open", _flaky_open({"caps.json": [_os_error(errno.EIO)]}, calls), raising=False)
    assert read_bytes(str(path), "captions", RetryPolicy(attempts=2, backoff_s=0.0)) == b"{}"
    assert calls["caps.json"] == 2


def test_read_bytes_exhausted_is_an_unreadable_file_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "caps.json"
    path.write_bytes(b"{}")
    monkeypatch.setattr(pipeline.storage.files, "open", _flaky_open({"caps.json": [_os_error(errno.EIO)] * 3}, {}), raising=False)
    with pytest.raises(InputError, match=r"unreadable_file: captions file .*caps.json.*after 3 attempts"):
        read_bytes(str(path), "captions", RetryPolicy(attempts=3, backoff_s=0.0))


def test_pipeline_retries_flaky_reads_and_fails_only_the_hopeless(tmp_path, monkeypatch):
    """Three videos: captions that fail twice with EIO then read (ok), captions that always
    fail with EIO (unreadable_file after 3 attempts), features denied (unreadable_file, 1 try)."""
    corpus = helpers.small_corpus(4, 11)
    manifest, _ = write_corpus(str(tmp_path / "in"), corpus, caption_format="json")
    ids = [v.video_id for v in corpus]
    faults = {f"{ids[0]}.json": [_os_error(errno.EIO)] * 2,
              f"{ids[1]}.json": [_os_error(errno.EIO)] * 99,
              f"{ids[2]}.features.npy": [PermissionError(errno.EACCES, "Permission denied")] * 99}
    calls = {}
    monkeypatch.setattr(pipeline.storage.files, "open", _flaky_open(faults, calls), raising=False)
    out = helpers.run_pipeline(manifest, str(tmp_path / "out"), ["io.backoff_s=0", "max_failure_ratio=1.0"])
    assert calls[f"{ids[0]}.json"] == 3 and calls[f"{ids[1]}.json"] == 3 and calls[f"{ids[2]}.features.npy"] == 1
    failed = {(f["video_id"], f["stage"], f["error_class"]) for f in out.failures}
    assert failed == {(ids[1], "captions", "unreadable_file"), (ids[2], "features", "unreadable_file")}
    messages = {f["video_id"]: f["message"] for f in out.failures}
    assert "after 3 attempts" in messages[ids[1]] and "attempts" not in messages[ids[2]]
    assert out.summary["videos_ok"] == 2 and out.summary["videos_failed"] == 2
    assert {r["video_id"] for r in out.index} >= {ids[0], ids[3]}
    assert json.dumps(out.summary["failures"]) == json.dumps({"unreadable_file": 2})
