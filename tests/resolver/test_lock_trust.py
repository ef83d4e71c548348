"""What runs on the host when a lock is read and planned (issue 10, item 4), in process.

- :func:`mlpkg.resolver.external.untrusted` compares an external's detection (detect
  command, executables, probe, version regex) with the trusted recipes of its name;
- :func:`mlpkg.resolver.lockfile.to_plan` refuses an untrusted external before detecting
  anything, with the default collection when the caller names none;
- detection and the Python probe run in an empty directory, so files in the caller's
  working directory (a ``platform.py`` beside a colleague's lock) are never imported, and
  executables are not looked up through relative ``PATH`` entries.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlpkg.errors import LockError
from mlpkg.recipes.index import RecipeIndex
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation, Detected
from mlpkg.resolver.external import detect, untrusted, which
from mlpkg.resolver.lockfile import Lockfile, check_trusted, from_plan, parse, to_plan
from mlpkg.resolver.machine import current_platform
from mlpkg.resolver.pyprobe import probe_python
from mlpkg.resolver.toml_writer import dumps
from mlpkg.store.store import Store

TOOL = """
name = "mytool"
version = "external"
kind = "external"
[external]
detect = "echo mytool 1.2.3"
executables = ["sh"]
"""


def recipe(text: str = TOOL, **external: object) -> Recipe:
    """The recipe ``text`` with fields of its ``[external]`` table replaced."""
    import tomllib

    doc = tomllib.loads(text)
    doc["external"].update(external)
    return Recipe.model_validate(doc)


def collection(root: Path, text: str | None = TOOL) -> RecipeIndex:
    """A recipe collection at ``root`` holding ``text`` as mytool's external (if given)."""
    root.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (root / "mytool").mkdir(exist_ok=True)
        (root / "mytool" / "external.toml").write_text(textwrap.dedent(text))
    return RecipeIndex([root])


def lock_text(tool: Recipe) -> str:
    """A consistent lock of the external ``tool`` alone, for this machine."""
    drv = Derivation(tool, {}, current_platform(), Detected("1.2.3"))
    return from_plan(["mytool"], [drv], [drv.path], {}, current_platform()).dumps()


class Recorder:
    """A detector that records what it was asked to detect."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, r: Recipe) -> Detected:
        self.asked.append(r.name)
        return Detected("1.2.3", {"sh": "/bin/sh"})


# -- comparing detections --------------------------------------------------------------------


def test_the_same_detection_is_trusted() -> None:
    assert untrusted(recipe(), [recipe()]) is None
    assert untrusted(recipe(), [recipe(detect="other"), recipe()]) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("detect", "touch /tmp/x; echo mytool 1.2.3"),
        ("executables", ["sh", "python3"]),
        ("probe", "python"),
        ("version_regex", r"(\d+)"),
    ],
)
def test_any_other_detection_is_named_with_both_commands(field: str, value: object) -> None:
    why = untrusted(recipe(**{field: value}), [recipe()])
    assert why is not None and "mytool" in why
    mine = str(value) if field == "detect" else "echo mytool 1.2.3"
    assert f"`{mine}`" in why and "trusts only `echo mytool 1.2.3`" in why, why
    if field != "detect":
        assert field in why and repr(value) in why, why


def test_a_name_the_collection_lacks_is_untrusted() -> None:
    why = untrusted(recipe(), [])
    assert why is not None and "no external recipe mytool" in why and "`echo mytool" in why


# -- from a lock to a plan ---------------------------------------------------------------------


def test_to_plan_refuses_an_untrusted_external_before_detecting(tmp_path: Path) -> None:
    lock = parse(lock_text(recipe(detect="touch pwned; echo mytool 1.2.3")), "x.lock")
    asked = Recorder()
    with Store(tmp_path / "home") as store, pytest.raises(LockError) as info:
        to_plan(lock, store, asked, trusted=collection(tmp_path / "recipes"))
    assert asked.asked == []
    err = info.value
    assert err.exit_code == 2 and err.package == "mytool" and err.file == "x.lock"
    assert err.message.startswith("x.lock is refused: its external mytool")
    assert "`touch pwned; echo mytool 1.2.3`" in err.message
    assert "`echo mytool 1.2.3`" in err.message


def test_to_plan_accepts_the_trusted_external(tmp_path: Path) -> None:
    lock = parse(lock_text(recipe()), "x.lock")
    asked = Recorder()
    with Store(tmp_path / "home") as store:
        plan, _ = to_plan(lock, store, asked, trusted=collection(tmp_path / "recipes"))
    assert asked.asked == ["mytool"] and [n.action for n in plan.nodes] == ["link"]


def test_to_plan_trusts_the_default_collection_when_given_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``trusted`` (``mlpkg run --lock``): MLPKG_RECIPES_PATH, then
    ``$MLPKG_HOME/recipes``, then the bundled collection, which has no mytool."""
    lock = parse(lock_text(recipe()), "x.lock")
    monkeypatch.delenv("MLPKG_RECIPES_PATH", raising=False)
    asked = Recorder()
    with Store(tmp_path / "home") as store:
        with pytest.raises(LockError, match="no external recipe mytool"):
            to_plan(lock, store, asked)
        assert asked.asked == []
        collection(tmp_path / "home" / "recipes")  # what `mlpkg import` writes to
        to_plan(lock, store, asked)
    assert asked.asked == ["mytool"]


