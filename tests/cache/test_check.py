"""``mlpkg cache verify`` and ``mlpkg cache gc`` (mlpkg.cache.check, mlpkg.cache.collect;
issue 13) on real caches: paths made in a store, pushed with a real key to a directory,
nginx or moto's S3, then broken in one way each."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import zstandard

from mlpkg.cache.check import check_object, sample
from mlpkg.cache.format import Listing, PathEntry, info_key, object_key
from mlpkg.cache.keys import SecretKey
from mlpkg.cache.push import push
from mlpkg.cache.restore import decode_listing
from mlpkg.cache.transport import Transport, open_transport
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

if TYPE_CHECKING:
    from tests.cache.conftest import CacheHandle
    from tests.cli_support import CliResult
    from tests.conftest import MlpkgCli

RECIPE_HASH = "sha256:" + "0" * 64
HOUR = 3600


@dataclass
class Pushed:
    """A cache holding ``app`` and its reference ``dep``, signed by ``key``."""

    cache: CacheHandle
    key: SecretKey
    dep: StorePath
    app: StorePath

    @property
    def url(self) -> str:
        return self.cache.url

    def transport(self) -> Transport:
        return open_transport(self.url)

    def entry(self, path: StorePath) -> PathEntry:
        with self.transport() as t:
            raw = t.get(info_key(path))
        assert raw is not None
        return PathEntry.from_bytes(raw, self.url, path)

    def chunks(self, path: StorePath) -> list[str]:
        """The digests of the chunk objects the path's listing names."""
        entry = self.entry(path)
        with self.transport() as t:
            raw = t.get(object_key(entry.listing))
        assert raw is not None
        listing = Listing.from_bytes(decode_listing(raw, entry.listing, self.url), self.url, path)
        return [d for d, _ in listing.objects()]

    def files(self) -> set[str]:
        with self.transport() as t:
            return {k for k, _ in t.list()}

    def put(self, key: str, data: bytes) -> None:
        with self.transport() as t:
            t.put(key, data)

    def delete(self, key: str) -> None:
        with self.transport() as t:
            t.delete(key)


def _make_dep(tmp: Path) -> None:
    (tmp / "lib").mkdir(parents=True)
    big = hashlib.shake_256(b"dep").digest(600 * 1024)  # chunked on its own
    (tmp / "lib" / "weights.bin").write_bytes(big)
    for i in range(5):  # small files: the pack stream
        (tmp / "lib" / f"small{i}.txt").write_text(f"small file {i}\n" * 50)
    (tmp / "link").symlink_to("lib/small0.txt")


