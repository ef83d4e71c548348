"""The closure diff of two locks (mlpkg.experiments.closure): version changes, rebuilt
nodes with their causes and why-depends chains, added and removed nodes, several nodes of
one name, and malformed locks (a cycle, a dangling input) that must neither raise nor hang.

The locks are small tables made here; nodes get fake 32-character hashes of their name,
version, recipe and inputs, so that, as in a real lock, a changed input changes the path
of every node above it. ``data/`` holds two real locks of the same app built with
onnxruntime 1.22.1 and 1.17.3."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mlpkg.experiments.closure import MAX_CHAINS, closure_diff, format_diff

DATA = Path(__file__).resolve().parent / "data"
EMPTY: dict[str, Any] = {"version_changed": [], "rebuilt": [], "added": [], "removed": []}


def node(
    name: str,
    version: str,
    *deps: dict[str, Any],
    recipe: str = "",
    inputs: dict[str, str] | None = None,
    salt: str = "",
) -> dict[str, Any]:
    """A lock node; each dep is an input under its name, ``inputs`` adds raw ones. The
    path hashes everything, ``salt`` included (a source that differs, say)."""
    table = {d["name"]: d["path"] for d in deps} | (inputs or {})
    digest = hashlib.sha256(json.dumps([name, version, recipe, table, salt]).encode())
    return {
        "path": f"{digest.hexdigest()[:32]}-{name}-{version}",
        "name": name,
        "version": version,
        "kind": "wheel",
        "archive_hash": "unknown",
        "inputs": table,
        "recipe": {"name": name, "version": version, "build": recipe},
    }


def lock(*nodes: dict[str, Any], platform: str = "x86_64-linux") -> dict[str, Any]:
    """A lock table whose root is the last node."""
    root = nodes[-1]
    return {
        "version": 1,
        "platform": platform,
        "specs": [root["name"]],
        "roots": [root["path"]],
        "node": sorted(nodes, key=lambda n: (n["name"], n["path"])),
    }


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries]


def rebuilt(diff: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [e for e in diff["rebuilt"] if e["name"] == name]
    assert len(found) == 1, found
    return found[0]


def test_identical_locks_give_an_empty_diff() -> None:
    c = node("c", "1.0")
    app = node("app", "1.0", node("b", "1.0", c), c)
    base = lock(c, node("b", "1.0", c), app)
    assert closure_diff(base, base) == EMPTY
    assert closure_diff(base, json.loads(json.dumps(base))) == EMPTY
    assert format_diff(closure_diff(base, base)) == ["  (same closure)"]


def test_a_version_change_names_both_paths() -> None:
    old, new = node("c", "1.0"), node("c", "2.0")
    diff = closure_diff(lock(old), lock(new))
    assert diff == EMPTY | {
        "version_changed": [
            {
                "name": "c",
                "from": "1.0",
                "to": "2.0",
                "from_path": old["path"],
                "to_path": new["path"],
            }
        ]
    }
    assert format_diff(diff) == ["  c 1.0 -> 2.0"]


def test_a_change_three_levels_down_rebuilds_each_node_above_it() -> None:
    c1, c2 = node("c", "1.0"), node("c", "2.0")
    b1, b2 = node("b", "1.0", c1), node("b", "1.0", c2)
    a1, a2 = node("a", "1.0", b1), node("a", "1.0", b2)
    diff = closure_diff(lock(c1, b1, a1), lock(c2, b2, a2))
    assert names(diff["version_changed"]) == ["c"]
    assert names(diff["rebuilt"]) == ["a", "b"]
    a, b = rebuilt(diff, "a"), rebuilt(diff, "b")
    assert a == {
        "name": "a",
        "version": "1.0",
        "from_path": a1["path"],
        "to_path": a2["path"],
        "because": ["b rebuilt"],
        "chain": [["a", "b", "c"]],
    }
    assert b["because"] == ["c 1.0 -> 2.0"] and b["chain"] == [["b", "c"]]
    assert format_diff(diff) == [
        "  c 1.0 -> 2.0",
        "  a 1.0 rebuilt: b rebuilt",
        "    via a -> b -> c",  # the recursive why; b's chain [b, c] says no more than because
        "  b 1.0 rebuilt: c 1.0 -> 2.0",
    ]


def test_a_recipe_change_is_the_root_cause_of_its_rebuild() -> None:
    c1, c2 = node("c", "1.0", recipe="make"), node("c", "1.0", recipe="make -j8")
    a1, a2 = node("a", "1.0", c1), node("a", "1.0", c2)
    diff = closure_diff(lock(c1, a1), lock(c2, a2))
    assert diff["version_changed"] == [] and names(diff["rebuilt"]) == ["a", "c"]
    assert rebuilt(diff, "c")["because"] == ["its recipe changed"]
    assert rebuilt(diff, "c")["chain"] == [["c"]]
    assert rebuilt(diff, "a")["because"] == ["c rebuilt"]
    assert rebuilt(diff, "a")["chain"] == [["a", "c"]]


def test_a_new_path_with_the_same_recipe_and_inputs_is_a_recipe_change() -> None:
    # The recipe table is the same, but its sources (or a detected tool) differ.
    c1, c2 = node("c", "1.0"), node("c", "1.0", salt="other source")
    diff = closure_diff(lock(c1), lock(c2))
    assert rebuilt(diff, "c")["because"] == ["its recipe changed"]


def test_a_node_whose_recipe_and_inputs_both_changed_says_both() -> None:
    d1, d2 = node("d", "1.0"), node("d", "2.0")
    c1, c2 = node("c", "1.0", d1, recipe="x"), node("c", "1.0", d2, recipe="y")
    diff = closure_diff(lock(d1, c1), lock(d2, c2))
    assert rebuilt(diff, "c")["because"] == ["d 1.0 -> 2.0", "its recipe changed"]
    assert rebuilt(diff, "c")["chain"] == [["c", "d"], ["c"]]


def test_another_platform_is_named_when_nothing_else_differs() -> None:
    c1, c2 = node("c", "1.0"), node("c", "1.0", salt="aarch64")
    diff = closure_diff(lock(c1), lock(c2, platform="aarch64-linux"))
    assert rebuilt(diff, "c")["because"] == ["the platform changed (x86_64-linux -> aarch64-linux)"]


def test_packages_on_one_side_only_are_added_or_removed() -> None:
    keep, gone, new = node("keep", "1.0"), node("gone", "0.1"), node("new", "3.0")
    diff = closure_diff(lock(gone, keep), lock(new, keep))
    assert diff == EMPTY | {
        "added": [{"name": "new", "version": "3.0", "path": new["path"]}],
        "removed": [{"name": "gone", "version": "0.1", "path": gone["path"]}],
    }
    assert format_diff(diff) == ["  + new 3.0", "  - gone 0.1"]


def test_an_input_key_added_or_removed_is_a_root_cause() -> None:
    d, e = node("d", "1.0"), node("e", "1.0")
    a1, a2 = node("a", "1.0", e), node("a", "1.0", d)
    diff = closure_diff(lock(e, a1), lock(d, a2))
    assert rebuilt(diff, "a")["because"] == ["input d added", "input e removed"]
    assert rebuilt(diff, "a")["chain"] == [["a", "d"], ["a", "e"]]
    assert names(diff["added"]) == ["d"] and names(diff["removed"]) == ["e"]


def test_two_nodes_of_a_name_pair_with_the_one_used_in_the_same_place() -> None:
    # The dataset's build keeps numpy 2.0; the app's runtime moves to numpy 1.0.
    n2, n1 = node("numpy", "2.0"), node("numpy", "1.0")
    data = node("dataset", "1.0", n2)
    app1, app2 = node("app", "1.0", n2, data), node("app", "1.0", n1, data)
    base, other = lock(n2, data, app1), lock(n2, n1, data, app2)
    diff = closure_diff(base, other)
    assert diff["version_changed"] == [
        {
            "name": "numpy",
            "from": "2.0",
            "to": "1.0",
            "from_path": n2["path"],
            "to_path": n1["path"],
        }
    ]
    assert diff["added"] == [] and diff["removed"] == [] and names(diff["rebuilt"]) == ["app"]
    back = closure_diff(other, base)
    assert [(e["from"], e["to"]) for e in back["version_changed"]] == [("1.0", "2.0")]
    assert back["added"] == [] and back["removed"] == []


def test_several_nodes_of_a_name_on_both_sides_pair_by_path_then_version() -> None:
    py1, py2 = node("python", "3.11"), node("python", "3.12")
    tool1, tool2 = node("tool", "1.0", py1), node("tool", "1.0", py2)
    lib_a, lib_b = node("lib", "1.0", py1), node("lib", "2.0", py2)
    base = lock(py1, py2, tool1, tool2, lib_a)
    other = lock(py1, py2, tool1, tool2, lib_b)
    diff = closure_diff(base, other)
    assert diff == EMPTY | {
        "version_changed": [
            {
                "name": "lib",
                "from": "1.0",
                "to": "2.0",
                "from_path": lib_a["path"],
                "to_path": lib_b["path"],
            }
        ]
    }
    # Same version, other path: paired with each other, not with the other version.
    x1, x2, x1b = node("x", "1.0", recipe="a"), node("x", "2.0"), node("x", "1.0", recipe="b")
    diff = closure_diff(lock(x1, x2), lock(x2, x1b))
    assert diff["version_changed"] == [] and diff["added"] == [] and diff["removed"] == []
    assert [(e["from_path"], e["to_path"]) for e in diff["rebuilt"]] == [(x1["path"], x1b["path"])]
    # A second node of a name with nothing in its place on the other side is removed.
    diff = closure_diff(lock(py1, py2), lock(py1))
    assert diff["removed"] == [{"name": "python", "version": "3.12", "path": py2["path"]}]
    assert diff["version_changed"] == [] and diff["added"] == []


def test_the_text_gives_the_chains_longer_than_because_bounded() -> None:
    chains = [["a", "b", f"x{i}"] for i in range(MAX_CHAINS + 2)] + [["a", "y"], "x", [3, 4, 5]]
    entry = {"name": "a", "version": "1.0", "because": ["b rebuilt"], "chain": chains}
    lines = format_diff({"rebuilt": [entry]})
    assert lines[0] == "  a 1.0 rebuilt: b rebuilt"
    assert lines[1:] == [f"    via a -> b -> x{i}" for i in range(MAX_CHAINS)]
    assert format_diff({"rebuilt": [entry | {"chain": None}]}) == lines[:1]


def test_a_diamond_gives_one_chain_per_cause() -> None:
    d1, d2 = node("d", "1.0"), node("d", "2.0")
    b1, b2 = node("b", "1.0", d1), node("b", "1.0", d2)
    c1, c2 = node("c", "1.0", d1), node("c", "1.0", d2)
    a1, a2 = node("a", "1.0", b1, c1), node("a", "1.0", b2, c2)
    diff = closure_diff(lock(d1, b1, c1, a1), lock(d2, b2, c2, a2))
    a = rebuilt(diff, "a")
    assert a["because"] == ["b rebuilt", "c rebuilt"]
    assert a["chain"] == [["a", "b", "d"]]


def test_each_chain_is_the_shortest_path_to_its_cause() -> None:
    d1, d2 = node("d", "1.0"), node("d", "2.0")
    b1, b2 = node("b", "1.0", d1), node("b", "1.0", d2)
    a1, a2 = node("a", "1.0", b1, d1), node("a", "1.0", b2, d2)
    a = rebuilt(closure_diff(lock(d1, b1, a1), lock(d2, b2, a2)), "a")
    assert a["because"] == ["b rebuilt", "d 1.0 -> 2.0"] and a["chain"] == [["a", "d"]]


def test_chains_are_bounded() -> None:
    olds = [node(f"x{i}", "1.0") for i in range(MAX_CHAINS + 3)]
    news = [node(f"x{i}", "2.0") for i in range(MAX_CHAINS + 3)]
    a1, a2 = node("a", "1.0", *olds), node("a", "1.0", *news)
    a = rebuilt(closure_diff(lock(*olds, a1), lock(*news, a2)), "a")
    assert len(a["because"]) == MAX_CHAINS + 3 and len(a["chain"]) == MAX_CHAINS


def _raw(path: str, name: str, inputs: dict[str, str]) -> dict[str, Any]:
    return {"path": path, "name": name, "version": "1.0", "inputs": inputs, "recipe": {}}


@pytest.mark.timeout(10)
def test_a_cycle_in_a_malformed_lock_does_not_hang() -> None:
    h = [f"{i:032d}" for i in range(4)]
    base = {
        "node": [
            _raw(f"{h[0]}-a-1.0", "a", {"b": f"{h[1]}-b-1.0"}),
            _raw(f"{h[1]}-b-1.0", "b", {"a": f"{h[0]}-a-1.0"}),
        ]
    }
    other = {
        "node": [
            _raw(f"{h[2]}-a-1.0", "a", {"b": f"{h[3]}-b-1.0"}),
            _raw(f"{h[3]}-b-1.0", "b", {"a": f"{h[2]}-a-1.0"}),
        ]
    }
    diff = closure_diff(base, other)
    assert names(diff["rebuilt"]) == ["a", "b"]
    assert rebuilt(diff, "a")["because"] == ["b rebuilt"]
    assert rebuilt(diff, "a")["chain"] == []


def test_malformed_tables_give_a_diff_not_an_error() -> None:
    h = "0" * 32
    dangling = {"node": [_raw(f"{h}-a-1.0", "a", {"lib": f"{'1' * 32}-lib-1.0"}), 7, "x"]}
    other = {"node": [_raw(f"{'2' * 32}-a-1.0", "a", {"lib": f"{'3' * 32}-lib-2.0"})]}
    a = rebuilt(closure_diff(dangling, other), "a")
    assert a["because"] == ["lib lib-1.0 -> lib-2.0"] and a["chain"] == [["a", "lib"]]
    assert closure_diff({}, {"node": "nonsense"}) == EMPTY


def test_entries_are_sorted_by_name() -> None:
    olds = [node(n, "1.0") for n in ("zeta", "alpha", "mid")]
    news = [node(n, "2.0") for n in ("mid", "zeta", "alpha")]
    base, other = lock(*olds), lock(*news)
    base["node"].reverse()
    assert names(closure_diff(base, other)["version_changed"]) == ["alpha", "mid", "zeta"]


def test_two_real_runs_of_one_app_with_two_onnxruntimes() -> None:
    # numpy 2.4.6 stays in the second lock for the dataset and model builds; the app's
    # runtime closure moves to numpy 1.26.4 with onnxruntime 1.17.3.
    base = tomllib.loads((DATA / "retinanet-ort-1.22.1.lock").read_text())
    other = tomllib.loads((DATA / "retinanet-ort-1.17.3.lock").read_text())
    diff = closure_diff(base, other)
    assert [(e["name"], e["from"], e["to"]) for e in diff["version_changed"]] == [
        ("numpy", "2.4.6", "1.26.4"),
        ("onnxruntime", "1.22.1", "1.17.3"),
    ]
    assert diff["added"] == [] and diff["removed"] == []
    app = rebuilt(diff, "retinanet-offline")
    assert app["because"] == [
        "numpy 2.4.6 -> 1.26.4",
        "onnxruntime 1.22.1 -> 1.17.3",
        "pycocotools rebuilt",
    ]
    assert app["chain"] == [["retinanet-offline", "numpy"], ["retinanet-offline", "onnxruntime"]]
    assert app["to_path"] == other["roots"][0]
    assert rebuilt(diff, "pycocotools")["chain"] == [["pycocotools", "numpy"]]
    assert format_diff(diff) == [
        "  numpy 2.4.6 -> 1.26.4",
        "  onnxruntime 1.22.1 -> 1.17.3",
        "  pycocotools 2.0.11 rebuilt: numpy 2.4.6 -> 1.26.4",
        "  retinanet-offline 1.0 rebuilt: numpy 2.4.6 -> 1.26.4, onnxruntime 1.22.1 -> 1.17.3, "
        "pycocotools rebuilt",
    ]
    assert closure_diff(other, other) == EMPTY