def test_check_trusted_ignores_everything_but_externals(tmp_path: Path) -> None:
    build = Recipe.model_validate(
        {"name": "b", "version": "1.0", "kind": "build", "build": {"script": "true"}}
    )
    drv = Derivation(build, {}, current_platform())
    lock = from_plan(["b"], [drv], [drv.path], {}, current_platform())
    check_trusted(lock, collection(tmp_path / "recipes", None))


# -- what detection runs, and where --------------------------------------------------------------


@pytest.fixture
def hostile_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose ``platform.py`` and ``json.py`` create ``marker``, as a
    cloned project beside a lock could hold; returns the marker."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    marker = tmp_path / "PWNED"
    for module in ("platform", "json"):
        (cwd / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(cwd)
    return marker


def test_detection_imports_nothing_from_the_working_directory(hostile_cwd: Path) -> None:
    """The bundled python recipe detects with ``python3 -c 'import platform; ...'``."""
    python = recipe(
        detect=f"{sys.executable} -c 'import platform; print(platform.python_version())'",
        executables=["sh"],
        version_regex=r"(\d+\.\d+\.\d+)",
    )
    found = detect(python)
    assert found.version == ".".join(map(str, sys.version_info[:3]))
    assert not hostile_cwd.exists()


def test_the_python_probe_imports_nothing_from_the_working_directory(hostile_cwd: Path) -> None:
    version, _, _, tags = probe_python(sys.executable)
    assert version == ".".join(map(str, sys.version_info[:3])) and tags
    assert not hostile_cwd.exists()


def test_executables_are_not_found_through_relative_path_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\necho mytool 9.9.9\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f".{os.pathsep}{os.pathsep}{os.environ['PATH']}")
    assert which("mytool") is None
    assert which("sh") is not None


VARIANT_TOOL = (
    TOOL
    + """
[variants.alt]
external = { detect = "echo mytool 2.0.0", executables = ["sh"] }
"""
)


def test_a_variant_s_detection_is_trusted_with_the_variant_applied(tmp_path: Path) -> None:
    from mlpkg.recipes.variants import apply

    alt = apply(recipe(VARIANT_TOOL), ["alt"])
    assert alt.external is not None and alt.external.detect == "echo mytool 2.0.0"
    trusted = collection(tmp_path / "recipes", VARIANT_TOOL)
    check_trusted(parse(lock_text(alt), "x.lock"), trusted)
    edited = alt.model_copy(
        update={"external": alt.external.model_copy(update={"detect": "touch x; true"})}
    )
    with pytest.raises(LockError, match=r"trusts only `echo mytool 2\.0\.0`"):
        check_trusted(parse(lock_text(edited), "x.lock"), trusted)
    with pytest.raises(LockError, match="no external recipe mytool"):
        check_trusted(parse(lock_text(alt), "x.lock"), collection(tmp_path / "plain"))


# -- unpack caps: a lock cannot raise them ---------------------------------------------------------

