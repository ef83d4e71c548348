"""The cache transports (mlpkg.cache.transport, issue 13) against real servers: a directory,
nginx with WebDAV, moto's S3; and their failures against a faulty server (BadCache)."""

from __future__ import annotations

import email.utils
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlpkg.cache import httpcache, s3cache
from mlpkg.cache.transport import CHUNK, FileTransport, Transport, open_transport, split_url
from mlpkg.errors import BadInput, CacheError, CacheUnavailable
from tests.cache_servers import BadCache

MIB = 1 << 20
BAD_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a/", "a\\b", "./a", "a/./b"]


@pytest.fixture(params=["file", "nginx", "https", "s3"])
def cache(request: pytest.FixtureRequest) -> object:
    """Each backend's empty cache in turn."""
    return request.getfixturevalue(f"{request.param}_cache")


@pytest.fixture
def transport(cache: object) -> Iterator[Transport]:
    with open_transport(cache.url) as t:  # type: ignore[attr-defined]
        yield t


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timeouts, for servers that hang."""
    monkeypatch.setenv("MLPKG_CACHE_TIMEOUT", "0.3")


# --- the contract, on every backend -------------------------------------------------------


def test_put_get_roundtrip(transport: Transport) -> None:
    transport.put("info/abc.json", b'{"a": 1}')
    assert transport.get("info/abc.json") == b'{"a": 1}'
    transport.put("info/abc.json", b"replaced")
    assert transport.get("info/abc.json") == b"replaced"
    transport.put("cache-info.json", b"")
    assert transport.get("cache-info.json") == b""


def test_get_absent_is_none(transport: Transport) -> None:
    assert transport.get("info/nothing.json") is None
    assert transport.get("no/such/dir/file") is None


def test_has_a_mix(transport: Transport) -> None:
    keys = [f"info/{i:02}.json" for i in range(40)]
    for key in keys[::2]:
        transport.put(key, key.encode())
    assert transport.has([*keys, keys[0]]) == set(keys[::2])
    assert transport.has([]) == set()
    assert transport.has(["info/01.json"]) == set()


def test_stream_in_pieces(transport: Transport, tmp_path: Path) -> None:
    data = os.urandom(20 * MIB + 123)
    source = tmp_path / "big"
    source.write_bytes(data)
    transport.put("objects/ab/ab12", source)
    with transport.stream("objects/ab/ab12") as pieces:
        got = list(pieces)
    assert b"".join(got) == data
    assert len(got) >= 20
    assert max(len(p) for p in got) <= CHUNK


def test_stream_absent_names_cache_and_key(transport: Transport) -> None:
    with pytest.raises(CacheError) as info, transport.stream("objects/zz/missing"):
        pass
    assert not isinstance(info.value, CacheUnavailable)
    assert transport.url in str(info.value) and "objects/zz/missing" in str(info.value)
    assert info.value.cache == transport.url


def test_put_a_path(transport: Transport, tmp_path: Path) -> None:
    source = tmp_path / "x"
    source.write_bytes(b"content of a file\n" * 1000)
    transport.put("objects/cd/cd34", source)
    assert transport.get("objects/cd/cd34") == source.read_bytes()


def test_list_under_a_prefix(transport: Transport) -> None:
    files = {"info/a.json": b"abc", "objects/ab/ab1": b"12345", "objects/cd/cd2": b"1234567"}
    for key, data in {**files, "cache-info.json": b"{}"}.items():
        transport.put(key, data)
    objects = {("objects/ab/ab1", 5), ("objects/cd/cd2", 7)}
    assert set(transport.list("objects")) == objects
    assert set(transport.list("objects/")) == objects
    assert set(transport.list("objects/ab")) == {("objects/ab/ab1", 5)}
    everything = set(transport.list(""))
    assert everything == {*objects, ("info/a.json", 3), ("cache-info.json", 2)}
    assert list(transport.list("nothing")) == []


def test_list_mtimes(transport: Transport, cache: object) -> None:
    """The files of list() with their modification times: a fresh put's is now (by the
    server's clock, within a minute), and where the test can backdate the file behind the
    transport (file and nginx), the time set."""
    files = {"info/a.json": b"abc", "objects/ab/ab1": b"12345", "objects/cd/cd2": b"1234567"}
    for key, data in {**files, "cache-info.json": b"{}"}.items():
        transport.put(key, data)
    now = time.time()
    listed = list(transport.list_mtimes("objects"))
    assert {(k, s) for k, s, _ in listed} == set(transport.list("objects"))
    assert {(k, s) for k, s, _ in listed} == {("objects/ab/ab1", 5), ("objects/cd/cd2", 7)}
    for key, _size, mtime in listed:
        assert isinstance(mtime, float), key
        assert abs(mtime - now) < 60, (key, mtime, now)
    everything = {(k, s) for k, s, _ in transport.list_mtimes()}
    assert everything == set(transport.list(""))
    assert {k for k, _, _ in transport.list_mtimes("objects/ab/")} == {"objects/ab/ab1"}
    assert list(transport.list_mtimes("nothing")) == []
    root: Path | None = cache.root  # type: ignore[attr-defined]
    if root is not None:
        then = 1_500_000_000  # 2017-07-14, whole seconds as nginx tells them
        os.utime(root / "objects/ab/ab1", (then, then))
        got = {k: m for k, _, m in transport.list_mtimes("objects")}
        assert got["objects/ab/ab1"] == then
        assert abs(got["objects/cd/cd2"] - now) < 60
    transport.put("objects/ab/ab1", b"replaced")  # a put that replaces a file: written now
    [(_, size, mtime)] = [x for x in transport.list_mtimes("objects") if x[0].endswith("ab1")]
    assert size == 8 and abs(mtime - time.time()) < 60


def test_delete(transport: Transport) -> None:
    transport.put("info/d.json", b"x")
    transport.delete("info/d.json")
    assert transport.get("info/d.json") is None
    assert transport.has(["info/d.json"]) == set()
    transport.delete("info/d.json")  # absent: fine
    transport.delete("never/was")


def test_bad_keys_rejected(transport: Transport) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ValueError):
            transport.get(key)
        with pytest.raises(ValueError):
            transport.put(key, b"x")
        with pytest.raises(ValueError):
            transport.has(["ok", key])
        with pytest.raises(ValueError):
            transport.delete(key)
        with pytest.raises(ValueError), transport.stream(key):
            pass


def test_many_threads_at_once(transport: Transport) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                key = f"objects/{n:02}/{i}"
                transport.put(key, key.encode() * 100)
                assert transport.get(key) == key.encode() * 100
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(transport.list("objects"))) == 40


# --- file:// -------------------------------------------------------------------------------


def test_file_cache_details(file_cache: object, tmp_path: Path) -> None:
    root: Path = file_cache.root  # type: ignore[attr-defined]
    with open_transport(str(root)) as t:  # a plain absolute path
        t.put("deep/er/key", b"x")
        assert (root / "deep/er/key").read_bytes() == b"x"
        assert t.get("deep/er") is None  # a directory
        (root / "deep/er/.key.1234abcd.part").write_bytes(b"half")  # a put under way
        assert list(t.list("deep")) == [("deep/er/key", 1)]
        assert [(k, s) for k, s, _ in t.list_mtimes("deep")] == [("deep/er/key", 1)]
        assert isinstance(t, FileTransport)
        [(tmp_key, size, mtime)] = t.list_temporaries()
        assert (tmp_key, size) == ("deep/er/.key.1234abcd.part", 4)
        assert mtime == (root / tmp_key).stat().st_mtime
        assert list(t.list_temporaries("info")) == []
        assert t.url == str(root)
    assert [p.name for p in (root / "deep/er").iterdir() if p.name != ".key.1234abcd.part"] == [
        "key"
    ]


# --- http(s):// ----------------------------------------------------------------------------


def test_https_speaks_http2(https_cache: object) -> None:
    server = https_cache.server  # type: ignore[attr-defined]
    with open_transport(https_cache.url) as t:  # type: ignore[attr-defined]
        t.put("info/h2.json", b"{}")
        assert t.has(["info/h2.json", "info/no.json"]) == {"info/h2.json"}
    log = (server.prefix / "access.log").read_text()
    assert "PUT /t" in log and "/info/h2.json HTTP/2.0" in log


def test_http_dates() -> None:
    stamp = 1_785_000_000.0
    written = email.utils.formatdate(stamp, usegmt=True)  # as nginx writes them
    assert httpcache._http_date(written) == stamp
    assert httpcache._http_date(written.replace("GMT", "-0000")) == stamp  # a naive date
    assert httpcache._http_date(written.replace("GMT", "+0100")) == stamp - 3600
    for bad in (None, 17, "", "yesterday", "Sun, 99 Nov 2026 25:61:00 GMT"):
        assert httpcache._http_date(bad) is None


def test_http_index_without_mtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose JSON index gives no mtime: list() works, list_mtimes() cannot tell."""
    index = {
        "/c/": [{"name": "objects", "type": "directory"}],
        "/c/objects/": [{"name": "ab1", "type": "file", "size": 3}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path in index:
            return httpx.Response(200, json=index[request.url.path])
        return httpx.Response(404)

    with open_transport("http://cache.invalid/c") as t:
        monkeypatch.setattr(t, "_client", httpx.Client(transport=httpx.MockTransport(answer)))
        assert list(t.list()) == [("objects/ab1", 3)]
        with pytest.raises(NotImplementedError, match="no modification time for objects/ab1"):
            list(t.list_mtimes())


def test_a_transport_that_cannot_tell_times(file_cache: object) -> None:
    """The default of the ABC, for a transport that cannot tell modification times."""

    class Timeless(FileTransport):
        list_mtimes = Transport.list_mtimes

    t = Timeless(file_cache.root, file_cache.url)  # type: ignore[attr-defined]
    t.put("objects/ab/ab1", b"x")
    assert list(t.list("objects")) == [("objects/ab/ab1", 1)]
    with pytest.raises(NotImplementedError):
        t.list_mtimes("objects")


def test_http_get_of_a_directory_is_none(nginx_cache: object) -> None:
    with open_transport(nginx_cache.url) as t:  # type: ignore[attr-defined]
        t.put("objects/ab/ab1", b"x")
        assert t.get("objects/ab") is None
        assert t.has(["objects/ab"]) == set()


# --- s3:// ---------------------------------------------------------------------------------


def test_s3_multipart(s3_cache: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3cache, "MULTIPART_THRESHOLD", 1 * MIB)
    data = os.urandom(20 * MIB)
    source = tmp_path / "big"
    source.write_bytes(data)
    with open_transport(s3_cache.url) as t:  # type: ignore[attr-defined]
        t.put("objects/mp/big", source)
        assert t.get("objects/mp/big") == data
    head = s3_cache.client.head_object(Bucket=s3_cache.bucket, Key="pre/objects/mp/big")  # type: ignore[attr-defined]
    assert head["ETag"].strip('"').endswith("-3")  # three parts of 8 MiB


def test_s3_multipart_aborted_on_failure(
    s3_cache: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3cache, "MULTIPART_THRESHOLD", 1 * MIB)
    source = tmp_path / "big"
    source.write_bytes(b"x" * (17 * MIB))
    client, bucket = s3_cache.client, s3_cache.bucket  # type: ignore[attr-defined]
    with open_transport(s3_cache.url) as t:  # type: ignore[attr-defined]
        real = t._client.upload_part  # type: ignore[attr-defined]

        def upload_part(**kw: object) -> object:
            if kw["PartNumber"] == 2:
                raise RuntimeError("the disk went away")
            return real(**kw)

        monkeypatch.setattr(t._client, "upload_part", upload_part)  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            t.put("objects/mp/big", source)
        assert t.get("objects/mp/big") is None
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_part_size() -> None:
    assert s3cache.part_size(0) == 8 * MIB
    assert s3cache.part_size(65 * MIB) == 8 * MIB
    for size in (80 * 2**30, 10**12, 5 * 2**40):
        part = s3cache.part_size(size)
        assert part % MIB == 0 and part * s3cache.MAX_PARTS >= size
        assert part - MIB < max(8 * MIB, size / s3cache.MAX_PARTS)


def test_s3_without_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(BadInput, match=r"pip install 'mlpkg\[s3\]'"):
        open_transport("s3://bucket/x")


def test_s3_bad_url() -> None:
    with pytest.raises(BadInput, match="endpiont"):
        open_transport("s3://bucket/x?endpiont=http://127.0.0.1:1")


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://host/cache", "relative/dir", "gs://bucket", "file://host/x"]
)
def test_unknown_url_is_bad_input(url: str) -> None:
    with pytest.raises(BadInput) as info:
        open_transport(url)
    assert url.split("?")[0] in str(info.value)


def test_split_url() -> None:
    assert split_url("s3://b/p?priority=10&region=eu-west-1&trusted=true") == (
        "s3://b/p?region=eu-west-1",
        {"priority": "10", "trusted": "true"},
    )
    assert split_url("https://h/c?priority=3") == ("https://h/c", {"priority": "3"})
    assert split_url("/plain/dir") == ("/plain/dir", {})


def test_substituter_params_ignored(file_cache: object) -> None:
    url = f"{file_cache.url}?priority=10&trusted=true"  # type: ignore[attr-defined]
    with open_transport(url) as t:
        assert t.url == file_cache.url  # type: ignore[attr-defined]
        t.put("k", b"v")
        assert t.get("k") == b"v"


def test_credentials_never_shown(quick: None) -> None:
    with open_transport("http://user:secret@127.0.0.1:9/c?token=abc&priority=1") as t:
        assert t.url == "http://127.0.0.1:9/c"
        with pytest.raises(CacheUnavailable) as info:
            t.get("k")
    assert "secret" not in str(info.value) and "abc" not in str(info.value)


def test_bad_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPKG_CACHE_TIMEOUT", "soon")
    with pytest.raises(BadInput, match="MLPKG_CACHE_TIMEOUT"):
        open_transport("http://127.0.0.1:9/c")


# --- faults --------------------------------------------------------------------------------


def _bad_url(bad: BadCache, kind: str) -> str:
    return f"{bad.url}/c" if kind == "http" else f"s3://bkt/c?endpoint={bad.url}"


def _assert_down(exc: CacheUnavailable, url: str, key: str) -> None:
    assert exc.cache == url
    assert url in str(exc) and key in str(exc) and "unreachable" in str(exc)


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_server_error_after_retries(bad_cache: BadCache, kind: str, aws_env: None) -> None:
    bad_cache.mode = "error"
    with open_transport(_bad_url(bad_cache, kind)) as t:
        with pytest.raises(CacheUnavailable) as info:
            t.get("info/x.json")
        _assert_down(info.value, t.url, "info/x.json")
        assert len(bad_cache.requests) == 3
        with pytest.raises(CacheUnavailable):
            t.has(["a", "b", "c"])
        with pytest.raises(CacheUnavailable):
            t.put("a", b"x")


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_hanging_server(bad_cache: BadCache, kind: str, quick: None, aws_env: None) -> None:
    bad_cache.mode = "hang"
    with open_transport(_bad_url(bad_cache, kind)) as t:
        with pytest.raises(CacheUnavailable) as info:
            t.get("info/x.json")
        _assert_down(info.value, t.url, "info/x.json")


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_connection_dropped_mid_body(bad_cache: BadCache, kind: str, aws_env: None) -> None:
    path = "c/objects/big" if kind == "http" else "bkt/c/objects/big"
    (bad_cache.root / path).parent.mkdir(parents=True)
    (bad_cache.root / path).write_bytes(os.urandom(4 * MIB))
    (bad_cache.root / path).with_name("small").write_bytes(b"fine")
    bad_cache.drop.add(path)
    with open_transport(_bad_url(bad_cache, kind)) as t:
        assert t.get("objects/small") == b"fine"
        with pytest.raises(CacheUnavailable) as info, t.stream("objects/big") as pieces:
            for _ in pieces:
                pass
        _assert_down(info.value, t.url, "objects/big")
        with pytest.raises(CacheUnavailable):
            t.get("objects/big")


def test_nginx_down(nginx_cache: object) -> None:
    server = nginx_cache.server  # type: ignore[attr-defined]
    with open_transport(nginx_cache.url) as t:  # type: ignore[attr-defined]
        t.put("k", b"v")
        server.stop()
        with pytest.raises(CacheUnavailable) as info:
            t.get("k")
        _assert_down(info.value, t.url, "k")
        server.start()
        assert t.get("k") == b"v"


def test_http_without_json_index(bad_cache: BadCache) -> None:
    (bad_cache.root / "c/objects").mkdir(parents=True)
    with open_transport(f"{bad_cache.url}/c") as t, pytest.raises(CacheError) as info:
        list(t.list("objects"))
    assert "cannot be listed" in str(info.value) and t.url in str(info.value)


def test_http_put_refused(bad_cache: BadCache) -> None:
    with open_transport(f"{bad_cache.url}/c") as t, pytest.raises(CacheError) as info:
        t.put("info/key", b"x")  # BadCache answers 405 to PUT
    assert not isinstance(info.value, CacheUnavailable)
    assert "info/key" in str(info.value) and "HTTP 405" in str(info.value)
    assert len(bad_cache.requests) == 1  # not retried
