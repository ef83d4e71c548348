"""What a store path hash covers, one golden path per recipe kind (issue 10, item 6).

Each case is a fixed recipe, fixed inputs and a fixed platform, with the store path it must
get written out literally: a change to the hashing rules
(``mlpkg.resolver.derivation.FINGERPRINTS``) that changes any path fails here, and must be
a deliberate new fingerprint version. The second half checks what must *not* change a path:
a mirror added to a ``fetch`` or ``wheel`` source (README: "a new mirror changes
nothing"), where an app's source was found, cosmetic fields."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import FINGERPRINTS, Derivation, Detected
from mlpkg.store.path import StorePath

PLATFORM = "x86_64-linux"
SHA = "666dbfb6ec68962c033a450943ded891bed2d54e6755e35e5835d63f4f6931d5"
PYTHON = StorePath.parse("0" * 32 + "-python-3.11.4")
SRC = StorePath.parse("1" * 32 + "-src-1.0")

RECIPES: dict[str, dict[str, Any]] = {
    "fetch": {
        "name": "src",
        "version": "1.0",
        "kind": "fetch",
        "source": {
            "urls": ["https://example.org/src-1.0.tar.gz"],
            "sha256": SHA,
            "unpack": True,
            "strip_components": 1,
        },
    },
    "build": {
        "name": "hello",
        "version": "1.0",
        "kind": "build",
        "inputs": {"src": "src@1.0"},
        "build": {"script": 'mkdir -p "$out/bin"\ncp "$src/hello.sh" "$out/bin/hello"\n'},
        "env": {"PATH": {"prepend": "bin"}},
    },
    "wheel": {
        "name": "numpy",
        "version": "1.26.4",
        "kind": "wheel",
        "inputs": {"python": "python@3.11"},
        "source": {"urls": ["https://files.example.org/numpy-1.26.4.whl"], "sha256": SHA},
        "wheel": {
            "filename": "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
            "requires_python": ">=3.9",
        },
    },
    "external": {
        "name": "gcc",
        "version": "external",
        "kind": "external",
        "external": {"detect": "gcc --version", "executables": ["gcc", "g++"]},
        "env": {"PATH": {"prepend": "bin"}},
    },
    "app": {
        "name": "bench",
        "version": "0.1",
        "kind": "app",
        "inputs": {"python": "python@3.11"},
        "app": {
            "package": "mlpkg.harness",
            "module": "harness",
            "digest": "sha256:" + SHA,
            "located": "/home/someone/src/harness",
        },
        "run": {
            "command": ["python3", "-m", "harness", "--output", "${output}"],
            "description": "runs the harness",
        },
    },
}

INPUTS: dict[str, dict[str, StorePath]] = {
    "fetch": {},
    "build": {"src": SRC},
    "wheel": {"python": PYTHON},
    "external": {},
    "app": {"python": PYTHON},
}

DETECTED = Detected("12.2.0", {"gcc": "/usr/bin/gcc", "g++": "/usr/bin/g++"}, {"arch": "x86"})

# The store paths, literally. Only ``wheel`` changed in issue 10 (its URLs are no longer
# hashed: it was mi22dwddd1widm8yagi1v0rvk0zrdyih-numpy-1.26.4); the others are what they
# were before hashing moved into one function per kind.
GOLDEN = {
    "fetch": "h34h2d41wrcr85dsjhpv2d69k5878gdm-src-1.0",
    "build": "bnsiafg5jm4v51p21ji6y0yzv0vyd0mw-hello-1.0",
    "wheel": "k8w9gpr30aspjb21bzm9101xg5sg3plm-numpy-1.26.4",
    "external": "7wdcx65i2sc9lkd7yn1z7fbjc7nqjfsi-gcc-12.2.0",
    "app": "ivriqgbrxrx0b0g2h7wn6261xxmrcgxq-bench-0.1",
}


def derivation(kind: str, **changes: Any) -> Derivation:
    data = {**RECIPES[kind], **changes}
    detected = DETECTED if kind == "external" else None
    return Derivation(Recipe.model_validate(data), INPUTS[kind], PLATFORM, detected)


def test_every_kind_has_one_hashing_rule_and_a_golden_case() -> None:
    assert set(FINGERPRINTS) == set(GOLDEN) == {"fetch", "build", "wheel", "external", "app"}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_store_path_per_kind_is_golden(kind: str) -> None:
    assert str(derivation(kind).path) == GOLDEN[kind]


@pytest.mark.parametrize("kind", ["fetch", "wheel"])
def test_a_new_mirror_changes_nothing(kind: str) -> None:
    source = RECIPES[kind]["source"]
    mirrored = {**source, "urls": [*source["urls"], "https://mirror.example.net/f"]}
    moved = {**source, "urls": ["file:///srv/mirror/f"]}
    assert derivation(kind, source=mirrored).path == derivation(kind).path
    assert derivation(kind, source=moved).path == derivation(kind).path


@pytest.mark.parametrize("kind", ["fetch", "wheel"])
def test_the_declared_hash_is_hashed(kind: str) -> None:
    other = {**RECIPES[kind]["source"], "sha256": "0" * 64}
    assert derivation(kind, source=other).path != derivation(kind).path


def test_bundled_numpy_wheel_keeps_its_path_with_a_mirror() -> None:
    # A one-file (one-interpreter) recipe: 1.26.4 lists wheels for 3.9 and 3.11 since
    # issue 12, and is hashed only once specialised (tests/build/test_imported_wheel_paths).
    bundled = Path(__file__).parents[2] / "recipes" / "numpy" / "2.4.6.toml"
    data = tomllib.loads(bundled.read_text(encoding="utf-8"))
    before = Derivation(Recipe.model_validate(data), {"python": PYTHON}, PLATFORM).path
    data["source"]["urls"].append("https://mirror.example.net/numpy.whl")
    after = Derivation(Recipe.model_validate(data), {"python": PYTHON}, PLATFORM).path
    assert after == before


def test_what_does_not_change_a_path() -> None:
    app = RECIPES["app"]
    elsewhere = {**app["app"], "located": "/opt/other"}
    quiet = {**app["run"], "description": "something else"}
    assert derivation("app", app=elsewhere).path == derivation("app").path
    assert derivation("app", run=quiet).path == derivation("app").path
    for kind in GOLDEN:
        assert derivation(kind, summary="docs only").path == derivation(kind).path
    moved = Detected(
        "12.2.0", {"gcc": "/opt/gcc/bin/gcc", "g++": "/opt/gcc/bin/g++"}, {"arch": "x86"}
    )
    assert (
        Derivation(derivation("external").recipe, {}, PLATFORM, moved).path
        == derivation("external").path
    )


def test_what_changes_a_path() -> None:
    assert derivation("build", build={"script": "true"}).path != derivation("build").path
    assert (
        Derivation(derivation("build").recipe, {"src": PYTHON}, PLATFORM).path
        != derivation("build").path
    )
    assert Derivation(derivation("build").recipe, INPUTS["build"], "aarch64-linux").path != (
        derivation("build").path
    )
    newer = Detected("13.1.0", DETECTED.locations, DETECTED.info)
    assert Derivation(derivation("external").recipe, {}, PLATFORM, newer).path != (
        derivation("external").path
    )
    digest = {**RECIPES["app"]["app"], "digest": "sha256:" + "1" * 64}
    assert derivation("app", app=digest).path != derivation("app").path
