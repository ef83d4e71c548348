"""Choosing the closure's interpreter (issue 12): the machine's Python first, a
source-built one when a package has no wheel for the machine's, one wheel file per
interpreter, and the reasons shown.

Nothing is built: plans only. The machine's interpreter is the real one (the collection's
``python`` external recipe, probed), so its version is read, not assumed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlpkg.errors import MlpkgError, ResolutionError, UnknownPackage
from mlpkg.recipes.index import RecipeIndex, bundled_dir
from mlpkg.resolver.interpreters import built_cpython
from mlpkg.resolver.plan import Plan, make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.store import Store

MINE = "{}.{}".format(*sys.version_info[:2])  # the machine's Python runs the tests
OLD = "3.9"
SHA = "b" * 64


def cpython(version: str) -> str:
    return (
        f'name = "python"\nversion = "{version}"\nkind = "build"\n'
        '[inputs]\ncc = "gcc"\n[build]\nscript = "mkdir -p $out/bin"\n'
    )


def wheel_file(name: str, tag: str, sha: str = SHA, version: str = "1.0") -> str:
    filename = f"{name}-{version}-{tag}-{tag}-manylinux_2_17_x86_64.whl"
    return (
        f'[[wheel.files]]\nfilename = "{filename}"\n'
        f'urls = ["https://example.org/{filename}"]\nsha256 = "{sha}"\n'
    )


def multi(name: str, pythons: list[str], version: str = "1.0") -> str:
    head = (
        f'name = "{name}"\nversion = "{version}"\nkind = "wheel"\n'
        f'[inputs]\npython = "python@{",".join(pythons)}"\n[wheel]\n'
    )
    tags = ["cp" + p.replace(".", "") for p in pythons]
    return head + "".join(wheel_file(name, tag, version=version) for tag in tags)


def single(name: str, python: str) -> str:
    """The one-interpreter form an import for ``python`` writes."""
    tag = "cp" + python.replace(".", "")
    filename = f"{name}-1.0-{tag}-{tag}-manylinux_2_17_x86_64.whl"
    return (
        f'name = "{name}"\nversion = "1.0"\nkind = "wheel"\n'
        f'[inputs]\npython = "python@{python}"\n'
        f'[source]\nurls = ["https://example.org/{filename}"]\nsha256 = "{SHA}"\n'
        f'[wheel]\nfilename = "{filename}"\n'
    )


def write(root: Path, name: str, version: str, text: str) -> None:
    f = root / name / f"{version}.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    root = tmp_path / "recipes"
    external = (bundled_dir() / "python" / "external.toml").read_text()
    write(root, "python", "external", external)
    write(root, "python", "3.9.2", cpython("3.9.2"))
    write(root, "python", "3.13.5", cpython("3.13.5"))
    write(root, "gcc", "external", (bundled_dir() / "gcc" / "external.toml").read_text())
    write(root, "fastlib", "1.0", multi("fastlib", [OLD, MINE, "3.13"]))
    write(root, "oldlib", "1.0", multi("oldlib", [OLD]))
    return root


def plan_of(recipes: Path, home: Path, *specs: str) -> Plan:
    with Store(home) as store:
        provider = IndexProvider(RecipeIndex([recipes]))
        return make_plan(provider, [parse_spec(s) for s in specs], store)


def node(plan: Plan, name: str):  # type: ignore[no-untyped-def]
    return next(n for n in plan.nodes if n.drv.name == name)


def test_the_machines_interpreter_is_preferred_to_a_newer_built_one(
    recipes: Path, tmp_path: Path
) -> None:
    plan = plan_of(recipes, tmp_path / "home", "fastlib")
    python = node(plan, "python")
    assert python.drv.kind == "external" and python.drv.version.startswith(MINE + ".")
    wheel = node(plan, "fastlib").drv.recipe.wheel
    assert wheel is not None and f"-cp{MINE.replace('.', '')}-" in (wheel.filename or "")
    assert plan.python is not None and plan.python["built"] is False
    assert plan.python["excluded"] == {}


def test_a_package_without_a_wheel_for_the_machine_moves_the_closure_to_a_built_python(
    recipes: Path, tmp_path: Path
) -> None:
    plan = plan_of(recipes, tmp_path / "home", "fastlib", "oldlib")
    python = node(plan, "python")
    assert python.drv.kind == "build" and python.drv.version == "3.9.2"
    for name in ("fastlib", "oldlib"):  # each package's wheel for that interpreter
        wheel = node(plan, name).drv.recipe.wheel
        assert wheel is not None and "-cp39-" in (wheel.filename or "")
        assert node(plan, name).drv.inputs["python"] == python.path
    why = plan.python
    assert why is not None and why["chosen"] == "3.9.2" and why["built"] is True
    assert "newest interpreter" in why["reason"]
    # Each interpreter tried first, with the package that excluded it.
    machine = next(k for k in why["excluded"] if "(this machine)" in k)
    only_old = ["oldlib has no wheel for it among the versions asked (oldlib)"]
    assert why["excluded"][machine] == only_old
    assert why["excluded"]["3.13.5"] == only_old


def test_asking_for_an_interpreter(recipes: Path, tmp_path: Path) -> None:
    plan = plan_of(recipes, tmp_path / "home", "python@3.13", "fastlib")
    assert node(plan, "python").drv.version == "3.13.5"
    wheel = node(plan, "fastlib").drv.recipe.wheel
    assert wheel is not None and "-cp313-" in (wheel.filename or "")
    assert plan.python is not None and plan.python["reason"] == "asked for on the command line"


def test_one_file_of_many_hashes_as_the_one_interpreter_recipe_would(
    recipes: Path, tmp_path: Path
) -> None:
    """Re-importing a release for more interpreters keeps the paths it had."""
    many = plan_of(recipes, tmp_path / "home", "fastlib")
    alone = tmp_path / "alone"
    for name in ("python", "gcc"):
        for f in (recipes / name).iterdir():
            write(alone, name, f.stem, f.read_text())
    write(alone, "fastlib", "1.0", single("fastlib", MINE))
    one = plan_of(alone, tmp_path / "home", "fastlib")
    assert node(many, "fastlib").path == node(one, "fastlib").path


def test_an_interpreter_no_recipe_offers_lists_the_ones_there_are(
    recipes: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnknownPackage) as err:
        plan_of(recipes, tmp_path / "home", "python@3.10", "fastlib")
    assert "No version of python matches @3.10" in err.value.message
    assert "3.9.2" in err.value.message and "3.13.5" in err.value.message
    assert err.value.hint is not None and "recipes/python/<version>.toml" in err.value.hint


def test_a_conflict_names_the_packages_that_exclude_each_interpreter(
    recipes: Path, tmp_path: Path
) -> None:
    with pytest.raises(ResolutionError) as err:
        plan_of(recipes, tmp_path / "home", "python@3.13", "oldlib")
    text = str(err.value.message) + " ".join(err.value.details or [])
    assert "python" in text and "oldlib" in text and f"python@{OLD}" in text


def test_a_wheel_without_a_file_for_the_chosen_interpreter_is_named(
    recipes: Path, tmp_path: Path
) -> None:
    """A recipe whose python input allows an interpreter its files do not serve."""
    write(recipes, "liar", "1.0", multi("liar", [OLD]).replace(f"python@{OLD}", "python"))
    with pytest.raises(MlpkgError) as err:
        plan_of(recipes, tmp_path / "home", "liar")
    assert "liar@1.0 has no wheel for Python" in err.value.message
    assert "it has wheels for Python 3.9" in err.value.message


def test_built_cpython_accepts_what_the_probe_says_the_same_version_accepts() -> None:
    from mlpkg.resolver.pyprobe import probe

    found = probe(sys.executable)
    info, tags = built_cpython(found.version)
    assert tags == found.tags
    assert info == found.info


def test_a_builds_tools_keep_their_own_interpreter(recipes: Path, tmp_path: Path) -> None:
    """Inputs outside a build's runtime_inputs are resolved in a scope of their own: the
    dataset made with the machine's Python keeps its path when the benchmark reading it
    needs another interpreter, and the closure holds both pythons."""
    write(recipes, "dataset", "1.0", (
        'name = "dataset"\nversion = "1.0"\nkind = "build"\n'
        '[inputs]\npython = "python"\nfastlib = "fastlib"\n'
        '[build]\nscript = "mkdir $out"\nruntime_inputs = []\n'
    ))  # fmt: skip
    write(recipes, "bench", "1.0", (
        'name = "bench"\nversion = "1.0"\nkind = "build"\n'
        '[inputs]\ndata = "dataset"\npython = "python"\noldlib = "oldlib"\n'
        '[build]\nscript = "mkdir $out"\n'
    ))  # fmt: skip
    alone = plan_of(recipes, tmp_path / "home", "dataset")
    bench = plan_of(recipes, tmp_path / "home", "bench")
    assert node(bench, "dataset").path == node(alone, "dataset").path
    pythons = {n.drv.version for n in bench.nodes if n.drv.name == "python"}
    assert "3.9.2" in pythons and any(v.startswith(MINE + ".") for v in pythons)
    assert bench.python is not None and bench.python["chosen"] == "3.9.2"
    # The dataset's tools: the machine's interpreter and fastlib's wheel for it.
    dataset = node(bench, "dataset").drv
    tools_python = next(n for n in bench.nodes if n.path == dataset.inputs["python"])
    assert tools_python.drv.kind == "external"


def test_a_lock_with_one_python_per_scope_is_up_to_date_and_updates(
    recipes: Path, tmp_path: Path
) -> None:
    from mlpkg.resolver.lockfile import parse
    from mlpkg.resolver.lockmake import lock_changes, lock_of_plan, updated_lock

    test_a_builds_tools_keep_their_own_interpreter(recipes, tmp_path)  # writes the recipes
    home = tmp_path / "home"
    with Store(home) as store:
        provider = IndexProvider(RecipeIndex([recipes]))
        plan = make_plan(provider, [parse_spec("bench")], store)
        lock = parse(lock_of_plan(store, ["bench"], plan, realised=False).dumps(), "bench.lock")
        assert lock_changes(lock, plan) == []
        again = updated_lock(store, provider, lock, ["oldlib"], "bench.lock")
        assert sorted(str(n.path) for n in again.nodes) == sorted(str(n.path) for n in lock.nodes)


def test_a_release_of_many_files_hashes_without_its_urls_even_unspecialised() -> None:
    import tomllib

    from mlpkg.recipes.model import Recipe
    from mlpkg.resolver.derivation import Derivation

    text = multi("fastlib", [OLD, MINE])
    recipe = Recipe.model_validate(tomllib.loads(text))
    mirrored = Recipe.model_validate(tomllib.loads(text.replace("example.org", "mirror.test")))
    a = Derivation(recipe, {}, "x86_64-linux").path
    assert a == Derivation(mirrored, {}, "x86_64-linux").path


def old_stack(recipes: Path, newlib: str = "newlib") -> None:
    """The shape of ``retinanet-offline --with onnxruntime=onnxruntime@1.12.1``: an app on
    ``python@3.9:`` needs ``oldlib`` (wheels for 3.9 only, as ONNX Runtime 1.12.1) and
    ``newlib`` (as LoadGen: the newest release for the machine's Python only, an older one
    for 3.9 too); ``oldlib`` needs ``helper`` (as packaging: the same)."""
    write(recipes, "newlib", "2.0", multi("newlib", [MINE], "2.0"))
    write(recipes, "newlib", "1.0", multi("newlib", [OLD, MINE]))
    write(recipes, "helper", "2.0", multi("helper", [MINE], "2.0"))
    write(recipes, "helper", "1.0", multi("helper", [OLD, MINE]))
    oldlib = multi("oldlib", [OLD]).replace("[wheel]", 'helper = "helper"\n[wheel]', 1)
    write(recipes, "oldlib", "1.0", oldlib)
    write(recipes, "app", "1.0", (
        'name = "app"\nversion = "1.0"\nkind = "build"\n'
        f'[inputs]\npython = "python@3.9:"\noldlib = "oldlib"\nnewlib = "{newlib}"\n'
        '[build]\nscript = "mkdir $out"\n'
    ))  # fmt: skip


def test_every_package_takes_a_version_with_a_wheel_for_the_interpreter_chosen(
    recipes: Path, tmp_path: Path
) -> None:
    """oldlib has wheels for 3.9 only, so the closure is on 3.9.2, and newlib and helper
    take their newest release with a wheel for it (as uv or pip would on 3.9)."""
    old_stack(recipes)
    plan = plan_of(recipes, tmp_path / "home", "app")
    assert node(plan, "python").drv.version == "3.9.2"
    for name in ("newlib", "helper", "oldlib"):
        assert node(plan, name).drv.version == "1.0"
        wheel = node(plan, name).drv.recipe.wheel
        assert wheel is not None and "-cp39-" in (wheel.filename or "")
    assert plan.python is not None and plan.python["chosen"] == "3.9.2"


def test_a_pin_with_no_wheel_for_the_interpreter_another_pin_needs_is_named(
    recipes: Path, tmp_path: Path
) -> None:
    """When the app pins newlib@2 (for the machine's Python only) and oldlib needs 3.9,
    there is no solution: the error names that conflict and the pin that forces newlib
    2.0, not helper 2.0's, which the search got past by taking helper 1.0."""
    old_stack(recipes, newlib="newlib@2")
    with pytest.raises(ResolutionError) as err:
        plan_of(recipes, tmp_path / "home", "app")
    message = err.value.message
    assert message.startswith("No version of python satisfies every requirement: ")
    assert f"oldlib@1.0 (input python) needs python@{OLD}," in message
    assert f"newlib@2.0 (input python) needs python@{MINE};" in message
    assert "helper" not in message and "app@1.0" not in message
    assert err.value.details == [
        "oldlib@1.0 is the only version of oldlib there is.",
        "newlib@2.0 is the only version of newlib that its requirements allow: "
        "app@1.0 (input newlib) needs newlib@2.",
    ]


def test_the_collections_old_stack_plans_and_its_loadgen_pin_is_named(tmp_path: Path) -> None:
    """The same on the recipe collection (``--dry-run``: no network). The RetinaNet apps
    allow mlcommons-loadgen@4.0:5.1, so ONNX Runtime 1.12.1 (3.9 only) alone plans on 3.9
    with each package's newest release for it (LoadGen 4.0, packaging 26.3, NumPy 1.x);
    pinning LoadGen 5.1 (3.11 only) fails, and the error names that pin, not packaging
    26.4 (which the search replaced by 26.3)."""
    from tests.cli_support import mlpkg_in

    home = tmp_path / "home"
    app, ort = "retinanet-offline+synthetic", ("--with", "onnxruntime=onnxruntime@1.12.1")
    r = mlpkg_in(home, "build", "--dry-run", app, *ort, "--with", "loadgen=mlcommons-loadgen@5.1")
    assert r.code != 0 and "packaging" not in r.err, r.err
    assert "mlcommons-loadgen@5.1.2 (input python) needs python@3.11" in r.err
    for loadgen in ((), ("--with", "loadgen=mlcommons-loadgen"),
                    ("--with", "loadgen=mlcommons-loadgen@4.0")):  # fmt: skip
        plan = mlpkg_in(home, "build", "--dry-run", "--json", app, *ort, *loadgen).ok().json()
        plan = plan["plan"]
        nodes = {n["path"]: n for n in plan["nodes"]}
        inputs = nodes[plan["roots"][0]]["inputs"]  # the app's: its closure's nodes
        chosen = {key: nodes[path]["version"] for key, path in inputs.items()}
        chosen["packaging"] = nodes[nodes[inputs["onnxruntime"]]["inputs"]["packaging"]]["version"]
        assert plan["python"]["chosen"].startswith("3.9.") and chosen["python"].startswith("3.9.")
        assert chosen["loadgen"] == "4.0" and chosen["packaging"] == "26.3"
        assert chosen["numpy"].startswith("1.") and chosen["onnxruntime"] == "1.12.1"
