"""A decode in a child process (``python -m pipeline.media.isolated``) with a wall-clock limit,
so a native hang or crash in a decoder fails only its video (DESIGN §1).

The child runs :func:`pipeline.media.decode.decode_into` into a raw frames file and writes the
frames' times as JSON last (its presence says the frames are complete), or its ``InputError`` as
JSON with exit status :data:`_EXIT_INPUT_ERROR`. The parent reads the frames back in chunks
(:class:`IsolatedDecode`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from curation.errors import InputError
from pipeline.media.decode import BACKENDS, DecodedFrames, FileSink, check_backend, decode_into
from pipeline.media.failures import check_file, decode_error
from pipeline.storage import files

#: This module, as the child's ``python -m`` argument.
CHILD_MODULE = "pipeline.media.isolated"
#: Exit status of the child when it wrote a structured :class:`InputError` to its error file.
_EXIT_INPUT_ERROR = 3


class IsolatedDecode:
    """A video decoded by the child (:func:`decode_isolated`): ``pts_s (N,)``, ``duration_s``,
    ``sample_fps``, ``size``, ``n_frames`` and ``notes`` (:attr:`~pipeline.media.decode.Decoded.notes`); the frames stay in the child's raw file and are read
    :meth:`in_chunks`, so the reader holds one chunk at a time. A context manager: leaving it
    removes the child's temporary directory."""

    def __init__(self, tmp: str, frames_path: str, meta: dict):
        self.tmp, self.frames_path = tmp, frames_path
        self.pts_s = np.asarray(meta["pts_s"], np.float64)
        self.duration_s, self.sample_fps = float(meta["duration_s"]), float(meta["sample_fps"])
        self.size, self.n_frames = int(meta["size"]), int(meta["n_frames"])
        self.notes = tuple((str(c), str(m)) for c, m in meta.get("notes", ()))

    def __enter__(self) -> "IsolatedDecode":
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def in_chunks(self, chunk_frames: int):
        """Yield ``(n <= chunk_frames, size, size, 3)`` uint8 arrays, in sample order."""
        frame_bytes = self.size * self.size * 3
        with open(self.frames_path, "rb") as handle:
            for lo in range(0, self.n_frames, chunk_frames):
                n = min(chunk_frames, self.n_frames - lo)
                data = handle.read(n * frame_bytes)
                if len(data) != n * frame_bytes:
                    raise OSError(f"decoded frames file {self.frames_path} is short")
                yield np.frombuffer(bytearray(data), np.uint8).reshape(n, self.size, self.size, 3)

    def decoded(self) -> DecodedFrames:
        """Every frame at once."""
        frames = np.concatenate(list(self.in_chunks(max(1, self.n_frames))))
        return DecodedFrames(frames=frames, pts_s=self.pts_s, duration_s=self.duration_s, sample_fps=self.sample_fps,
                             notes=self.notes)


def decode_isolated(path: str, sample_fps: float, size: int, backend: str, timeout_s: float,
                    threads: int = 0, max_bytes: int | None = None, deinterlace: bool = True,
                    exact: bool = True) -> IsolatedDecode:
    """:func:`~pipeline.media.decode.decode_into` in a child process (``python -m
    pipeline.media.isolated``) killed after ``timeout_s`` seconds of wall clock; returns an
    :class:`IsolatedDecode` whose frames are read from the child's file (use it in a ``with``:
    leaving it removes the file). On an error the temporary directory is removed here.

    Raises ``InputError('timeout')`` when the limit is hit; the child's own ``InputError`` with
    its class and message; ``InputError('decode_error')`` when the child dies from a signal or
    exits non-zero without one. A remote ``path`` (a URI) is copied to local disk by the child
    (at most ``max_bytes``), so the transfer counts against ``timeout_s`` too. With decord, a
    child that hangs is killed at half of ``timeout_s`` and PyAV decodes the file in the rest
    (decord hangs on some files PyAV reads, MPEG-TS among them), noted as ``backend_fallback``.
    """
    check_backend(backend)
    if not files.is_uri(path):
        check_file(files.local(path))
    child = (sample_fps, size, threads, max_bytes, deinterlace, exact)
    if backend != "decord":
        return _decode_in_child(path, backend, timeout_s, *child)
    started = time.monotonic()
    try:
        return _decode_in_child(path, backend, timeout_s / 2, *child)
    except InputError as exc:
        if exc.error_class != "timeout":
            raise
    left = timeout_s - (time.monotonic() - started)
    try:
        result = _decode_in_child(path, "pyav", left, *child)
        result.notes = (("backend_fallback", f"decord did not finish {path} in {timeout_s / 2:g} s "
                                             "(half of decode_timeout_s); PyAV decoded it"), *result.notes)
        return result
    except InputError as exc:
        if exc.error_class != "timeout":
            raise
        raise InputError("timeout", f"decoding {path} exceeded decode_timeout_s={timeout_s} "
                                    f"(decord for {timeout_s / 2:g} s, then PyAV)") from None


