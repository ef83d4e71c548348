"""Substitution accepts only what a trusted key signed and what hashes to what was signed.

Each test pushes A's closure of ``top`` (``base`` is its reference) to a directory cache,
breaks the cache the way an attacker or a failing disk would, and has an empty home B
build ``top`` from it: what the cache cannot vouch for is built instead (the recipes are
deterministic, so the result is A's), with a warning naming the cache and the path, and
nothing invalid enters B's store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mlpkg.cache.format import Entry, Listing, PathEntry, info_key, object_key
from mlpkg.cache.keys import SecretKey, load_signing_key
from tests.cache.flow import Home, Team, edit_info, entries, listing_of, made, warnings
from tests.cache_servers import BadCache


@pytest.fixture
def team(tmp_path: Path, make_mlpkg_cli: Callable[..., Any]) -> Team:
    return Team(tmp_path, make_mlpkg_cli)


@pytest.fixture
def pushed(team: Team, file_cache: Any) -> tuple[Team, Path, str]:
    """A's closure of top in a directory cache: the team, the cache's root and URL."""
    team.push(file_cache.url, "top")
    return team, file_cache.root, file_cache.url


def build_b(b: Home, url: str) -> tuple[dict[str, str], list[str]]:
    """B builds top from ``url``: what it did to each path (``substitute`` only when no
    build followed), and its warnings."""
    result = b("build", "--substituter", url, "top").ok()
    did = made(result)
    for name in b.built():
        did[name] = "build"
    return did, warnings(result)


def assert_same_as_a(team: Team, b: Home) -> None:
    assert b.hashes("top") == team.a.hashes("top")
    assert not [n for n in b.store_names() if n.startswith(".")]


# -- signatures -----------------------------------------------------------------------------


def test_unsigned_entries_are_used_only_from_a_trusted_directory(
    team: Team, file_cache: Any
) -> None:
    push = team.a("push", "--json", "--to", file_cache.url, "top").ok()
    assert "unsigned" in push.err
    url = file_cache.url
    b = team.home("b")
    assert b.plan("--substituter", url, "top") == {"base": ("build", None), "top": ("build", None)}
    did, warned = build_b(b, url)
    assert did == {"base": "build", "top": "build"}
    assert len(warned) == 2 and all(url in w and "no trusted key" in w for w in warned)
    assert any("-base-1.0" in w for w in warned) and any("-top-1.0" in w for w in warned)
    assert_same_as_a(team, b)

    c = team.home("c", trust=None)
    did, warned = build_b(c, f"{url}?trusted=true")
    assert did == {"base": "substitute", "top": "substitute"} and warned == []
    assert_same_as_a(team, c)


def test_only_a_directory_may_be_marked_trusted(team: Team) -> None:
    b = team.home("b")
    result = b("build", "--substituter", "http://127.0.0.1:9/cache?trusted=true", "top")
    assert result.code == 2, str(result)
    assert "http://127.0.0.1:9/cache is marked trusted=true" in result.err
    assert b.store_names() == []


@pytest.mark.parametrize("name", ["stranger", "team"])
def test_a_signature_by_an_untrusted_key_is_passed_over(
    pushed: tuple[Team, Path, str], name: str
) -> None:
    """Trusting another key, even one named like the signer's, counts for nothing."""
    team, _, url = pushed
    stranger = str(SecretKey.generate(name).public())
    b = team.home("b", trust=stranger)
    did, warned = build_b(b, url)
    assert did == {"base": "build", "top": "build"}
    assert len(warned) == 2
    assert all(url in w and "signed by: team" in w for w in warned)
    assert_same_as_a(team, b)


def test_signatures_are_checked_before_any_data_is_downloaded(
    pushed: tuple[Team, Path, str], bad_cache: BadCache
) -> None:
    """The same cache served over HTTP, whose server records each request: an untrusted
    entry costs its info file, never its listing or objects."""
    team, root, _ = pushed
    shutil.copytree(root, bad_cache.root, dirs_exist_ok=True)
    b = team.home("b", trust=str(SecretKey.generate("stranger").public()))
    did, _ = build_b(b, bad_cache.url)
    assert did == {"base": "build", "top": "build"}
    asked = {path for _, path in bad_cache.requests}
    assert len(asked) == 3 and not [p for p in asked if p.startswith("/objects/")]


def test_a_valid_signature_over_another_hash_is_passed_over(
    pushed: tuple[Team, Path, str],
) -> None:
    team, root, url = pushed
    top = entries(url)["top"]
    edit_info(root, top, lambda d: d.update(archive_hash="sha256:" + "0" * 64))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert len(warned) == 1 and str(top.path) in warned[0] and url in warned[0]
    assert_same_as_a(team, b)


