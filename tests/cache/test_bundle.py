"""Offline bundles (mlpkg.cache.bundle, ``mlpkg bundle``): real homes, real stores, the toy
recipes (nothing is fetched: the import works as it would without network)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mlpkg.store.store import Store
from tests.cli_support import CliResult, python_bin
from tests.toy_app import Home, write_recipes

Edit = Callable[[str, bytes], list[tuple[str, bytes]]]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Home A: toyapp realised, a key ``alice``, and a signed bundle of toyapp."""
    root = tmp_path_factory.mktemp("bundle")
    write_recipes(root / "recipes")
    a = Home(root / "a", root / "recipes", python_bin(root / "bin"))
    public = a("key", "generate", "alice").ok().out.strip()
    bundle = root / "toy.bundle"
    doc = a("bundle", "create", "toyapp", "-o", str(bundle), "--key", "alice", "--json").ok()
    yield {"a": a, "root": root, "public": public, "bundle": bundle, "create": doc.json()}
    a.close()


def fresh(made: dict[str, Any], where: Path, trust: bool = True) -> Home:
    """An empty home B with A's recipes; A's public key trusted unless ``trust`` is off."""
    b = Home(where, made["root"] / "recipes", made["root"] / "bin")
    if trust:
        b("key", "trust", made["public"]).ok()
    return b


