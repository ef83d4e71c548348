"""Lockfiles on the command line: ``lock``, ``lock --check``, ``lock --update``,
``build --lock``/``install --lock`` and ``build --check`` (issue 3).

Hermetic: recipes live in a per-test directory, sources are tarballs made here and served
by the loopback ``http_server``, and the external tool ``mytool`` is a shell script in a
per-test bin directory put first on PATH. A lock made in one MLPKG_HOME is realised in
another, empty one elsewhere (fixture ``make_mlpkg_cli``), with no recipes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.recipe_text import build_toml

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.cli_support import CliResult
    from tests.conftest import LoopbackServer, MlpkgCli

Tarball = Callable[..., bytes]
MakeCli = Callable[..., "MlpkgCli"]
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fetch_toml(name: str, version: str, url: str, *, sha: str = "", md5sum: str = "") -> str:
    hashes = f'sha256 = "{sha}"' if sha else f'md5 = "{md5sum}"'
    return (
        f'name = "{name}"\nversion = "{version}"\nkind = "fetch"\n[source]\n'
        f'urls = ["{url}"]\n{hashes}\nunpack = true\nstrip_components = 1\n'
    )


EXTERNAL_TOML = """
name = "mytool"
version = "external"
kind = "external"
[external]
detect = "mytool --version"
version_regex = 'mytool version (\\d+(?:\\.\\d+)+)'
executables = ["mytool"]
[env]
PATH = { prepend = "bin" }
"""


def make_tool(bindir: Path, version: str) -> dict[str, str]:
    """Write ``bindir/mytool`` printing ``version``; return the environment that puts it
    first on PATH."""
    bindir.mkdir(parents=True, exist_ok=True)
    tool = bindir / "mytool"
    tool.write_text(f'#!/bin/sh\necho "mytool version {version}"\n')
    tool.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def load(file: Path) -> dict[str, Any]:
    return tomllib.loads(file.read_text(encoding="utf-8"))


def nodes(file: Path) -> dict[str, dict[str, Any]]:
    """The lock's nodes by package name."""
    return {n["name"]: n for n in load(file)["node"]}


def archive_hashes(cli: MlpkgCli, paths: list[str]) -> dict[str, str]:
    """Store path name → archive hash, from ``path-info --json`` (no recipes needed)."""
    docs = cli.run("path-info", "--json", *paths).ok().json()
    return {d["path"]: d["archive_hash"] for d in docs}