def _decode_in_child(path: str, backend: str, timeout_s: float, sample_fps: float, size: int, threads: int,
                     max_bytes: int | None, deinterlace: bool, exact: bool) -> IsolatedDecode:
    """One child process decoding ``path`` with ``backend`` (see :func:`decode_isolated`)."""
    tmp = tempfile.mkdtemp(prefix="nccurate-decode-")
    out, err, log = (os.path.join(tmp, name) for name in ("frames", "error.json", "stderr.txt"))
    cmd = [sys.executable, "-m", CHILD_MODULE, path, "--sample-fps", repr(float(sample_fps)),
           "--size", str(int(size)), "--backend", backend, "--threads", str(int(threads)), "--out", out, "--error", err]
    if max_bytes is not None:
        cmd += ["--max-bytes", str(int(max_bytes))]
    if not deinterlace:
        cmd += ["--no-deinterlace"]
    if not exact:
        cmd += ["--approximate"]
    try:
        with open(log, "wb") as stderr:
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                      env=child_env(), timeout=timeout_s, check=False)
            except subprocess.TimeoutExpired:  # run() has killed and reaped the child
                raise InputError("timeout", f"decoding {path} exceeded decode_timeout_s={timeout_s}") from None
        return _read_child_result(path, proc.returncode, tmp, out, err, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def decode_frames_isolated(path: str, sample_fps: float, size: int, backend: str, timeout_s: float) -> DecodedFrames:
    """:func:`decode_isolated`, every frame read at once."""
    with decode_isolated(path, sample_fps, size, backend, timeout_s) as result:
        return result.decoded()


def child_env() -> dict[str, str]:
    """The environment with this package's root first on PYTHONPATH, so a child
    ``python -m pipeline.<module>`` imports this very code whatever the working directory."""
    import pipeline

    root = os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _read_child_result(path: str, returncode: int, tmp: str, out: str, err: str, log: str) -> IsolatedDecode:
    if returncode == 0 and os.path.exists(out + ".json"):
        with open(out + ".json", encoding="utf-8") as handle:
            return IsolatedDecode(tmp, out + ".u8", json.load(handle))
    raise child_failure(path, returncode, err, log, "decoder")


def write_child_error(err: str, exc: InputError) -> int:
    """A child's ``exc`` as the JSON its parent reads (:func:`child_failure`); the exit status to return."""
    with open(err, "w", encoding="utf-8") as handle:
        json.dump({"error_class": exc.error_class, "message": exc.message}, handle)
    return _EXIT_INPUT_ERROR


def child_failure(path: str, returncode: int, err: str, log: str, what: str) -> InputError:
    """The InputError of a child (``what``: the decoder, ...) that did not succeed: the one it wrote
    (:func:`write_child_error`), else ``decode_error`` naming the signal it died from or its exit
    status and last stderr line."""
    if returncode == _EXIT_INPUT_ERROR and os.path.exists(err):
        with open(err, encoding="utf-8") as handle:
            payload = json.load(handle)
        return InputError(payload["error_class"], payload["message"])
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return decode_error(path, f"the {what} process died from {name}")
    return decode_error(path, f"the {what} process exited with status {returncode}: {_last_line(log)}")


def _last_line(log: str) -> str:
    """The last non-empty line of the child's stderr (at most 300 characters)."""
    with open(log, "rb") as handle:
        handle.seek(max(0, os.path.getsize(log) - 4096))
        lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _main(argv: list[str] | None = None) -> int:
    """Child entry point: decode one file to raw frames + a JSON of their times, or write its
    InputError to a JSON file."""
    parser = argparse.ArgumentParser(prog=f"python -m {CHILD_MODULE}", description=_main.__doc__)
    parser.add_argument("path")
    parser.add_argument("--sample-fps", type=float, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--threads", type=int, default=0, help="decoder threads (0: one per core)")
    parser.add_argument("--out", required=True, help="OUT.u8 (raw frames) and OUT.json (their times) are written")
    parser.add_argument("--error", required=True, help="where an InputError is written as JSON")
    parser.add_argument("--max-bytes", type=int, default=None, help="most bytes a remote video's local copy may take")
    parser.add_argument("--no-deinterlace", action="store_true", help="leave interlaced frames as they are")
    parser.add_argument("--approximate", action="store_true", help="decode.exact: false (PyAV: reference frames only)")
    args = parser.parse_args(argv)
    try:
        with open(args.out + ".u8", "wb") as handle:
            sink = FileSink(handle)
            decoded = decode_into(args.path, args.sample_fps, args.size, args.backend, sink, args.threads,
                                  args.max_bytes, not args.no_deinterlace, not args.approximate)
    except InputError as exc:
        return write_child_error(args.error, exc)
    meta = {"pts_s": decoded.pts_s.tolist(), "duration_s": decoded.duration_s, "sample_fps": args.sample_fps,
            "size": args.size, "n_frames": sink.count, "notes": [list(note) for note in decoded.notes]}
    with open(args.out + ".json.part", "w", encoding="utf-8") as handle:
        json.dump(meta, handle)  # floats round-trip exactly through JSON
    os.replace(args.out + ".json.part", args.out + ".json")  # written last: it says the frames are complete
    return 0


if __name__ == "__main__":
    sys.exit(_main())
