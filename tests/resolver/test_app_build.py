"""Realising the new kinds of paths: an app's installed source, builds whose outputs keep
only some inputs (``runtime_inputs``), builds that import an app's Python package, network
builds (``network = true``) and their way in without a network (``add-file DIR``), and the
offline hint of a fetch that cannot reach its URL.

Through the CLI (``mlpkg_cli``, in this process; builds and apps are real subprocesses),
with recipes written per test. Nothing reaches beyond 127.0.0.1: "unreachable" URLs point
at a loopback port that nothing listens on. The ``python`` external recipe finds this
machine's interpreter through a private bin directory first on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlpkg.errors import BuildError
from tests.cli_support import python_path

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.cli_support import CliResult
    from tests.conftest import MlpkgCli

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"

APP_TOML = """
name = "toyapp"
version = "1.0"
kind = "app"
[inputs]
python = "python"
[app]
path = "src"
module = "toymod"
include = ["*.py", "*.conf", "bin/*"]
exclude = ["skip_*.py"]
[run]
command = ["python3", "-m", "toymod", "--out", "${output}"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """``env`` for the CLI: PATH starting with a bin directory whose python3 is this
    machine's real interpreter."""
    return python_path(tmp_path / "bin")


def add(cli: MlpkgCli, name: str, text: str) -> Path:
    return cli.recipes.add(name, "1.0", text)


def write_app(cli: MlpkgCli) -> Path:
    """toyapp@1.0, an app whose source (module toymod) lies in the recipe's src/."""
    file = add(cli, "toyapp", APP_TOML)
    src = file.parent / "src"
    (src / "sub").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "__init__.py").write_text("VALUE = 7\n")
    (src / "__main__.py").write_text("print('toymod main')\n")
    (src / "sub" / "__init__.py").write_text("SUB = 'sub'\n")
    (src / "defaults.conf").write_text("threads = 2\n")
    (src / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (src / "bin" / "tool").chmod(0o755)
    (src / "skip_me.py").write_text("excluded\n")
    (src / "README.txt").write_text("not included\n")
    return file


def build(cli: MlpkgCli, env: dict[str, str], spec: str) -> Path:
    return Path(cli.run("build", spec, env=env).ok().out.strip())


def closed_port() -> int:
    """A loopback port that nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def error_lines(r: CliResult) -> list[str]:
    assert "Traceback" not in r.err and "internal error" not in r.err, str(r)
    return [x for x in r.err.splitlines() if x.startswith("error: ")]


# -- an app's path ---------------------------------------------------------------------------


def test_an_app_path_holds_its_module_and_its_command(
    mlpkg_cli: MlpkgCli, env: dict[str, str]
) -> None:
    src = write_app(mlpkg_cli).parent / "src"
    out = build(mlpkg_cli, env, "toyapp")
    site = out / "lib" / PYVER / "site-packages"
    assert sorted(os.listdir(site)) == ["toymod"]
    installed = sorted(str(p.relative_to(site / "toymod")) for p in (site / "toymod").rglob("*")
                       if p.is_file())  # fmt: skip
    assert installed == ["__init__.py", "__main__.py", "bin/tool", "defaults.conf",
                         "sub/__init__.py"]  # fmt: skip
    for rel in installed:
        assert (site / "toymod" / rel).read_bytes() == (src / rel).read_bytes()
    assert os.access(site / "toymod" / "bin" / "tool", os.X_OK)
    assert not os.access(site / "toymod" / "__init__.py", os.X_OK)
    manifest = json.loads((out / "share" / "mlpkg" / "app.json").read_text())
    assert manifest == {"format": 1, "command": ["python3", "-m", "toymod", "--out", "${output}"]}
    assert sorted(os.listdir(out)) == ["lib", "share"]
    info = mlpkg_cli.run("path-info", "--json", str(out), env=env).ok().json()[0]
    assert info["kind"] == "app" and len(info["references"]) == 1  # python
    # The module imports from the path with the closure's interpreter and nothing else.
    python = Path(
        mlpkg_cli.run("show", "--json", "toyapp", env=env).ok().json()["inputs"]["python"]
    )
    r = subprocess.run([str(python / "bin" / "python3"), "-S", "-c",
                        "import toymod, toymod.sub; print(toymod.VALUE, toymod.sub.SUB)"],
                       env={"PYTHONPATH": str(site)}, capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.stdout == "7 sub\n", r.stderr


def test_a_source_edited_after_locking_is_refused(
    mlpkg_cli: MlpkgCli, make_mlpkg_cli: Any, env: dict[str, str], tmp_path: Path
) -> None:
    src = write_app(mlpkg_cli).parent / "src"
    lock = tmp_path / "toyapp.lock"
    mlpkg_cli.run("lock", "toyapp", "-o", str(lock), env=env).ok()
    locked = next(n for n in _nodes(lock) if n["name"] == "toyapp")
    pinned = locked["recipe"]["app"]["digest"]
    (src / "__init__.py").write_text("VALUE = 8\n")

    other = make_mlpkg_cli(tmp_path / "other-home")  # no recipes: the lock is enough
    r = other.run("build", "--lock", str(lock), env=env)
    assert r.code == 1, str(r)
    (sentence,) = error_lines(r)
    assert "toyapp-1.0" in sentence and pinned in sentence and str(src) in sentence, sentence
    assert not any(p.endswith("-toyapp-1.0") for p in other.valid_paths())
    assert not any(e.endswith("-toyapp-1.0") for e in other.store_entries())

    (src / "__init__.py").write_text("VALUE = 7\n")  # the files as locked: accepted
    out = Path(other.run("build", "--lock", str(lock), env=env).ok().out.strip())
    assert out.name == locked["path"]


def _nodes(lock: Path) -> list[dict[str, Any]]:
    import tomllib

    nodes: list[dict[str, Any]] = tomllib.loads(lock.read_text())["node"]
    return nodes


def test_a_source_edited_between_planning_and_building_is_refused(
    mlpkg_cli: MlpkgCli, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpkg.cli.context import App
    from mlpkg.resolver.realise import realise_plan

    src = write_app(mlpkg_cli).parent / "src"
    for k, v in {**mlpkg_cli.overrides(), **env}.items():
        monkeypatch.setenv(k, v)
    app = App(home=mlpkg_cli.home)
    try:
        plan = app.plan(["toyapp"])
        (src / "sub" / "__init__.py").write_text("SUB = 'edited'\n")
        with pytest.raises(BuildError, match="digest") as e:
            realise_plan(plan, app.store)
        assert e.value.package == "toyapp"
        assert not any(p.name.endswith("-toyapp-1.0") for p in app.store.valid_among(
            n.path for n in plan.nodes))  # fmt: skip
    finally:
        app.close()


# -- runtime_inputs and PYTHONPATH -----------------------------------------------------------


def test_runtime_inputs_choose_the_references(mlpkg_cli: MlpkgCli, env: dict[str, str]) -> None:
    add(
        mlpkg_cli,
        "tool",
        'name = "tool"\nversion = "1.0"\nkind = "build"\n[build]\n'
        "script = '''mkdir -p \"$out/bin\"; echo t > \"$out/bin/t\"'''\n",
    )
    add(
        mlpkg_cli,
        "lib",
        'name = "lib"\nversion = "1.0"\nkind = "build"\n[build]\n'
        "script = '''mkdir \"$out\"; echo l > \"$out/l\"'''\n",
    )
    body = (
        'version = "1.0"\nkind = "build"\n[inputs]\ntool = "tool"\nlib = "lib"\n[build]\n'
        "script = '''mkdir \"$out\"; cat \"$lib/l\" > \"$out/copy\"'''\n"
    )
    add(mlpkg_cli, "all", 'name = "all"\n' + body)
    add(mlpkg_cli, "none", 'name = "none"\n' + body + "runtime_inputs = []\n")
    add(mlpkg_cli, "some", 'name = "some"\n' + body + 'runtime_inputs = ["lib"]\n')
    paths = {n: build(mlpkg_cli, env, n) for n in ("tool", "lib", "all", "none", "some")}

    def refs(name: str) -> list[str]:
        doc = mlpkg_cli.run("path-info", "--json", str(paths[name]), env=env).ok().json()
        return sorted(doc[0]["references"])

    assert refs("all") == sorted([paths["lib"].name, paths["tool"].name])
    assert refs("none") == []
    assert refs("some") == [paths["lib"].name]
    closure = mlpkg_cli.run("path-info", "--json", "-r", str(paths["none"]), env=env).ok().json()
    assert [d["path"] for d in closure] == [paths["none"].name]

    def depends(a: str, b: str) -> bool:
        r = mlpkg_cli.run("why-depends", "--json", str(paths[a]), str(paths[b]), env=env).ok()
        return bool(r.json()["depends"])

    assert depends("all", "tool") and depends("all", "lib")
    assert not depends("none", "tool") and not depends("none", "lib")
    assert depends("some", "lib") and not depends("some", "tool")
    assert (paths["none"] / "copy").read_text() == "l\n"


def test_a_build_imports_the_python_package_of_an_app_input(
    mlpkg_cli: MlpkgCli, env: dict[str, str]
) -> None:
    write_app(mlpkg_cli)
    script = (
        'mkdir "$out"; python3 -S -c \'import toymod, toymod.sub; '
        'print(toymod.VALUE, toymod.sub.SUB)\' > "$out/seen"'
    )
    add(mlpkg_cli, "user", 'name = "user"\nversion = "1.0"\nkind = "build"\n[inputs]\n'
                           'python = "python"\napp = "toyapp"\n[build]\n'
                           f"script = '''{script}'''\n")  # fmt: skip
    out = build(mlpkg_cli, env, "user")
    assert (out / "seen").read_text() == "7 sub\n"
    # Without an app among the inputs there is nothing to import.
    add(mlpkg_cli, "plain", 'name = "plain"\nversion = "1.0"\nkind = "build"\n[inputs]\n'
                            'python = "python"\n[build]\n'
                            f"script = '''{script}'''\n")  # fmt: skip
    r = mlpkg_cli.run("build", "plain", env=env)
    assert r.code == 1 and "ModuleNotFoundError" in r.err, str(r)


# -- network builds and add-file DIR ---------------------------------------------------------


def network_recipes(cli: MlpkgCli, port: int) -> None:
    """ds@1.0 (network = true, fails: nothing listens on ``port``) and use@1.0, which
    reads it."""
    fetch = (
        f'python3 -S -c "import urllib.request; '
        f"urllib.request.urlopen('http://127.0.0.1:{port}/ds.tar', timeout=5)\""
    )
    add(cli, "ds", textwrap.dedent(f"""\
        name = "ds"
        version = "1.0"
        kind = "build"
        [inputs]
        python = "python"
        [build]
        script = '''
        mkdir "$out"
        {fetch}
        '''
        network = true
        expect = ["annotations/labels.json", "images"]
        runtime_inputs = []
        """))  # fmt: skip
    add(cli, "use", 'name = "use"\nversion = "1.0"\nkind = "build"\n[inputs]\nds = "ds@1.0"\n'
                    "[build]\nscript = '''mkdir \"$out\"; "
                    "cat \"$ds/annotations/labels.json\" > \"$out/labels\"; "
                    "ls \"$ds/images\" > \"$out/images\"'''\n")  # fmt: skip


def dataset_dir(root: Path, complete: bool) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "labels.json").write_text('{"labels": ["cat"]}\n')
    if complete:
        (root / "images").mkdir()
        (root / "images" / "0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_a_failing_network_build_says_how_to_add_a_local_copy(
    mlpkg_cli: MlpkgCli, env: dict[str, str]
) -> None:
    network_recipes(mlpkg_cli, closed_port())
    shown = mlpkg_cli.run("show", "--json", "ds", env=env).ok().json()
    assert "network" in shown
    r = mlpkg_cli.run("build", "ds", env=env)
    assert r.code == 1, str(r)
    (sentence,) = error_lines(r)
    assert "ds-1.0" in sentence and "network = true" in sentence, sentence
    assert "hint: " in r.err and "mlpkg add-file DIR --name ds --version 1.0" in r.err, r.err
    assert not any(p.endswith("-ds-1.0") for p in mlpkg_cli.valid_paths())
    # A dependent build fails the same way, naming the network build.
    r = mlpkg_cli.run("build", "use", env=env)
    assert r.code == 1 and "mlpkg add-file DIR --name ds --version 1.0" in r.err, str(r)


def test_a_network_build_whose_script_fails_at_once_gives_the_hint_too(
    mlpkg_cli: MlpkgCli, env: dict[str, str]
) -> None:
    mlpkg_cli.recipes.add(
        "dl",
        "2.0",
        'name = "dl"\nversion = "2.0"\nkind = "build"\n'
        '[build]\nscript = "exit 1"\nnetwork = true\n',
    )
    r = mlpkg_cli.run("build", "dl", env=env)
    assert r.code == 1, str(r)
    assert "network = true" in r.err and "mlpkg add-file DIR --name dl --version 2.0" in r.err, (
        r.err
    )


def test_add_file_of_a_directory_stands_in_for_a_network_build(
    mlpkg_cli: MlpkgCli, env: dict[str, str], tmp_path: Path
) -> None:
    network_recipes(mlpkg_cli, closed_port())
    partial = dataset_dir(tmp_path / "partial", complete=False)
    r = mlpkg_cli.run("add-file", str(partial), "--name", "ds", "--version", "1.0", env=env)
    # The directory is the user's input, refused like a file with the wrong hash: exit 2,
    # naming it and what it lacks.
    assert r.code == 2, str(r)
    (sentence,) = error_lines(r)
    assert "images" in sentence and "expect" in sentence, sentence
    assert str(partial) in sentence, sentence
    assert not any(p.endswith("-ds-1.0") for p in mlpkg_cli.valid_paths())
    assert not any(e.endswith("-ds-1.0") for e in mlpkg_cli.store_entries())

    complete = dataset_dir(tmp_path / "complete", complete=True)
    r = mlpkg_cli.run("add-file", str(complete), "--name", "ds", "--version", "1.0", env=env).ok()
    ds = Path(r.out.strip())
    assert ds.name in mlpkg_cli.valid_paths()
    assert ds == Path(mlpkg_cli.run("show", "--json", "ds", env=env).ok().json()["path"])
    assert (ds / "annotations" / "labels.json").read_text() == '{"labels": ["cat"]}\n'
    info = mlpkg_cli.run("path-info", "--json", str(ds), env=env).ok().json()[0]
    assert info["references"] == []  # runtime_inputs = []
    # The recipe's own build is not run again, and what depends on it uses the copy.
    assert build(mlpkg_cli, env, "ds") == ds
    use = build(mlpkg_cli, env, "use")
    assert (use / "labels").read_text() == '{"labels": ["cat"]}\n'
    assert (use / "images").read_text() == "0001.jpg\n"
    # Adding it again is a no-op that names the same path.
    again = mlpkg_cli.run("add-file", str(complete), "--name", "ds", "--version", "1.0", env=env)
    assert Path(again.ok().out.strip()) == ds


@pytest.mark.parametrize("bad", ["absolute link", "escaping link", "fifo"])
def test_add_file_of_a_directory_refuses_what_a_safe_unpack_refuses(
    mlpkg_cli: MlpkgCli, env: dict[str, str], tmp_path: Path, bad: str
) -> None:
    network_recipes(mlpkg_cli, closed_port())
    complete = dataset_dir(tmp_path / "complete", complete=True)
    odd = complete / "images" / "odd.jpg"
    if bad == "absolute link":
        odd.symlink_to("/etc/passwd")
    elif bad == "escaping link":
        odd.symlink_to("../../../secret")
    else:
        os.mkfifo(odd)
    r = mlpkg_cli.run("add-file", str(complete), "--name", "ds", "--version", "1.0", env=env)
    assert r.code == 2, str(r)
    (sentence,) = error_lines(r)
    assert str(odd) in sentence, sentence
    assert not any(e.endswith("-ds-1.0") for e in mlpkg_cli.store_entries())


def test_add_file_of_a_directory_for_an_ordinary_build_is_bad_input(
    mlpkg_cli: MlpkgCli, env: dict[str, str], tmp_path: Path
) -> None:
    network_recipes(mlpkg_cli, closed_port())
    complete = dataset_dir(tmp_path / "complete", complete=True)
    r = mlpkg_cli.run("add-file", str(complete), "--name", "use", "--version", "1.0", env=env)
    assert r.code == 2, str(r)
    (sentence,) = error_lines(r)
    assert "use@1.0" in sentence and "network = true" in sentence, sentence
    assert not any(p.endswith("-use-1.0") for p in mlpkg_cli.valid_paths())


# -- a fetch that cannot reach its URL ---------------------------------------------------------


def test_an_unreachable_fetch_says_how_to_add_the_file_then_uses_it(
    mlpkg_cli: MlpkgCli, env: dict[str, str], tmp_path: Path
) -> None:
    model = b"a stand-in model, not really ONNX\n"
    sha = hashlib.sha256(model).hexdigest()
    add(mlpkg_cli, "model", textwrap.dedent(f"""\
        name = "model"
        version = "1.0"
        kind = "fetch"
        [source]
        urls = ["http://127.0.0.1:{closed_port()}/model.onnx"]
        sha256 = "{sha}"
        """))  # fmt: skip
    add(
        mlpkg_cli,
        "scored",
        'name = "scored"\nversion = "1.0"\nkind = "build"\n[inputs]\n'
        'model = "model"\n[build]\n'
        "script = '''mkdir \"$out\"; sha256sum < \"$model\" > \"$out/sum\"'''\n",
    )
    r = mlpkg_cli.run("build", "scored", env=env)
    assert r.code == 1, str(r)
    hints = [x for x in r.err.splitlines() if x.startswith("hint: ")]
    assert hints and "mlpkg add-file model.onnx --name model --version 1.0" in hints[0], r.err
    assert mlpkg_cli.valid_paths() == []

    local = tmp_path / "model.onnx"
    local.write_bytes(model)
    mlpkg_cli.run("add-file", str(local), "--name", "model", "--version", "1.0", env=env).ok()
    out = build(mlpkg_cli, env, "scored")
    assert (out / "sum").read_text().split()[0] == sha


def test_mlpkg_run_names_every_missing_input_at_once(
    mlpkg_cli: MlpkgCli, env: dict[str, str]
) -> None:
    port = closed_port()
    network_recipes(mlpkg_cli, port)  # ds: a network build that reaches nothing
    add(mlpkg_cli, "model", textwrap.dedent(f"""\
        name = "model"
        version = "1.0"
        kind = "fetch"
        [source]
        urls = ["http://127.0.0.1:{port}/model.onnx"]
        sha256 = "{"0" * 64}"
        """))  # fmt: skip
    add(mlpkg_cli, "both", textwrap.dedent("""\
        name = "both"
        version = "1.0"
        kind = "app"
        [inputs]
        model = "model"
        data = "ds"
        [run]
        command = ["true", "${model}", "${data}"]
        """))  # fmt: skip
    r = mlpkg_cli.run("run", "both", env=env)
    assert r.code == 1, str(r)
    assert "2 paths could not be made" in r.err, r.err
    assert "mlpkg add-file model.onnx --name model --version 1.0" in r.err, r.err
    assert "mlpkg add-file DIR --name ds --version 1.0" in r.err, r.err
    assert not any(
        p.endswith(("-model-1.0", "-ds-1.0", "-both-1.0")) for p in mlpkg_cli.valid_paths()
    )
