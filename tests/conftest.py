"""Shared pytest fixtures for the mlpkg test suite.

Tests run with ``--import-mode=importlib``, so helpers shared between test files live here
as fixtures rather than in importable modules. Add new fixtures below, each with a docstring.

``http_server``: a threaded HTTP/1.1 server on 127.0.0.1 whose routes are configured per
test (see :class:`Route`), and which records every request it receives::

    def test_x(http_server):
        http_server.route("/a.tar", body=b"...", fail_first=2)
        url = http_server.url("/a.tar")
        ...
        assert http_server.requests_for("/a.tar")[-1].headers.get("range") == "bytes=10-"
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Route:
    """How the server answers GET requests for one path.

    ``body``: the bytes served. ``status``: sent instead of the body when not 200.
    ``ranges``: honour ``Range: bytes=N-`` (206/416), else always answer 200 with everything.
    ``fail_first``: answer the first N requests with ``fail_status`` (503).
    ``drop_after``/``drop_times``: for the first ``drop_times`` body responses, send only
    ``drop_after`` bytes of the body (with the full Content-Length), then close the socket.
    ``redirect``: answer 302 to this location.
    """

    body: bytes = b""
    status: int = 200
    ranges: bool = True
    fail_first: int = 0
    fail_status: int = 503
    drop_after: int | None = None
    drop_times: int = 1
    redirect: str | None = None
    hits: int = 0
    drops: int = 0


@dataclass
class Request:
    """One request the server received; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """The ``http_server`` fixture's object: routes, recorded requests and URLs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def route(self, path: str, **options: object) -> Route:
        """Configure (or replace) the route for ``path``; see :class:`Route` for options."""
        r = Route(**options)  # type: ignore[arg-type]
        self.routes[path] = r
        return r

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests_for(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _make_handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with server.lock:
                server.requests.append(Request("GET", self.path, headers))
                route = server.routes.get(self.path)
                if route is not None:
                    route.hits += 1
            if route is None:
                return self._plain(404, b"not found")
            if route.hits <= route.fail_first:
                return self._plain(route.fail_status, b"try later")
            if route.redirect is not None:
                self.send_response(302)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if route.status != 200:
                return self._plain(route.status, b"no")
            self._body(route, headers.get("range"))
            return None

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def _body(self, route: Route, range_header: str | None) -> None:
            body, size = route.body, len(route.body)
            m = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if route.ranges and m is not None:
                start = int(m.group(1))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                body = body[start:]
            else:
                self.send_response(200)
            if route.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if route.drop_after is not None and route.drops < route.drop_times:
                route.drops += 1
                self.wfile.write(body[: route.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    """A loopback HTTP server with per-test routes (see :class:`LoopbackServer`)."""
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()
