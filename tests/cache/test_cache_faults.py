"""Caches that fail: 500s, hangs, connections dropped mid-object, a push killed midway, a
lock that pins another hash, and the memory of 404s. Real servers (tests/cache_servers.py:
the faulty one records every request) and real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlpkg.cache.format import CACHE_INFO_KEY, CacheInfo, PathEntry, info_key, object_key
from mlpkg.cache.keys import load_signing_key
from mlpkg.cache.transport import ATTEMPTS
from tests.cache.flow import Home, Team, check_consistent, entries, listing_of, made, warnings
from tests.cache_servers import BadCache


@pytest.fixture
def team(tmp_path: Path, make_mlpkg_cli: Callable[..., Any]) -> Team:
    return Team(tmp_path, make_mlpkg_cli)


def big_chunk(url: str) -> str:
    """The key of base's 700 kB chunk (top holds the same bytes)."""
    listing = listing_of(url, entries(url)["base"])
    (chunks,) = [e.chunks for e in listing.entries if e.path == "share/weights.bin"]
    assert chunks is not None
    return object_key(chunks[0][0])


def count_objects(root: Path) -> int:
    """Objects in a directory cache (not the temporary files of writes under way)."""
    return sum(1 for p in (root / "objects").glob("*/*") if not p.name.startswith("."))


def gets(bad: BadCache, start: int = 0) -> list[str]:
    return [path.lstrip("/") for method, path in bad.requests[start:] if method == "GET"]


# -- caches that are down -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_a_cache_that_is_down_is_skipped_with_one_warning(
    team: Team, bad_cache: BadCache, mode: str
) -> None:
    team.a("build", "top").ok()
    bad_cache.mode = mode
    b = team.home("b")
    started = time.monotonic()
    result = b("build", "--substituter", bad_cache.url, "top", env={"MLPKG_CACHE_TIMEOUT": "1"})
    elapsed = time.monotonic() - started
    result.ok()
    assert b.built() == {"base", "top"}
    (warned,) = warnings(result)
    assert bad_cache.url in warned and "skipped for the rest of this command" in warned
    # Nothing after cache-info.json: the cache is skipped for both paths.
    assert {p for _, p in bad_cache.requests} == {f"/{CACHE_INFO_KEY}"}
    assert len(bad_cache.requests) <= ATTEMPTS
    assert elapsed < 15  # three 1 s timeouts and backoff, then the builds
    assert b.hashes("top") == team.a.hashes("top")


def test_a_cache_that_fails_after_answering_is_skipped(
    team: Team, file_cache: Any, bad_cache: BadCache
) -> None:
    """cache-info.json answers, then every info file is cut off midway."""
    team.push(file_cache.url, "top")
    shutil.copytree(file_cache.root, bad_cache.root, dirs_exist_ok=True)
    bad_cache.drop = {info_key(e.path) for e in entries(file_cache.url).values()}
    b = team.home("b")
    result = b("build", "--substituter", bad_cache.url, "top").ok()
    assert b.built() == {"base", "top"}
    (warned,) = warnings(result)
    assert bad_cache.url in warned
    assert not [p for p in gets(bad_cache) if p.startswith("objects/")]


def test_a_connection_dropped_mid_object_moves_to_the_next_cache(
    team: Team, file_cache: Any, bad_cache: BadCache
) -> None:
    team.push(file_cache.url, "top")
    shutil.copytree(file_cache.root, bad_cache.root, dirs_exist_ok=True)
    chunk = big_chunk(file_cache.url)
    bad_cache.drop = {chunk}
    first, second = f"{bad_cache.url}?priority=1", f"{file_cache.url}?priority=2"
    b = team.home("b")
    assert b.plan("--substituter", second, "--substituter", first, "top") == {
        "base": ("substitute", bad_cache.url),
        "top": ("substitute", bad_cache.url),
    }
    start = len(bad_cache.requests)
    result = b("build", "--substituter", second, "--substituter", first, "top").ok()
    assert b.built() == set()  # both substituted, from the second cache
    assert made(result) == {"base": "substitute", "top": "substitute"}
    (warned,) = warnings(result)
    base = entries(file_cache.url)["base"].path
    assert f"Substituting {base} from {bad_cache.url} failed" in warned
    # Down after base: top was not asked of it (not even its listing).
    top_listing = object_key(entries(file_cache.url)["top"].listing)
    asked = gets(bad_cache, start)
    assert top_listing not in asked and 1 <= asked.count(chunk) <= ATTEMPTS
    assert b.hashes("top") == team.a.hashes("top")


