"""Fuzzing the lockfile reader (issue 15): arbitrary bytes, edits of a valid lock's text,
and structural mutations of its document (a value replaced by another of any TOML type, a
key removed or added, a TOML date among them).

Property: reading (:func:`~mlpkg.resolver.lockmake.read_lock`) and the trust checks
(:func:`~mlpkg.resolver.lockfile.check_trusted`, with the unpack caps) either give a
lock or raise an :class:`~mlpkg.errors.MlpkgError` with one sentence naming the file;
never another exception. Reading touches no store. Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import strategies as st

from mlpkg.errors import LockError, MlpkgError
from mlpkg.recipes.index import RecipeIndex
from mlpkg.resolver.lockfile import check_trusted
from mlpkg.resolver.lockmake import read_lock
from tests.fuzz_support import (
    PROFILES,
    SETTINGS,
    TEXT_EDITS,
    edit_text,
    fuzz,
    fuzz_with,
    mutate,
    toml_text,
)
from tests.resolver.test_lockfile import make_lock

if TYPE_CHECKING:
    from tests.conftest import MlpkgCli

Valid = tuple[str, Path]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Valid:
    """A valid lock's text and the recipe collection it was made from."""
    root = tmp_path_factory.mktemp("lockfuzz")
    return make_lock(root).dumps(), root / "recipes"


def check_read(valid: Valid, data: bytes) -> None:
    """Read ``data`` as a lockfile and check it against its recipe collection."""
    recipes = valid[1]
    with tempfile.TemporaryDirectory(prefix="mlpkg-lockfuzz-") as tmp:
        file = Path(tmp) / "fuzz.lock"
        file.write_bytes(data)
        try:
            lock = read_lock(file)
            check_trusted(lock, RecipeIndex([recipes]))
        except MlpkgError as e:
            assert str(file) in e.message, e.message
            assert "\n" not in e.message, e.message
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["fuzz.lock"]


@st.composite
def _mutated(draw: st.DrawFn, text: str) -> bytes:
    return toml_text(mutate(draw, tomllib.loads(text)), text).encode()


@pytest.mark.parametrize("profile", PROFILES)
def test_arbitrary_bytes(valid: Valid, profile: str) -> None:
    fuzz(profile, st.binary(max_size=512), lambda b: check_read(valid, b))


@pytest.mark.parametrize("profile", PROFILES)
def test_edited_text(valid: Valid, profile: str) -> None:
    fuzz(profile, TEXT_EDITS, lambda e: check_read(valid, edit_text(valid[0], e).encode()))


@pytest.mark.parametrize("profile", PROFILES)
def test_mutated_document(valid: Valid, profile: str) -> None:
    fuzz(profile, _mutated(valid[0]), lambda b: check_read(valid, b))


def test_the_valid_lock_reads(valid: Valid, tmp_path: Path) -> None:
    """The base of the mutations is itself valid (else every example would be refused)."""
    (tmp_path / "ok.lock").write_text(valid[0])
    check_trusted(read_lock(tmp_path / "ok.lock"), RecipeIndex([valid[1]]))


# -- regressions the fuzzing found ------------------------------------------------------------


@pytest.mark.parametrize("detected", [":", "1 2", "", "a/b"])
def test_a_detected_version_unfit_for_a_path_name_names_the_lock(
    valid: Valid, tmp_path: Path, detected: str
) -> None:
    """``detected_version = ":"`` made a BadInput about a store path name that named
    neither the lock nor the field."""
    doc = tomllib.loads(valid[0])
    node = next(n for n in doc["node"] if n["name"] == "mytool")
    node["detected_version"] = detected
    file = tmp_path / "edited.lock"
    file.write_text(toml_text(doc, ""))
    with pytest.raises(LockError) as e:
        read_lock(file)
    assert str(file) in e.value.message and "mytool" in e.value.message
    assert e.value.field == ("detected_version" if detected else None)


def test_a_key_with_a_newline_is_escaped_in_the_one_sentence(valid: Valid, tmp_path: Path) -> None:
    doc = tomllib.loads(valid[0])
    doc["node"][0]["recipe"]["build"]["a\nb"] = 1
    doc["node"][0]["name"] = "app\nfake"
    file = tmp_path / "edited.lock"
    file.write_text(toml_text(doc, ""))
    with pytest.raises(MlpkgError) as e:
        read_lock(file)
    assert "\n" not in e.value.message and "\\n" in e.value.message, e.value.message


# -- through the CLI: the store is unchanged -------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_mutated_lock_through_build_dry_run(
    mlpkg_cli: MlpkgCli, tmp_path: Path, profile: str
) -> None:
    """``mlpkg build --dry-run --lock`` of a mutated lock: exit 0 or 2 with one sentence,
    never a traceback, and the store's entries and database rows are as they were."""
    text = make_lock(tmp_path).dumps()  # its recipes are the CLI's recipe directory
    file = tmp_path / "fuzz.lock"
    before = (mlpkg_cli.store_entries(), mlpkg_cli.valid_paths())

    def check(data: bytes) -> None:
        file.write_bytes(data)
        r = mlpkg_cli.run("build", "--dry-run", "--lock", str(file))
        assert r.code in (0, 2), r
        assert "Traceback" not in r.err and "internal error" not in r.err, r.err
        if r.code == 2:
            errors = [line for line in r.err.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and str(file) in errors[0], r.err
        assert (mlpkg_cli.store_entries(), mlpkg_cli.valid_paths()) == before

    settings = SETTINGS[profile]
    strategy = _mutated(text) | TEXT_EDITS.map(lambda e: edit_text(text, e).encode())
    fuzz_with(settings, 20 if profile == "fast" else 500, strategy, check)
