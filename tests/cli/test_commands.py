"""Integration tests of the mlpkg commands, run against a private MLPKG_HOME and a private
recipe directory per test (fixtures ``mlpkg_cli``, ``recipe_dir``, ``tarball`` and
``http_server`` in tests/conftest.py). Sources are tarballs made here, served as file://
URLs or from the loopback server; nothing reaches beyond 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.recipe_text import build_toml, fetch_toml

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.conftest import LoopbackServer, MlpkgCli

from mlpkg.store import sandbox

STORE_NAME = re.compile(r"^[0-9abcdfghijklmnpqrsvwxyz]{32}-(.+)$")
SOURCE_DATE_EPOCH = "315532800"

# A build that copies its fetched source and adds a launcher.
GREET_SCRIPT = """
mkdir -p "$out/bin" "$out/share"
cp "$src/greeting.txt" "$out/share/greeting.txt"
cp "$src/greet.sh" "$out/bin/greet"
chmod +x "$out/bin/greet"
echo "greet build log line"
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_source(
    cli: MlpkgCli,
    tarball: Callable[..., bytes],
    name: str = "greet-src",
    version: str = "1.0",
    files: dict[str, bytes | str] | None = None,
    urls: list[str] | None = None,
) -> tuple[Path, bytes]:
    """Write a tarball under the test's directory and a fetch recipe for it; return both."""
    files = files or {"greeting.txt": f"hello from {name}\n", "greet.sh*": "#!/bin/sh\necho hi\n"}
    data = tarball(files, top=f"{name}-{version}")
    file = cli.home.parent / "sources" / f"{name}-{version}.tar.gz"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
    cli.recipes.add(
        name,
        version,
        fetch_toml(
            name, version, urls or [file.as_uri()], sha256(data), summary=f"Source of {name}"
        ),
    )
    return file, data


