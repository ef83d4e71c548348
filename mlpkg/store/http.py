"""How mlpkg talks HTTP: one User-Agent, one retry policy, one way to name a failure.

Every request mlpkg makes goes through here: the store's downloads (:mod:`mlpkg.store.fetch`)
and the importer's package-index and metadata requests (:mod:`mlpkg.importer.transport`).

* Clients (:func:`new_client`) honour ``HTTP(S)_PROXY``/``NO_PROXY`` (``trust_env``),
  follow redirects and send ``User-Agent: mlpkg/<version>`` (:data:`USER_AGENT`). Each
  request also sends ``Accept-Encoding: identity`` (:func:`request_headers`), so that byte
  ranges and hashes refer to the bytes as stored.
* Retry policy. A request is tried again (up to the caller's number of retries) when:

  - the connection failed or broke (:func:`retryable_error`: connect, read and write
    errors, timeouts, a connection dropped mid-body, a malformed answer; every
    ``httpx.TransportError`` except those that say the request itself was wrong: an
    unsupported scheme, an invalid URL, a request httpx cannot send), or
  - the server answered a status that says "not now" (:func:`retryable`,
    :data:`RETRYABLE_STATUSES`): 408 Request Timeout, 425 Too Early, 429 Too Many
    Requests, 500 Internal Server Error, 502 Bad Gateway, 503 Service Unavailable and
    504 Gateway Timeout.

  Every other status is final: other 4xx (the request is wrong), 501 Not Implemented and
  505 HTTP Version Not Supported (this server will never do it), and the rarer 5xx (506
  to 511: server configuration, storage or network authentication, which a retry does not
  fix). A download then moves on to its next mirror at once; the importer reports it.
* Backoff: the n-th retry (n = 0, 1, ...) waits ``base * 2**n`` seconds
  (:func:`backoff_delay`); each caller picks ``base`` and the number of retries.
* :func:`describe` names a failure in one clause (``"ConnectTimeout: timed out"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from mlpkg import __version__

__all__ = [
    "REQUEST_ERRORS",
    "RETRYABLE_STATUSES",
    "USER_AGENT",
    "backoff_delay",
    "describe",
    "new_client",
    "request_headers",
    "retryable",
    "retryable_error",
]

USER_AGENT = f"mlpkg/{__version__}"

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Errors that say the request itself is wrong: retrying it, or sending it elsewhere through
# the same client, cannot help. (InvalidURL is not an httpx.HTTPError.)
REQUEST_ERRORS: tuple[type[Exception], ...] = (
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    httpx.LocalProtocolError,
)


def retryable(status: int) -> bool:
    """Whether an HTTP status is worth asking again for (see the module docstring)."""
    return status in RETRYABLE_STATUSES


def retryable_error(exc: BaseException) -> bool:
    """Whether a failed request (an httpx exception) is worth trying again: the connection
    failed or broke, not the request we made."""
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, REQUEST_ERRORS)


def backoff_delay(base: float, attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0, 1, ...): ``base * 2**attempt``."""
    return base * (1 << attempt)


def describe(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, or the type alone when the message is empty."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def request_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers every request sends (User-Agent, ``Accept-Encoding: identity``), then
    ``extra``."""
    return {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(extra or {})}


def new_client(timeout: float) -> httpx.Client:
    """An HTTP client as mlpkg uses one: environment proxies, redirects followed, our
    User-Agent, ``timeout`` seconds per operation."""
    return httpx.Client(
        trust_env=True,
        follow_redirects=True,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
    )
