"""The file formats other programs read, against golden files in tests/harness/golden/:
``harness.json`` (keys and value types; its values vary from run to run) and the
preprocessed dataset's ``manifest.json`` (exactly: preprocessing is deterministic).

When one of these tests fails because the format was changed on purpose, bump the file's
``format`` (and the readers), and add a golden file for the new version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlpkg.harness import preprocess, synth_dataset

GOLDEN = Path(__file__).resolve().parent / "golden"
# objects whose keys come from LoadGen or from the options given, not from the format
OPEN_OBJECTS = {
    "harness.json.settings.overrides",
    "harness.json.loadgen.latency_ns",
    "harness.json.loadgen.parameters",
    "harness.json.loadgen.fields",
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def differences(golden: Any, fresh: Any, path: str = "harness.json") -> list[str]:
    """Where ``fresh`` differs from ``golden`` in keys or value types (array elements are
    compared with the golden array's first element; an empty array matches any)."""
    if _kind(golden) != _kind(fresh):
        return [f"{path}: {_kind(golden)} in the golden file, {_kind(fresh)} now"]
    if isinstance(golden, dict) and path not in OPEN_OBJECTS:
        found = [f"{path}.{k}: missing" for k in golden.keys() - fresh.keys()]
        found += [f"{path}.{k}: new" for k in fresh.keys() - golden.keys()]
        for k in golden.keys() & fresh.keys():
            found += differences(golden[k], fresh[k], f"{path}.{k}")
        return sorted(found)
    if isinstance(golden, list) and golden:
        return [d for item in fresh for d in differences(golden[0], item, f"{path}[]")]
    return []


def test_differences_sees_keys_and_types() -> None:
    golden = {"a": 1, "b": {"c": "x"}, "d": [{"e": None}], "f": 1.5}
    assert differences(golden, {"a": 2, "b": {"c": "y"}, "d": [], "f": 2}) == []
    assert differences(golden, {"a": "1", "b": {"c": "x", "g": 1}, "d": [{"e": 1}]}) == [
        "harness.json.a: number in the golden file, string now",
        "harness.json.b.g: new",
        "harness.json.d[].e: null in the golden file, number now",
        "harness.json.f: missing",
    ]


def test_harness_json_matches_the_golden_file(harness: Any) -> None:
    """A performance run like the golden one's (Offline, --time, calibrated, no failure)."""
    golden = json.loads((GOLDEN / "harness-v1.json").read_text())
    r = harness.run("--scenario", "Offline", "--time", "0.3", "--quiet")
    assert r.code == 0, str(r)
    fresh = r.json()
    assert fresh["format"] == golden["format"] == 1
    assert differences(golden, fresh) == [], (
        "harness.json changed: bump its format and add a golden file for the new version"
    )


def test_manifest_matches_the_golden_file(tmp_path: Path) -> None:
    synth_dataset.write_dataset(tmp_path / "raw", 2)
    out = tmp_path / "prep"
    assert preprocess.main([str(tmp_path / "raw"), str(out), "--quiet"]) == 0
    text = (out / "manifest.json").read_text(encoding="utf-8")
    assert json.loads(text)["format"] == 1
    assert text == (GOLDEN / "manifest-v1.json").read_text(encoding="utf-8"), (
        "manifest.json changed: bump its format (and the harness's dataset reader) and add "
        "a golden file for the new version"
    )
