"""Fixtures for the PyPI importer tests: real wheels made here, and a fake package index.

``make_wheel(name, version, ...) -> Wheel``: a small but real wheel (``*.dist-info/METADATA``,
``WHEEL``, ``RECORD``, a module), optionally with an incompressible padding file, the
dist-info first, METADATA stored instead of deflated, or ZIP64 records throughout.

``fake_index(api="json"|"html", ranges=True, metadata_files=False) -> FakeIndex``: a loopback
server with a simple API (PEP 691 JSON if asked for it and ``api="json"``, else PEP 503 HTML)
at ``/simple/<name>/`` and the files at ``/files/<filename>`` (relative links), honouring
single byte ranges (``a-b``, ``a-``, ``-n``) unless ``ranges=False``. It logs every request
with the number of body bytes it sent. Requests in absolute form (the server used as an
HTTP proxy) are served too, and logged with ``proxied=True``.

``index.publish(name, version, index_attrs=..., **wheel_options)`` makes and adds a wheel;
``run_import(index, target, client, into, *requirements, **options)`` imports and returns the
recipes written, parsed.

``target311``, ``target39``: CPython 3.11 and 3.9 manylinux x86_64
:class:`~mlpkg.importer.Target` objects.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
import threading
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name

from mlpkg.importer import Target, import_packages


@dataclass
class Wheel:
    filename: str
    data: bytes
    metadata: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    name: str,
    version: str,
    *,
    tags: str = "py3-none-any",
    requires_dist: tuple[str, ...] = (),
    requires_python: str | None = None,
    summary: str | None = None,
    padding: int = 0,
    metadata_first: bool = False,
    stored: bool = False,
    zip64: bool = False,
) -> Wheel:
    """A real wheel ``{name}-{version}-{tags}.whl`` (``tags`` as in a file name)."""
    dist = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines.append(f"Summary: {summary if summary is not None else f'The {name} package'}")
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires_dist]
    metadata = "\n".join(lines) + "\n\nA long description.\n"
    module = re.sub(r"[-.]+", "_", name)
    payload = {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()}
    if padding:
        payload[f"{module}/_padding.bin"] = os.urandom(padding)
    info = {
        f"{dist}.dist-info/METADATA": metadata.encode(),
        f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tags}\n".encode(),
    }
    members = {**info, **payload} if metadata_first else {**payload, **info}
    record = "\n".join(_record_line(n, d) for n, d in members.items())
    members[f"{dist}.dist-info/RECORD"] = (record + f"\n{dist}.dist-info/RECORD,,\n").encode()
    buf = io.BytesIO()
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    if zip64:  # make every size, offset and count "too big", so ZIP64 records are written
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
    try:
        with zipfile.ZipFile(buf, "w") as zf:
            for member, data in members.items():
                method = (
                    zipfile.ZIP_STORED
                    if stored or member.endswith(".bin")
                    else zipfile.ZIP_DEFLATED
                )
                zinfo = zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0))
                zinfo.compress_type = method
                with zf.open(zinfo, "w", force_zip64=zip64) as out:
                    out.write(data)
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
    return Wheel(f"{dist}-{tags}.whl", buf.getvalue(), metadata)


@pytest.fixture
def wheel() -> Callable[..., Wheel]:
    """``wheel(name, version, **options) -> Wheel`` (see :func:`make_wheel`)."""
    return make_wheel


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    status: int
    sent: int
    proxied: bool = False


@dataclass
class _Entry:
    filename: str
    sha256: str
    requires_python: str | None
    yanked: bool | str
    metadata: str | None  # text served at <file>.metadata, or None
    metadata_sha256: str | None


@dataclass
class FakeIndex:
    api: str = "json"
    ranges: bool = True
    metadata_files: bool = False
    projects: dict[str, list[_Entry]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def index_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple"

    def add(
        self,
        whl: Wheel,
        *,
        yanked: bool | str = False,
        requires_python: str | None = None,
        metadata_file: bool | None = None,
        metadata_sha256: str | None = None,
    ) -> str:
        """Publish ``whl``; return the path it is served at."""
        project = str(canonicalize_name(whl.filename.split("-")[0]))
        serve_meta = self.metadata_files if metadata_file is None else metadata_file
        meta_sha = metadata_sha256 or hashlib.sha256(whl.metadata.encode()).hexdigest()
        entry = _Entry(
            whl.filename,
            whl.sha256,
            requires_python,
            yanked,
            whl.metadata if serve_meta else None,
            meta_sha if serve_meta else None,
        )
        self.projects.setdefault(project, []).append(entry)
        self.blobs[f"/files/{whl.filename}"] = whl.data
        if serve_meta:
            self.blobs[f"/files/{whl.filename}.metadata"] = whl.metadata.encode()
        return f"/files/{whl.filename}"

    def publish(
        self, name: str, version: str, *, index_attrs: dict[str, Any] | None = None, **options: Any
    ) -> Wheel:
        """Make a wheel (``options`` as for :func:`make_wheel`) and :meth:`add` it."""
        whl = make_wheel(name, version, **options)
        self.add(whl, **(index_attrs or {}))
        return whl

    def file_url(self, filename: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{filename}"

    def add_sdist(self, name: str, version: str) -> None:
        filename = f"{name}-{version}.tar.gz"
        self.projects.setdefault(str(canonicalize_name(name)), []).append(
            _Entry(filename, hashlib.sha256(filename.encode()).hexdigest(), None, False, None, None)
        )

    def requests_to(self, path: str) -> list[Logged]:
        with self.lock:
            return [r for r in self.log if r.path == path]

    def sent(self, path: str) -> int:
        return sum(r.sent for r in self.requests_to(path))

    def page(self, project: str, want_json: bool) -> tuple[bytes, str]:
        entries = self.projects[project]
        if want_json and self.api == "json":
            files: list[dict[str, Any]] = []
            for e in entries:
                item: dict[str, Any] = {
                    "filename": e.filename,
                    "url": f"../../files/{e.filename}",
                    "hashes": {"sha256": e.sha256},
                    "requires-python": e.requires_python,
                    "yanked": e.yanked,
                }
                if e.metadata is not None:
                    item["core-metadata"] = {"sha256": e.metadata_sha256}
                files.append(item)
            doc = {"meta": {"api-version": "1.1"}, "name": project, "files": files}
            return json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json"
        anchors = []
        for e in entries:
            attrs = f'href="../../files/{e.filename}#sha256={e.sha256}"'
            if e.requires_python:
                attrs += f' data-requires-python="{html.escape(e.requires_python)}"'
            if e.yanked:
                attrs += (
                    f' data-yanked="{html.escape(e.yanked if isinstance(e.yanked, str) else "")}"'
                )
            if e.metadata is not None:
                attrs += f' data-dist-info-metadata="sha256={e.metadata_sha256}"'
            anchors.append(f"<a {attrs}>{e.filename}</a><br/>")
        body = "<!DOCTYPE html><html><body><h1>Links</h1>" + "\n".join(anchors) + "</body></html>"
        return body.encode(), "text/html; charset=utf-8"


def _ranged(body: bytes, header: str | None) -> tuple[int, bytes, str | None]:
    """(status, bytes to send, Content-Range) for a Range header."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
    size = len(body)
    if m is None or (not m.group(1) and not m.group(2)):
        return 200, body, None
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        first, last = max(0, size - int(m.group(2))), size - 1
    if first >= size or first > last:
        return 416, b"", f"bytes */{size}"
    return 206, body[first : last + 1], f"bytes {first}-{last}/{size}"