def add_greet(cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    """greet@1.0 (build, summary mentions 'friendly') with the input greet-src@1.0."""
    add_source(cli, tarball)
    cli.recipes.add(
        "greet",
        "1.0",
        build_toml(
            "greet", "1.0", GREET_SCRIPT, {"src": "greet-src@1.0"}, summary="A friendly greeter"
        ),
    )


def tree_modes(root: Path) -> dict[str, int]:
    modes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [".", *dirnames, *filenames]:
            p = Path(dirpath) / n
            modes[str(p.relative_to(root))] = os.lstat(p).st_mode
    return modes


def needs_sandbox() -> None:
    if sandbox.detect() == "none":
        pytest.skip("MLPKG_SANDBOX=none: builds are not isolated")


# -- build ----------------------------------------------------------------------------------


def test_build_prints_the_store_path_which_exists_read_only(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    r = mlpkg_cli.run("build", "greet").ok()
    lines = r.out.splitlines()
    assert len(lines) == 1, r.out
    out = Path(lines[0])
    assert out.parent == mlpkg_cli.store
    m = STORE_NAME.match(out.name)
    assert m is not None and m.group(1) == "greet-1.0", out.name
    assert (out / "share" / "greeting.txt").read_text() == "hello from greet-src\n"
    assert os.access(out / "bin" / "greet", os.X_OK)
    for rel, mode in tree_modes(out).items():
        if not stat.S_ISLNK(mode):
            assert mode & 0o222 == 0, f"{rel} is writable: {oct(mode)}"
    assert str(out.name) in mlpkg_cli.valid_paths()


def test_second_build_is_a_no_op(mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    add_greet(mlpkg_cli, tarball)
    first = mlpkg_cli.run("build", "greet").ok()
    logs = mlpkg_cli.home / "logs"
    before = {p.name: p.stat().st_mtime_ns for p in logs.iterdir()}
    assert len(before) == 1  # one build, one log (the fetch writes none)
    info = mlpkg_cli.run("path-info", "--json", "greet").ok().json()[0]
    store_before = sorted(mlpkg_cli.store_entries())

    second = mlpkg_cli.run("build", "greet").ok()
    assert second.out == first.out
    assert "build" not in second.err and "fetch" not in second.err, second.err
    assert {p.name: p.stat().st_mtime_ns for p in logs.iterdir()} == before
    assert sorted(mlpkg_cli.store_entries()) == store_before
    again = mlpkg_cli.run("path-info", "--json", "greet").ok().json()[0]
    assert again["registered"] == info["registered"]


def test_build_dry_run_lists_the_plan_and_changes_nothing(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    src, greet = mlpkg_cli.path_of("greet-src"), mlpkg_cli.path_of("greet")
    r = mlpkg_cli.run("build", "--dry-run", "greet").ok()
    text = r.out
    assert "1 paths will be fetched" in text and "1 paths will be built" in text, text
    fetched = text.index("will be fetched")
    built = text.index("will be built")
    assert fetched < text.index(str(src)) < built < text.index(str(greet)), text
    assert "0 of 2 paths are valid already." in text
    assert mlpkg_cli.store_entries() == []
    assert os.listdir(mlpkg_cli.home / "logs") == []
    assert os.listdir(mlpkg_cli.home / "partial") == []
    assert mlpkg_cli.valid_paths() == []

    doc = mlpkg_cli.run("build", "--dry-run", "--json", "greet").ok().json()
    assert doc["dry_run"] is True
    assert doc["plan"]["counts"] == {"valid": 0, "fetch": 1, "build": 1, "link": 0, "install": 0}
    assert mlpkg_cli.valid_paths() == []


# -- --json ---------------------------------------------------------------------------------


def _json_build(cli: MlpkgCli) -> None:
    doc = cli.run("build", "--json", "greet").ok().json()
    assert doc["dry_run"] is False
    assert doc["paths"] == [str(cli.path_of("greet"))]
    assert {n["name"]: n["action"] for n in doc["plan"]["nodes"]} == {
        "greet-src": "fetch",
        "greet": "build",
    }


def _json_show(cli: MlpkgCli) -> None:
    doc = cli.run("show", "--json", "greet").ok().json()
    assert doc["name"] == "greet" and doc["version"] == "1.0" and doc["kind"] == "build"
    assert doc["versions"] == ["1.0"] and doc["closure"] == 2
    assert doc["inputs"] == {"src": str(cli.path_of("greet-src"))}
    src = cli.run("show", "--json", "greet-src").ok().json()
    assert src["kind"] == "fetch" and len(src["sha256"]) == 64 and src["urls"]


def _json_search(cli: MlpkgCli) -> None:
    rows = cli.run("search", "--json", "greet").ok().json()
    assert [r["name"] for r in rows] == ["greet", "greet-src"]
    assert rows[0]["versions"] == ["1.0"] and rows[0]["summary"] == "A friendly greeter"


def _json_path_info(cli: MlpkgCli) -> None:
    cli.run("build", "greet").ok()
    docs = cli.run("path-info", "--json", "greet").ok().json()
    assert len(docs) == 1
    d = docs[0]
    assert d["path"] == cli.path_of("greet").name and d["kind"] == "build"
    assert d["archive_hash"].startswith("sha256:") and d["size"] > 0
    assert d["references"] == [cli.path_of("greet-src").name]


def _json_why_depends(cli: MlpkgCli) -> None:
    cli.run("build", "greet").ok()
    doc = cli.run("why-depends", "--json", "greet", "greet-src").ok().json()
    assert doc == {
        "depends": True,
        "chain": [cli.path_of("greet").name, cli.path_of("greet-src").name],
    }


def _json_gc(cli: MlpkgCli) -> None:
    cli.run("build", "greet").ok()
    doc = cli.run("gc", "--json").ok().json()
    assert sorted(doc["deleted"]) == sorted(
        [cli.path_of("greet").name, cli.path_of("greet-src").name]
    )
    assert doc["freed_bytes"] > 0 and doc["kept"] == 0 and doc["dry_run"] is False


def _json_verify(cli: MlpkgCli) -> None:
    cli.run("build", "greet").ok()
    doc = cli.run("verify", "--json", "--check-contents").ok().json()
    assert doc == {"checked": 2, "ok": True, "problems": []}


JSON_CHECKS: dict[str, Callable[[MlpkgCli], None]] = {
    "build": _json_build,
    "show": _json_show,
    "search": _json_search,
    "path-info": _json_path_info,
    "why-depends": _json_why_depends,
    "gc": _json_gc,
    "verify": _json_verify,
}


@pytest.mark.parametrize("command", sorted(JSON_CHECKS))
def test_json_output_parses(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], command: str
) -> None:
    add_greet(mlpkg_cli, tarball)
    JSON_CHECKS[command](mlpkg_cli)


# -- search, show, path-info, why-depends ---------------------------------------------------


def test_search_matches_names_and_summaries(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    by_name = mlpkg_cli.run("search", "greet").ok()
    names = [line.split()[0] for line in by_name.out.splitlines()]
    assert names == ["greet", "greet-src"], by_name.out
    assert "greet [1.0]  A friendly greeter" in by_name.out

    by_summary = mlpkg_cli.run("search", "FRIENDLY GREETER").ok()
    assert [line.split()[0] for line in by_summary.out.splitlines()] == ["greet"]

    # --recipes DIR works like MLPKG_RECIPES_PATH
    flag = mlpkg_cli.run(
        "search", "--recipes", str(mlpkg_cli.recipes.path), "friendly greeter"
    ).ok()
    assert flag.out == by_summary.out

    none = mlpkg_cli.run("search", "no-such-thing-anywhere").ok()
    assert none.out == ""
    assert "No package matches 'no-such-thing-anywhere'" in none.err


def test_show_describes_recipe_inputs_and_validity(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    src = mlpkg_cli.path_of("greet-src")
    r = mlpkg_cli.run("show", "greet").ok()
    lines = r.out.splitlines()
    assert lines[0] == "greet 1.0 (build): A friendly greeter"
    assert f"  path: {mlpkg_cli.path_of('greet')}" in lines
    assert "  valid: False" in lines
    assert f"  input src: {src}" in lines
    assert "  closure: 2" in lines
    mlpkg_cli.run("build", "greet").ok()
    assert "  valid: True" in mlpkg_cli.run("show", "greet").ok().out.splitlines()


def test_path_info_closure_and_sizes(mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    add_greet(mlpkg_cli, tarball)
    greet = Path(mlpkg_cli.run("build", "greet").ok().out.strip())
    src = mlpkg_cli.path_of("greet-src")

    only = mlpkg_cli.run("path-info", "--json", str(greet)).ok().json()
    assert [d["path"] for d in only] == [greet.name]

    docs = mlpkg_cli.run("path-info", "--closure", "--size", "--json", "greet").ok().json()
    by_path = {d["path"]: d for d in docs}
    assert set(by_path) == {greet.name, src.name}
    assert by_path[src.name]["closure_size"] == by_path[src.name]["size"]
    assert (
        by_path[greet.name]["closure_size"]
        == by_path[greet.name]["size"] + by_path[src.name]["size"]
    )

    text = mlpkg_cli.run("path-info", "-r", "-S", "greet").ok().out.splitlines()
    assert len(text) == 2
    assert sorted(line.split()[0] for line in text) == sorted([str(greet), str(src)])
    assert all("closure" in line for line in text)


def _chain(cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    """app -> lib -> greet-src."""
    add_source(cli, tarball)
    cli.recipes.add(
        "lib",
        "1.0",
        build_toml(
            "lib", "1.0", 'mkdir "$out"; cp "$src/greeting.txt" "$out/"\n', {"src": "greet-src@1.0"}
        ),
    )
    cli.recipes.add(
        "app",
        "1.0",
        build_toml(
            "app", "1.0", 'mkdir "$out"; cp "$lib/greeting.txt" "$out/"\n', {"lib": "lib@1.0"}
        ),
    )
    cli.run("build", "app").ok()


def test_why_depends_shows_the_chain(mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    _chain(mlpkg_cli, tarball)
    app, lib, src = (mlpkg_cli.path_of(s) for s in ("app", "lib", "greet-src"))
    r = mlpkg_cli.run("why-depends", "app", "greet-src").ok()
    assert r.out.splitlines() == [
        str(app),
        f"  └── {lib} (input lib)",
        f"    └── {src} (input src)",
    ]
    doc = mlpkg_cli.run("why-depends", "--json", str(app), src.name).ok().json()
    assert doc == {"depends": True, "chain": [app.name, lib.name, src.name]}


def test_why_depends_says_when_there_is_no_dependency(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    _chain(mlpkg_cli, tarball)
    app, src = mlpkg_cli.path_of("app"), mlpkg_cli.path_of("greet-src")
    r = mlpkg_cli.run("why-depends", "greet-src", "app").ok()
    assert r.out.strip() == f"{src} does not depend on {app}."
    doc = mlpkg_cli.run("why-depends", "--json", "greet-src", "app").ok().json()
    assert doc == {"depends": False, "chain": []}


# -- add-file -------------------------------------------------------------------------------


def test_add_file_makes_a_dead_source_buildable_offline(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes], http_server: LoopbackServer
) -> None:
    dead = http_server.url("/gone/greet-src-1.0.tar.gz")  # no route: 404
    file, _ = add_source(mlpkg_cli, tarball, urls=[dead])
    mlpkg_cli.recipes.add(
        "greet", "1.0", build_toml("greet", "1.0", GREET_SCRIPT, {"src": "greet-src@1.0"})
    )
    failed = mlpkg_cli.run("build", "greet")
    assert failed.code == 1, str(failed)
    assert "Could not download greet-src@1.0" in failed.err
    asked = len(http_server.requests_for("/gone/greet-src-1.0.tar.gz"))
    assert asked >= 1

    added = mlpkg_cli.run("add-file", str(file), "--name", "greet-src", "--version", "1.0").ok()
    src = mlpkg_cli.path_of("greet-src")
    assert added.out.strip() == str(src)
    assert (src / "greeting.txt").read_text() == "hello from greet-src\n"

    built = mlpkg_cli.run("build", "greet").ok()
    out = Path(built.out.strip())
    assert (out / "share" / "greeting.txt").read_text() == "hello from greet-src\n"
    assert len(http_server.requests_for("/gone/greet-src-1.0.tar.gz")) == asked  # offline


def test_add_file_with_the_wrong_hash_is_refused(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    _, data = add_source(mlpkg_cli, tarball)
    other = mlpkg_cli.home.parent / "other.tar.gz"
    other_data = tarball({"greeting.txt": "not the same\n"}, top="greet-src-1.0")
    other.write_bytes(other_data)
    r = mlpkg_cli.run("add-file", str(other), "--name", "greet-src", "--version", "1.0")
    assert r.code == 2, str(r)
    assert sha256(data) in r.err and sha256(other_data) in r.err, r.err
    assert str(other) in r.err and "greet-src@1.0" in r.err
    assert mlpkg_cli.valid_paths() == []
    assert mlpkg_cli.store_entries() == []


def test_add_file_of_a_hostile_archive_names_the_users_file(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    data = buf.getvalue()
    file = mlpkg_cli.home.parent / "hostile.tar.gz"
    file.write_bytes(data)
    mlpkg_cli.recipes.add(
        "hostile", "1.0", fetch_toml("hostile", "1.0", [file.as_uri()], sha256(data))
    )
    r = mlpkg_cli.run("add-file", str(file), "--name", "hostile", "--version", "1.0")
    assert r.code != 0 and str(file) in r.err and "partial" not in r.err, r.err
    assert mlpkg_cli.valid_paths() == []


# -- roots and gc ---------------------------------------------------------------------------


def test_install_creates_a_root_that_gc_keeps(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    r = mlpkg_cli.run("install", "greet").ok()
    greet, src = mlpkg_cli.path_of("greet"), mlpkg_cli.path_of("greet-src")
    assert r.out.strip() == str(greet)
    # The default profile's first generation is a root.
    link = mlpkg_cli.home / "gcroots" / "profiles" / "default" / "1" / "0"
    assert link.is_symlink() and Path(os.readlink(link)) == greet
    gc = mlpkg_cli.run("gc").ok()
    assert gc.out == ""
    assert greet.is_dir() and src.is_dir()
    assert mlpkg_cli.valid_paths() == sorted([greet.name, src.name])


def test_build_root_is_kept_by_gc(mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    add_greet(mlpkg_cli, tarball)
    mlpkg_cli.run("build", "--root", "mine", "greet").ok()
    greet, src = mlpkg_cli.path_of("greet"), mlpkg_cli.path_of("greet-src")
    assert Path(os.readlink(mlpkg_cli.home / "gcroots" / "mine")) == greet
    mlpkg_cli.run("gc").ok()
    assert greet.is_dir() and src.is_dir()  # the root's closure stays
    assert mlpkg_cli.valid_paths() == sorted([greet.name, src.name])


def test_gc_dry_run_deletes_nothing(mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]) -> None:
    add_greet(mlpkg_cli, tarball)
    mlpkg_cli.run("build", "greet").ok()
    greet, src = mlpkg_cli.path_of("greet"), mlpkg_cli.path_of("greet-src")
    r = mlpkg_cli.run("gc", "--dry-run").ok()
    assert sorted(r.out.splitlines()) == sorted([f"would delete {greet}", f"would delete {src}"])
    assert "would delete 2 entries, to free" in r.err, r.err
    assert greet.is_dir() and src.is_dir()
    assert mlpkg_cli.valid_paths() == sorted([greet.name, src.name])
    mlpkg_cli.run("verify", "--check-contents").ok()


def test_gc_frees_unreferenced_paths_and_reports_them(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    add_source(mlpkg_cli, tarball, name="kept-src")
    mlpkg_cli.run("build", "--root", "keep", "kept-src").ok()
    mlpkg_cli.run("build", "greet").ok()
    greet, src = mlpkg_cli.path_of("greet"), mlpkg_cli.path_of("greet-src")
    kept = mlpkg_cli.path_of("kept-src")
    r = mlpkg_cli.run("gc").ok()
    assert r.out.splitlines() == [f"deleted {greet}", f"deleted {src}"]  # referrer first
    assert "deleted 2 entries, freeing" in r.err and "1 paths kept" in r.err, r.err
    assert not greet.exists() and not src.exists() and kept.is_dir()
    assert mlpkg_cli.valid_paths() == [kept.name]
    assert mlpkg_cli.run("path-info", str(greet)).code == 2
    assert mlpkg_cli.run("gc").ok().out == ""  # nothing left to free


# -- invariants 1 and 3 ---------------------------------------------------------------------


def test_store_paths_do_not_depend_on_the_home(
    tmp_path: Path, mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_greet(mlpkg_cli, tarball)
    from_a = mlpkg_cli.run("build", "greet").ok().out.strip()
    other = type(mlpkg_cli)(tmp_path / "elsewhere" / "deeper" / "home2", mlpkg_cli.recipes)
    from_b = other.run("build", "greet").ok().out.strip()
    assert Path(from_a).parent != Path(from_b).parent
    assert Path(from_a).name == Path(from_b).name
    assert mlpkg_cli.valid_paths() == other.valid_paths()
    hashes = [
        {
            d["path"]: d["archive_hash"]
            for d in c.run("path-info", "-r", "--json", "greet").ok().json()
        }
        for c in (mlpkg_cli, other)
    ]
    assert hashes[0] == hashes[1]  # the same bytes, too


def test_no_store_content_names_the_store_root(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    _chain(mlpkg_cli, tarball)
    add_greet(mlpkg_cli, tarball)
    mlpkg_cli.run("build", "greet").ok()
    root = os.fsencode(str(mlpkg_cli.store))
    seen = 0
    for dirpath, dirnames, filenames in os.walk(mlpkg_cli.store):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if os.path.islink(p):
                assert root not in os.fsencode(os.readlink(p)), p
            elif os.path.isfile(p):
                seen += 1
                with open(p, "rb") as f:
                    assert root not in f.read(), p
    assert seen >= 5


def test_output_naming_an_input_path_is_refused(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_source(mlpkg_cli, tarball)
    script = 'mkdir "$out"\necho "$src" > "$out/where"\n'
    mlpkg_cli.recipes.add(
        "leaky", "1.0", build_toml("leaky", "1.0", script, {"src": "greet-src@1.0"})
    )
    r = mlpkg_cli.run("build", "leaky")
    assert r.code == 1, str(r)
    assert (
        "names the store or its build directory in 'where'" in r.err and "relocatable" in r.err
    ), r.err
    assert mlpkg_cli.valid_paths() == [mlpkg_cli.path_of("greet-src").name]
    assert mlpkg_cli.store_entries() == [mlpkg_cli.path_of("greet-src").name]  # no .tmp-*


def test_output_naming_out_is_refused(mlpkg_cli: MlpkgCli) -> None:
    script = 'mkdir "$out"\necho "$out" > "$out/f"\n'
    mlpkg_cli.recipes.add("selfref", "1.0", build_toml("selfref", "1.0", script))
    r = mlpkg_cli.run("build", "selfref")
    assert r.code == 1, str(r)
    assert mlpkg_cli.valid_paths() == []
    assert mlpkg_cli.store_entries() == []


def test_output_symlink_into_the_store_is_refused(
    mlpkg_cli: MlpkgCli, tarball: Callable[..., bytes]
) -> None:
    add_source(mlpkg_cli, tarball)
    script = 'mkdir "$out"\nln -s "$src/greeting.txt" "$out/greeting.txt"\n'
    mlpkg_cli.recipes.add(
        "linky", "1.0", build_toml("linky", "1.0", script, {"src": "greet-src@1.0"})
    )
    r = mlpkg_cli.run("build", "linky")
    assert r.code == 1, str(r)
    assert mlpkg_cli.valid_paths() == [mlpkg_cli.path_of("greet-src").name]


# -- invariant 4: the build sandbox ---------------------------------------------------------


def test_build_environment_is_clean(tmp_path: Path, mlpkg_cli: MlpkgCli) -> None:
    script = """
mkdir -p "$out"
# $out itself may not be recorded in the output (it is refused as non-relocatable).
env | grep -v '^out=' | sort > "$out/env"
touch "$HOME/written-in-home"
"""
    mlpkg_cli.recipes.add("envdump", "1.0", build_toml("envdump", "1.0", script))
    fake_home = tmp_path / "user-home"
    fake_home.mkdir()
    marker = {"MLPKG_TEST_MARKER": "leak-4b1d9", "HOME": str(fake_home)}
    r = mlpkg_cli.sub("build", "envdump", env=marker, timeout=60)
    assert r.code == 0, str(r)
    out = Path(r.out.strip())
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line)
    assert "MLPKG_TEST_MARKER" not in env and "leak-4b1d9" not in (out / "env").read_text()
    assert "PYTEST_CURRENT_TEST" not in env and "MLPKG_HOME" not in env
    assert env["SOURCE_DATE_EPOCH"] == SOURCE_DATE_EPOCH
    assert env["HOME"] != str(fake_home) and env["HOME"] != os.environ.get("HOME")
    assert env["TMPDIR"] != "/tmp" and env["TMPDIR"] != os.environ.get("TMPDIR")
    assert os.listdir(fake_home) == []  # the build's HOME is private
    assert not (mlpkg_cli.home / "builds").exists() or os.listdir(mlpkg_cli.home / "builds") == []


def test_build_has_no_network(mlpkg_cli: MlpkgCli, http_server: LoopbackServer) -> None:
    needs_sandbox()
    http_server.route("/probe", body=b"you reached the host")
    script = f"""
mkdir -p "$out"
if (exec 3<>/dev/tcp/127.0.0.1/{http_server.port} && printf 'GET /probe HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3) > "$out/reply" 2>/dev/null; then
  echo online > "$out/net"
else
  echo offline > "$out/net"
fi
"""
    mlpkg_cli.recipes.add("netprobe", "1.0", build_toml("netprobe", "1.0", script))
    r = mlpkg_cli.sub("build", "netprobe", timeout=60)
    assert r.code == 0, str(r)
    out = Path(r.out.strip())
    assert (out / "net").read_text().strip() == "offline"
    assert http_server.requests_for("/probe") == []
