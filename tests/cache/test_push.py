"""``mlpkg push`` then substitution, through the CLI, on real caches: a directory, nginx
(WebDAV, plain and TLS with HTTP/2) and S3 (moto). Home A builds and pushes; an empty
home B substitutes every path with no build and no fetch, and gets A's archive hashes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlpkg.cache.format import object_key
from mlpkg.cache.transport import display_url
from tests.cache.flow import (
    Team,
    cache_keys,
    check_consistent,
    entries,
    listing_of,
    made,
    warnings,
)


@pytest.fixture
def team(tmp_path: Path, make_mlpkg_cli: Callable[..., Any]) -> Team:
    return Team(tmp_path, make_mlpkg_cli)


@pytest.fixture(params=["file", "nginx", "https", "s3"])
def cache_url(request: pytest.FixtureRequest) -> str:
    handle = request.getfixturevalue(f"{request.param}_cache")
    url: str = handle.url
    return url


def test_push_then_substitute_into_an_empty_home(team: Team, cache_url: str) -> None:
    report = team.push(cache_url, "top")
    a_hashes = team.a.hashes("top")
    assert sorted(p.split("-", 1)[1] for p in report["pushed"]) == ["base-1.0", "top-1.0"]
    assert report["present"] == []
    assert report["objects_uploaded"] > 0 and report["bytes_uploaded"] > 0
    assert check_consistent(cache_url) == 2

    b = team.home("b")
    plan = b.plan("--substituter", cache_url, "top")
    shown = display_url(cache_url)  # as messages show it: no credentials, no query
    assert plan == {"base": ("substitute", shown), "top": ("substitute", shown)}

    result = b("build", "--substituter", cache_url, "top").ok()
    assert made(result) == {"base": "substitute", "top": "substitute"}
    assert warnings(result) == []
    assert b.hashes("top") == a_hashes
    assert b.logs() == []  # nothing was built
    assert not any((b.path / "partial").iterdir())  # nothing was downloaded
    assert not [n for n in b.store_names() if n.startswith(".")]  # no debris

    # B's paths work like A's: the symlink, the executable, the empty directory.
    store = b.path / "store"
    (base,) = store.glob("*-base-1.0")
    assert (base / "weights").resolve() == (base / "share/weights.bin").resolve()
    assert (base / "bin/run").stat().st_mode & 0o111 and (base / "var/empty").is_dir()

    # Everything is there already: a second push uploads nothing.
    again = team.push(cache_url, "top")
    assert again["pushed"] == [] and len(again["present"]) == 2
    assert again["objects_uploaded"] == 0 and again["bytes_uploaded"] == 0


def test_a_second_closure_uploads_only_its_new_objects(team: Team, file_cache: Any) -> None:
    url = file_cache.url
    team.push(url, "top")
    before = set(cache_keys(url))
    report = team.push(url, "other")
    after = set(cache_keys(url))
    (entry,) = [e for name, e in entries(url).items() if name == "other"]
    objects = {object_key(d) for d, _ in listing_of(url, entry).objects()}
    shared = objects & before
    assert len(shared) == 1  # shared.bin: the same bytes as base's and top's big file
    new_objects = objects - before
    assert report["objects_uploaded"] == len(new_objects) >= 2  # new.bin and the pack
    assert report["objects_present"] == 1
    assert after - before == new_objects | {object_key(entry.listing), f"info/{entry.path.hash_part}.json"}  # fmt: skip


def test_closures_sharing_an_object_both_substitute(team: Team, file_cache: Any) -> None:
    url = file_cache.url
    team.push(url, "top")
    team.push(url, "other")
    b = team.home("b")
    b("build", "--substituter", url, "top", "other").ok()
    assert b.hashes("other") == team.a.hashes("other")


def test_push_and_substitute_a_lock(team: Team, nginx_cache: Any, tmp_path: Path) -> None:
    lock = tmp_path / "top.lock"
    team.a("lock", "--realise", "-o", str(lock), "top").ok()
    report = team.a("push", "--json", "--to", nginx_cache.url, "--key", "team", "--lock", str(lock))
    assert len(report.ok().json()["pushed"]) == 2
    b = team.home("b")
    result = b("build", "--substituter", nginx_cache.url, "--lock", str(lock)).ok()
    assert made(result) == {"base": "substitute", "top": "substitute"}
    assert b.hashes("top") == team.a.hashes("top")


def test_push_of_a_store_path_and_unknown_targets(team: Team, file_cache: Any) -> None:
    path = team.a("build", "top").ok().out.strip()
    report = team.a("push", "--json", "--to", file_cache.url, "--key", "team", path).ok().json()
    assert len(report["pushed"]) == 2
    bad = team.a("push", "--to", "ftp://example.invalid/x", "--key", "team", "top")
    assert bad.code == 2 and "ftp://example.invalid/x" in bad.err


def test_install_substitutes_too(team: Team, file_cache: Any) -> None:
    team.push(file_cache.url, "top")
    b = team.home("b")
    result = b("install", "--substituter", file_cache.url, "top").ok()
    assert made(result) == {"base": "substitute", "top": "substitute"}
    assert b.built() == set() and b.hashes("top") == team.a.hashes("top")


def test_objects_already_there_are_counted_once(team: Team, file_cache: Any) -> None:
    """other's push stored the big file's chunk; base and top (pushed at once) both hold
    it: it is present, counted once, and uploaded by neither."""
    url = file_cache.url
    team.push(url, "other")
    before = set(cache_keys(url))
    report = team.push(url, "top")
    found = entries(url)
    needed = set()
    for name in ("base", "top"):
        needed |= {object_key(d) for d, _ in listing_of(url, found[name]).objects()}
    assert report["objects_present"] == len(needed & before) == 1
    assert report["objects_uploaded"] == len(needed - before)


def test_an_external_reference_is_made_here(team: Team, file_cache: Any) -> None:
    """withpy refers to the machine's python (an external link): the push stores an entry
    for it, so that withpy's references exist in the cache; B links its own."""
    report = team.push(file_cache.url, "withpy")
    assert len(report["pushed"]) == 2
    assert check_consistent(file_cache.url) == 2
    b = team.home("b")
    assert b.plan("--substituter", file_cache.url, "withpy") == {
        "python": ("link", None),
        "withpy": ("substitute", file_cache.url),
    }
    result = b("build", "--substituter", file_cache.url, "withpy").ok()
    assert made(result) == {"python": "link", "withpy": "substitute"}
    assert b.hashes("withpy") == team.a.hashes("withpy")


def test_chunks_this_store_holds_are_not_downloaded_again(
    team: Team, file_cache: Any, bad_cache: Any
) -> None:
    """base, top and other all hold the same 700 kB file: served over HTTP (the server
    records each request), its chunk is downloaded once, for base; top (same command)
    and other (a later one) read it from base's file."""
    team.push(file_cache.url, "top")
    team.push(file_cache.url, "other")
    shutil.copytree(file_cache.root, bad_cache.root, dirs_exist_ok=True)
    found = entries(file_cache.url)
    listing = listing_of(file_cache.url, found["base"])
    (chunks,) = [e.chunks for e in listing.entries if e.path == "share/weights.bin"]
    chunk = object_key((chunks or [])[0][0])
    b = team.home("b")
    b("build", "--substituter", bad_cache.url, "top").ok()
    b("build", "--substituter", bad_cache.url, "other").ok()
    got = [p.lstrip("/") for m, p in bad_cache.requests if m == "GET"]
    assert got.count(chunk) == 1
    assert object_key(found["other"].listing) in got  # other was substituted, not built
    assert b.built() == set() and b.hashes("other") == team.a.hashes("other")
    assert b.hashes("top") == team.a.hashes("top")
