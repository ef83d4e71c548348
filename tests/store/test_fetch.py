"""Tests of mlpkg.store.fetch against loopback HTTP servers and local files (no network)."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

import mlpkg
from mlpkg.errors import FetchError
from mlpkg.store.fetch import Expected, Fetched, fetch

if TYPE_CHECKING:  # conftest is not importable under --import-mode=importlib
    from tests.conftest import LoopbackServer

BODY = bytes(range(256)) * 1024  # 256 KiB, several chunks
HALF = len(BODY) // 2
SHA = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()
WRONG = b"not the package" * 1000
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy configured on the test machine from routing loopback traffic."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def get(urls: list[str], tmp_path: Path, expected: Expected | None = None, **kw: object) -> Fetched:
    kw.setdefault("backoff", 0.001)
    return fetch(
        urls,
        tmp_path / "out",
        expected or Expected(sha256=SHA),
        partial=tmp_path / "out.partial",
        label="demo-1.0.tar",
        **kw,  # type: ignore[arg-type]
    )


def check_ok(result: Fetched, tmp_path: Path, url: str) -> None:
    assert result == Fetched(tmp_path / "out", url, len(BODY), SHA, MD5)
    assert (tmp_path / "out").read_bytes() == BODY
    assert not (tmp_path / "out.partial").exists()


def test_good_download(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    (req,) = http_server.requests_for("/a")
    assert req.headers["user-agent"] == f"mlpkg/{mlpkg.__version__}"
    assert "range" not in req.headers


def test_caller_client(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY, drop_after=HALF)
    with httpx.Client(trust_env=False) as client:
        check_ok(
            get([http_server.url("/a")], tmp_path, client=client), tmp_path, http_server.url("/a")
        )
    first, second = http_server.requests_for("/a")
    assert first.headers["user-agent"] == f"mlpkg/{mlpkg.__version__}"
    assert second.headers["range"] == f"bytes={HALF}-"


def test_md5_only_and_both(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    url = http_server.url("/a")
    check_ok(get([url], tmp_path, Expected(md5=MD5.upper())), tmp_path, url)
    (tmp_path / "out").unlink()
    check_ok(get([url], tmp_path, Expected(sha256=SHA, md5=MD5)), tmp_path, url)
    (tmp_path / "out").unlink()
    with pytest.raises(FetchError, match=f"md5: expected {'0' * 32}, got {MD5}"):
        get([url], tmp_path, Expected(sha256=SHA, md5="0" * 32))


def test_expected_needs_a_hash() -> None:
    with pytest.raises(ValueError):
        Expected()
    with pytest.raises(ValueError):
        Expected(sha256="abc")


def test_file_url_and_resume(tmp_path: Path) -> None:
    src = tmp_path / "src file.bin"
    src.write_bytes(BODY)
    url = src.as_uri()
    check_ok(get([url], tmp_path), tmp_path, url)
    (tmp_path / "out").unlink()
    (tmp_path / "out.partial").write_bytes(BODY[:HALF])
    check_ok(get([url], tmp_path), tmp_path, url)


def test_dead_mirrors_then_good(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/good", body=BODY)
    with socket.socket() as refused:  # bound but not listening: connections are refused
        refused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{refused.getsockname()[1]}/x"
        urls = [
            dead,
            http_server.url("/missing"),
            "ftp://example.invalid/x",
            http_server.url("/good"),
        ]
        check_ok(get(urls, tmp_path, retries=2), tmp_path, http_server.url("/good"))
    assert len(http_server.requests_for("/missing")) == 1  # 404 is not retried


def test_every_mirror_fails_lists_each(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/gone", status=404)
    with pytest.raises(FetchError) as info:
        get([http_server.url("/gone"), "gopher://x/y"], tmp_path)
    err = info.value
    assert "demo-1.0.tar" in err.message and "sha256" not in err.message
    assert err.details[0].startswith(http_server.url("/gone") + ": HTTP 404")
    assert err.details[1].startswith("gopher://x/y: unsupported URL scheme")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_mismatch_everywhere(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=WRONG)
    http_server.route("/b", body=WRONG[1:])
    urls = [http_server.url("/a"), http_server.url("/b")]
    with pytest.raises(FetchError) as info:
        get(urls, tmp_path)
    err = info.value
    got = hashlib.sha256(WRONG).hexdigest()
    assert "demo-1.0.tar" in err.message and SHA in err.message and got in err.message
    assert err.details == [
        f"{urls[0]}: served sha256 {got}, expected {SHA}",
        f"{urls[1]}: served sha256 {hashlib.sha256(WRONG[1:]).hexdigest()}, expected {SHA}",
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_mismatch_then_good_mirror(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/bad", body=WRONG)
    http_server.route("/good", body=BODY)
    urls = [http_server.url("/bad"), http_server.url("/good")]
    check_ok(get(urls, tmp_path), tmp_path, urls[1])
    assert "range" not in http_server.requests_for("/good")[0].headers


def test_flaky_503_then_success(http_server: LoopbackServer, tmp_path: Path) -> None:
    route = http_server.route("/a", body=BODY, fail_first=2)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert route.hits == 3


def test_503_forever_gives_up(http_server: LoopbackServer, tmp_path: Path) -> None:
    route = http_server.route("/a", body=BODY, fail_first=100, fail_status=429)
    with pytest.raises(FetchError) as info:
        get([http_server.url("/a")], tmp_path, retries=2)
    assert route.hits == 3
    assert "HTTP 429" in info.value.details[0] and "3 attempts" in info.value.details[0]


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retried_statuses(http_server: LoopbackServer, tmp_path: Path, status: int) -> None:
    """mlpkg.store.http's retry policy: these statuses mean "not now"."""
    route = http_server.route("/a", body=BODY, fail_first=1, fail_status=status)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert route.hits == 2