def members(bundle: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(bundle) as tar:
        return tar.getmembers()


def read_member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def manifest(bundle: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(read_member(bundle, "bundle.json"))
    return doc


def rewrite(src: Path, dst: Path, edit: Edit) -> Path:
    """A copy of the bundle ``src`` at ``dst`` whose members ``edit`` replaces (in order)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            f = tin.extractfile(m)
            assert f is not None
            for name, data in edit(m.name, f.read()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tout.addfile(info, io.BytesIO(data))
    return dst


def valid_paths(h: Home) -> dict[str, str]:
    """Every valid path of ``h``'s store and its archive hash."""
    with Store(h.home) as store:
        graph = store.reference_graph()
        return {str(p): store.info(p).archive_hash for p in graph}  # type: ignore[union-attr]


def error_line(r: CliResult) -> str:
    """The one-sentence error a command printed."""
    return next(line for line in r.err.splitlines() if line.startswith("error: "))


def kinds(bundle: Path) -> dict[str, str]:
    """The kind of each locked path of the bundle."""
    import tomllib

    lock = tomllib.loads(read_member(bundle, "mlpkg.lock").decode())
    return {n["path"]: n["kind"] for n in lock["node"]}


def assert_consistent(b: Home, a: Home) -> None:
    """Nothing invalid entered B: every valid path has A's archive hash (externals aside)
    and verify finds nothing wrong."""
    in_a = valid_paths(a)
    for path, digest in valid_paths(b).items():
        if "python" not in path:
            assert in_a[path] == digest, path
    b("verify").ok()
    assert not list((b.home / "bundles").glob(".staging-*"))


# -- the round trip -------------------------------------------------------------------------


def test_import_into_an_empty_home_makes_every_path_valid(made: dict[str, Any], tmp_path: Path):
    bundle, a = made["bundle"], made["a"]
    assert made["create"]["signed_by"] == "alice"
    assert [m.name for m in members(bundle)][:3] == ["bundle.json", "mlpkg.lock", "cache-info.json"]
    paths = manifest(bundle)["paths"]
    b = fresh(made, tmp_path / "b")
    lock = tmp_path / "b.lock"
    r = b("bundle", "import", str(bundle), "-o", str(lock), "--json").ok()
    doc = r.json()
    non_external = [p for p in paths if kinds(bundle)[p] != "external"]
    assert sorted(doc["imported"]) == sorted(non_external)
    assert doc["valid_already"] == [] and doc["lock"] == str(lock)
    assert lock.read_bytes() == read_member(bundle, "mlpkg.lock")
    in_a, in_b = valid_paths(a), valid_paths(b)
    for p in non_external:
        assert in_b[p] == in_a[p]
    # Nothing is left to make: no fetch, no build (so no network is needed).
    plan = b("build", "--lock", str(lock), "--dry-run", "--json").ok().json()["plan"]
    assert plan["counts"]["valid"] == len(plan["nodes"])
    b("build", "--lock", str(lock)).ok()
    assert valid_paths(b) == in_b
    run = b("run", "--lock", str(lock)).ok()
    assert "toyapp: data 42" in run.out + run.err
    assert_consistent(b, a)
    # Progress: a line per path on stderr; a second import finds them valid.
    text = b("bundle", "import", str(bundle))
    assert text.code == 0 and "valid already" in text.err and "lock: " in text.out
    assert (b.home / "gcroots" / "bundles").is_dir()


def test_bundle_of_a_lock_file(made: dict[str, Any], tmp_path: Path):
    a = made["a"]
    lock = tmp_path / "toy.lock"
    a("lock", "--realise", "toyapp", "-o", str(lock)).ok()
    bundle = tmp_path / "lock.bundle"
    a("bundle", "create", "--lock", str(lock), "-o", str(bundle), "--key", "alice").ok()
    assert read_member(bundle, "mlpkg.lock") == lock.read_bytes()
    b = fresh(made, tmp_path / "b")
    b("bundle", "import", str(bundle)).ok()
    b("run", "--lock", str(lock)).ok()


def test_import_from_stdin(made: dict[str, Any], tmp_path: Path):
    b = fresh(made, tmp_path / "b")
    with made["bundle"].open("rb") as f:
        r = subprocess.run([sys.executable, "-m", "mlpkg", "bundle", "import", "-", "--json"],
                           env=b.env(), stdin=f, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bundle"] == "stdin"
    assert_consistent(b, made["a"])


TOOL_TOML = """
name = "tool"
version = "1.0"
kind = "build"
[build]
script = '''mkdir "$out"; echo tool > "$out/tool"'''
"""
MADE_TOML = """
name = "made"
version = "1.0"
kind = "build"
[inputs]
tool = "tool@1.0"
[build]
script = '''mkdir "$out"; cp "$tool/tool" "$out/made"'''
runtime_inputs = []
"""


def test_inputs_a_cache_let_the_host_skip_are_bundled(made: dict[str, Any], tmp_path: Path):
    """Home A2 substitutes ``made`` from a cache, so its build-only input ``tool`` is not
    needed there; the bundle still carries it, so that ``build --lock`` on the target
    makes nothing."""
    recipes = made["root"] / "recipes"
    for name, text in (("tool", TOOL_TOML), ("made", MADE_TOML)):
        (recipes / name).mkdir(exist_ok=True)
        (recipes / name / "1.0.toml").write_text(text.lstrip())
    a = made["a"]
    cache = tmp_path / "cache"
    a("push", "--to", cache.as_uri(), "--key", "alice", "made").ok()
    a2 = fresh(made, tmp_path / "a2")
    a2("build", "made", "--substituter", cache.as_uri()).ok()
    tool = next(p for p in valid_paths(a) if p.endswith("-tool-1.0"))
    assert tool not in valid_paths(a2)
    bundle = tmp_path / "made.bundle"
    a2("key", "generate", "bob").ok()
    a2("bundle", "create", "made", "-o", str(bundle), "--key", "bob").ok()
    assert tool in manifest(bundle)["paths"]
    b = fresh(made, tmp_path / "b")
    lock = tmp_path / "made.lock"
    b("bundle", "import", "--trust", str(bundle), "-o", str(lock)).ok()
    plan = b("build", "--lock", str(lock), "--dry-run", "--json").ok().json()["plan"]
    assert plan["counts"]["valid"] == len(plan["nodes"])


def test_bad_create_arguments(made: dict[str, Any], tmp_path: Path):
    a = made["a"]
    assert a("bundle", "create", "-o", str(tmp_path / "x")).code == 2
    r = a("bundle", "create", "toyapp", "-o", str(tmp_path / "no" / "dir" / "x"), "--key", "alice")
    assert r.code == 2 and "Cannot write the bundle" in r.err


# -- trust ----------------------------------------------------------------------------------


def test_unsigned_by_a_trusted_key_is_refused(made: dict[str, Any], tmp_path: Path):
    bundle = made["bundle"]
    b = fresh(made, tmp_path / "b", trust=False)
    r = b("bundle", "import", str(bundle))
    assert r.code == 1 and "signed by no trusted key (signed by: alice)" in r.err, r
    # Another key of the same name does not count either.
    other = Home(tmp_path / "other", made["root"] / "recipes", made["root"] / "bin")
    impostor = other("key", "generate", "alice").ok().out.strip()
    b("key", "trust", impostor).ok()
    assert b("bundle", "import", str(bundle)).code == 1
    assert all(kinds(bundle)[p] == "external" for p in valid_paths(b))
    # The user may trust the file itself.
    b("bundle", "import", "--trust", str(bundle)).ok()
    assert_consistent(b, made["a"])


def test_unsigned_bundle_needs_trust(made: dict[str, Any], tmp_path: Path):
    bundle = tmp_path / "unsigned.bundle"
    r = made["a"]("bundle", "create", "toyapp", "-o", str(bundle))
    assert r.code == 0 and "unsigned" in r.err + r.out
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bundle))
    assert r.code == 1 and "signed by: nobody" in r.err
    b("bundle", "import", "--trust", str(bundle)).ok()


# -- cut short, damaged, hostile ------------------------------------------------------------


def expected_first_missing(bundle: Path, cut: int) -> str:
    """The first path of bundle.json that a bundle cut at ``cut`` bytes cannot import."""
    ends = {m.name: m.offset_data + m.size for m in members(bundle)}
    lock_read = ends["mlpkg.lock"] <= cut
    kind = kinds(bundle)
    for p in manifest(bundle)["paths"]:
        info = ends[f"info/{p.split('-')[0]}.json"]
        if not (lock_read and (kind[p] == "external" or info <= cut)):
            return str(p)
    raise AssertionError("nothing is missing")


def test_a_cut_short_bundle_is_refused_naming_the_first_missing_path(
    made: dict[str, Any], tmp_path: Path
):
    bundle = made["bundle"]
    raw = bundle.read_bytes()
    ms = {m.name: m for m in members(bundle)}
    last_info = max((m for m in ms.values() if m.name.startswith("info/")), key=lambda m: m.offset)
    cuts = {
        "in bundle.json's header": 100,
        "in the lock": ms["mlpkg.lock"].offset_data + 10,
        "after the lock": ms["cache-info.json"].offset,
        "in an object": ms[next(n for n in ms if n.startswith("objects/"))].offset_data + 5,
        "before the last info file": last_info.offset,
        "in the last info file": last_info.offset_data + last_info.size // 2,
    }
    for where, cut in cuts.items():
        b = fresh(made, tmp_path / where.replace(" ", "-").replace("'", ""))
        short = tmp_path / "short.bundle"
        short.write_bytes(raw[:cut])
        r = b("bundle", "import", str(short))
        assert r.code == 1, (where, str(r))
        message = error_line(r)
        assert "is cut short" in message, (where, message)
        if cut < ms["mlpkg.lock"].offset:
            assert "bundle.json" in message
        else:
            assert expected_first_missing(bundle, cut) in message, (where, message)
        assert_consistent(b, made["a"])
    # The end-of-archive blocks are not needed to import everything.
    b = fresh(made, tmp_path / "padding")
    short.write_bytes(raw[: last_info.offset_data + last_info.size])
    b("bundle", "import", str(short)).ok()


def test_a_damaged_header_is_refused_naming_the_first_missing_path(
    made: dict[str, Any], tmp_path: Path
):
    bundle = made["bundle"]
    raw = bytearray(bundle.read_bytes())
    ms = members(bundle)
    last_info = max((m for m in ms if m.name.startswith("info/")), key=lambda m: m.offset)
    raw[last_info.offset + 148 : last_info.offset + 156] = b"0000000\0"  # its checksum
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(bytes(raw))
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    message = error_line(r)
    assert r.code == 1 and "is damaged after its member" in message, r
    assert expected_first_missing(bundle, last_info.offset) in message
    assert_consistent(b, made["a"])


def corrupt_object(bundle: Path, dst: Path, which: str) -> tuple[Path, str]:
    """``bundle`` with one object of the data path damaged: its listing, or a chunk."""
    data = next(p for p in manifest(bundle)["paths"] if "-data-" in p)
    entry = json.loads(read_member(bundle, f"info/{data.split('-')[0]}.json"))
    listing = entry["listing"]
    target = listing
    if which == "chunk":
        content = zstandard.ZstdDecompressor().decompress(
            read_member(bundle, f"objects/{listing[:2]}/{listing}")
        )
        target = json.loads(content)["pack"][0][0]

    def edit(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        if name == f"objects/{target[:2]}/{target}":
            raw = raw[:-4] + bytes(b ^ 0xFF for b in raw[-4:])
        return [(name, raw)]

    return rewrite(bundle, dst, edit), data


@pytest.mark.parametrize("which", ["listing", "chunk"])
def test_a_damaged_object_is_refused_naming_the_path(
    made: dict[str, Any], tmp_path: Path, which: str
):
    bad, data = corrupt_object(made["bundle"], tmp_path / "bad.bundle", which)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    message = error_line(r)
    assert r.code == 1 and str(bad) in message and data in message, r
    assert data not in valid_paths(b)
    assert_consistent(b, made["a"])


def test_a_member_outside_the_layout_is_refused(made: dict[str, Any], tmp_path: Path):
    def edit(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        if name == "cache-info.json":
            return [(name, raw), ("objects/../../../evil", b"x"), ("../evil", b"x")]
        return [(name, raw)]

    bad = rewrite(made["bundle"], tmp_path / "bad.bundle", edit)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    assert r.code == 1 and "'objects/../../../evil' outside the bundle layout" in r.err, r
    assert not (tmp_path / "evil").exists() and not (b.home / "evil").exists()
    assert_consistent(b, made["a"])


def test_a_link_member_is_refused(made: dict[str, Any], tmp_path: Path):
    bad = tmp_path / "link.bundle"
    with tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bundle.json", "mlpkg.lock", "cache-info.json"):
            data = read_member(made["bundle"], name)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("objects/aa/" + "a" * 64)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    assert r.code == 1 and "is not a regular file" in error_line(r), r


def test_a_damaged_lock_is_refused(made: dict[str, Any], tmp_path: Path):
    def edit(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        return [(name, b"version = 1\n[[[" if name == "mlpkg.lock" else raw)]

    bad = rewrite(made["bundle"], tmp_path / "bad.bundle", edit)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    assert r.code == 1 and "mlpkg.lock is not a valid lock" in error_line(r), r
    assert valid_paths(b) == {}


def test_the_staging_of_a_dead_import_is_removed(made: dict[str, Any], tmp_path: Path):
    b = fresh(made, tmp_path / "b")
    dead = b.home / "bundles" / ".staging-dead"
    (dead / "objects" / "aa").mkdir(parents=True)
    (dead / "objects" / "aa" / "x").write_bytes(b"x")
    os.utime(dead, (time.time() - 3600, time.time() - 3600))
    b("bundle", "import", str(made["bundle"])).ok()
    assert not dead.exists()


def test_an_info_file_for_another_path_is_refused(made: dict[str, Any], tmp_path: Path):
    """An info file whose content names another path than its member name."""
    paths = manifest(made["bundle"])["paths"]
    data = next(p for p in paths if "-data-" in p)
    app = next(p for p in paths if "-toyapp-" in p)

    def edit(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        if name == f"info/{app.split('-')[0]}.json":
            doc = json.loads(raw)
            doc["path"] = data
            raw = json.dumps(doc).encode()
        return [(name, raw)]

    bad = rewrite(made["bundle"], tmp_path / "bad.bundle", edit)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(bad))
    assert r.code == 1 and app in error_line(r), r
    assert app not in valid_paths(b)


# -- bad input ------------------------------------------------------------------------------


def test_a_newer_format_version_is_bad_input(made: dict[str, Any], tmp_path: Path):
    def edit(name: str, raw: bytes) -> list[tuple[str, bytes]]:
        if name == "bundle.json":
            raw = json.dumps({**json.loads(raw), "version": 2}).encode()
        return [(name, raw)]

    newer = rewrite(made["bundle"], tmp_path / "newer.bundle", edit)
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(newer))
    assert r.code == 2 and "format version 2" in r.err, r


def test_what_is_not_a_bundle_is_bad_input(made: dict[str, Any], tmp_path: Path):
    b = fresh(made, tmp_path / "b")
    r = b("bundle", "import", str(tmp_path / "missing.bundle"))
    assert r.code == 2 and "Cannot read the bundle" in r.err
    text = tmp_path / "text"
    text.write_bytes(b"hello " * 1000)
    r = b("bundle", "import", str(text))
    assert r.code == 2 and "not an mlpkg bundle" in r.err
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(text, "text")
    r = b("bundle", "import", str(other))
    assert r.code == 2 and "its first member is 'text'" in r.err


# -- streaming ------------------------------------------------------------------------------

BIG_MIB = 200
BIG_TOML = f"""
name = "big"
version = "1.0"
kind = "build"
[build]
script = '''mkdir "$out"; head -c {BIG_MIB * 1024 * 1024} /dev/urandom > "$out/blob"'''
"""
RSS_SCRIPT = """
import atexit, resource, sys, threading, time
out, peak = sys.argv[1], [0]

def anon():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

def sample():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)

def done():
    peak[0] = max(peak[0], anon())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open(out, "w").write(f"{peak[0]} {rss}")

threading.Thread(target=sample, daemon=True).start()
atexit.register(done)
from mlpkg.cli import main
main(sys.argv[2:])
"""


def peak_memory(h: Home, *args: str) -> tuple[CliResult, int, int]:
    """``mlpkg ARGS`` in a subprocess; its peak anonymous memory (heap, stacks: what it
    holds, sampled every 5 ms) and its peak RSS (which also counts the pages of files it
    maps, e.g. FastCDC's mmap of the file it cuts), in MiB."""
    out = h.home.parent / f"rss-{time.monotonic_ns()}"
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out), *args], env=h.env(),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    anon, rss = (int(x) // 1024 for x in out.read_text().split())
    return CliResult(r.returncode, r.stdout, r.stderr, args), anon, rss


def test_a_big_path_streams_through(made: dict[str, Any], tmp_path: Path):
    """A 200 MiB path goes through create and import without being held in memory: what
    each holds at its peak is well below the path's size (above a tiny bundle's import)."""
    recipes = made["root"] / "recipes"
    (recipes / "big").mkdir(exist_ok=True)
    (recipes / "big" / "1.0.toml").write_text(BIG_TOML.lstrip())
    a = made["a"]
    a("build", "big").ok()
    bundle = tmp_path / "big.bundle"
    started = time.monotonic()
    r, create_anon, create_rss = peak_memory(
        a, "bundle", "create", "big", "-o", str(bundle), "--key", "alice"
    )
    assert r.code == 0, r
    assert bundle.stat().st_size > BIG_MIB * 1024 * 1024
    b = fresh(made, tmp_path / "b")
    r, import_anon, import_rss = peak_memory(b, "bundle", "import", str(bundle))
    assert r.code == 0, r
    elapsed = time.monotonic() - started
    c = fresh(made, tmp_path / "c")
    _, base_anon, base_rss = peak_memory(c, "bundle", "import", str(made["bundle"]))
    print(f"peak anonymous memory / RSS in MiB: create {create_anon} / {create_rss}, import "
          f"{import_anon} / {import_rss}, import of the toy bundle {base_anon} / {base_rss}; "
          f"{elapsed:.1f} s for {BIG_MIB} MiB")  # fmt: skip
    # What each holds is bounded by its windows (uploads, fetches ahead), not the size.
    assert create_anon - base_anon < BIG_MIB // 2
    assert import_anon - base_anon < BIG_MIB // 2
    assert import_rss - base_rss < BIG_MIB // 2
    big = next(p for p in manifest(bundle)["paths"] if "-big-" in p)
    assert valid_paths(b)[big] == valid_paths(a)[big]
    os.unlink(bundle)