def _make_app(tmp: Path) -> None:
    (tmp / "bin").mkdir(parents=True)
    (tmp / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    os.chmod(tmp / "bin" / "app", 0o755)


def push_to(home: Path, cache: CacheHandle, key: SecretKey | None) -> tuple[StorePath, StorePath]:
    """Make dep and app (which references dep) in a store at ``home``; push app's closure."""
    dep = StorePath.from_fingerprint(b"check-dep", "dep-1.0")
    app = StorePath.from_fingerprint(b"check-app", "app-1.0")
    with Store(home) as store:
        common: dict[str, Any] = {"kind": "build", "recipe_hash": RECIPE_HASH, "deriver": {}}
        store.realise(dep, _make_dep, **common)
        store.realise(app, _make_app, references=[dep], **common)
        with open_transport(cache.url) as t:
            push(store, t, [app], key)
    return dep, app


@pytest.fixture(scope="module")
def key() -> SecretKey:
    return SecretKey.generate("check-key")


@pytest.fixture
def pushed(tmp_path: Path, file_cache: CacheHandle, key: SecretKey) -> Pushed:
    dep, app = push_to(tmp_path / "home-a", file_cache, key)
    return Pushed(file_cache, key, dep, app)


@pytest.fixture(params=["file", "nginx", "s3"])
def any_pushed(request: pytest.FixtureRequest, tmp_path: Path, key: SecretKey) -> Iterator[Pushed]:
    cache: CacheHandle = request.getfixturevalue(f"{request.param}_cache")
    dep, app = push_to(tmp_path / "home-a", cache, key)
    yield Pushed(cache, key, dep, app)


def verify(cli: MlpkgCli, p: Pushed, *args: str, trust: SecretKey | None = None) -> CliResult:
    trusted = str((trust or p.key).public())
    return cli.run("cache", "verify", p.url, *args, env={"MLPKG_TRUSTED_KEYS": trusted})


def problems(r: CliResult) -> list[dict[str, Any]]:
    doc = json.loads(r.out)
    assert set(doc) >= {"cache", "paths", "objects_checked", "problems"}, doc
    return list(doc["problems"])


# --- verify ---------------------------------------------------------------------------------


def test_a_clean_cache_verifies(mlpkg_cli: MlpkgCli, any_pushed: Pushed) -> None:
    r = verify(mlpkg_cli, any_pushed).ok()
    assert "is sound: 2 paths" in r.out, r
    r = verify(mlpkg_cli, any_pushed, "--full", "--json").ok()
    doc = r.json()
    assert doc["problems"] == [] and doc["paths"] == 2 and doc["full"] is True
    chunks = set(any_pushed.chunks(any_pushed.dep)) | set(any_pushed.chunks(any_pushed.app))
    assert doc["objects"] == len(chunks) >= 3
    assert doc["objects_checked"] == len(chunks) + 2  # and the two listings
    r = verify(mlpkg_cli, any_pushed, "--sample", "1", "--json").ok()
    assert r.json()["objects_checked"] == 3


def test_a_corrupt_object_is_named_with_its_path(mlpkg_cli: MlpkgCli, any_pushed: Pushed) -> None:
    p = any_pushed
    digest = p.chunks(p.dep)[0]
    with p.transport() as t:
        raw = t.get(object_key(digest))
    assert raw is not None
    p.put(object_key(digest), zstandard.ZstdCompressor().compress(b"not the content"))
    r = verify(mlpkg_cli, p, "--full")
    assert r.code == 1, r
    assert f"{p.dep}: object {digest}: " in r.out, r
    assert "1 problem" in r.err and p.url.split("?")[0] in r.err
    r = verify(mlpkg_cli, p, "--full", "--json")
    assert r.code == 1
    [problem] = problems(r)
    assert problem["path"] == str(p.dep) and problem["object"] == digest
    # flipped bytes in the frame: same size, another content
    p.put(object_key(digest), raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:]))
    r = verify(mlpkg_cli, p, "--full", "--json")
    assert r.code == 1 and [x["object"] for x in problems(r)] == [digest], r


