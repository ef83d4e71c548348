"""mlpkg.store.http: the one HTTP policy (User-Agent, retries, backoff, failure names)."""

from __future__ import annotations

import httpx

import mlpkg
from mlpkg.store import http


def test_retry_policy() -> None:
    assert [s for s in range(100, 600) if http.retryable(s)] == [408, 425, 429, 500, 502, 503, 504]
    assert http.retryable_error(httpx.ConnectError("refused"))
    assert http.retryable_error(httpx.ReadTimeout("slow"))
    assert http.retryable_error(httpx.RemoteProtocolError("dropped"))
    assert not http.retryable_error(httpx.UnsupportedProtocol("ftp"))
    assert not http.retryable_error(httpx.LocalProtocolError("bad header"))
    assert not http.retryable_error(httpx.InvalidURL("bad"))
    assert not http.retryable_error(httpx.TooManyRedirects("loop"))
    assert [http.backoff_delay(0.25, n) for n in range(4)] == [0.25, 0.5, 1.0, 2.0]


def test_names_and_headers() -> None:
    assert http.describe(httpx.ConnectError(" refused ")) == "ConnectError: refused"
    assert http.describe(httpx.ReadTimeout("")) == "ReadTimeout"
    assert f"mlpkg/{mlpkg.__version__}" == http.USER_AGENT
    assert http.request_headers({"Range": "bytes=1-"}) == {
        "User-Agent": http.USER_AGENT,
        "Accept-Encoding": "identity",
        "Range": "bytes=1-",
    }
    with http.new_client(7) as client:
        assert client.headers["user-agent"] == http.USER_AGENT
        assert client.follow_redirects and client.timeout == httpx.Timeout(7)
