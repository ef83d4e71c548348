"""The harness (mlpkg/harness) runs on every interpreter the collection offers: Python 3.9
to 3.13 (issue 12), while mlpkg itself needs 3.11.

Three guards:

* vermin, targeting 3.9, finds no syntax, standard-library module, function or keyword
  argument that needs a later Python (``zip(strict=)``, ``match``, ``tomllib``, ...);
  annotations are counted as evaluated (``--eval-annotations``), the stricter reading.
* ``X | Y`` types outside annotations (``isinstance(v, int | float)``, a module-level alias)
  fail on 3.9 at run time; vermin's own detection of them is a heuristic that also flags
  annotations, so an AST walk checks that here. Annotations may use ``X | Y`` only in a
  module with ``from __future__ import annotations`` (which keeps them unevaluated).
* Where a Python 3.9 interpreter exists, every harness module compiles with it. It is
  looked for as ``$MLPKG_TEST_PYTHON39`` (an error if that does not run Python 3.9), then
  ``python3.9`` on PATH, then pyenv's ``$PYENV_ROOT/versions/3.9*``; otherwise the test is
  skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS = REPO_ROOT / "mlpkg" / "harness"
MODULES = sorted(HARNESS.glob("*.py"))
TARGET = "3.9"
BUILTIN_TYPES = {
    "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int", "list",
    "memoryview", "object", "set", "str", "tuple", "type",
}  # fmt: skip
_CLASS_NAME = re.compile(r"^_?[A-Z][a-z0-9]")  # CapWords, not a CONSTANT like os.O_CREAT


def test_harness_has_modules() -> None:
    assert len(MODULES) > 10, f"no harness modules found under {HARNESS}"


def test_vermin_finds_nothing_newer_than_39() -> None:
    if importlib.util.find_spec("vermin") is None:
        pytest.fail("vermin is not installed: pip install -e '.[test]' (it is in the test extra)")
    run_vermin = (
        "import sys; from vermin.main import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    )
    cmd = [
        sys.executable, "-c", run_vermin, "--no-config-file", f"--target={TARGET}-",
        "--violations", "--eval-annotations", "--no-tips", "-vvv", str(HARNESS),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "not met" not in output, (
        f"the harness must run on Python {TARGET} (issue 12); vermin reports:\n{output}"
    )


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (arguments, returns, annotated names)."""
    roots: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            roots.append(node.returns)
    return {id(n) for root in roots for n in ast.walk(root)}


def _type_like(node: ast.expr) -> bool:
    """Whether ``node`` looks like a type: None, a builtin type, a CapWords class name
    (plain or dotted), a generic alias ``x[...]``, or a union of those."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in BUILTIN_TYPES or bool(_CLASS_NAME.match(node.id))
    if isinstance(node, ast.Attribute):
        return bool(_CLASS_NAME.match(node.attr))
    if isinstance(node, ast.Subscript):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _type_like(node.left) or _type_like(node.right)
    return False


def _future_annotations(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )


def union_problems(source: str, name: str) -> list[str]:
    """``X | Y`` types that Python 3.9 would evaluate, as ``name:line: text``."""
    tree = ast.parse(source, name)
    in_annotation = _annotation_nodes(tree)
    future = _future_annotations(tree)
    problems: list[str] = []
    seen: set[int] = set()  # the parts of a union already reported (a | b | c is nested)
    for node in ast.walk(tree):
        if id(node) in seen or not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
            continue
        seen.update(id(n) for n in ast.walk(node))
        text = f"{name}:{node.lineno}: {ast.unparse(node)}"
        if id(node) in in_annotation:
            if not future:
                problems.append(
                    f"{text} (an annotation without `from __future__ import annotations`)"
                )
        elif _type_like(node.left) or _type_like(node.right):
            problems.append(f"{text} (evaluated at run time: use a tuple or typing.Union)")
    return problems


def test_union_types_are_never_evaluated() -> None:
    problems = [p for path in MODULES for p in union_problems(path.read_text("utf-8"), path.name)]
    assert not problems, "X | Y types that fail on Python 3.9:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from __future__ import annotations\ndef f(x: int | None) -> str | None: ...", False),
        ("def f(x: int | None): ...", True),
        ("from __future__ import annotations\nok = isinstance(1, int | float)", True),
        ("from __future__ import annotations\nAlias = list[int] | None", True),
        ("from __future__ import annotations\nok = isinstance(1, (int, float))", False),
        ("import os\nflags = os.O_CREAT | os.O_WRONLY\nmask = 1 | 2", False),
    ],
)
def test_union_check_itself(source: str, flagged: bool) -> None:
    assert bool(union_problems(source, "example.py")) is flagged


def _runs_python39(exe: str) -> bool:
    try:
        proc = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == TARGET


def python39() -> str | None:
    """A Python 3.9 interpreter (see the module doc), or None."""
    given = os.environ.get("MLPKG_TEST_PYTHON39")
    if given:
        if not _runs_python39(given):
            pytest.fail(f"MLPKG_TEST_PYTHON39={given} does not run Python {TARGET}")
        return given
    candidates = [shutil.which("python3.9")]  # a pyenv shim may exist but not run: tried
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates += [str(p) for p in sorted(pyenv_root.glob("versions/3.9*/bin/python3.9"))]
    return next((c for c in candidates if c and _runs_python39(c)), None)


def test_every_module_compiles_with_python39(tmp_path: Path) -> None:
    exe = python39()
    if exe is None:
        pytest.skip(
            "no Python 3.9 interpreter here (none of $MLPKG_TEST_PYTHON39, a working "
            "python3.9 on PATH, pyenv's versions/3.9*): the compile check needs one"
        )
    script = (
        "import py_compile, sys\n"
        "out = sys.argv[1]\n"
        "for i, path in enumerate(sys.argv[2:]):\n"
        "    py_compile.compile(path, cfile=f'{out}/{i}.pyc', doraise=True)\n"
    )
    proc = subprocess.run(
        [exe, "-c", script, str(tmp_path), *map(str, MODULES)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"{exe} cannot compile the harness:\n{proc.stderr}"
    assert len(list(tmp_path.glob("*.pyc"))) == len(MODULES)
