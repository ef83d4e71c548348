"""HTTP GETs for the importer: one place that sends our headers and turns failures into errors.

Contract of :func:`get`:

* Uses the caller's :class:`httpx.Client` (so its proxies, ``trust_env``, timeouts and TLS
  settings apply), follows redirects, and sends ``User-Agent: mlpkg/<version>`` plus the
  given headers. ``Accept-Encoding: identity`` is always sent, so byte ranges and hashes
  refer to the bytes as stored.
* Transient failures (connect/read errors and timeouts, HTTP 5xx, 408, 429) are retried up to
  ``retries`` times with a short backoff. Then, and for every other transport error, a
  :class:`~mlpkg.errors.FetchError` naming the URL is raised.
* The statuses listed in ``accept`` are returned to the caller (with the body read);
  any other status raises :class:`~mlpkg.errors.FetchError` naming the URL and the status.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import httpx

from mlpkg import __version__
from mlpkg.errors import FetchError

USER_AGENT = f"mlpkg/{__version__}"
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def get(
    client: httpx.Client,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    accept: Collection[int] = (200,),
    retries: int = 2,
    backoff: float = 0.2,
) -> httpx.Response:
    """GET ``url`` (body read); return the response if its status is in ``accept``."""
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    attempt = 0
    while True:
        problem: str
        try:
            resp = client.get(url, headers=sent, follow_redirects=True)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            raise FetchError(f"Could not fetch {url}: {_describe(exc)}.") from exc
        except httpx.HTTPError as exc:
            problem = _describe(exc)
            if attempt >= retries or not isinstance(exc, httpx.TransportError):
                raise FetchError(
                    f"Could not fetch {url}: {problem}.",
                    hint="Check the index URL and the network (HTTP(S)_PROXY).",
                ) from exc
        else:
            if resp.status_code in accept:
                return resp
            problem = f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip()
            if attempt >= retries or resp.status_code not in _TRANSIENT:
                raise FetchError(f"Could not fetch {url}: the server answered {problem}.")
        time.sleep(backoff * 2**attempt)
        attempt += 1
