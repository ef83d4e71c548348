"""Path stability of imported releases (issue 12): a release ``mlpkg import pypi`` writes
for several interpreters (``[[wheel.files]]``) specialises, for the machine's interpreter,
to the very store path of the one-file recipe a one-interpreter import writes; and the
same holds for a one-file recipe converted in place by a later import.

Plans only, nothing built. The machine's interpreter is the collection's ``python``
external (probed), so its version is read, not assumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlpkg.importer.recipe import reimport, render_release
from mlpkg.importer.release import ImportedRelease, WheelEntry
from mlpkg.recipes.index import RecipeIndex, bundled_dir
from mlpkg.resolver.plan import Plan, make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.store import Store

MINE = "{}.{}".format(*sys.version_info[:2])


def wheel(name: str, python: str, sha: str) -> WheelEntry:
    tag = "cp" + python.replace(".", "")
    filename = f"{name}-1.0-{tag}-{tag}-manylinux_2_17_x86_64.whl"
    return WheelEntry(filename, (f"https://example.org/{filename}",), sha, None,
                      frozenset([python]))  # fmt: skip


def release(pythons: list[str], *, name: str = "fastlib") -> ImportedRelease:
    files = tuple(wheel(name, p, f"{i + 1:x}" * 64) for i, p in enumerate(sorted(pythons)))
    return ImportedRelease(
        name=name, version="1.0", summary="A fast library", aliases=(),
        inputs={"dep": "dep@>=1"}, pythons=tuple(pythons), files=files,
        requires_python=">=3.8",
    )  # fmt: skip


def pure_dep(pythons: list[str]) -> str:
    entry = WheelEntry("dep-1.0-py3-none-any.whl", ("https://example.org/dep.whl",),
                       "d" * 64, None, frozenset(pythons))  # fmt: skip
    return render_release(ImportedRelease("dep", "1.0", "", (), {}, tuple(pythons), (entry,), None))


def write(root: Path, name: str, version: str, text: str) -> None:
    f = root / name / f"{version}.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)


def collection(root: Path, fastlib: str, dep: str) -> Path:
    write(root, "python", "external", (bundled_dir() / "python" / "external.toml").read_text())
    write(root, "fastlib", "1.0", fastlib)
    write(root, "dep", "1.0", dep)
    return root


def plan_of(recipes: Path, home: Path, *specs: str) -> Plan:
    with Store(home) as store:
        provider = IndexProvider(RecipeIndex([recipes]))
        return make_plan(provider, [parse_spec(s) for s in specs], store)


def paths(plan: Plan) -> dict[str, str]:
    return {n.drv.name: str(n.path) for n in plan.nodes}


@pytest.fixture
def one_interpreter(tmp_path: Path) -> dict[str, str]:
    """The paths of the closure as a one-interpreter import for the machine writes it."""
    single = render_release(release([MINE]))
    assert "[source]" in single and "[[wheel.files]]" not in single
    root = collection(tmp_path / "one", single, pure_dep([MINE]))
    return paths(plan_of(root, tmp_path / "home", "fastlib"))


def test_a_release_for_several_interpreters_keeps_the_machines_paths(
    tmp_path: Path, one_interpreter: dict[str, str]
) -> None:
    many = render_release(release(["3.9", MINE]))
    assert "[[wheel.files]]" in many and "[source]" not in many
    root = collection(tmp_path / "many", many, pure_dep(["3.9", MINE]))
    plan = plan_of(root, tmp_path / "home", "fastlib")
    assert paths(plan) == one_interpreter
    chosen = next(n for n in plan.nodes if n.drv.name == "fastlib").drv.recipe
    assert chosen.inputs["python"] == f"python@{MINE}"
    assert chosen.wheel is not None and chosen.wheel.filename == wheel("fastlib", MINE, "").filename


def test_a_one_file_recipe_converted_by_a_later_import_keeps_its_path(
    tmp_path: Path, one_interpreter: dict[str, str]
) -> None:
    single = render_release(release([MINE]))
    edited = single + '\n[env]\nFAST = { set = "1" }\n'  # a hand edit: changes the path
    converted = reimport(edited, render_release(release(["3.9", MINE])))
    assert "[[wheel.files]]" in converted and "FAST" in converted
    root = collection(
        tmp_path / "conv", converted, reimport(pure_dep([MINE]), pure_dep(["3.9", MINE]))
    )
    before = collection(tmp_path / "before", edited, pure_dep([MINE]))
    home = tmp_path / "home"
    assert paths(plan_of(root, home, "fastlib")) == paths(plan_of(before, home, "fastlib"))
    assert paths(plan_of(root, home, "dep")) == {
        k: v for k, v in one_interpreter.items() if k in ("dep", "python")
    }
