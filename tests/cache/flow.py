"""What the push/substitute CLI tests share (tests/cache/test_push.py, test_substitute.py,
test_cache_faults.py): deterministic toy recipes, homes that run the real CLI, and a look
at a cache's files through its transport.

* :data:`RECIPES`: ``base`` (a big file, 40 small ones, an executable, an empty file and
  directory, a symlink), ``top`` (its input ``base`` is a reference; it holds base's big
  file again), ``other`` (the same big file and a new one), ``many`` (150 files of
  100 kB, one object each), ``app`` (its input ``tool``, which refers to ``toolbase``, is needed only to build it), ``withpy`` (refers to the external
  ``python``, a link to this machine's).
  Every build is deterministic (seeded ``random``), so a path
  built again has the archive hash of the one pushed.
* :class:`Team`: home A with the signing key ``team`` (``public``), and fresh homes
  (``team.home("b")``) that trust it (or ``trust=`` another key, or none).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpkg.cache.format import CACHE_INFO_KEY, Listing, PathEntry, info_key, object_key
from mlpkg.cache.restore import decode_listing
from mlpkg.cache.transport import open_transport
from mlpkg.store.path import StorePath
from tests.cli_support import CliResult

_GEN = """
import os, random, sys
out = sys.argv[1]
def put(rel, data, mode=0o644):
    p = os.path.join(out, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chmod(p, mode)
def noise(seed, n):
    return random.Random(seed).randbytes(n)
"""

_BODIES = {
    "base": """
        put("share/weights.bin", noise(1, 700_000))
        for i in range(40):
            put(f"lib/m{i:02}.py", noise(100 + i, 3000))
        put("bin/run", b"#!/bin/sh\\necho base\\n", 0o755)
        put("empty", b"")
        os.symlink("share/weights.bin", os.path.join(out, "weights"))
        os.makedirs(os.path.join(out, "var/empty"))
    """,
    "top": """
        put("shared.bin", noise(1, 700_000))
        put("name.txt", b"top\\n")
    """,
    "other": """
        put("shared.bin", noise(1, 700_000))
        put("new.bin", noise(2, 300_000))
        put("note.txt", b"other\\n")
    """,
    "toolbase": """
        put("lib.txt", b"toolbase\\n")
    """,
    "tool": """
        put("name.txt", b"tool\\n")
    """,
    "many": """
        for i in range(150):
            put(f"d/f{i:03}.bin", noise(1000 + i, 100_000))
    """,
}
_INPUTS = {"top": {"base": "base@1.0"}, "tool": {"toolbase": "toolbase@1.0"}}


def _recipe(name: str) -> str:
    inputs = "".join(f'{k} = "{v}"\n' for k, v in _INPUTS.get(name, {}).items())
    program = _GEN + textwrap.dedent(_BODIES[name])
    return (
        f'name = "{name}"\nversion = "1.0"\nkind = "build"\n'
        + (f"[inputs]\n{inputs}" if inputs else "")
        + f"[build]\nscript = '''\npython3 - \"$out\" <<'PY'\n{program}PY\n'''\n"
    )


RECIPES = {name: _recipe(name) for name in _BODIES}
RECIPES["withpy"] = (
    'name = "withpy"\nversion = "1.0"\nkind = "build"\n[inputs]\npython = "python"\n'
    """[build]\nscript = 'mkdir -p "$out"; echo py > "$out/x"'\n"""
)
RECIPES["app"] = (
    'name = "app"\nversion = "1.0"\nkind = "build"\n[inputs]\ntool = "tool@1.0"\n'
    "[build]\nruntime_inputs = []\n"
    """script = 'mkdir -p "$out"; cp "$tool/name.txt" "$out/from-tool.txt"'\n"""
)


@dataclass
class Home:
    """One MLPKG_HOME running the CLI in this process; ``env`` is added to every call."""

    cli: Any  # tests/conftest.py's MlpkgCli
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.cli.home)

    def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> CliResult:
        result: CliResult = self.cli.run(*args, env={**self.env, **(env or {})})
        return result

    def sub(self, *args: str, env: Mapping[str, str] | None = None) -> CliResult:
        result: CliResult = self.cli.sub(*args, env={**self.env, **(env or {})})
        return result

    def hashes(self, spec: str) -> dict[str, str]:
        """Archive hash of each path of ``spec``'s closure, by package name."""
        docs = self("path-info", "--closure", "--json", spec).ok().json()
        return {_name(d["path"]): d["archive_hash"] for d in docs}

    def plan(self, *args: str) -> dict[str, tuple[str, str | None]]:
        """``build --dry-run --json ARGS``: each node's action and substituter, by name."""
        doc = self("build", "--dry-run", "--json", *args).ok().json()
        return {n["name"]: (n["action"], n.get("substituter")) for n in doc["plan"]["nodes"]}

    def logs(self) -> list[str]:
        logs = self.path / "logs"
        return sorted(p.name for p in logs.iterdir()) if logs.is_dir() else []

    def built(self) -> set[str]:
        """The packages built in this home (each build leaves a log; substitution none)."""
        return {_name(log.removesuffix(".log")) for log in self.logs()}

    def store_names(self) -> list[str]:
        """Every entry of the store directory (valid paths and any debris)."""
        store = self.path / "store"
        return sorted(p.name for p in store.iterdir()) if store.is_dir() else []

    def config(self, text: str) -> None:
        (self.path).mkdir(parents=True, exist_ok=True)
        (self.path / "config.toml").write_text(textwrap.dedent(text).lstrip())


def _name(path: str) -> str:
    return StorePath.parse(Path(path).name).name.rsplit("-", 1)[0]


def made(result: CliResult) -> dict[str, str]:
    """What a realising command did to each path (``[i/n] ACTION PATH`` lines), by name."""
    found = re.findall(r"^\[\d+/\d+\] (\w+) (\S+)$", result.err, re.MULTILINE)
    return {_name(path): action for action, path in found}


def warnings(result: CliResult) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("warning:")]