def _handler(index: FakeIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            proxied = self.path.startswith("http://")
            path = urlsplit(self.path).path if proxied else self.path.split("?")[0]
            status, body, ctype, crange = self._answer(path, headers)
            with index.lock:  # logged before answering, so the client never outruns the log
                index.log.append(Logged("GET", path, headers, status, len(body), proxied))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if crange:
                self.send_header("Content-Range", crange)
            self.end_headers()
            self.wfile.write(body)

        def _answer(self, path: str, headers: dict[str, str]) -> tuple[int, bytes, str, str | None]:
            m = re.fullmatch(r"/simple/([^/]+)/", path)
            if m and m.group(1) in index.projects:
                want_json = "application/vnd.pypi.simple.v1+json" in headers.get("accept", "")
                body, ctype = index.page(m.group(1), want_json)
                return 200, body, ctype, None
            if path in index.blobs:
                blob = index.blobs[path]
                if not index.ranges:
                    return 200, blob, "application/octet-stream", None
                status, body, crange = _ranged(blob, headers.get("range"))
                return status, body, "application/octet-stream", crange
            return 404, b"not found", "text/plain", None

    return Handler


@pytest.fixture
def fake_index() -> Iterator[Callable[..., FakeIndex]]:
    """``fake_index(api="json", ranges=True, metadata_files=False) -> FakeIndex`` (running)."""
    servers: list[ThreadingHTTPServer] = []

    def start(**options: Any) -> FakeIndex:
        index = FakeIndex(**options)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
        httpd.daemon_threads = True
        index.port = httpd.server_address[1]
        threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        servers.append(httpd)
        return index

    try:
        yield start
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()


def recipes_under(into: Path) -> dict[str, dict[str, Any]]:
    """Every recipe under ``into``, as {"name@version": parsed TOML}."""
    return {
        f"{p.parent.name}@{p.stem}": tomllib.loads(p.read_text())
        for p in sorted(into.glob("*/*.toml"))
    }


@pytest.fixture
def run_import() -> Callable[..., dict[str, dict[str, Any]]]:
    """``run_import(index, target, client, into, *requirements, **options)``: call
    ``import_packages`` against ``index``; return every recipe under ``into`` afterwards, as
    {"name@version": parsed TOML}."""

    def run(
        index: FakeIndex, target: Target, client: httpx.Client, into: Path, *reqs: str, **kw: Any
    ) -> dict[str, dict[str, Any]]:
        import_packages(
            list(reqs), target, index_url=index.index_url, client=client, into=into, **kw
        )
        return recipes_under(into)

    return run


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """An httpx client that ignores proxy settings of the environment (loopback only)."""
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
    *("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"),
]
MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_full_version": "3.11.7",
    "python_version": "3.11",
    "sys_platform": "linux",
}


@pytest.fixture
def target311() -> Target:
    """CPython 3.11 on manylinux x86_64 (tags as packaging computes them)."""
    tags = [
        *cpython_tags((3, 11), platforms=PLATFORMS),
        *compatible_tags((3, 11), "cp311", PLATFORMS),
    ]
    return Target(python_version="3.11", tags=[str(t) for t in tags], markers=dict(MARKERS))


@pytest.fixture
def target39() -> Target:
    """CPython 3.9 on manylinux x86_64 (tags as packaging computes them)."""
    tags = [
        *cpython_tags((3, 9), platforms=PLATFORMS),
        *compatible_tags((3, 9), "cp39", PLATFORMS),
    ]
    markers = {
        **MARKERS,
        "implementation_version": "3.9.2",
        "python_full_version": "3.9.2",
        "python_version": "3.9",
    }
    return Target(python_version="3.9", tags=[str(t) for t in tags], markers=markers)