@pytest.mark.parametrize(
    "field,value",
    [
        ("path", "../../etc/x"),
        ("path", "/etc/passwd"),
        ("references", ["../../etc/x"]),
        ("references", ["0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a/../../x"]),
        ("listing", "../../../etc/passwd"),
        ("signatures", "team:not-a-list"),
        ("version", 2),
    ],
)
def test_a_malformed_info_file_is_not_used(
    pushed: tuple[Team, Path, str], field: str, value: object
) -> None:
    team, root, url = pushed
    top = entries(url)["top"]
    edit_info(root, top, lambda d: d.update({field: value}))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any(url in w and str(top.path) in w for w in warned), warned
    assert_same_as_a(team, b)
    assert not (b.path / "etc").exists() and not (b.path.parent / "etc").exists()


def test_an_info_file_for_another_path_is_not_used(pushed: tuple[Team, Path, str]) -> None:
    """The info file of top holds base's entry, validly signed: not top's."""
    team, root, url = pushed
    found = entries(url)
    (root / info_key(found["top"].path)).write_bytes(found["base"].to_bytes())
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any("another path" in w and url in w for w in warned), warned
    assert_same_as_a(team, b)


def _resign(team: Team, root: Path, entry: PathEntry, **changes: Any) -> None:
    """Rewrite ``entry`` with ``changes``, signed again by the team's own key."""
    doc = json.loads(entry.to_bytes()) | changes
    changed = PathEntry.from_bytes(json.dumps(doc).encode(), "test")
    changed.signatures = [load_signing_key(team.a.path, "team").sign(changed.fingerprint())]
    (root / info_key(entry.path)).write_bytes(changed.to_bytes())


def test_signed_references_must_be_the_derivations(pushed: tuple[Team, Path, str]) -> None:
    team, root, url = pushed
    _resign(team, root, entries(url)["top"], references=[])
    b = team.home("b")
    assert b.plan("--substituter", url, "top")["top"] == ("build", None)
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any("other references" in w and url in w for w in warned), warned
    assert_same_as_a(team, b)


def test_a_signed_hash_the_data_does_not_have_is_not_registered(
    pushed: tuple[Team, Path, str],
) -> None:
    """Top's entry, signed by the team, names base's listing: the tree is assembled but
    its archive hash is not the signed one, so it never becomes valid."""
    team, root, url = pushed
    found = entries(url)
    _resign(team, root, found["top"], listing=found["base"].listing)
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any(str(found["top"].path) in w and url in w for w in warned), warned
    assert_same_as_a(team, b)


# -- missing and broken data ----------------------------------------------------------------


def _big_object(url: str, root: Path) -> Path:
    """The file of base's 700 kB chunk (top holds the same bytes)."""
    base = entries(url)["base"]
    chunks = [e.chunks for e in listing_of(url, base).entries if e.path == "share/weights.bin"]
    ((digest, _),) = chunks[0] or []
    return root / object_key(digest)


BREAKS: dict[str, Callable[[Path], object]] = {
    "oversized": lambda f: f.write_bytes(f.read_bytes() + bytes(8 << 20)),
    "deleted": lambda f: f.unlink(),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "flipped": lambda f: f.write_bytes(
        (lambda b: b[:100] + bytes([b[100] ^ 0x10]) + b[101:])(f.read_bytes())
    ),
    "emptied": lambda f: f.write_bytes(b""),
}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_a_broken_object_falls_back_to_building(pushed: tuple[Team, Path, str], how: str) -> None:
    team, root, url = pushed
    BREAKS[how](_big_object(url, root))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "build", "top": "build"}
    base, top = entries(url)["base"].path, entries(url)["top"].path
    for path in (base, top):
        assert any(f"Substituting {path} from {url} failed" in w for w in warned), warned
    if how == "oversized":  # refused as it arrives, not after 8 MB were read
        failed = [w for w in warned if "Substituting" in w]
        assert all("more than its content can compress to" in w for w in failed), warned
    assert_same_as_a(team, b)


def test_a_missing_listing_falls_back_to_building(pushed: tuple[Team, Path, str]) -> None:
    team, root, url = pushed
    top = entries(url)["top"]
    (root / object_key(top.listing)).unlink()
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any(f"Substituting {top.path} from {url} failed" in w for w in warned), warned
    assert_same_as_a(team, b)


def test_a_reference_missing_from_the_cache_is_built_here(
    pushed: tuple[Team, Path, str],
) -> None:
    team, root, url = pushed
    (root / info_key(entries(url)["base"].path)).unlink()
    b = team.home("b")
    assert b.plan("--substituter", url, "top") == {
        "base": ("build", None),
        "top": ("substitute", url),
    }
    did, warned = build_b(b, url)
    assert did == {"base": "build", "top": "substitute"} and warned == []
    assert_same_as_a(team, b)


def _put_object(root: Path, content: bytes) -> str:
    digest = hashlib.sha256(content).hexdigest()
    file = root / object_key(digest)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(zstandard.ZstdCompressor().compress(content))
    return digest


