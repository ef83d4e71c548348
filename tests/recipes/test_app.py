"""``app`` recipes: their validation (every error names the file and the field, exit 2), the
digest that pins an app's local source into its store path, and the plan cache's view of
that source.

Through the CLI (``mlpkg_cli``, in this process), with recipes written per test. The
``python`` external recipe finds this machine's interpreter through a private bin
directory first on PATH (a real binary, not a shim: plans that used a shim are never
cached, which would make the plan-cache tests pass vacuously).
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli_support import python_path

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.cli_support import CliResult
    from tests.conftest import MlpkgCli

APP_TOML = """
name = "toyapp"
version = "1.0"
kind = "app"
[inputs]
python = "python"
[app]
path = "src"
module = "toyapp"
include = ["*.py", "*.conf"]
exclude = ["skip_*.py"]
[run]
command = ["python3", "-m", "toyapp"]
"""


@pytest.fixture
def pybin(tmp_path: Path) -> dict[str, str]:
    """``env`` for the CLI: PATH starting with a bin directory whose python3 is this
    machine's real interpreter."""
    return python_path(tmp_path / "bin")


def write_app(root: Path, text: str = APP_TOML, name: str = "toyapp") -> Path:
    """The recipe ``name@1.0`` under ``root`` with its source in ``src/``; the recipe file."""
    src = root / name / "src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "__init__.py").write_text("VALUE = 1\n")
    (src / "__main__.py").write_text("from toyapp import VALUE\nprint(VALUE)\n")
    (src / "settings.conf").write_text("threads = 2\n")
    (src / "sub" / "__init__.py").write_text("")
    (src / "skip_tool.py").write_text("print('excluded')\n")
    (src / "notes.txt").write_text("not included\n")
    file = root / name / "1.0.toml"
    file.write_text(textwrap.dedent(text).lstrip())
    return file


def show(cli: MlpkgCli, env: dict[str, str], spec: str = "toyapp") -> dict[str, Any]:
    doc: dict[str, Any] = cli.run("show", "--json", spec, env=env).ok().json()
    return doc


def error_of(r: CliResult) -> dict[str, Any]:
    """The --json error document of a failed command (exit 2), after checking that it
    says one sentence and no traceback."""
    assert r.code == 2, str(r)
    assert "Traceback" not in r.err and "internal error" not in r.err, str(r)
    assert len([x for x in r.err.splitlines() if x.startswith("error: ")]) == 1, str(r)
    doc: dict[str, Any] = json.loads(r.out)
    return doc


# -- validation --------------------------------------------------------------------------------

HEAD = 'name = "a"\nversion = "1.0"\n'
RUN = '[run]\ncommand = ["python3", "-m", "a"]\n'
PY = '[inputs]\npython = "python"\n'

