"""HTTP GETs for the importer: one place that sends our headers and turns failures into errors.

Contract of :func:`get`:

* Uses the caller's :class:`httpx.Client` (so its proxies, ``trust_env``, timeouts and TLS
  settings apply), follows redirects, and sends ``User-Agent: mlpkg/<version>`` plus the
  given headers. ``Accept-Encoding: identity`` is always sent, so byte ranges and hashes
  refer to the bytes as stored.
* Transient failures (:mod:`mlpkg.store.http`'s retry policy, the one downloads follow:
  connect/read errors and timeouts, HTTP 408, 425, 429, 500, 502, 503, 504) are retried up
  to ``retries`` times with a short backoff. Then, and for every other transport error, a
  :class:`~mlpkg.errors.FetchError` naming the URL is raised.
* The statuses listed in ``accept`` are returned to the caller (with the body read);
  any other status raises :class:`~mlpkg.errors.FetchError` naming the URL and the status.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping

import httpx

from mlpkg.errors import FetchError
from mlpkg.store import http


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
    sent = http.request_headers(headers)
    attempt = 0
    while True:
        problem: str
        try:
            resp = client.get(url, headers=sent, follow_redirects=True)
        except http.REQUEST_ERRORS as exc:
            raise FetchError(f"Could not fetch {url}: {http.describe(exc)}.") from exc
        except httpx.HTTPError as exc:
            problem = http.describe(exc)
            if attempt >= retries or not http.retryable_error(exc):
                raise FetchError(
                    f"Could not fetch {url}: {problem}.",
                    hint="Check the index URL and the network (HTTP(S)_PROXY).",
                ) from exc
        else:
            if resp.status_code in accept:
                return resp
            problem = f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip()
            if attempt >= retries or not http.retryable(resp.status_code):
                raise FetchError(f"Could not fetch {url}: the server answered {problem}.")
        time.sleep(http.backoff_delay(backoff, attempt))
        attempt += 1
