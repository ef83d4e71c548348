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

import os
import sys
import textwrap
from pathlib import Path

import pytest

from mlpkg.errors import LockError
from mlpkg.recipes.index import RecipeIndex
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Derivation, Detected
from mlpkg.resolver.external import detect, untrusted, which
from mlpkg.resolver.lockfile import check_trusted, from_plan, parse, to_plan
from mlpkg.resolver.machine import current_platform
from mlpkg.resolver.pyprobe import probe_python
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