def fails(result: CliResult, code: int) -> str:
    """stderr of a command that must have exited ``code`` (and printed no traceback)."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.err and "internal error" not in result.err, str(result)
    return result.err


def fresh(make_mlpkg_cli: MakeCli, tmp_path: Path, name: str) -> MlpkgCli:
    """An empty home somewhere else, whose recipe directory has only mytool's external
    recipe: a lock's external is detected only with a command the local collection trusts
    for it (docs/trust.md; tests/cli/test_lock_trust.py)."""
    cli = make_mlpkg_cli(tmp_path / "elsewhere" / name / "home")
    cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    return cli


def add_source(
    cli: MlpkgCli, server: LoopbackServer, tarball: Tarball, name: str, *, legacy: bool = False
) -> bytes:
    """Serve a tarball of ``name`` and write a fetch recipe for it (sha256, or only MD5)."""
    data = tarball({"data.txt": f"data of {name}\n", "run.sh*": "#!/bin/sh\necho run\n"})
    server.route(f"/{name}-1.0.tar.gz", body=data)
    url = server.url(f"/{name}-1.0.tar.gz")
    if legacy:
        cli.recipes.add(name, "1.0", fetch_toml(name, "1.0", url, md5sum=md5(data)))
    else:
        cli.recipes.add(name, "1.0", fetch_toml(name, "1.0", url, sha=sha256(data)))
    return data


LIB_SCRIPT = """mkdir -p "$out/share"
cp "$src/data.txt" "$out/share/data.txt"
mytool --version > "$out/share/tool-version"
"""
APP_SCRIPT = """mkdir -p "$out/bin" "$out/share"
cat "$lib/share/data.txt" "$lib/share/tool-version" > "$out/share/all.txt"
printf '#!/bin/sh\\necho app\\n' > "$out/bin/app"
chmod +x "$out/bin/app"
"""
NONDET_SCRIPT = """mkdir -p "$out"
echo fixed > "$out/fixed"
head -c16 /dev/urandom | od -An -tx1 > "$out/stamp"
"""


def add_closure(cli: MlpkgCli, server: LoopbackServer, tarball: Tarball) -> None:
    """src (fetch) → lib (build, runs mytool) → app (build); mytool is an external."""
    add_source(cli, server, tarball, "src")
    cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    cli.recipes.add(
        "lib", "1.0", build_toml("lib", "1.0", LIB_SCRIPT, {"src": "src", "tool": "mytool"})
    )
    cli.recipes.add("app", "1.0", build_toml("app", "1.0", APP_SCRIPT, {"lib": "lib@1.0"}))


# -- the Done-when test ---------------------------------------------------------------------


def test_a_lock_rebuilds_the_same_closure_in_another_empty_home(
    tmp_path: Path,
    mlpkg_cli: MlpkgCli,
    make_mlpkg_cli: MakeCli,
    http_server: LoopbackServer,
    tarball: Tarball,
) -> None:
    path1 = make_tool(tmp_path / "bin1", "1.4.1")
    add_closure(mlpkg_cli, http_server, tarball)
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.sub("lock", "--realise", "app", "-o", str(lock), env=path1).ok()
    locked = nodes(lock)
    assert set(locked) == {"src", "mytool", "lib", "app"}
    assert sorted(n["path"] for n in locked.values()) == mlpkg_cli.valid_paths()
    built = [n for n in locked.values() if n["kind"] != "external"]
    assert all(SHA256.fullmatch(n["archive_hash"]) for n in built), locked
    assert all(n["size"] > 0 for n in built)
    # An external's archive names where the tool lives: not recorded, so locks of the same
    # recipes on two machines are the same bytes.
    assert all(n["archive_hash"] == "unknown" for n in locked.values() if n["kind"] == "external")
    assert locked["mytool"]["detected_version"] == "1.4.1"
    assert load(lock)["roots"] == [locked["app"]["path"]]
    first = archive_hashes(mlpkg_cli, [n["path"] for n in locked.values()])
    assert {n["path"]: n["archive_hash"] for n in built} == {
        n["path"]: first[n["path"]] for n in built
    }

    # Locking again with --realise gives the same bytes; without it, the same plan with
    # archive hashes unknown, whatever happens to be built (a lock does not depend on the
    # state of the store).
    again = tmp_path / "again.lock"
    mlpkg_cli.run("lock", "--realise", "app", "-o", str(again), env=path1).ok()
    assert again.read_bytes() == lock.read_bytes()
    mlpkg_cli.run("lock", "app", "-o", str(again), env=path1).ok()
    unrealised = {n["name"]: n for n in load(again)["node"]}
    assert {n["path"] for n in unrealised.values()} == {n["path"] for n in locked.values()}
    assert all(n["archive_hash"] == "unknown" for n in unrealised.values())

    # Another machine: an empty home elsewhere, the tool installed elsewhere, no recipes
    # but the external's (the command it trusts to detect mytool).
    shutil.rmtree(mlpkg_cli.recipes.path)
    other = fresh(make_mlpkg_cli, tmp_path, "machine2")
    path2 = make_tool(tmp_path / "elsewhere" / "opt" / "bin", "1.4.1")
    empty = tmp_path / "empty-recipes"
    empty.mkdir()
    r = other.sub("build", "--lock", str(lock), "--recipes", str(empty), env=path2).ok()
    assert r.out.splitlines() == [str(other.store / locked["app"]["path"])]
    assert other.valid_paths() == mlpkg_cli.valid_paths()
    second = archive_hashes(other, [n["path"] for n in locked.values()])
    for name, node in locked.items():
        if name != "mytool":
            assert second[node["path"]] == first[node["path"]], name
    # The external's links name where the tool lives: another machine, another hash.
    assert second[locked["mytool"]["path"]] != first[locked["mytool"]["path"]]
    app = other.store / locked["app"]["path"]
    assert (app / "share" / "all.txt").read_text() == "data of src\nmytool version 1.4.1\n"

    # Building from the lock again does nothing.
    other.run("build", "--lock", str(lock), env=path2).ok()
    assert archive_hashes(other, list(second)) == second


def test_lock_without_realise_marks_archive_hashes_unknown(
    tmp_path: Path, mlpkg_cli: MlpkgCli, http_server: LoopbackServer, tarball: Tarball
) -> None:
    env = make_tool(tmp_path / "bin", "1.4.1")
    add_closure(mlpkg_cli, http_server, tarball)
    lock = tmp_path / "mlpkg.lock"
    r = mlpkg_cli.run("lock", "app", "-o", str(lock), env=env).ok()
    assert "4 archive hashes unknown" in r.err, r.err
    locked = nodes(lock)
    assert {n["archive_hash"] for n in locked.values()} == {"unknown"}
    assert not any("size" in n for n in locked.values())
    assert locked["mytool"]["detected_version"] == "1.4.1"
    assert mlpkg_cli.valid_paths() == [] and http_server.requests == []
    # Same bytes again, and on stdout with -o -.
    out = mlpkg_cli.run("lock", "app", "-o", "-", env=env).ok().out
    assert out == lock.read_text(encoding="utf-8")


# -- sources ----------------------------------------------------------------------------------


def test_an_md5_only_source_gets_its_sha256_locked_and_checked(
    tmp_path: Path,
    mlpkg_cli: MlpkgCli,
    make_mlpkg_cli: MakeCli,
    http_server: LoopbackServer,
    tarball: Tarball,
) -> None:
    data = add_source(mlpkg_cli, http_server, tarball, "legacy", legacy=True)
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "legacy", "-o", str(lock)).ok()
    node = nodes(lock)["legacy"]
    assert node["source_sha256"] == sha256(data)
    assert node["recipe"]["source"] == {
        "md5": md5(data),
        "urls": [http_server.url("/legacy-1.0.tar.gz")],
        "unpack": True,
        "strip_components": 1,
    }

    good = fresh(make_mlpkg_cli, tmp_path, "good")
    good.run("install", "--lock", str(lock)).ok()
    assert good.valid_paths() == [node["path"]]
    assert archive_hashes(good, [node["path"]]) == {node["path"]: node["archive_hash"]}
    assert (good.home / "gcroots" / "profiles" / "default" / "1" / "0").resolve() == (
        good.store / node["path"]
    )

    # A lock whose pinned sha256 is not what the source gives is refused at the fetch,
    # though the MD5 still matches (the path is named by the MD5, so the lock parses).
    wrong = "0" * 64
    edited = tmp_path / "edited.lock"
    text = lock.read_text(encoding="utf-8")
    edited.write_text(text.replace(sha256(data), wrong), encoding="utf-8")
    assert edited.read_text() != text
    bad = fresh(make_mlpkg_cli, tmp_path, "bad")
    err = fails(bad.run("build", "--lock", str(edited)), 1)
    assert wrong in err and sha256(data) in err, err
    assert bad.valid_paths() == [] and node["path"] not in bad.store_entries()


def test_a_source_that_changed_upstream_is_refused(
    tmp_path: Path,
    mlpkg_cli: MlpkgCli,
    make_mlpkg_cli: MakeCli,
    http_server: LoopbackServer,
    tarball: Tarball,
) -> None:
    env = make_tool(tmp_path / "bin", "1.4.1")
    add_closure(mlpkg_cli, http_server, tarball)
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "app", "-o", str(lock), env=env).ok()
    locked = nodes(lock)
    declared = locked["src"]["recipe"]["source"]["sha256"]

    changed = tarball({"data.txt": "data of src, silently re-released\n"})
    http_server.route("/src-1.0.tar.gz", body=changed)
    other = fresh(make_mlpkg_cli, tmp_path, "other")
    err = fails(other.run("build", "--lock", str(lock), env=env), 1)
    assert declared in err and sha256(changed) in err, err
    assert set(other.valid_paths()) <= {locked["mytool"]["path"]}  # the link, at most
    for name in ("src", "lib", "app"):
        assert locked[name]["path"] not in other.store_entries()


# -- reproducibility --------------------------------------------------------------------------


def test_build_check_catches_a_non_deterministic_build(mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("nondet", "1.0", build_toml("nondet", "1.0", NONDET_SCRIPT))
    mlpkg_cli.run("build", "nondet").ok()
    path = mlpkg_cli.path_of("nondet").name
    before = archive_hashes(mlpkg_cli, [path])

    err = fails(mlpkg_cli.run("build", "--check", "nondet"), 1)
    assert "stamp" in err and "not reproducible" in err, err
    assert "first differing file: stamp" in err, err
    kept = mlpkg_cli.home / "check" / path
    assert str(kept) in err
    assert (kept / "stamp").is_file() and (kept / "fixed").read_text() == "fixed\n"
    assert (kept / "stamp").read_bytes() != (mlpkg_cli.store / path / "stamp").read_bytes()
    # The valid path is untouched.
    assert archive_hashes(mlpkg_cli, [path]) == before
    assert mlpkg_cli.valid_paths() == [path]


def test_build_check_passes_a_deterministic_build(mlpkg_cli: MlpkgCli) -> None:
    script = (
        'mkdir -p "$out"\necho same > "$out/file"\ndate -d "@$SOURCE_DATE_EPOCH" > "$out/date"\n'
    )
    mlpkg_cli.recipes.add("det", "1.0", build_toml("det", "1.0", script))
    err = fails(mlpkg_cli.run("build", "--check", "det"), 2)  # not valid yet: nothing to check
    assert "not valid" in err
    mlpkg_cli.run("build", "det").ok()
    r = mlpkg_cli.run("build", "--check", "--rounds", "2", "det").ok()
    path = mlpkg_cli.path_of("det")
    assert f"{path}: reproducible (2 rounds" in r.out, r.out
    check = mlpkg_cli.home / "check"
    assert not check.exists() or os.listdir(check) == []


def test_a_locked_build_that_comes_out_differently_is_refused(
    tmp_path: Path, mlpkg_cli: MlpkgCli, make_mlpkg_cli: MakeCli
) -> None:
    mlpkg_cli.recipes.add("nondet", "1.0", build_toml("nondet", "1.0", NONDET_SCRIPT))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "nondet", "-o", str(lock)).ok()
    node = nodes(lock)["nondet"]
    assert SHA256.fullmatch(node["archive_hash"])

    other = fresh(make_mlpkg_cli, tmp_path, "other")
    err = fails(other.run("build", "--lock", str(lock)), 1)
    hashes = set(SHA256.findall(err))
    assert node["archive_hash"] in hashes and len(hashes) == 2, err
    assert node["path"] in err
    failed = other.home / "failed" / node["path"]
    assert str(failed) in err
    assert (failed / "stamp").is_file()
    assert other.valid_paths() == [] and node["path"] not in other.store_entries()
    # Again: the kept result is replaced, and the path still does not become valid.
    err = fails(other.run("build", "--lock", str(lock)), 1)
    assert str(failed) in err and node["archive_hash"] in err
    assert other.valid_paths() == [] and (failed / "stamp").is_file()

    # A store that already holds a different copy is named too (nothing is rebuilt).
    third = fresh(make_mlpkg_cli, tmp_path, "third")
    shutil.copytree(mlpkg_cli.recipes.path, third.recipes.path, dirs_exist_ok=True)
    third.run("build", "nondet").ok()
    err = fails(third.run("build", "--lock", str(lock)), 1)
    assert "-nondet-1.0 has archive hash" in err and node["archive_hash"] in err, err
    assert len(set(SHA256.findall(err))) == 2, err


# -- externals -----------------------------------------------------------------------------------


def test_external_drift_is_refused_unless_allowed(
    tmp_path: Path, mlpkg_cli: MlpkgCli, make_mlpkg_cli: MakeCli
) -> None:
    env = make_tool(tmp_path / "bin", "1.4.1")
    mlpkg_cli.recipes.add("mytool", "external", EXTERNAL_TOML)
    script = 'mkdir -p "$out"\necho ok > "$out/ok"\n'
    mlpkg_cli.recipes.add("user", "3.0", build_toml("user", "3.0", script, {"t": "mytool"}))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "user", "-o", str(lock), env=env).ok()
    locked = nodes(lock)
    assert locked["mytool"]["detected_version"] == "1.4.1"

    env = make_tool(tmp_path / "bin", "2.7.3")
    other = fresh(make_mlpkg_cli, tmp_path, "other")
    err = fails(other.run("build", "--lock", str(lock), env=env), 2)
    assert "mytool" in err and "1.4.1" in err and "2.7.3" in err, err
    assert "--allow-external-drift" in err
    assert other.valid_paths() == []

    other.run("build", "--lock", str(lock), "--allow-external-drift", env=env).ok()
    assert other.valid_paths() == sorted(n["path"] for n in locked.values())
    user = archive_hashes(other, [locked["user"]["path"]])
    assert user == {locked["user"]["path"]: locked["user"]["archive_hash"]}


# -- lock --check and lock --update ---------------------------------------------------------------


def test_lock_check_is_clean_then_reports_a_changed_recipe(
    tmp_path: Path, mlpkg_cli: MlpkgCli
) -> None:
    mlpkg_cli.recipes.add("base", "1.0", build_toml("base", "1.0", 'mkdir "$out"\n'))
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n', {"b": "base"}))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "top", "-o", str(lock)).ok()
    r = mlpkg_cli.run("lock", "--check", str(lock)).ok()
    assert "consistent and up to date" in r.err
    doc = mlpkg_cli.run("lock", "--check", str(lock), "--json").ok().json()
    assert doc["consistent"] is True and doc["up_to_date"] is True and doc["changes"] == []

    mlpkg_cli.recipes.add(
        "base", "1.0", build_toml("base", "1.0", 'mkdir "$out"; echo >"$out/x"\n')
    )
    r = mlpkg_cli.run("lock", "--check", str(lock))
    err = fails(r, 1)
    assert "base" in err and "no longer matches" in err, err
    assert [line.split(":")[0] for line in r.out.splitlines()] == ["base", "top"], r.out


def test_lock_check_refuses_a_tampered_lock(tmp_path: Path, mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n'))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "top", "-o", str(lock)).ok()
    text = lock.read_text(encoding="utf-8")
    assert text.count('mkdir "$out"') == 1
    lock.write_text(text.replace('mkdir "$out"', 'mkdir "$out"; touch "$out/extra"'))
    err = fails(mlpkg_cli.run("lock", "--check", str(lock)), 2)
    assert str(lock) in err and "node top" in err and "edited" in err, err
    # build --lock refuses it the same way, before doing anything.
    err = fails(mlpkg_cli.run("build", "--lock", str(lock)), 2)
    assert "node top" in err and mlpkg_cli.valid_paths() == []


def test_a_bad_lockfile_is_bad_input(tmp_path: Path, mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n'))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "top", "-o", str(lock)).ok()
    text = lock.read_text(encoding="utf-8")
    cut = tmp_path / "cut.lock"
    cut.write_text(text[: text.index("[node.recipe]") + 8])
    assert str(cut) in fails(mlpkg_cli.run("build", "--lock", str(cut)), 2)
    future = tmp_path / "future.lock"
    future.write_text(text.replace("\nversion = 1\n", "\nversion = 2\n"))
    err = fails(mlpkg_cli.run("install", "--lock", str(future)), 2)
    assert "version 2" in err and "version 1" in err, err
    assert fails(mlpkg_cli.run("build", "top", "--lock", str(lock)), 2)
    assert "nosuch" in fails(mlpkg_cli.run("lock", "--update", "nosuch", "-o", str(lock)), 2)
    assert mlpkg_cli.valid_paths() == []


def _two_packages(cli: MlpkgCli) -> None:
    for name in ("a", "b"):
        cli.recipes.add(
            name, "1.0", build_toml(name, "1.0", f'mkdir "$out"; echo {name}1 > "$out/v"\n')
        )
    cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n', {"a": "a", "b": "b"}))


def _newer_versions(cli: MlpkgCli) -> None:
    for name in ("a", "b"):
        cli.recipes.add(
            name, "2.0", build_toml(name, "2.0", f'mkdir "$out"; echo {name}2 > "$out/v"\n')
        )


def test_lock_update_re_resolves_one_package_and_keeps_the_rest(
    tmp_path: Path, mlpkg_cli: MlpkgCli
) -> None:
    _two_packages(mlpkg_cli)
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "top", "-o", str(lock)).ok()
    before = nodes(lock)
    assert (before["a"]["version"], before["b"]["version"]) == ("1.0", "1.0")
    _newer_versions(mlpkg_cli)

    mlpkg_cli.run("lock", "--update", "a", "-o", str(lock)).ok()
    after = nodes(lock)
    assert after["a"]["version"] == "2.0"
    assert after["b"] == before["b"]  # recipe, path and archive hash as locked
    assert after["top"]["inputs"] == {"a": after["a"]["path"], "b": before["b"]["path"]}
    assert after["top"]["recipe"] == before["top"]["recipe"]
    assert after["a"]["archive_hash"] == "unknown"  # not realised yet
    assert load(lock)["roots"] == [after["top"]["path"]] != [before["top"]["path"]]
    # The recipes would now give b 2.0 as well: lock --check names b (and top), not a.
    r = mlpkg_cli.run("lock", "--check", str(lock))
    fails(r, 1)
    assert [line.split(":")[0] for line in r.out.splitlines()] == ["b", "top"], r.out


def test_lock_update_in_another_home_keeps_the_locked_hashes(
    tmp_path: Path,
    mlpkg_cli: MlpkgCli,
    make_mlpkg_cli: MakeCli,
    http_server: LoopbackServer,
    tarball: Tarball,
) -> None:
    _two_packages(mlpkg_cli)
    add_source(mlpkg_cli, http_server, tarball, "legacy", legacy=True)
    mlpkg_cli.recipes.add(
        "top",
        "1.0",
        build_toml("top", "1.0", 'mkdir "$out"\n', {"a": "a", "b": "b", "l": "legacy"}),
    )
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "--realise", "top", "-o", str(lock)).ok()
    before = nodes(lock)
    assert before["legacy"]["source_sha256"]
    _newer_versions(mlpkg_cli)

    colleague = make_mlpkg_cli(tmp_path / "colleague" / "home", mlpkg_cli.recipes.path)
    colleague.run("lock", "--update", "a", "-o", str(lock)).ok()
    after = nodes(lock)
    assert after["a"]["version"] == "2.0"
    kept = {
        n: {k: after[n].get(k) for k in ("archive_hash", "size", "source_sha256")}
        for n in ("b", "legacy")
    }
    assert kept == {n: {k: before[n].get(k) for k in kept[n]} for n in kept}
    assert after["b"] == before["b"] and after["legacy"] == before["legacy"]


def test_lock_check_json_prints_one_document(tmp_path: Path, mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n'))
    lock = tmp_path / "mlpkg.lock"
    mlpkg_cli.run("lock", "top", "-o", str(lock)).ok()
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"; true\n'))
    r = mlpkg_cli.run("lock", "--check", str(lock), "--json")
    assert r.code == 1
    doc = json.loads(r.out)  # one document: the result, or the error
    assert "top" in json.dumps(doc)


def test_lock_into_a_missing_directory_is_a_clear_error(
    tmp_path: Path, mlpkg_cli: MlpkgCli
) -> None:
    mlpkg_cli.recipes.add("top", "1.0", build_toml("top", "1.0", 'mkdir "$out"\n'))
    target = tmp_path / "no-such-dir" / "mlpkg.lock"
    err = fails(mlpkg_cli.run("lock", "top", "-o", str(target)), 2)
    assert str(target) in err