def test_a_missing_object_and_a_missing_listing(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    digest = pushed.chunks(pushed.dep)[-1]
    pushed.delete(object_key(digest))
    listing = pushed.entry(pushed.app).listing
    pushed.delete(object_key(listing))
    r = verify(mlpkg_cli, pushed, "--json")
    assert r.code == 1
    got = {(x["path"], x["object"]): x["problem"] for x in problems(r)}
    assert "missing" in got[(str(pushed.dep), digest)]
    assert "listing object is missing" in got[(str(pushed.app), listing)]
    assert len(got) == 2, got


def test_a_reference_without_an_info_file(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    pushed.delete(info_key(pushed.dep))
    r = verify(mlpkg_cli, pushed)
    assert r.code == 1
    assert f"{pushed.app}: references {pushed.dep}, which has no info file" in r.out, r


def test_unsigned_and_untrusted_entries(
    mlpkg_cli: MlpkgCli, tmp_path: Path, file_cache: CacheHandle, key: SecretKey
) -> None:
    dep, app = push_to(tmp_path / "home-a", file_cache, None)
    p = Pushed(file_cache, key, dep, app)
    r = verify(mlpkg_cli, p, "--json")
    assert r.code == 1
    assert {(x["path"], x["problem"]) for x in problems(r)} == {
        (str(dep), "the info file is unsigned"),
        (str(app), "the info file is unsigned"),
    }
    trusted = Pushed(type(file_cache)(url=file_cache.url + "?trusted=true"), key, dep, app)
    verify(mlpkg_cli, trusted).ok()

    other = SecretKey.generate("other-key")
    signed = tmp_path / "signed"
    signed.mkdir()
    handle = type(file_cache)(url=signed.as_uri(), root=signed)
    push_to(tmp_path / "home-b", handle, other)
    r = verify(mlpkg_cli, Pushed(handle, key, dep, app))  # trusts `key`, not `other`
    assert r.code == 1
    assert f"{dep}: signed by no trusted key (signatures by: other-key)" in r.out, r
    verify(mlpkg_cli, Pushed(handle, other, dep, app)).ok()


def test_a_signature_over_another_entry(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    entry = pushed.entry(pushed.dep)
    entry.archive_size += 1  # the signature no longer covers what the entry says
    pushed.put(info_key(pushed.dep), entry.to_bytes())
    r = verify(mlpkg_cli, pushed, "--json")
    assert r.code == 1
    [x] = problems(r)
    assert x["path"] == str(pushed.dep) and "signed by no trusted key" in x["problem"]


def test_a_malformed_info_file(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    key = info_key(pushed.dep)
    pushed.put(key, b"{not json")
    r = verify(mlpkg_cli, pushed, "--json")
    assert r.code == 1
    got = {(x["path"], x["problem"].split(":")[0]) for x in problems(r)}
    assert (key, "malformed") in got, got
    # its referrer now points at a path with no (readable) entry: that is reported too
    doc = json.loads(pushed.entry(pushed.app).to_bytes())
    doc["references"] = ["../../etc-passwd"]
    pushed.put(info_key(pushed.app), json.dumps(doc).encode())
    r = verify(mlpkg_cli, pushed, "--json")
    assert {x["path"] for x in problems(r)} == {key, info_key(pushed.app)}


def test_not_a_cache(mlpkg_cli: MlpkgCli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mlpkg_cli.run("cache", "verify", empty.as_uri())
    assert r.code == 1 and "has no cache-info.json" in r.err, r
    r = mlpkg_cli.run("cache", "verify", empty.as_uri(), "--full", "--sample", "3")
    assert r.code == 2, r


def test_check_object_streams_and_names_what_is_wrong(pushed: Pushed) -> None:
    digest = pushed.chunks(pushed.dep)[0]
    with pushed.transport() as t:
        assert check_object(t, digest, None) is None
        raw = t.get(object_key(digest))
        assert raw is not None
        t.put(object_key(digest), raw[: len(raw) // 2])
        assert check_object(t, digest, None) is not None
        t.put(object_key(digest), b"garbage")
        assert "zstd" in (check_object(t, digest, 10) or "")
        bomb = zstandard.ZstdCompressor().compress(bytes(64 << 20))
        t.put(object_key(digest), bomb)
        assert "more than the 10 bytes" in (check_object(t, digest, 10) or "")


def test_sample_is_deterministic_and_spread() -> None:
    digests = [f"{i:064x}" for i in range(100)]
    assert sample(reversed(digests), 4) == [digests[0], digests[25], digests[50], digests[75]]
    assert sample(digests, 200) == digests
    assert sample(digests, 0) == []


# --- gc -------------------------------------------------------------------------------------


def orphan(p: Pushed, content: bytes, age: float) -> str:
    """An object no info file names, written ``age`` seconds ago (caches with a directory
    behind them: file and nginx)."""
    digest = hashlib.sha256(content).hexdigest()
    key = object_key(digest)
    p.put(key, zstandard.ZstdCompressor().compress(content))
    assert p.cache.root is not None
    then = time.time() - age
    os.utime(p.cache.root / key, (then, then))
    return key


def test_gc_removes_old_orphans_only(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    old = orphan(pushed, b"left by an interrupted push", 2 * HOUR)
    fresh = orphan(pushed, b"a push under way", 60)
    before = pushed.files()
    r = mlpkg_cli.run("cache", "gc", pushed.url, "--dry-run", "--json").ok()
    doc = r.json()
    assert doc["removed_keys"] == [old] and doc["kept_recent"] == 1 and doc["dry_run"]
    assert pushed.files() == before
    r = mlpkg_cli.run("cache", "gc", pushed.url).ok()
    assert r.out.startswith("removed 1 objects"), r
    assert pushed.files() == before - {old}
    verify(mlpkg_cli, pushed, "--full").ok()
    r = mlpkg_cli.run("cache", "gc", pushed.url, "--grace", "30", "--json").ok()
    assert r.json()["removed_keys"] == [fresh]
    assert pushed.files() == before - {old, fresh}
    verify(mlpkg_cli, pushed, "--full").ok()


def test_gc_refuses_what_it_cannot_read(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    old = orphan(pushed, b"old", 2 * HOUR)
    pushed.put(info_key(pushed.dep), b"{broken")
    r = mlpkg_cli.run("cache", "gc", pushed.url)
    assert r.code == 1 and "cannot be collected" in r.err, r
    assert old in pushed.files()


@pytest.mark.parametrize("backend", ["nginx", "s3"])
def test_gc_keeps_young_orphans_on_every_backend(
    request: pytest.FixtureRequest,
    mlpkg_cli: MlpkgCli,
    tmp_path: Path,
    key: SecretKey,
    backend: str,
) -> None:
    """Modification times from nginx's index and S3's LastModified: an orphan written now
    is kept with the default grace and removed with --grace 0; on nginx, where the file
    behind the server can be backdated, an old one goes with the default grace."""
    cache: CacheHandle = request.getfixturevalue(f"{backend}_cache")
    dep, app = push_to(tmp_path / "home-a", cache, key)
    p = Pushed(cache, key, dep, app)
    stray = object_key(hashlib.sha256(b"stray").hexdigest())
    p.put(stray, zstandard.ZstdCompressor().compress(b"stray"))
    old = orphan(p, b"left by an interrupted push", 2 * HOUR) if backend == "nginx" else None
    before = p.files()
    r = mlpkg_cli.run("cache", "gc", p.url, "--dry-run", "--json").ok()
    doc = r.json()
    assert doc["kept_recent"] == 1 and doc["removed_keys"] == ([old] if old else []), doc
    assert p.files() == before
    r = mlpkg_cli.run("cache", "gc", p.url).ok()
    assert r.out.startswith(f"removed {1 if old else 0} objects"), r
    assert "kept 1 unnamed objects" in r.out, r
    assert p.files() == before - {old}
    verify(mlpkg_cli, p, "--full").ok()
    r = mlpkg_cli.run("cache", "gc", p.url, "--grace", "0", "--json").ok()
    assert r.json()["removed_keys"] == [stray] and r.json()["kept_recent"] == 0
    assert p.files() == before - {old, stray}
    verify(mlpkg_cli, p, "--full").ok()


def test_gc_removes_old_temporaries_of_puts(mlpkg_cli: MlpkgCli, pushed: Pushed) -> None:
    """file:// puts write ``.<name>.<random>.part`` first; list() hides them, so gc looks
    for them itself: those older than the grace (left by a crashed push) go."""
    root = pushed.cache.root
    assert root is not None
    digest = pushed.chunks(pushed.dep)[0]
    crashed = object_key(digest).rpartition("/")[0] + f"/.{digest}.0badf00d.part"
    under_way = "info/.dep.json.1234abcd.part"
    crashed_root = ".cache-info.json.feedf00d.part"
    for rel in (crashed, under_way, crashed_root):
        (root / rel).write_bytes(b"half a file")
    then = time.time() - 2 * HOUR
    os.utime(root / crashed, (then, then))
    os.utime(root / crashed_root, (then, then))
    before = pushed.files()
    r = mlpkg_cli.run("cache", "gc", pushed.url, "--dry-run", "--json").ok()
    doc = r.json()
    assert doc["removed_temporaries"] == sorted([crashed, crashed_root]), doc
    assert doc["removed_temporaries_bytes"] == 2 * len(b"half a file")
    assert doc["removed_keys"] == [] and doc["kept_recent"] == 0
    assert (root / crashed).exists()
    r = mlpkg_cli.run("cache", "gc", pushed.url, "--json").ok()
    assert r.json()["removed_temporaries"] == sorted([crashed, crashed_root])
    assert not (root / crashed).exists() and not (root / crashed_root).exists()
    assert (root / under_way).exists()
    assert pushed.files() == before  # no object, info file or cache-info.json touched
    r = mlpkg_cli.run("cache", "gc", pushed.url, "--grace", "0", "--json").ok()
    assert r.json()["removed_temporaries"] == [under_way] and r.json()["removed_keys"] == []
    assert not (root / under_way).exists()
    assert pushed.files() == before
    verify(mlpkg_cli, pushed, "--full").ok()


class _Hooked(Transport):
    """A directory cache seen through another transport: modification times come from its
    ``list_mtimes`` (counted), and the second listing of ``info/`` first runs
    ``before_relist`` (a push finishing meanwhile)."""

    def __init__(self, inner: Transport, before_relist: Any = None) -> None:
        self.inner, self.url = inner, inner.url
        self.before_relist = before_relist
        self.info_lists = 0
        self.hook_calls = 0

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def stream(self, key: str) -> Any:
        return self.inner.stream(key)

    def has(self, keys: Any) -> set[str]:
        return self.inner.has(keys)

    def put(self, key: str, source: bytes | Path) -> None:
        self.inner.put(key, source)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        if prefix == "info":
            self.info_lists += 1
            if self.info_lists == 2 and self.before_relist is not None:
                self.before_relist()
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        self.hook_calls += 1
        root = getattr(self.inner, "root")  # noqa: B009 - a FileTransport
        for key, size in self.inner.list(prefix):
            yield key, size, (root / key).stat().st_mtime


class _Timeless(_Hooked):
    """As :class:`_Hooked`, with the Transport default: it cannot tell modification
    times."""

    list_mtimes = Transport.list_mtimes


class _LateTimeless(_Hooked):
    """Finds out only while listing that it cannot tell times (an http server whose
    index has no mtime): one file first, then NotImplementedError."""

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        for key, size in self.inner.list(prefix):
            yield key, size, time.time()
            raise NotImplementedError("no mtime")


@pytest.mark.parametrize("kind", [_Timeless, _LateTimeless])
def test_gc_without_modification_times_needs_grace_0(pushed: Pushed, kind: type[_Hooked]) -> None:
    from mlpkg.cache.collect import DEFAULT_GRACE, gc, list_times
    from mlpkg.errors import BadInput

    old = orphan(pushed, b"old", 2 * HOUR)
    before = pushed.files()
    with pushed.transport() as t:
        timeless = kind(t)
        assert {m for _, _, m in list_times(timeless, "objects")} == {None}
        with pytest.raises(BadInput, match="does not tell when") as info:
            gc(timeless, grace=DEFAULT_GRACE)
        assert "--grace 0" in (info.value.hint or "")
        assert pushed.files() == before
        report = gc(timeless, grace=0)
    assert [k for k, _ in report.removed] == [old]
    assert pushed.files() == before - {old}


def test_gc_keeps_what_an_info_file_written_meanwhile_names(pushed: Pushed) -> None:
    from mlpkg.cache.collect import gc

    dep_info = info_key(pushed.dep)
    dep_objects = {
        object_key(d) for d in [pushed.entry(pushed.dep).listing, *pushed.chunks(pushed.dep)]
    }
    assert pushed.cache.root is not None
    for key in pushed.files():
        if key.startswith("objects/"):
            os.utime(pushed.cache.root / key, (0, 0))  # all old: the grace keeps none
    with pushed.transport() as t:
        saved = t.get(dep_info)
        assert saved is not None
        t.delete(dep_info)  # dep's objects are now named by nothing...
        hooked = _Hooked(t)
        report = gc(hooked, dry_run=True)
        assert hooked.hook_calls == 1 and {k for k, _ in report.removed} == dep_objects
        hooked = _Hooked(t, lambda: t.put(dep_info, saved))  # ...until a push writes it again
        report = gc(hooked)
    assert hooked.info_lists == 2
    assert report.removed == [] and report.paths == 2
    assert dep_objects <= pushed.files()