class Team:
    """Home A (recipes :data:`RECIPES`, key ``team``) and fresh homes beside it."""

    def __init__(self, root: Path, make_cli: Callable[..., Any]) -> None:
        self.root = root
        self.recipes = root / "recipes"
        for name, text in RECIPES.items():
            (self.recipes / name).mkdir(parents=True, exist_ok=True)
            (self.recipes / name / "1.0.toml").write_text(text)
        self._make_cli = make_cli
        self.a = Home(make_cli(root / "a", self.recipes))
        self.public = self.a("key", "generate", "team").ok().out.strip()

    def home(self, name: str, trust: str | None = "team") -> Home:
        """A fresh home trusting ``trust`` (``"team"``: A's key; None: no key)."""
        env = {}
        if trust is not None:
            env["MLPKG_TRUSTED_KEYS"] = self.public if trust == "team" else trust
        return Home(self._make_cli(self.root / name, self.recipes), env)

    def push(self, url: str, *what: str, key: str | None = "team") -> dict[str, Any]:
        """A builds and pushes ``what``; the push report."""
        args = ["push", "--json", "--to", url, *what]
        result = self.a(*args, *(["--key", key] if key else []))
        report: dict[str, Any] = result.ok().json()
        return report


# -- looking at a cache ---------------------------------------------------------------------


def cache_keys(url: str) -> dict[str, int]:
    """Every file of the cache and its size."""
    with open_transport(url) as t:
        return dict(t.list(""))


def entries(url: str) -> dict[str, PathEntry]:
    """Every info file of the cache, parsed, by package name."""
    out = {}
    with open_transport(url) as t:
        for key, _ in t.list("info"):
            raw = t.get(key)
            assert raw is not None, key
            entry = PathEntry.from_bytes(raw, url)
            out[entry.path.name.rsplit("-", 1)[0]] = entry
    return out


def listing_of(url: str, entry: PathEntry) -> Listing:
    with open_transport(url) as t:
        raw = t.get(object_key(entry.listing))
    assert raw is not None
    return Listing.from_bytes(decode_listing(raw, entry.listing, url), url, entry.path)


def check_consistent(url: str) -> int:
    """Assert that every info file names only objects and references' info files the
    cache has (what a reader may rely on whenever a push stops); the number of info
    files."""
    keys = cache_keys(url)
    assert CACHE_INFO_KEY in keys
    found = entries(url)
    for entry in found.values():
        assert object_key(entry.listing) in keys, f"{entry.path}: its listing is missing"
        for digest, _ in listing_of(url, entry).objects():
            assert object_key(digest) in keys, f"{entry.path}: object {digest} is missing"
        for ref in entry.references:
            assert info_key(ref) in keys, f"{entry.path}: reference {ref} has no info file"
    return len(found)


def edit_info(root: Path, entry: PathEntry, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a file cache's info file of ``entry`` after ``change`` edits its JSON."""
    file = root / info_key(entry.path)
    doc = json.loads(file.read_text())
    change(doc)
    file.write_text(json.dumps(doc))
