"""Fixtures of real cache servers (tests/cache_servers.py), all on 127.0.0.1.

One nginx and one moto server run per session; each test gets its own empty cache on them:

* ``nginx_cache``: ``.url`` (``http://127.0.0.1:PORT/tN``), ``.root`` (the directory nginx
  serves for it), ``.server`` (the :class:`NginxServer`: ``stop()``/``start()`` take the
  cache down and up; it is running again after the test). Skipped where nginx is not
  installed (CI installs it: .ci/run).
* ``https_cache``: the same through nginx's TLS listener, which speaks HTTP/2 (ALPN); sets
  ``SSL_CERT_FILE`` to its self-signed certificate.
* ``s3_cache``: ``.url`` (``s3://cache-N/pre?endpoint=…&region=us-east-1``), ``.bucket``,
  ``.prefix``, ``.client`` (a boto3 client of the server, to look behind the transport),
  ``.root`` None. Sets moto's dummy AWS credentials in the environment. Skipped without
  moto.
* ``file_cache``: ``.url`` (``file:///…``) and ``.root``, a fresh directory.
* ``bad_cache``: a started :class:`BadCache` serving ``tmp_path/bad`` (stopped after).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cache_servers import BadCache, MotoS3Server, NginxServer, nginx_binary

_counter = itertools.count()


@dataclass
class CacheHandle:
    """One test's cache: where the transport goes (``url``) and what is behind it."""

    url: str
    root: Path | None = None
    server: Any = None
    bucket: str = ""
    prefix: str = ""
    client: Any = None


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """The session's nginx (WebDAV PUT/DELETE, JSON indexes) on 127.0.0.1."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    server = NginxServer(tmp_path_factory.mktemp("nginx"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nginx_cache(nginx_server: NginxServer) -> Iterator[CacheHandle]:
    """An empty HTTP cache of its own on the session's nginx."""
    name = f"t{next(_counter)}"
    root = nginx_server.root / name
    root.mkdir()
    yield CacheHandle(url=f"{nginx_server.url}/{name}", root=root, server=nginx_server)
    if not nginx_server.running:
        nginx_server.start()


@pytest.fixture
def https_cache(nginx_server: NginxServer, monkeypatch: pytest.MonkeyPatch) -> CacheHandle:
    """As ``nginx_cache``, through nginx's TLS listener (HTTP/2), whose self-signed
    certificate ``SSL_CERT_FILE`` makes trusted."""
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx_server.ca_file))
    name = f"t{next(_counter)}"
    root = nginx_server.root / name
    root.mkdir()
    return CacheHandle(url=f"{nginx_server.https_url}/{name}", root=root, server=nginx_server)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3Server]:
    """The session's moto S3 server on 127.0.0.1."""
    pytest.importorskip("moto.server", reason="moto is not installed (pip install 'moto[server]')")
    pytest.importorskip("boto3", reason="boto3 is not installed")
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """moto's dummy credentials, and no AWS configuration of this machine."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3_cache(moto_server: MotoS3Server, aws_env: None) -> CacheHandle:
    """An empty S3 cache of its own (a new bucket, keys under ``pre/``) on moto."""
    bucket = f"cache-{next(_counter)}"
    client = moto_server.client()
    client.create_bucket(Bucket=bucket)
    return CacheHandle(
        url=f"s3://{bucket}/pre?endpoint={moto_server.endpoint}&region=us-east-1",
        server=moto_server,
        bucket=bucket,
        prefix="pre",
        client=client,
    )


@pytest.fixture
def file_cache(tmp_path: Path) -> CacheHandle:
    """An empty cache in a local directory."""
    root = tmp_path / "file-cache"
    root.mkdir()
    return CacheHandle(url=root.as_uri(), root=root)


@pytest.fixture
def bad_cache(tmp_path: Path) -> Iterator[BadCache]:
    """A started :class:`BadCache` (mode ``"serve"``) serving ``tmp_path/bad``."""
    bad = BadCache(tmp_path / "bad").start()
    yield bad
    bad.stop()