DATA_SHA = "d" * 64
CAPS: dict[str, Any] = {
    "max_unpacked_size": "200GiB",
    "max_unpack_ratio": 5000.0,
    "max_unpacked_files": 2_000_000,
}


def data_recipe(sha: str = DATA_SHA, version: str = "1.0", **caps: object) -> Recipe:
    """A fetch recipe ``data`` unpacking an archive pinned by ``sha``, with ``caps``."""
    source = {"urls": ["https://example.org/data.tar"], "sha256": sha, "unpack": True, **caps}
    return Recipe.model_validate(
        {"name": "data", "version": version, "kind": "fetch", "source": source}
    )


def data_toml(recipe: Recipe) -> str:
    """``recipe`` as a recipe file (values written as JSON, which TOML reads alike here)."""
    doc = recipe.model_dump(mode="json", exclude_defaults=True)
    source = doc.pop("source")
    lines = [f"{k} = {json.dumps(v)}" for k, v in doc.items()] + ["[source]"]
    return "\n".join(lines + [f"{k} = {json.dumps(v)}" for k, v in source.items()]) + "\n"


def data_collection(root: Path, *recipes: Recipe) -> RecipeIndex:
    """A recipe collection at ``root`` holding ``recipes`` (``data/<version>.toml``)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for r in recipes:
        (root / "data" / f"{r.version}.toml").write_text(data_toml(r))
    return RecipeIndex([root])


def data_lock(r: Recipe, file: str = "team.lock") -> Lockfile:
    """A lock of the fetch ``r`` alone, as read from ``file``."""
    drv = Derivation(r, {}, current_platform())
    lock = from_plan(["data"], [drv], [drv.path], {}, current_platform())
    lock.file = file
    return lock


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("max_unpacked_size", "200GiB", "200 GiB (the default is 20 GiB)"),
        ("max_unpack_ratio", 5000.0, "5000 times the archive's size (the default is 200)"),
        ("max_unpacked_files", 2_000_000, "2,000,000 members (the default is 1,000,000)"),
    ],
)
def test_a_raised_cap_the_collection_lacks_is_refused(
    tmp_path: Path, field: str, value: Any, shown: str
) -> None:
    """The collection has data 1.0 for the same archive, with the default caps: the lock
    was edited to raise one (caps are not hashed, so its path did not change)."""
    trusted = data_collection(tmp_path / "recipes", data_recipe())
    lock = data_lock(data_recipe(**{field: value}))
    assert lock.nodes[0].path == Derivation(data_recipe(), {}, current_platform()).path
    with pytest.raises(LockError) as info:
        check_trusted(lock, trusted)
    err = info.value
    assert err.exit_code == 2 and err.package == "data" and err.file == "team.lock"
    assert err.field == f"recipe.source.{field}"
    assert err.message.startswith(
        f"team.lock is refused: its fetch data 1.0 raises [source] {field} to {shown}"
    ), err.message
    assert "but the local recipe data 1.0 allows only" in err.message, err.message
    assert "\n" not in err.message
    assert err.hint is not None and "data/1.0.toml" in err.hint and "--recipes" in err.hint


def test_caps_are_trusted_from_the_same_recipe_with_caps_at_least_as_high(tmp_path: Path) -> None:
    lock = data_lock(data_recipe(**CAPS))
    check_trusted(lock, data_collection(tmp_path / "same", data_recipe(**CAPS)))
    higher: dict[str, Any] = {
        "max_unpacked_size": "1TiB",
        "max_unpack_ratio": 1e6,
        "max_unpacked_files": 10**8,
    }
    check_trusted(lock, data_collection(tmp_path / "higher", data_recipe(**higher)))


def test_a_lower_local_cap_names_what_the_collection_allows(tmp_path: Path) -> None:
    trusted = data_collection(tmp_path / "r", data_recipe(**{**CAPS, "max_unpacked_size": "50GiB"}))
    with pytest.raises(LockError) as info:
        check_trusted(data_lock(data_recipe(**CAPS)), trusted)
    assert "max_unpacked_size to 200 GiB" in info.value.message
    assert "the local recipe data 1.0 allows only 50 GiB" in info.value.message
    assert info.value.field == "recipe.source.max_unpacked_size"


def test_the_details_name_every_other_refused_cap(tmp_path: Path) -> None:
    with pytest.raises(LockError) as info:
        check_trusted(data_lock(data_recipe(**CAPS)), data_collection(tmp_path / "r"))
    err = info.value
    assert "the local recipe collection has no recipe data 1.0" in err.message
    assert "raises [source] max_unpacked_size to 200 GiB" in err.message
    named = [d.split(" raises [source] ")[1].split(" ")[0] for d in err.details]
    assert named == ["max_unpack_ratio", "max_unpacked_files"], err.details
    assert all(d.startswith("team.lock: its fetch data 1.0 raises") for d in err.details)


@pytest.mark.parametrize(
    "local",
    [
        pytest.param(lambda: data_recipe(version="2.0", **CAPS), id="another-version"),
        pytest.param(lambda: data_recipe(sha="e" * 64, **CAPS), id="another-archive"),
    ],
)
def test_caps_of_another_version_or_archive_are_not_trusted(
    tmp_path: Path, local: Callable[[], Recipe]
) -> None:
    """A collection that raises the caps of data 2.0, or of another archive of data 1.0,
    does not vouch for this archive: a lock could otherwise reuse a trusted name for a
    bomb."""
    trusted = data_collection(tmp_path / "r", local())
    with pytest.raises(LockError) as info:
        check_trusted(data_lock(data_recipe(**CAPS)), trusted)
    message = info.value.message
    assert "no recipe data 1.0" in message or "data 1.0 pins another archive" in message, message


def test_default_or_lowered_caps_need_no_recipe(tmp_path: Path) -> None:
    empty = data_collection(tmp_path / "r")
    check_trusted(data_lock(data_recipe()), empty)
    lowered: dict[str, Any] = {
        "max_unpacked_size": "1GiB",
        "max_unpack_ratio": 10.0,
        "max_unpacked_files": 100,
    }
    check_trusted(data_lock(data_recipe(**lowered)), empty)
    defaults: dict[str, Any] = {"max_unpacked_size": 20 << 30, "max_unpack_ratio": 200.0}
    check_trusted(data_lock(data_recipe(**defaults, max_unpacked_files=1_000_000)), empty)


def test_to_plan_refuses_raised_caps(tmp_path: Path) -> None:
    lock = data_lock(data_recipe(max_unpack_ratio=5000.0))
    with Store(tmp_path / "home") as store, pytest.raises(LockError, match="max_unpack_ratio"):
        to_plan(lock, store, Recorder(), trusted=data_collection(tmp_path / "r", data_recipe()))
    with Store(tmp_path / "home") as store:
        trusted = data_collection(tmp_path / "ok", data_recipe(max_unpack_ratio=5000.0))
        plan, _ = to_plan(lock, store, Recorder(), trusted=trusted)
    assert [n.action for n in plan.nodes] == ["fetch"]


VARIANT_DATA = {
    "name": "data",
    "version": "1.0",
    "kind": "fetch",
    "source": {"urls": ["https://example.org/small.tar"], "sha256": DATA_SHA, "unpack": True},
    "variants": {
        "full": {
            "source": {
                "urls": ["https://example.org/full.tar"],
                "sha256": "f" * 64,
                "unpack": True,
                "max_unpacked_size": "200GiB",
            }
        }
    },
}


def test_caps_of_a_variant_are_trusted_with_the_variant_applied(tmp_path: Path) -> None:
    from mlpkg.recipes.variants import apply

    full = apply(Recipe.model_validate(VARIANT_DATA), ["full"])
    assert full.source is not None and full.source.max_unpacked_size == 200 << 30
    root = tmp_path / "r"
    (root / "data").mkdir(parents=True)
    (root / "data" / "1.0.toml").write_text(dumps(VARIANT_DATA))
    check_trusted(data_lock(full), RecipeIndex([root]))
    with pytest.raises(LockError, match=r"data\+full 1\.0 raises \[source\] max_unpacked_size"):
        check_trusted(data_lock(full), data_collection(tmp_path / "plain", data_recipe()))
