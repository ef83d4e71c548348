"""Activating a closure: the environment a command runs in.

:func:`activation` computes, from the store alone (each path's recorded recipe), the
variables that make exactly a closure usable:

- ``PATH``: a Python view's ``bin`` (see below), then every closure path's ``bin/``, the
  requested paths first; then the caller's ``PATH`` without an active virtual
  environment's ``bin`` (``pure`` drops the caller's entirely, keeping the system's).
- A **Python view** when the closure holds a probed interpreter: a directory
  ``$MLPKG_HOME/envs/<hash>/`` made like a virtual environment (``pyvenv.cfg`` naming the
  base interpreter, ``bin/python3`` linking it), whose only site-packages entry is a
  ``.pth`` file adding the ``lib/python*/site-packages`` of every closure path (wheels,
  and packages built from source) with ``site.addsitedir`` (so their own ``.pth`` files
  work). Its ``python3`` sees the standard library and the closure's
  wheels, nothing of the user's site-packages or of the interpreter's own.
- Each recipe's ``[env]`` (``set``, or ``prepend``/``append`` of a path relative to its
  store path), inputs before the paths that use them, so dependants win.
- ``VIRTUAL_ENV``, ``PYTHONHOME`` and ``PYTHONPATH`` are removed (unless a recipe sets
  them) and ``PYTHONNOUSERSITE=1`` is set.

Views are not store paths: they name the store root (absolute paths in ``.pth``), which
store content may not. They are cheap to make again and are written atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpkg.errors import StoreError
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.interpreters import Interpreter, interpreter_of
from mlpkg.store.fs import fsync_dir, remove_tree, sync_tree
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
VIEW_FORMAT = 1


@dataclass
class Activation:
    env: dict[str, str]  # the variables to set
    unset: list[str] = field(default_factory=list)  # the variables to remove
    view: Path | None = None  # the Python view, when there is one

    def apply(self, base: Mapping[str, str]) -> dict[str, str]:
        result = {k: v for k, v in base.items() if k not in self.unset}
        result.update(self.env)
        return result


def _derivation(store: Store, path: StorePath) -> Derivation:
    info = store.info(path)
    assert info is not None
    return Derivation.from_json(info.deriver)


def python_view(
    store: Store, python: StorePath, interp: Interpreter, wheels: Sequence[StorePath]
) -> Path:
    """The Python view of the interpreter ``python`` (``interp`` says what it is) and
    wheels (made once, atomically)."""
    if not interp.executable:
        raise StoreError(f"{python} is not a Python interpreter.")
    version, major_minor = interp.version, interp.major_minor
    base = str(store.real_path(python) / interp.executable) if interp.built else interp.executable
    key = "\n".join([str(VIEW_FORMAT), str(python), *sorted(map(str, wheels))])
    view = store.home / "envs" / hashlib.sha256(key.encode()).hexdigest()[:32]
    if view.is_dir():
        return view
    tmp = view.with_name(f".{view.name}.{secrets.token_hex(4)}")
    site = tmp / "lib" / f"python{major_minor}" / "site-packages"
    site.mkdir(parents=True)
    (tmp / "bin").mkdir()
    for name in ("python3", "python", f"python{major_minor}"):
        os.symlink(base, tmp / "bin" / name)
    (tmp / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\n"
        f"version = {version}\nmlpkg-interpreter = {python}\n"
    )
    lines = [
        f"import site; site.addsitedir({str(d)!r})"
        for w in wheels
        for d in sorted((store.real_path(w) / "lib").glob("python*/site-packages"))
    ]
    (site / "_mlpkg_closure.pth").write_text("".join(f"{line}\n" for line in lines))
    sync_tree(tmp)  # complete on disk before its name says it is (a power loss)
    try:
        os.rename(tmp, view)
    except OSError:  # another process made it first
        remove_tree(tmp)
    fsync_dir(view.parent)
    return view


def activation(
    store: Store, roots: Sequence[StorePath], base: Mapping[str, str], *, pure: bool = False
) -> Activation:
    """The environment that activates the closure of ``roots`` (see the module docstring)."""
    order = store.closure_order(roots)
    drvs = {p: _derivation(store, p) for p in order}
    interps = {p: i for p in order if (i := interpreter_of(drvs[p])) is not None}
    # Python packages: wheels, and anything built into the same prefix layout.
    wheels = [
        p
        for p in order
        if p not in interps and any((store.real_path(p) / "lib").glob("python*/site-packages"))
    ]
    env: dict[str, str] = {"PYTHONNOUSERSITE": "1"}
    bins = [str(store.real_path(p) / "bin") for p in reversed(order)]
    bins = [b for b in bins if os.path.isdir(b)]
    python = next(reversed(interps), None)  # the last in closure order
    view = python_view(store, python, interps[python], wheels) if python else None
    if view is not None:
        bins.insert(0, str(view / "bin"))
        env["MLPKG_PYTHON_VIEW"] = str(view)
    outer = [] if pure else _outer_path(base)
    env["PATH"] = ":".join(_dedupe([*bins, *(outer or SYSTEM_PATH.split(":"))]))
    # The caller's values of these never reach the closure: a recipe that prepends to
    # PYTHONPATH starts from nothing.
    cleared = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "CONDA_PREFIX")
    inherited = {k: v for k, v in base.items() if k not in cleared}
    for path in order:
        recipe_env = {k: a.model_dump() for k, a in drvs[path].recipe.env.items()}
        _apply_recipe_env(env, store.real_path(path), recipe_env, inherited)
    unset = [k for k in cleared if k not in env]
    return Activation(env, unset, view)


def _outer_path(base: Mapping[str, str]) -> list[str]:
    venv = base.get("VIRTUAL_ENV")
    entries = [e for e in base.get("PATH", "").split(":") if e]
    if venv:
        entries = [e for e in entries if os.path.normpath(e) != os.path.join(venv, "bin")]
    return entries


def _dedupe(entries: list[str]) -> list[str]:
    seen: set[str] = set()
    return [e for e in entries if not (e in seen or seen.add(e))]  # type: ignore[func-returns-value]


def _apply_recipe_env(
    env: dict[str, str], root: Path, actions: Mapping[str, Any], base: Mapping[str, str]
) -> None:
    for name, action in sorted(actions.items()):
        if not isinstance(action, Mapping):
            continue
        sep = str(action.get("separator", ":"))
        if action.get("set") is not None:
            env[name] = str(action["set"])
            continue
        rel = action.get("prepend") if action.get("prepend") is not None else action.get("append")
        value = str(root / str(rel)) if rel not in ("", ".") else str(root)
        current = env.get(name, base.get(name, "") if name != "PATH" else "")
        parts = [p for p in current.split(sep) if p]
        if value in parts:
            continue
        parts = [value, *parts] if action.get("prepend") is not None else [*parts, value]
        env[name] = sep.join(parts)