@pytest.mark.parametrize("status", [400, 403, 404, 410, 501, 505, 507])
def test_final_statuses_go_to_the_next_mirror(
    http_server: LoopbackServer, tmp_path: Path, status: int
) -> None:
    """Every other status is final, 501 and 505 among them: no retry, the next mirror."""
    route = http_server.route("/a", body=BODY, fail_first=100, fail_status=status)
    http_server.route("/good", body=BODY)
    urls = [http_server.url("/a"), http_server.url("/good")]
    check_ok(get(urls, tmp_path, retries=3), tmp_path, urls[1])
    assert route.hits == 1


def test_drop_mid_body_resumes(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY, drop_after=HALF)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    first, second = http_server.requests_for("/a")
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={HALF}-"


def test_drop_without_range_support(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY, drop_after=HALF, ranges=False)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert http_server.requests_for("/a")[1].headers["range"] == f"bytes={HALF}-"


def test_transient_failure_keeps_partial(http_server: LoopbackServer, tmp_path: Path) -> None:
    route = http_server.route("/a", body=BODY, drop_after=1000, drop_times=100)
    with pytest.raises(FetchError, match=re.escape("Could not download demo-1.0.tar")):
        get([http_server.url("/a")], tmp_path, retries=1)
    assert (tmp_path / "out.partial").read_bytes() == BODY[:2000]  # two attempts, resumed
    route.drop_times = 0
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert http_server.requests_for("/a")[-1].headers["range"] == "bytes=2000-"


def test_leftover_partial_from_killed_process(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    (tmp_path / "out.partial").write_bytes(BODY[:HALF])
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    (req,) = http_server.requests_for("/a")
    assert req.headers["range"] == f"bytes={HALF}-"


def test_corrupt_leftover_partial_is_redone(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    (tmp_path / "out.partial").write_bytes(b"\0" * HALF)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    resumed, fresh = http_server.requests_for("/a")
    assert resumed.headers["range"] == f"bytes={HALF}-" and "range" not in fresh.headers


def test_complete_leftover_partial_416(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    (tmp_path / "out.partial").write_bytes(BODY)
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert len(http_server.requests_for("/a")) == 1


def test_oversized_leftover_partial_416(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    (tmp_path / "out.partial").write_bytes(BODY + b"junk")
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert [r.headers.get("range") for r in http_server.requests_for("/a")] == [
        f"bytes={len(BODY) + 4}-",
        None,
    ]


def test_redirect_followed(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/new", body=BODY)
    http_server.route("/old", redirect="/new")
    check_ok(get([http_server.url("/old")], tmp_path), tmp_path, http_server.url("/old"))
    assert len(http_server.requests_for("/new")) == 1


def test_progress_monotone(http_server: LoopbackServer, tmp_path: Path) -> None:
    http_server.route("/a", body=BODY)
    calls: list[tuple[int, int | None]] = []
    get([http_server.url("/a")], tmp_path, on_progress=lambda n, t: calls.append((n, t)))
    assert calls[-1] == (len(BODY), len(BODY))
    assert all(t == len(BODY) for _, t in calls)
    assert [n for n, _ in calls] == sorted(n for n, _ in calls)


@pytest.fixture
def proxy(http_server: LoopbackServer) -> Iterator[tuple[str, list[str]]]:
    """A forward proxy on loopback that sends every request to ``http_server``.

    Yields its URL and the request lines it received.
    """
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.requestline)
            upstream = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
            keep = {k: v for k, v in self.headers.items() if k.lower() in ("range", "user-agent")}
            upstream.request("GET", urlsplit(self.path).path, headers=keep)
            resp = upstream.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for name in ("Content-Range", "Location"):
                if resp.getheader(name):
                    self.send_header(name, resp.getheader(name, ""))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_http_proxy_from_env(
    http_server: LoopbackServer,
    proxy: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_url, seen = proxy
    http_server.route("/pkg.tar", body=BODY)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    # mirror.invalid cannot resolve (RFC 2606), so only the proxy can serve this URL.
    url = "http://mirror.invalid/pkg.tar"
    check_ok(get([url], tmp_path, retries=0), tmp_path, url)
    assert seen == [f"GET {url} HTTP/1.1"]


def test_no_proxy_from_env(
    http_server: LoopbackServer,
    proxy: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy_url, seen = proxy
    http_server.route("/a", body=BODY)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    check_ok(get([http_server.url("/a")], tmp_path), tmp_path, http_server.url("/a"))
    assert seen == [] and len(http_server.requests_for("/a")) == 1
