"""Real servers for the binary cache tests, all on 127.0.0.1 (fixtures: tests/cache/conftest.py).

* :class:`NginxServer`: Debian's nginx serving a directory with WebDAV PUT/DELETE and JSON
  directory indexes, as an HTTP cache would be set up (docs/caches.md)::

      server = NginxServer(tmp / "nginx")   # serves tmp/nginx/root
      server.start(); ...; server.url       # "http://127.0.0.1:PORT"
      server.stop(); server.start()         # down, then up again on the same port

  It listens for HTTP/1.1 only: nginx 1.22's ``listen … http2`` without TLS is HTTP/2 with
  prior knowledge and refuses HTTP/1.1, and httpx speaks HTTP/2 only over TLS (ALPN).
* :class:`MotoS3Server`: moto's S3 server in this process (``ThreadedMotoServer``).
* :class:`BadCache`: a small HTTP/1.1 server for faults, switched by its ``mode``:

  - ``"error"``: 500 to every request;
  - ``"hang"``: accepts, reads the request, never answers (until :meth:`BadCache.stop`);
  - ``"serve"`` (the default): serves GET/HEAD from ``root`` (a path ``/a/b`` is the file
    ``root/a/b``; 404 where absent; a directory answers a small HTML page, no JSON
    index), except that a GET of a path in ``drop`` sends the headers with the full
    ``Content-Length``, then half the body, then closes the connection.

  Every request is recorded in ``requests`` as ``(method, path)``. Used as an S3
  endpoint, ``s3://bucket?endpoint=<url>`` reads ``/bucket/key`` (path-style).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["BadCache", "MotoS3Server", "NginxServer", "free_port", "nginx_binary"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether 127.0.0.1:port accepts connections before ``deadline`` (while ``proc``
    runs)."""
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return True
        time.sleep(0.05)
    return False


def nginx_binary() -> str | None:
    """The nginx executable, also where /usr/sbin is not on PATH; None if not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


_NGINX_CONF = """\
worker_processes 1;
{user}
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE;
            dav_access user:rw group:r all:r;
            create_full_put_path on;
            client_max_body_size 0;
            autoindex on;
            autoindex_format json;
        }}
    }}
}}
"""


class NginxServer:
    """nginx serving ``prefix/root`` on 127.0.0.1 (see the module docstring). Everything it
    writes (config, logs, pid file, temporary files) stays under ``prefix``."""

    def __init__(self, prefix: Path) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed")
        self.binary = binary
        self.prefix = prefix
        self.root = prefix / "root"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _write_conf(self) -> Path:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(
            _NGINX_CONF.format(
                user=user, prefix=self.prefix, host=LOOPBACK, port=self.port, root=self.root
            )
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx (on the same port as before, if it ran already) and wait until it
        accepts connections; RuntimeError with its error log if it does not."""
        for _ in range(3):
            self.port = self.port or free_port()
            conf = self._write_conf()
            log = (self.prefix / "stderr.log").open("ab")
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.prefix / "error.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            log.close()
            if _wait_listening(self.port, self._proc, time.monotonic() + timeout):
                return
            self.stop()
            self.port = 0  # the port was taken meanwhile: try another
        errors = (self.prefix / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nginx did not start:\n{errors}")

    def stop(self) -> None:
        """Stop nginx (fast shutdown), waiting for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class MotoS3Server:
    """moto's S3 server on 127.0.0.1 (in this process); ``endpoint`` is its URL."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self.endpoint = ""
        self._client: Any = None

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A boto3 S3 client of this server, with moto's dummy credentials (made once)."""
        import boto3

        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._client


class _BadHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BadCacheServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            got = self.rfile.read(min(length, 1 << 16))
            if not got:
                break
            length -= len(got)

    def _reply(self, status: int, body: bytes = b"", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _handle(self) -> None:
        bad = self.server.bad
        bad.requests.append((self.command, self.path))
        self._discard_body()
        if bad.mode == "hang":
            bad.release.wait()
            self.close_connection = True
            return
        if bad.mode == "error":
            self._reply(500, b"broken\n", head=self.command == "HEAD")
            return
        if self.command not in ("GET", "HEAD"):
            self._reply(405)
            return
        self._serve(bad)

    def _serve(self, bad: BadCache) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        file = bad.root / path
        head = self.command == "HEAD"
        if ".." in path.split("/") or not file.exists():
            self._reply(404, head=head)
            return
        if file.is_dir():
            self._reply(200, b"<html><body>a directory</body></html>\n", head=head)
            return
        data = file.read_bytes()
        if head or path not in bad.drop:
            self._reply(200, data, head=head)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = _handle


class BadCacheServer(ThreadingHTTPServer):
    daemon_threads = True
    bad: BadCache


class BadCache:
    """A faulty HTTP server on 127.0.0.1 (see the module docstring). ``mode`` may be
    changed while it runs; ``drop`` holds paths relative to ``root`` (``"bucket/key"``)."""

    def __init__(self, root: Path, mode: str = "serve") -> None:
        self.root = root
        self.mode = mode
        self.drop: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()
        self._server = BadCacheServer((LOOPBACK, 0), _BadHandler)
        self._server.bad = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> BadCache:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging requests, stop serving, close the socket."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
