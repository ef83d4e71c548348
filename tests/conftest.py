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

import contextlib
import io
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.cli_support import CliResult

SLOW_REASON = "slow: a long trial, run with `python -m pytest -m slow` or MLPKG_SLOW=1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``@pytest.mark.slow`` opt-in: the long trials (the 200-trial kill campaign, the
    long fuzzing profiles, the realistic model end to end) are skipped, with the reason,
    unless the ``-m`` expression names ``slow`` or ``MLPKG_SLOW=1`` is set (as ``.ci/run``
    does). The default suite stays under ten minutes on two cores."""
    if os.environ.get("MLPKG_SLOW") == "1" or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=SLOW_REASON)
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


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


# --- CLI integration fixtures (tests/cli) -------------------------------------------------


class RecipeDir:
    """A recipe directory (``<dir>/<name>/<version>.toml``) that tests write recipes into."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, version: str, text: str) -> Path:
        """Write ``text`` (dedented) as the recipe ``name@version``; return the file."""
        file = self.path / name / f"{version}.toml"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return file

    __call__ = add


@pytest.fixture
def recipe_dir(tmp_path: Path) -> RecipeDir:
    """An empty recipe directory under ``tmp_path``; ``recipe_dir.add(name, version, toml)``
    (or ``recipe_dir(name, version, toml)``) writes a recipe into it."""
    return RecipeDir(tmp_path / "recipes")


