"""Re-importing a recipe keeps what a maintainer wrote: below the marker byte for byte
(variants), above it everything but the generated keys, which are updated through tomlkit
(mlpkg.importer.recipe.reimport)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlpkg.errors import MlpkgError
from mlpkg.importer import Target, import_packages
from mlpkg.importer.recipe import HAND_WRITTEN, reimport, write_recipe

FRESH = """\
# Imported from a Python package index by `mlpkg import pypi`.
name = "x"
version = "1.0"
summary = "The x package"
kind = "wheel"

[inputs]
python = "python@3.11"
b_dep = "b-dep@>=1"
d_dep = "d-dep"

[source]
urls = ["https://example.org/x-1.0-py3-none-any.whl"]
sha256 = "aaaa"

[wheel]
filename = "x-1.0-py3-none-any.whl"
requires_python = ">=3.8"
"""

TAIL = HAND_WRITTEN + '[variants.fast]\nkind = "build"\n'


def test_reimport_keeps_the_hand_written_tail(tmp_path: Path) -> None:
    generated = 'name = "x"\nversion = "1.0"\n'
    path, written = write_recipe(tmp_path, "x", "1.0", generated)
    assert written and path.read_text() == generated
    tail = HAND_WRITTEN + '[variants.fast]\nkind = "build"\n'
    path.write_text(generated + "\n" + tail)
    again, written = write_recipe(tmp_path, "x", "1.0", generated)
    assert not written and again.read_text() == generated + "\n" + tail
    newer = 'name = "x"\nversion = "1.0"\nsummary = "new"\n'
    _, written = write_recipe(tmp_path, "x", "1.0", newer)
    assert written and path.read_text() == newer + "\n" + tail


def test_an_unchanged_release_leaves_the_file_alone(tmp_path: Path) -> None:
    path, _ = write_recipe(tmp_path, "x", "1.0", FRESH)
    path.write_text(FRESH + "\n" + TAIL)
    assert reimport(path.read_text(), FRESH) == FRESH + "\n" + TAIL
    assert write_recipe(tmp_path, "x", "1.0", FRESH) == (path, False)


def test_hand_edits_above_the_marker_survive_and_generated_keys_are_updated() -> None:
    edited = (
        FRESH.replace("# Imported", "# Pinned for the CI image; imported")
        .replace('summary = "The x package"', 'summary = "The x package"  # upstream wording')
        .replace('b_dep = "b-dep@>=1"', '# b-dep is vendored upstream\nb_dep = "b-dep@>=1"')
        + '\n[env]\nX_HOME = { set = "share/x" }\n'
    )
    new = FRESH.replace('"aaaa"', '"bbbb"').replace('"The x package"', '"X, renamed"')
    out = reimport(edited + "\n" + TAIL, new)
    assert out == (
        edited.replace('"aaaa"', '"bbbb"').replace('"The x package"', '"X, renamed"') + "\n" + TAIL
    )
    doc = tomllib.loads(out)
    assert doc["source"]["sha256"] == "bbbb" and doc["summary"] == "X, renamed"
    assert doc["env"] == {"X_HOME": {"set": "share/x"}}


def test_new_and_dropped_generated_keys_take_renders_places() -> None:
    old = FRESH + '\n[env]\nX = { set = "1" }\n'
    new = (
        FRESH.replace('kind = "wheel"\n', 'kind = "wheel"\naliases = ["ex"]\n')
        .replace('d_dep = "d-dep"\n', 'c_dep = "c-dep"\nd_dep = "d-dep@<3"\n')
        .replace('b_dep = "b-dep@>=1"\n', "")
        .replace('sha256 = "aaaa"', 'md5 = "cccc"')
        .replace('requires_python = ">=3.8"\n', "")
    )
    assert reimport(old, new) == new + '\n[env]\nX = { set = "1" }\n'


def test_other_keys_of_generated_tables_are_kept() -> None:
    old = FRESH.replace('sha256 = "aaaa"\n', 'sha256 = "aaaa"\nmax_unpacked_files = 10\n')
    out = reimport(old, FRESH.replace("aaaa", "bbbb"))
    assert out == old.replace("aaaa", "bbbb")


def test_a_file_without_generated_keys_gets_the_fresh_text() -> None:
    """As before tomlkit: a head that is no imported recipe is replaced."""
    assert reimport("# edited\n", FRESH) == FRESH
    assert reimport(TAIL, FRESH) == FRESH + "\n" + TAIL


def test_a_head_that_is_not_toml_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "x" / "1.0.toml"
    path.parent.mkdir()
    path.write_text("name = \n" + TAIL)
    with pytest.raises(MlpkgError, match="not valid TOML above the hand-written marker"):
        write_recipe(tmp_path, "x", "1.0", FRESH)
    assert path.read_text() == "name = \n" + TAIL


def test_reimport_from_an_index_updates_only_the_generated_keys(
    fake_index: Any, client: httpx.Client, target311: Target, tmp_path: Path
) -> None:
    """End to end: the release was re-uploaded (new file, new sha256, new summary and a new
    dependency); the maintainer's comment, ``[env]`` table and variants stay."""
    first, second = fake_index(), fake_index()
    first.publish("app", "1.0")
    second.publish("app", "1.0", summary="Renamed", requires_dist=("dep",))
    second.publish("dep", "2.0")
    import_packages(["app"], target311, index_url=first.index_url, client=client, into=tmp_path)
    path = tmp_path / "app" / "1.0.toml"
    fresh = path.read_text()
    hand = '\n[env]\nAPP_MODE = { set = "fast" }\n\n' + TAIL
    path.write_text(fresh.replace("# Imported", "# Kept: imported") + hand)
    written = import_packages(
        ["app"], target311, index_url=second.index_url, client=client, into=tmp_path
    )
    assert path in written
    text = path.read_text()
    assert text.startswith("# Kept: imported") and text.endswith(hand)
    recipe = tomllib.loads(text)
    assert recipe["summary"] == "Renamed" and recipe["inputs"]["dep"] == "dep"
    assert recipe["source"]["sha256"] != tomllib.loads(fresh)["source"]["sha256"]
    assert recipe["env"] == {"APP_MODE": {"set": "fast"}}
    assert recipe["variants"] == {"fast": {"kind": "build"}}
    again = import_packages(
        ["app"], target311, index_url=second.index_url, client=client, into=tmp_path
    )
    assert path not in again and path.read_text() == text