def test_each_cache_is_tried_once_before_building(
    team: Team, file_cache: Any, bad_cache: BadCache
) -> None:
    """A corrupt first cache, then a second that drops the connection: the first is not
    asked again once the second is down; the paths are built."""
    team.push(file_cache.url, "top")
    shutil.copytree(file_cache.root, bad_cache.root, dirs_exist_ok=True)
    chunk = big_chunk(file_cache.url)
    bad_cache.drop = {chunk}
    corrupt = file_cache.root / chunk
    corrupt.write_bytes(corrupt.read_bytes()[:-10])
    first, second = f"{file_cache.url}?priority=1", f"{bad_cache.url}?priority=2"
    b = team.home("b")
    result = b("build", "--substituter", first, "--substituter", second, "top").ok()
    assert b.built() == {"base", "top"}
    found = entries(file_cache.url)
    for name in ("base", "top"):
        failed = f"Substituting {found[name].path} from {file_cache.url} failed"
        assert sum(failed in w for w in warnings(result)) == 1, result.err
    assert sum(bad_cache.url in w for w in warnings(result)) == 1, result.err
    assert b.hashes("top") == team.a.hashes("top")


# -- a push killed midway -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "nginx"])
def test_a_killed_push_leaves_a_consistent_cache_and_the_next_completes(
    team: Team, request: pytest.FixtureRequest, kind: str
) -> None:
    cache = request.getfixturevalue(f"{kind}_cache")
    url, root = cache.url, cache.root
    team.a("build", "many").ok()
    proc = team.a.cli.popen(
        "push", "--to", url, "--key", "team", "--jobs", "1", "many", env=team.a.env
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while count_objects(root) < 10:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert not (root / "info").is_dir() or not any((root / "info").iterdir())
    assert check_consistent(url) == 0
    left = count_objects(root)
    assert 10 <= left < 150

    report = team.push(url, "many")
    assert len(report["pushed"]) == 1
    assert report["objects_present"] >= 10 and report["objects_uploaded"] <= 150 - 10
    assert report["objects_present"] + report["objects_uploaded"] == 150
    assert check_consistent(url) == 1
    b = team.home("b")
    b("build", "--substituter", url, "many").ok()
    assert b.built() == set() and b.hashes("many") == team.a.hashes("many")


# -- a lock pins the hash -------------------------------------------------------------------


def test_an_entry_with_another_hash_than_the_lock_is_not_used(
    team: Team, file_cache: Any, tmp_path: Path
) -> None:
    """The cache's base entry is validly signed, but for another archive hash than the
    lock pins: with the lock it is passed over before anything is downloaded; without,
    it is refused after (the tree does not have the signed hash)."""
    lock = tmp_path / "top.lock"
    team.a("lock", "--realise", "-o", str(lock), "top").ok()
    team.push(file_cache.url, "top")
    base = entries(file_cache.url)["base"]
    doc = json.loads(base.to_bytes()) | {"archive_hash": "sha256:" + "1" * 64}
    forged = PathEntry.from_bytes(json.dumps(doc).encode(), "test")
    forged.signatures = [load_signing_key(team.a.path, "team").sign(forged.fingerprint())]
    (file_cache.root / info_key(base.path)).write_bytes(forged.to_bytes())

    b = team.home("b")
    assert b.plan("--substituter", file_cache.url, "--lock", str(lock)) == {
        "base": ("build", None),
        "top": ("substitute", file_cache.url),
    }
    result = b("build", "--substituter", file_cache.url, "--lock", str(lock)).ok()
    assert b.built() == {"base"}
    assert any(str(base.path) in w and "the lock pins" in w for w in warnings(result))
    assert b.hashes("top") == team.a.hashes("top")

    c = team.home("c")
    result = c("build", "--substituter", file_cache.url, "top").ok()
    assert c.built() == {"base"}
    assert any(f"Substituting {base.path} from {file_cache.url}" in w for w in warnings(result))
    assert c.hashes("top") == team.a.hashes("top")


# -- remembered 404s ------------------------------------------------------------------------


def _info_gets(bad: BadCache, start: int) -> list[str]:
    return [p for p in gets(bad, start) if p.startswith("info/")]


def _dry_run(home: Home, bad: BadCache) -> list[str]:
    start = len(bad.requests)
    home("build", "--dry-run", "--substituter", bad.url, "top").ok()
    return _info_gets(bad, start)


def test_a_404_is_remembered_for_the_ttl(team: Team, bad_cache: BadCache) -> None:
    (bad_cache.root / CACHE_INFO_KEY).write_bytes(CacheInfo().to_bytes())
    b = team.home("b")
    b.config("substituter-negative-ttl = 2\n")
    first = _dry_run(b, bad_cache)
    assert len(first) == 2  # base and top, each asked once
    assert _dry_run(b, bad_cache) == []  # remembered
    time.sleep(2.1)
    assert sorted(_dry_run(b, bad_cache)) == sorted(first)  # forgotten

    assert _dry_run(b, bad_cache) == []  # remembered again
    assert b("cache", "forget", "--json").ok().json() == {"forgotten_caches": 1}
    assert sorted(_dry_run(b, bad_cache)) == sorted(first)  # `cache forget`: asked again

    c = team.home("c")
    c.config("substituter-negative-ttl = 0\n")
    assert len(_dry_run(c, bad_cache)) == 2
    assert len(_dry_run(c, bad_cache)) == 2  # 0: nothing remembered
    assert not (c.path / "cache" / "substituters").is_dir() or not any(
        (c.path / "cache" / "substituters").iterdir()
    )


@pytest.mark.parametrize(
    "cache_info",
    [
        b'{"format": "mlpkg-cache", "version": 2, "compression": "zstd"}',
        b'{"format": "mlpkg-cache", "version": 1, "compression": "xz"}',
        b"<html>not json</html>",
        None,
    ],
    ids=["version-2", "other-compression", "not-json", "missing"],
)
def test_a_cache_this_mlpkg_cannot_read_is_skipped(
    team: Team, file_cache: Any, cache_info: bytes | None
) -> None:
    team.push(file_cache.url, "top")
    if cache_info is None:
        (file_cache.root / CACHE_INFO_KEY).unlink()
    else:
        (file_cache.root / CACHE_INFO_KEY).write_bytes(cache_info)
    b = team.home("b")
    result = b("build", "--substituter", file_cache.url, "top").ok()
    assert b.built() == {"base", "top"}
    (warned,) = warnings(result)
    assert file_cache.url in warned and "skipped for the rest of this command" in warned


@pytest.mark.parametrize("status", [401, 400, 418])
def test_a_cache_refusing_info_files_is_skipped(team: Team, http_server: Any, status: int) -> None:
    """cache-info.json answers; every info file is refused with a 4xx that does not mean
    absent (a cache behind authentication): the cache is skipped, the paths built."""
    http_server.route(f"/c/{CACHE_INFO_KEY}", body=CacheInfo().to_bytes())
    team.a("build", "top").ok()
    docs = team.a("path-info", "--closure", "--json", "top").ok().json()
    for doc in docs:
        name = Path(doc["path"]).name
        http_server.route(f"/c/info/{name.split('-', 1)[0]}.json", status=status)
    url = http_server.url("/c")
    b = team.home("b")
    result = b("build", "--substituter", url, "top")
    assert result.code == 0, str(result)
    assert b.built() == {"base", "top"}
    assert len(warnings(result)) == 1 and url in warnings(result)[0]


def test_a_cache_that_stalls_mid_object_moves_to_the_next(
    team: Team, file_cache: Any, slow_http_server: Any
) -> None:
    """Every file of the cache served over HTTP, the big chunk so slowly that the read
    times out midway (MLPKG_CACHE_TIMEOUT=1): the next cache gives the paths, fast."""
    team.push(file_cache.url, "top")
    chunk = big_chunk(file_cache.url)
    for file in file_cache.root.rglob("*"):
        if file.is_file():
            key = file.relative_to(file_cache.root).as_posix()
            slow = key == chunk
            slow_http_server.route(
                f"/c/{key}", file.read_bytes(), chunk=4096 if slow else 1 << 24,
                delay=5 if slow else 0,
            )  # fmt: skip
    stalling = f"http://127.0.0.1:{slow_http_server.port}/c"
    b = team.home("b")
    started = time.monotonic()
    result = b(
        "build", "--substituter", f"{stalling}?priority=1",
        "--substituter", f"{file_cache.url}?priority=2", "top",
        env={"MLPKG_CACHE_TIMEOUT": "1"},
    ).ok()  # fmt: skip
    assert time.monotonic() - started < 12
    assert b.built() == set()
    (warned,) = warnings(result)
    assert stalling in warned and "skipped for the rest of this command" in warned
    assert slow_http_server.hits[f"/c/{chunk}"] <= ATTEMPTS
    assert b.hashes("top") == team.a.hashes("top")
