"""Real servers for the binary cache tests, all on 127.0.0.1 (fixtures: tests/cache/conftest.py).

* :class:`NginxServer`: Debian's nginx serving a directory with WebDAV PUT/DELETE and JSON
  directory indexes, as an HTTP cache would be set up (docs/caches.md)::

      server = NginxServer(tmp / "nginx")   # serves tmp/nginx/root
      server.start(); ...; server.url       # "http://127.0.0.1:PORT"
      server.stop(); server.start()         # down, then up again on the same port

  It listens twice: ``url`` speaks plain HTTP/1.1 (nginx 1.22's ``listen … http2`` without
  TLS is HTTP/2 with prior knowledge only and refuses HTTP/1.1, and httpx speaks HTTP/2
  only over TLS), ``https_url`` TLS with HTTP/2 by ALPN, with a self-signed certificate
  for 127.0.0.1 in ``ca_file`` (clients trust it through ``SSL_CERT_FILE``). The access
  log (``prefix/access.log``) shows each request's protocol.
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
    root {root};
    dav_methods PUT DELETE;
    dav_access user:rw group:r all:r;
    create_full_put_path on;
    client_max_body_size 0;
    autoindex on;
    autoindex_format json;
    server {{
        listen {host}:{port};
    }}
    server {{
        listen {host}:{tls_port} ssl http2;
        ssl_certificate {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
    }}
}}
"""


def write_self_signed(cert: Path, key: Path, host: str = LOOPBACK) -> None:
    """A self-signed certificate for the IP address ``host``, valid for a day, as PEM
    (also usable as the CA file: ``SSL_CERT_FILE=cert``), and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(private.public_key())
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(ski, False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


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
        self.tls_port = 0
        self.ca_file = prefix / "cert.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The plain HTTP/1.1 listener."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def https_url(self) -> str:
        """The TLS listener (HTTP/2 by ALPN, or HTTP/1.1); its certificate is ``ca_file``."""
        return f"https://{LOOPBACK}:{self.tls_port}"

    def _write_conf(self) -> Path:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        if not self.ca_file.exists():
            write_self_signed(self.ca_file, self.prefix / "key.pem")
        conf.write_text(
            _NGINX_CONF.format(
                user=user,
                prefix=self.prefix,
                host=LOOPBACK,
                port=self.port,
                tls_port=self.tls_port,
                root=self.root,
            )
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx (on the same port as before, if it ran already) and wait until it
        accepts connections; RuntimeError with its error log if it does not."""
        for _ in range(3):
            self.port = self.port or free_port()
            self.tls_port = self.tls_port or free_port()
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
            deadline = time.monotonic() + timeout
            if all(_wait_listening(p, self._proc, deadline) for p in (self.port, self.tls_port)):
                return
            self.stop()
            self.port = self.tls_port = 0  # a port was taken meanwhile: try others
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