@pytest.mark.parametrize(
    "listing",
    [
        {"format": "mlpkg-listing", "version": 2, "entries": [], "pack": []},
        {"format": "mlpkg-listing", "version": 1, "entries": 5, "pack": []},
        {"format": "mlpkg-listing", "version": 1, "entries": [["", "d"], ["x", "q"]], "pack": []},
        {"format": "other", "version": 1},
        [1, 2, 3],
    ],
    ids=["version-2", "entries-not-a-list", "unknown-type", "other-format", "not-an-object"],
)
def test_an_unsigned_listing_swapped_in_falls_back(
    pushed: tuple[Team, Path, str], listing: object
) -> None:
    """The listing is not signed (the archive hash is): any listing an attacker names is
    a failed substitution, never a failed command."""
    team, root, url = pushed
    digest = _put_object(root, json.dumps(listing).encode())
    top = entries(url)["top"]
    edit_info(root, top, lambda d: d.update(listing=digest))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any(f"Substituting {top.path} from {url} failed" in w for w in warned), warned
    assert_same_as_a(team, b)


def test_an_input_needed_only_to_build_is_made_only_when_the_build_is(
    team: Team, file_cache: Any
) -> None:
    """app's input tool (and tool's toolbase) is no run-time reference: substituting app
    skips both; when app's data turns out broken, both are made first and app built."""
    url = file_cache.url
    report = team.push(url, "app")
    assert [p.split("-", 1)[1] for p in report["pushed"]] == ["app-1.0"]
    b = team.home("b")
    assert b.plan("--substituter", url, "app") == {
        "toolbase": ("skip", None),
        "tool": ("skip", None),
        "app": ("substitute", url),
    }
    b("build", "--substituter", url, "app").ok()
    assert b.built() == set() and [n.split("-", 1)[1] for n in b.store_names()] == ["app-1.0"]

    app = entries(url)["app"]
    (file_cache.root / object_key(listing_of(url, app).pack[0][0])).unlink()
    c = team.home("c")
    result = c("build", "--substituter", url, "app").ok()
    assert c.built() == {"toolbase", "tool", "app"}
    assert any(f"Substituting {app.path} from {url} failed" in w for w in warnings(result))
    assert c.hashes("app") == team.a.hashes("app")


def test_skipped_inputs_come_from_the_cache_when_it_has_them(team: Team, file_cache: Any) -> None:
    """As above, with tool and toolbase in the cache too: when app fails, tool and its
    reference toolbase (both skipped) are substituted, and only app is built."""
    url = file_cache.url
    team.push(url, "app")
    team.push(url, "tool")
    app = entries(url)["app"]
    (file_cache.root / object_key(app.listing)).unlink()
    b = team.home("b")
    assert b.plan("--substituter", url, "app") == {
        "toolbase": ("skip", None),
        "tool": ("skip", None),
        "app": ("substitute", url),
    }
    result = b("build", "--substituter", url, "app").ok()
    assert b.built() == {"app"}, result.err
    assert b.hashes("app") == team.a.hashes("app")
    assert b.hashes("tool") == team.a.hashes("tool")


def test_the_store_records_the_plans_derivation_not_the_entrys(
    pushed: tuple[Team, Path, str],
) -> None:
    """recipe_hash, kind and deriver are not signed: B records its own plan's."""
    team, root, url = pushed
    top = entries(url)["top"]
    forged = {"recipe_hash": "sha256:" + "e" * 64, "kind": "fetch", "deriver": {"x": 1}}
    edit_info(root, top, lambda d: d.update(forged))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "substitute"} and warned == []
    mine = {d["path"]: d for d in b("path-info", "--json", "top").ok().json()}
    theirs = {d["path"]: d for d in team.a("path-info", "--json", "top").ok().json()}
    assert [(d["recipe_hash"], d["kind"], d["archive_hash"]) for d in mine.values()] == [
        (d["recipe_hash"], d["kind"], d["archive_hash"]) for d in theirs.values()
    ]


def test_a_listing_longer_than_the_signed_size_is_refused(
    pushed: tuple[Team, Path, str],
) -> None:
    """A listing that describes more than the signed archive size (here: top's own tree
    plus one more file made of base's chunks) is refused before a single object is read,
    so a cache cannot make a substitution write more than was signed for."""
    team, root, url = pushed
    found = entries(url)
    top = listing_of(url, found["top"])
    base = listing_of(url, found["base"])
    extra = next(e for e in base.entries if e.chunks)
    grown = Listing([*top.entries, Entry("zz-extra", "f", extra.size, extra.chunks)], top.pack)
    digest = _put_object(root, grown.to_bytes())
    size = (root / object_key(digest)).stat().st_size  # listing_size is not signed either
    edit_info(root, found["top"], lambda d: d.update(listing=digest, listing_size=size))
    b = team.home("b")
    did, warned = build_b(b, url)
    assert did == {"base": "substitute", "top": "build"}
    assert any("does not add up to its signed archive size" in w for w in warned), warned
    assert_same_as_a(team, b)
