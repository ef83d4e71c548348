"""Plan-cache entries of the wrong structure (hand-edited, damaged, of a mlpkg that wrote
them otherwise, or 100,000 levels deep) are ignored, as a miss: a warm ``mlpkg build``
resolves again and succeeds, never an internal error or a refused build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlpkg.resolver import plancache

RECIPE = 'name = "hello"\nversion = "1.0"\nkind = "build"\n[build]\nscript = "mkdir $out"\n'
NODE = {"name": "hello", "version": "1.0", "kind": "build", "action": "valid", "inputs": {}}


def _entry_changes(good: dict[str, Any]) -> dict[str, Any]:
    """Damaged versions of the good entry ``good``, by what is wrong."""
    plan, path = good["plan"], good["plan"]["roots"][0]
    return {
        "not a table": [good],
        "files a list": {**good, "files": [1]},
        "files a number": {**good, "files": 5},
        "executables a list": {**good, "executables": ["python3"]},
        "plan a list": {**good, "plan": [plan]},
        "plan without nodes": {**good, "plan": {"roots": [path], "counts": {}}},
        "nodes a table": {**good, "plan": {**plan, "nodes": {"a": 1}}},
        "node without path": {**good, "plan": {**plan, "nodes": [NODE]}},
        "node path a number": {**good, "plan": {**plan, "nodes": [{**NODE, "path": 7}]}},
        "node path no store path": {**good, "plan": {**plan, "nodes": [{**NODE, "path": "x"}]}},
        "inputs a list": {
            **good,
            "plan": {**plan, "nodes": [{**NODE, "path": path, "inputs": []}]},
        },
        "counts a list": {**good, "plan": {**plan, "counts": [0]}},
        "roots a text": {**good, "plan": {**plan, "roots": path}},
        "root no store path": {**good, "plan": {**plan, "roots": ["x"]}},
    }


CASES = [
    "not a table", "files a list", "files a number", "executables a list",
    "plan a list", "plan without nodes", "nodes a table", "node without path",
    "node path a number", "node path no store path", "inputs a list", "counts a list",
    "roots a text", "root no store path",
]  # fmt: skip


def _cache_file(cli: Any) -> Path:
    (entry,) = (cli.home / "cache" / "plans").glob("*.json")
    return Path(entry)


@pytest.fixture
def warm(mlpkg_cli: Any) -> Any:
    mlpkg_cli.recipes.add("hello", "1.0", RECIPE)
    mlpkg_cli.run("build", "hello").ok()
    return mlpkg_cli


def _rebuilds(cli: Any, text: str) -> None:
    built = cli.run("build", "hello").ok().out.strip()
    cli.run("build", "hello").ok()
    file = _cache_file(cli)
    file.write_text(text)
    r = cli.run("build", "hello")
    assert r.code == 0 and r.out.strip() == built, r
    assert "internal error" not in r.err
    assert json.loads(file.read_text())["version"] == plancache.FORMAT_VERSION  # remade


@pytest.mark.parametrize("case", CASES)
def test_an_entry_of_the_wrong_structure_is_a_miss(warm: Any, case: str) -> None:
    good = json.loads(_cache_file(warm).read_text())
    _rebuilds(warm, json.dumps(_entry_changes(good)[case]))


@pytest.mark.parametrize("text", ["", '{"version": 1, "pla', "[" * 100_000 + "]" * 100_000,
                                  '{"version": 1, "plan": ' + "[" * 100_000 + "]" * 100_000 + "}"])  # fmt: skip
def test_an_empty_truncated_or_deep_entry_is_a_miss(warm: Any, text: str) -> None:
    _rebuilds(warm, text)


def test_a_good_entry_is_still_a_hit(warm: Any) -> None:
    file = _cache_file(warm)
    good = json.loads(file.read_text())
    assert plancache.load(warm.home, file.stem) == good["plan"]
