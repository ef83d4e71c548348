"""CPython built from source as a store package (issue 12): recipes/python/<version>.toml,
with zlib, bzip2, liblzma (xz), libffi, SQLite, OpenSSL (and, for 3.13, libmpdec) built from source
by recipes of their own, so that the interpreter's store path hash covers what it links.

The fast tests plan the recipes offline (nothing is fetched or built). The slow ones build
python@3.9.2 in a fresh MLPKG_HOME through the CLI (or in MLPKG_TEST_INTERPRETER_HOME,
which CI shares with tests/cli/test_old_stack.py so that CPython is built once): their
sources come from Debian's
archive (python.org is listed first and is unreachable here), so they are marked ``pypi``
("needs the network"), which the default suite deselects. docs/interpreters.md describes
how the interpreter and its libraries are built and linked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_support import CliResult, mlpkg_in

REPO = Path(__file__).resolve().parents[2]
SPEC = "python@3.9.2"
LIBS = ("zlib", "bzip2", "xz", "libffi", "sqlite", "openssl")
# What lib-dynload's extensions may take from the host: glibc's libraries only.
HOST_OK = ("linux-vdso", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so",
           "libutil.so", "libcrypt.so", "libnsl.so", "librt.so")  # fmt: skip
# The extensions that link a store library, and that library's package.
LINKED = {
    "zlib": "zlib",
    "binascii": "zlib",
    "_bz2": "bzip2",
    "_lzma": "xz",
    "_ctypes": "libffi",
    "_sqlite3": "sqlite",
    "_ssl": "openssl",
    "_hashlib": "openssl",
}
IMPORTS = (
    "import ctypes, zlib, bz2, lzma, sqlite3, decimal, json, ssl, hashlib; "
    "assert ssl.OPENSSL_VERSION.startswith('OpenSSL 3.0.20'), ssl.OPENSSL_VERSION; "
    "assert hashlib.new('sha3_256', b'').hexdigest().startswith('a7ffc6'); "
    "sqlite3.connect(':memory:').execute('select 1'); ctypes.CDLL(None); "
    "assert zlib.decompress(zlib.compress(b'x' * 100)) == b'x' * 100; "
    "assert lzma.decompress(lzma.compress(b'y')) == b'y'; "
    "assert bz2.decompress(bz2.compress(b'z')) == b'z'; "
    "print('ok')"
)


def mlpkg(home: Path, *args: str, timeout: float = 120) -> CliResult:
    return mlpkg_in(home, *args, timeout=timeout)


# --- offline: the recipes parse, hash and plan ---------------------------------------------


@pytest.mark.parametrize("version", ["3.9.2", "3.11.2", "3.13.5"])
def test_the_interpreter_plans_offline_with_its_libraries(tmp_path: Path, version: str) -> None:
    home = tmp_path / "home"
    shown = mlpkg(home, "show", "--json", f"python@{version}").ok().json()
    assert shown["valid"] is False
    assert Path(shown["path"]).name.endswith(f"-python-{version}")
    libs = LIBS + (("mpdecimal",) if version.startswith("3.13") else ())
    assert set(shown["inputs"]) == {"src", "cc", *libs}
    plan = mlpkg(home, "build", "--dry-run", "--json", f"python@{version}").ok().json()["plan"]
    names = {n["name"]: n["action"] for n in plan["nodes"]}
    assert names["cpython-src"] == "fetch" and names["python"] == "build"
    for lib in libs:
        assert names[lib] == "build" and names[f"{lib}-src"] == "fetch", names
    assert not any((home / "store").iterdir())  # planning made nothing


def test_the_store_path_does_not_depend_on_the_home(tmp_path: Path) -> None:
    a = mlpkg(tmp_path / "a", "show", "--json", SPEC).ok().json()["path"]
    b = mlpkg(tmp_path / "b", "show", "--json", SPEC).ok().json()["path"]
    assert Path(a).name == Path(b).name


# --- with the network: build it, then use it ------------------------------------------------


@dataclass
class Built:
    home: Path
    path: Path
    deps: dict[str, Path]  # library name -> its store path, as the plan says
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python3"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    shared = os.environ.get("MLPKG_TEST_INTERPRETER_HOME")
    home = Path(shared) if shared else tmp_path_factory.mktemp("cpython") / "home"
    start = time.monotonic()
    r = mlpkg(home, "build", SPEC, timeout=3 * 3600).ok()
    took = time.monotonic() - start
    inputs = mlpkg(home, "show", "--json", SPEC).ok().json()["inputs"]
    deps = {lib: Path(inputs[lib]) for lib in LIBS}
    return Built(home, Path(r.out.strip().splitlines()[-1]), deps, took)


def run(argv: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True,
                          timeout=600, **kw)  # type: ignore[call-overload]  # fmt: skip


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_the_built_interpreter_imports_its_c_modules(built: Built) -> None:
    r = run([built.python, "-c", IMPORTS])
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    r = run([built.python, "-c", "import sys; print(sys.version.split()[0], sys.prefix)"])
    assert r.stdout.split() == ["3.9.2", str(built.path)]


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_extensions_link_the_store_libraries_by_relative_run_paths(built: Built) -> None:
    store = built.path.parent
    dynload = built.path / "lib" / "python3.9" / "lib-dynload"
    deps = built.deps
    for module, lib in LINKED.items():
        so = next(dynload.glob(f"{module}.cpython-39-*.so"))
        dyn = run(["readelf", "-d", so]).stdout
        assert f"$ORIGIN/../../../../{deps[lib].name}/lib" in dyn, dyn
        assert str(store) not in dyn
        ldd = run(["ldd", so]).stdout
        resolved = {}
        for line in ldd.splitlines():
            name, _, rest = line.strip().partition(" => ")
            soname = os.path.basename(name.split(" (")[0])  # "/lib64/ld-linux-x86-64.so.2 (0x...)"
            target = rest.split(" (")[0] if rest else ""
            resolved[soname] = os.path.realpath(target) if target.startswith("/") else ""
            if not resolved[soname].startswith(str(store)):
                assert soname.startswith(HOST_OK), f"{so.name} takes {soname} from the host"
        assert any(t.startswith(f"{deps[lib]}/lib/") for t in resolved.values()), ldd
    # The interpreter itself links nothing of the store, and has no run path at all.
    assert "RUNPATH" not in run(["readelf", "-d", built.path / "bin" / "python3.9"]).stdout


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_nothing_names_the_store_and_a_copy_runs_elsewhere(built: Built, tmp_path: Path) -> None:
    root = os.fsencode(built.home)
    for f in built.path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert root not in f.read_bytes(), f
    # The interpreter with its libraries, copied side by side somewhere else, still runs and
    # finds its standard library from its own location.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in [built.path, *built.deps.values()]:
        shutil.copytree(p, elsewhere / p.name, symlinks=True)
    copy = elsewhere / built.path.name
    r = run([copy / "bin" / "python3", "-c", "import sys, sqlite3, os; " + IMPORTS
             + "; print(sys.prefix); print(os.__file__); print(sqlite3.__file__)"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == [
        str(copy),
        str(copy / "lib" / "python3.9" / "os.py"),
        str(copy / "lib" / "python3.9" / "sqlite3" / "__init__.py"),
    ]


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_venv_and_ensurepip_work(built: Built, tmp_path: Path) -> None:
    assert run([built.python, "-m", "ensurepip", "--help"]).returncode == 0
    venv = tmp_path / "v"
    r = run([built.python, "-m", "venv", venv])
    assert r.returncode == 0, r.stderr
    r = run([venv / "bin" / "python", "-m", "pip", "--version"])
    assert r.returncode == 0 and r.stdout.startswith("pip "), r.stderr
    assert str(venv) in r.stdout
    # The store's own scripts start the interpreter beside them.
    r = run([built.path / "bin" / "pip3", "--version"])
    assert r.returncode == 0 and str(built.path) in r.stdout, r.stderr


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_a_second_build_is_a_no_op(built: Built) -> None:
    logs = sorted(os.listdir(built.home / "logs"))
    store = sorted(os.listdir(built.home / "store"))
    start = time.monotonic()
    r = mlpkg(built.home, "build", SPEC).ok()
    assert Path(r.out.strip().splitlines()[-1]) == built.path
    assert "build " not in r.err and "fetch " not in r.err, r.err
    assert sorted(os.listdir(built.home / "logs")) == logs
    assert sorted(os.listdir(built.home / "store")) == store
    assert time.monotonic() - start < 60


@pytest.mark.pypi
@pytest.mark.timeout(3 * 3600)
def test_every_harness_module_compiles_with_the_built_interpreter(
    built: Built, tmp_path: Path
) -> None:
    """The harness runs on every interpreter the collection offers (issue 12): each of its
    modules compiles under the store's 3.9 (its floor); the end-to-end run on 3.9 is in
    tests/cli/test_old_stack.py."""
    modules = sorted((REPO / "mlpkg" / "harness").glob("*.py"))
    assert modules
    code = (
        "import py_compile, sys\n"
        "for i, f in enumerate(sys.argv[1:]):\n"
        "    py_compile.compile(f, cfile=f'{sys.argv[0]}.{i}.pyc', doraise=True)\n"
    )
    script = tmp_path / "compile.py"
    script.write_text(code)
    r = run([built.python, "-W", "error", script, *modules], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