class MlpkgCli:
    """Runs ``mlpkg`` against one private ``MLPKG_HOME`` and one recipe directory.

    ``run`` calls the CLI's entry point in this process (fast; for simple commands);
    ``sub`` and ``popen`` run ``python -m mlpkg`` as a real subprocess (for kills,
    concurrency and anything where the process's own environment matters). Every
    subprocess started with ``popen`` is killed at teardown if still running.
    """

    def __init__(self, home: Path, recipes: RecipeDir) -> None:
        self.home = home
        self.recipes = recipes
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def store(self) -> Path:
        return self.home / "store"

    def overrides(self) -> dict[str, str]:
        return {"MLPKG_HOME": str(self.home), "MLPKG_RECIPES_PATH": str(self.recipes.path)}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A full environment for a subprocess: ours, minus MLPKG_* settings, plus the
        test's home and recipe directory, plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLPKG_")}
        if "MLPKG_SANDBOX" in os.environ:
            env["MLPKG_SANDBOX"] = os.environ["MLPKG_SANDBOX"]
        env.update(self.overrides())
        env.update(extra or {})
        return env

    def run(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        """Run ``mlpkg ARGS`` in this process (with ``env`` added to ``os.environ`` for the
        call) and return what it did."""
        from mlpkg.cli import main

        env = {**self.overrides(), **(env or {})}
        code: int = 0
        with CliRunner().isolation(env=dict(env)) as (out, err, _):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
        return CliResult(code, stdout.decode(), stderr.decode(), args)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mlpkg", *args]

    def sub(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> CliResult:
        """Run ``python -m mlpkg ARGS`` as a subprocess (killed after ``timeout`` s)."""
        r = subprocess.run(
            self.argv(*args),
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(r.returncode, r.stdout, r.stderr, args)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``python -m mlpkg ARGS`` in the background (stdout/stderr piped)."""
        proc = subprocess.Popen(
            self.argv(*args),
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 60) -> CliResult:
        """Wait for a ``popen`` process and collect what it did."""
        out, err = proc.communicate(timeout=timeout)
        args = tuple(str(a) for a in proc.args[3:])  # type: ignore[index]
        return CliResult(proc.returncode, out, err, args)

    def wait_for(
        self,
        pattern: str,
        *,
        proc: subprocess.Popen[str] | None = None,
        exclude: frozenset[Path] = frozenset(),
        nonempty: bool = False,
        timeout: float = 20,
    ) -> Path:
        """Poll until something matching the glob ``pattern`` under the home exists (and,
        with ``nonempty``, is a file with data), other than ``exclude``; return it. Fails
        the test after ``timeout`` s, or as soon as ``proc`` (if given) exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in sorted(self.home.glob(pattern)):
                if p in exclude:
                    continue
                with contextlib.suppress(OSError):
                    if not nonempty or p.stat().st_size > 0:
                        return p
            if proc is not None and proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"mlpkg exited {proc.returncode} too early:\n{out}\n{err}")
            time.sleep(0.02)
        pytest.fail(f"nothing matched {pattern} under {self.home} within {timeout} s")

    def path_of(self, spec: str) -> Path:
        """The store path ``spec`` resolves to (valid or not)."""
        return Path(self.run("show", "--json", spec).ok().json()["path"])

    def valid_paths(self) -> list[str]:
        """What the store database lists as valid (read directly, not through mlpkg)."""
        db = self.home / "db.sqlite"
        if not db.exists():
            return []
        conn = sqlite3.connect(db)
        try:
            return sorted(r[0] for r in conn.execute("SELECT path FROM paths"))
        finally:
            conn.close()

    def store_entries(self) -> list[str]:
        """Every entry of ``store/`` (valid paths, and any .tmp-* or other debris)."""
        store = self.home / "store"
        return sorted(os.listdir(store)) if store.is_dir() else []

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)


@pytest.fixture
def mlpkg_cli(tmp_path: Path, recipe_dir: RecipeDir) -> Iterator[MlpkgCli]:
    """Runs the ``mlpkg`` CLI with ``MLPKG_HOME=tmp_path/home`` and ``recipe_dir`` as
    ``MLPKG_RECIPES_PATH``, in process (``run``) or as a subprocess (``sub``/``popen``)."""
    cli = MlpkgCli(tmp_path / "home", recipe_dir)
    try:
        yield cli
    finally:
        cli.close()


def make_tarball(files: dict[str, bytes | str], *, top: str = "pkg-1.0") -> bytes:
    """A gzipped tar of ``files`` (relative name → content) under the directory ``top``,
    with fixed metadata; names ending in ``*`` are made executable (the ``*`` dropped)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        d = tarfile.TarInfo(top)
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(d)
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{name.rstrip('*')}")
            info.size, info.mode, info.mtime = len(data), 0o755 if name.endswith("*") else 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def tarball() -> Any:
    """``tarball(files, top="pkg-1.0") -> bytes``: a small .tar.gz made here (see
    :func:`make_tarball`)."""
    return make_tarball


class SlowServer:
    """A loopback HTTP server that sends each body in ``chunk``-byte pieces, sleeping
    ``delay`` seconds between them (for killing a client in the middle of a download).
    Ranges are ignored (always 200, the whole body)."""

    def __init__(self) -> None:
        self.bodies: dict[str, tuple[bytes, int, float]] = {}
        self.hits: dict[str, int] = {}
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                entry = outer.bodies.get(self.path)
                if entry is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, chunk, delay = entry
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(0, len(body), chunk):
                        if outer.stopping.is_set():
                            break
                        self.wfile.write(body[i : i + chunk])
                        self.wfile.flush()
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def route(self, path: str, body: bytes, *, chunk: int = 16384, delay: float = 0.05) -> str:
        """Serve ``body`` at ``path`` slowly; return its URL."""
        self.bodies[path] = (body, chunk, delay)
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def slow_http_server() -> Iterator[SlowServer]:
    """A loopback HTTP server that streams bodies slowly (see :class:`SlowServer`)."""
    server = SlowServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_mlpkg_cli(tmp_path: Path) -> Iterator[Any]:
    """``make_mlpkg_cli(home, recipes=None) -> MlpkgCli``: another CLI runner (see
    :class:`MlpkgCli`) with its own ``MLPKG_HOME`` at ``home``, and ``recipes`` (default: a
    new empty directory beside ``home``) as its recipe directory; for checking that
    something made in one home is reproduced in another. Every runner is closed at teardown.
    """
    made: list[MlpkgCli] = []

    def make(home: Path, recipes: Path | None = None) -> MlpkgCli:
        cli = MlpkgCli(home, RecipeDir(recipes or home.parent / f"{home.name}-recipes"))
        made.append(cli)
        return cli

    try:
        yield make
    finally:
        for cli in made:
            cli.close()
