"""The store database: schema version 1 (golden file), registration rules, versions."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from mlpkg.errors import FormatVersionError, StoreError
from mlpkg.store.db import SCHEMA_VERSION, Database, PathInfo
from mlpkg.store.path import StorePath

GOLDEN = Path(__file__).parent.parent / "golden" / "db-v1.sqlite"
A = StorePath("0" * 32, "a-1.0")
B = StorePath("1" * 32, "b-2.0")


def info(path: StorePath, refs: list[StorePath] | None = None) -> PathInfo:
    return PathInfo(
        path=path, kind="build", archive_hash="sha256:" + "ab" * 32, size=10,
        recipe_hash="sha256:" + "cd" * 32, deriver={"recipe": {"name": path.name}},
        references=refs or [], manifest=[["", "d", 0, ""]], registered=1.0e9,
    )  # fmt: skip


def write_golden(file: Path) -> None:
    db = Database(file)
    db.register(info(B))
    db.register(info(A, [B]))
    db.close()


def test_golden_v1_database_is_read(tmp_path: Path) -> None:
    copy = tmp_path / "db.sqlite"
    shutil.copy(GOLDEN, copy)
    db = Database(copy)
    a = db.info(A)
    assert a is not None
    assert a.references == [B] and a.size == 10 and a.registered == 1.0e9
    assert a.deriver == {"recipe": {"name": "a-1.0"}}
    assert db.all_paths() == [A, B]
    assert db.reference_graph() == {A: [B], B: []}


def test_schema_version_is_recorded(tmp_path: Path) -> None:
    Database(tmp_path / "db.sqlite").close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    (value,) = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(value) == SCHEMA_VERSION == 1


def test_newer_schema_is_refused_with_both_versions(tmp_path: Path) -> None:
    Database(tmp_path / "db.sqlite").close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    conn.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    conn.commit()
    with pytest.raises(FormatVersionError, match=r"schema version 7.*understands version 1"):
        Database(tmp_path / "db.sqlite")


def test_a_reference_must_be_valid(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    with pytest.raises(StoreError, match="not valid"):
        db.register(info(A, [B]))
    assert not db.is_valid(A)  # nothing half-registered


def test_a_referenced_path_cannot_be_forgotten_first(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    db.register(info(B))
    db.register(info(A, [B]))
    with pytest.raises(StoreError, match="still refer"):
        db.invalidate(B)
    db.invalidate(A)
    db.invalidate(B)
    assert db.all_paths() == []


def test_valid_among_batches(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    db.register(info(A))
    many = [StorePath(f"{i:032d}"[-32:].replace("e", "0"), f"p{i}") for i in range(1200)]
    assert db.valid_among([*many, A]) == {A}


def test_corrupt_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"not readable|Cannot open"):
        Database(tmp_path / "db.sqlite")
