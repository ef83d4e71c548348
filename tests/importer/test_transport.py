"""The importer's GETs follow mlpkg.store.http: its User-Agent and its retry policy."""

from __future__ import annotations

import httpx
import pytest

import mlpkg
from mlpkg.errors import FetchError
from mlpkg.importer.transport import get

URL = "http://index.test/simple/demo/"


def client(answers: list[int | Exception], seen: list[httpx.Request]) -> httpx.Client:
    """A client whose n-th request gets ``answers[n]`` (a status, or an exception raised)."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, content=b"body")

    return httpx.Client(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retried_statuses(status: int) -> None:
    seen: list[httpx.Request] = []
    with client([status, 200], seen) as c:
        assert get(c, URL, backoff=0).content == b"body"
    assert len(seen) == 2
    assert {r.headers["user-agent"] for r in seen} == {f"mlpkg/{mlpkg.__version__}"}
    assert {r.headers["accept-encoding"] for r in seen} == {"identity"}


@pytest.mark.parametrize("status", [400, 403, 404, 501, 505, 507])
def test_final_statuses(status: int) -> None:
    seen: list[httpx.Request] = []
    with client([status, 200], seen) as c, pytest.raises(FetchError) as info:
        get(c, URL, backoff=0)
    assert len(seen) == 1
    assert f"the server answered HTTP {status}" in info.value.message and URL in info.value.message


def test_connection_errors_are_retried_then_reported() -> None:
    seen: list[httpx.Request] = []
    with client([httpx.ConnectError("refused")], seen) as c, pytest.raises(FetchError) as info:
        get(c, URL, retries=2, backoff=0)
    assert len(seen) == 3
    assert info.value.message == f"Could not fetch {URL}: ConnectError: refused."


def test_request_errors_are_not_retried() -> None:
    seen: list[httpx.Request] = []
    with client([httpx.UnsupportedProtocol("no")], seen) as c, pytest.raises(FetchError):
        get(c, URL, retries=2, backoff=0)
    assert len(seen) == 1


def test_accepted_statuses_are_returned() -> None:
    seen: list[httpx.Request] = []
    with client([404], seen) as c:
        assert get(c, URL, accept=(200, 404)).status_code == 404
    assert len(seen) == 1
