"""Bounded retries of transient IO errors (a flaky NFS mount, an object store timing out).

Transient: ``TimeoutError``, ``ConnectionError`` and ``OSError`` with an errno in
:data:`TRANSIENT_ERRNOS` (EIO, EAGAIN, EINTR, EBUSY, ESTALE, ETIMEDOUT, connection resets ...);
from object-store clients, an error carrying an HTTP status of 408, 429 or 5xx (gcsfs'
``HttpError.code``, aiohttp's ``status``) or one of the HTTP clients' connection errors
(:data:`TRANSIENT_CLIENT_ERRORS`, matched by class name so no client library is imported).
Everything else, a missing file or a denied permission above all, is permanent and raised at
once. The waits are deterministic: ``backoff_s * 2**k`` before retry ``k + 1``.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")

TRANSIENT_ERRNOS = frozenset({
    errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ESTALE, errno.ETIMEDOUT, errno.ECONNRESET,
    errno.ECONNABORTED, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
})


#: HTTP statuses worth another try: request timeout, too many requests, server errors.
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
#: Connection-level errors of aiohttp (gcsfs), botocore/urllib3 (s3fs) and requests.
TRANSIENT_CLIENT_ERRORS = frozenset({
    "ServerDisconnectedError", "ClientConnectionError", "ClientOSError", "ClientPayloadError",
    "ServerTimeoutError", "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError", "ProtocolError",
    "ChunkedEncodingError",
})


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts``: tries of one read in all (1 = no retry); ``backoff_s``: the first wait."""

    attempts: int = 3
    backoff_s: float = 0.5


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another try (see the module docstring)."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    status = getattr(exc, "code", None) or getattr(exc, "status", None)
    if isinstance(status, int) and status in TRANSIENT_HTTP:
        return True
    return any(cls.__name__ in TRANSIENT_CLIENT_ERRORS for cls in type(exc).__mro__)


class RetriesExhausted(OSError):
    """The last transient error, after ``attempts`` tries."""

    def __init__(self, attempts: int, last: BaseException):
        super().__init__(getattr(last, "errno", None), f"{last.__class__.__name__}: {last} (after {attempts} attempts)")
        self.attempts, self.last = attempts, last


def with_retries(read: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """``read()``, retried on transient errors up to ``policy.attempts`` tries in all; permanent
    errors propagate at once; the last transient one becomes :class:`RetriesExhausted`."""
    for attempt in range(policy.attempts):
        try:
            return read()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt + 1 == policy.attempts:
                raise RetriesExhausted(policy.attempts, exc) from exc
            sleep(policy.backoff_s * 2 ** attempt)
    raise ValueError(f"RetryPolicy.attempts must be >= 1, got {policy.attempts}")