# case -> (recipe text, the fields it may be reported under, words its line must say).
# A rule over several tables is reported under the field that must change.
INVALID = {
    "no [run]": (HEAD + 'kind = "app"\n' + PY + '[app]\npath = "src"\nmodule = "a"\n',
                 {"run"}, ["app recipe needs a [run] table"]),
    "[app] without python": (HEAD + 'kind = "app"\n[app]\npath = "src"\nmodule = "a"\n' + RUN,
                             {"inputs"}, ["input named python"]),
    "package and path": (HEAD + 'kind = "app"\n' + PY
                         + '[app]\npath = "src"\npackage = "json"\nmodule = "a"\n' + RUN,
                         {"app", "app.path", "app.package"}, ["package", "path"]),
    "neither package nor path": (HEAD + 'kind = "app"\n' + PY + '[app]\nmodule = "a"\n' + RUN,
                                 {"app", "app.path", "app.package"}, ["package", "path"]),
    "absolute path": (HEAD + 'kind = "app"\n' + PY + '[app]\npath = "/tmp"\nmodule = "a"\n' + RUN,
                      {"app", "app.path"}, ["'/tmp'", "relative"]),
    "path leaving the recipe": (HEAD + 'kind = "app"\n' + PY
                                + '[app]\npath = "src/../../a"\nmodule = "a"\n' + RUN,
                                {"app", "app.path"}, ["'src/../../a'", "relative"]),
    "bad module name": (HEAD + 'kind = "app"\n' + PY + '[app]\npath = "src"\nmodule = "a-b"\n'
                        + RUN, {"app.module"}, []),
    "empty command": (HEAD + 'kind = "app"\n[run]\ncommand = []\n', {"run.command"}, []),
    "[run] in a build": (HEAD + 'kind = "build"\n[build]\nscript = "mkdir $out"\n' + RUN,
                         {"run"}, ["cannot have a [run] table"]),
    "runtime_inputs not inputs": (HEAD + 'kind = "build"\n[inputs]\nx = "b"\n[build]\n'
                                  'script = "mkdir $out"\nruntime_inputs = ["y"]\n',
                                  {"build.runtime_inputs"},
                                  ["build.runtime_inputs", "'y'", "not an input"]),
    "absolute expect": (HEAD + 'kind = "build"\n[build]\nscript = "mkdir $out"\n'
                        'expect = ["/etc/passwd"]\n', {"build.expect"}, ["'/etc/passwd'"]),
    "expect leaving $out": (HEAD + 'kind = "build"\n[build]\nscript = "mkdir $out"\n'
                            'expect = ["data/../../x"]\n', {"build.expect"}, ["'data/../../x'"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_recipe_names_its_file_and_field(
    mlpkg_cli: MlpkgCli, pybin: dict[str, str], case: str
) -> None:
    text, fields, words = INVALID[case]
    (mlpkg_cli.recipes.path / "a" / "src").mkdir(parents=True)
    (mlpkg_cli.recipes.path / "a" / "src" / "a.py").write_text("")
    file = mlpkg_cli.recipes.add("a", "1.0", text)
    r = mlpkg_cli.run("show", "--json", "a", env=pybin)
    err = error_of(r)
    assert err["file"] == str(file), err
    assert err["field"] in fields, err
    line = f"{file}: field {err['field']}: "
    (detail,) = [x.strip() for x in r.err.splitlines() if x.strip().startswith(line)]
    assert all(w in detail for w in words), (words, detail)
    assert mlpkg_cli.store_entries() == []


@pytest.mark.parametrize(
    ("change", "field"),
    [("missing", "app.path"), ("nothing included", "app.include"), ("package", "app.package")],
)
def test_a_source_that_cannot_be_found_names_the_file_and_field(
    mlpkg_cli: MlpkgCli, pybin: dict[str, str], change: str, field: str
) -> None:
    root = mlpkg_cli.recipes.path
    text = APP_TOML
    if change == "missing":
        text = text.replace('path = "src"', 'path = "no-such-dir"')
    elif change == "nothing included":
        text = text.replace('include = ["*.py", "*.conf"]', 'include = ["*.rs"]')
    else:
        text = text.replace('path = "src"', 'package = "no_such_package_here"')
    file = write_app(root, text)
    r = mlpkg_cli.run("show", "--json", "toyapp", env=pybin)
    err = error_of(r)
    assert err["field"] == field, err
    assert str(file) in r.err and err["file"] == str(file), str(r)


def test_an_app_without_a_source_needs_no_python(mlpkg_cli: MlpkgCli) -> None:
    mlpkg_cli.recipes.add("a", "1.0", HEAD + 'kind = "app"\n[run]\ncommand = ["true"]\n')
    doc = mlpkg_cli.run("show", "--json", "a").ok().json()
    assert doc["kind"] == "app" and doc["run"] == "true" and doc["closure"] == 1


# -- the digest ----------------------------------------------------------------------------


def test_the_same_files_give_the_same_path_in_another_home_and_place(
    mlpkg_cli: MlpkgCli, make_mlpkg_cli: Any, pybin: dict[str, str], tmp_path: Path
) -> None:
    write_app(mlpkg_cli.recipes.path)
    here = show(mlpkg_cli, pybin)
    elsewhere = tmp_path / "another" / "machine"
    other = make_mlpkg_cli(elsewhere / "home", elsewhere / "recipes")
    shutil.copytree(mlpkg_cli.recipes.path / "toyapp", other.recipes.path / "toyapp")
    there = show(other, pybin)
    assert Path(here["path"]).name == Path(there["path"]).name
    assert str(elsewhere) in there["source"] and str(elsewhere) not in here["source"]
    # ... and the same content, byte for byte.
    a = Path(mlpkg_cli.run("build", "toyapp", env=pybin).ok().out.strip())
    b = Path(other.run("build", "toyapp", env=pybin).ok().out.strip())
    info_a = mlpkg_cli.run("path-info", "--json", str(a), env=pybin).ok().json()[0]
    info_b = other.run("path-info", "--json", str(b), env=pybin).ok().json()[0]
    assert info_a["archive_hash"] == info_b["archive_hash"]


@pytest.mark.parametrize(
    ("edit", "changes"),
    [
        ("edit an included file", True),
        ("edit an included non-Python file", True),
        ("add an included file in a subdirectory", True),
        ("make an included file executable", True),
        ("rename an included file", True),
        ("edit an excluded file", False),
        ("edit a file include does not match", False),
        ("add a file under __pycache__", False),
        ("edit the recipe's summary", False),
    ],
)
def test_the_path_follows_the_included_files(
    mlpkg_cli: MlpkgCli, pybin: dict[str, str], edit: str, changes: bool
) -> None:
    file = write_app(mlpkg_cli.recipes.path)
    src = file.parent / "src"
    before = show(mlpkg_cli, pybin)
    if edit == "edit an included file":
        (src / "__init__.py").write_text("VALUE = 2\n")
    elif edit == "edit an included non-Python file":
        (src / "settings.conf").write_text("threads = 4\n")
    elif edit == "add an included file in a subdirectory":
        (src / "sub" / "extra.py").write_text("X = 1\n")
    elif edit == "make an included file executable":
        (src / "__main__.py").chmod(0o755)
    elif edit == "rename an included file":
        (src / "sub" / "__init__.py").rename(src / "sub" / "other.py")
    elif edit == "edit an excluded file":
        (src / "skip_tool.py").write_text("print('still excluded, but changed')\n")
    elif edit == "edit a file include does not match":
        (src / "notes.txt").write_text("other notes\n")
    elif edit == "add a file under __pycache__":
        (src / "__pycache__").mkdir()
        (src / "__pycache__" / "cached.py").write_text("X = 1\n")
    else:
        file.write_text('summary = "words only"\n' + file.read_text())
    after = show(mlpkg_cli, pybin)
    assert (after["path"] != before["path"]) is changes, (before, after)
    assert (after["source"] != before["source"]) is changes, (before, after)


def test_a_declared_digest_pins_the_source(mlpkg_cli: MlpkgCli, pybin: dict[str, str]) -> None:
    file = write_app(mlpkg_cli.recipes.path)
    undeclared = show(mlpkg_cli, pybin)
    digest = undeclared["source"].rsplit("(", 1)[1].rstrip(")")
    assert digest.startswith("sha256:") and len(digest) == 71
    text = file.read_text().replace('module = "toyapp"', f'module = "toyapp"\ndigest = "{digest}"')
    file.write_text(text)
    declared = show(mlpkg_cli, pybin)
    assert declared["path"] == undeclared["path"]
    mlpkg_cli.run("build", "toyapp", env=pybin).ok()

    (file.parent / "src" / "__init__.py").write_text("VALUE = 3\n")
    r = mlpkg_cli.run("build", "--json", "toyapp", env=pybin)
    err = error_of(r)
    assert err["field"] == "app.digest" and "app.digest" in r.err, str(r)
    assert digest in r.err and err["file"] == str(file), str(r)


# -- the plan cache ------------------------------------------------------------------------


def _warm(cli: MlpkgCli, env: dict[str, str]) -> Path:
    """Build toyapp twice; check that the second build came from the plan cache."""
    first = cli.run("build", "toyapp", env=env).ok().out.strip()
    assert list((cli.home / "cache" / "plans").glob("*.json")), "no plan was cached"
    r = cli.run("build", "-v", "toyapp", env=env).ok()
    assert r.out.strip() == first and "plan cache" in r.err, str(r)
    return Path(first)


@pytest.mark.parametrize("where", ["top", "subdirectory", "new file in a subdirectory"])
def test_a_warm_build_after_a_source_edit_builds_the_new_path(
    mlpkg_cli: MlpkgCli, pybin: dict[str, str], where: str
) -> None:
    file = write_app(mlpkg_cli.recipes.path)
    src = file.parent / "src"
    old = _warm(mlpkg_cli, pybin)
    if where == "top":
        (src / "__init__.py").write_text("VALUE = 22\n")
    elif where == "subdirectory":
        (src / "sub" / "__init__.py").write_text("SUB = 1\n")
    else:
        (src / "sub" / "extra.py").write_text("EXTRA = 1\n")
    new = Path(mlpkg_cli.run("build", "toyapp", env=pybin).ok().out.strip())
    assert new != old, f"a warm build after editing the source reused {old}"
    assert new == Path(show(mlpkg_cli, pybin)["path"])
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    installed = new / "lib" / v / "site-packages" / "toyapp"
    assert sorted(str(p.relative_to(installed)) for p in installed.rglob("*.py")) == sorted(
        str(p.relative_to(src)) for p in src.rglob("*.py") if not p.name.startswith("skip_")
    )


def test_a_package_source_is_located_without_importing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lockfile may name any dotted package: finding it must not run its parents'
    ``__init__`` (code of whatever is installed here, chosen by data)."""
    from mlpkg.recipes.appsource import locate
    from mlpkg.recipes.model import AppSource

    marker = tmp_path / "imported"
    pkg = tmp_path / "site" / "mlpkg_sidefx_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = locate(AppSource(package="mlpkg_sidefx_pkg.sub", module="m"), None, "x")
    assert found == pkg / "sub"
    assert not marker.exists() and "mlpkg_sidefx_pkg" not in sys.modules


def test_a_package_of_an_editable_install_is_located(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pip install -e .`` puts mlpkg behind a finder of ``sys.meta_path``, not on
    ``sys.path``: the harness app must still find ``mlpkg.harness`` (it did not, from any
    directory but the checkout), and still without running its ``__init__``."""
    import importlib.abc
    import importlib.machinery

    from mlpkg.recipes.appsource import locate
    from mlpkg.recipes.model import AppSource

    marker = tmp_path / "imported"
    pkg = tmp_path / "elsewhere" / "mlpkg_editable_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub" / "__init__.py").write_text("")

    class EditableFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
            if name != "mlpkg_editable_pkg":
                return None
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(pkg)]
            return spec

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, EditableFinder()])
    found = locate(AppSource(package="mlpkg_editable_pkg.sub", module="m"), None, "x")
    assert found == pkg / "sub"
    assert not marker.exists() and "mlpkg_editable_pkg" not in sys.modules
