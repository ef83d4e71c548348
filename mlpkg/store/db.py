"""The store database: which store paths are valid, with their hashes and references.

SQLite, versioned schema (``meta.schema_version``). A path is valid iff it has a row in
``paths``; a row is written only after the path is complete on disk (invariant 2), and a
reference may only point at a valid path. The database is opened in WAL mode with a busy
timeout so several mlpkg processes can use it at once.

Schema version 1::

    meta(key TEXT PRIMARY KEY, value TEXT)
    paths(id, path UNIQUE, kind, archive_hash, size, recipe_hash, deriver, manifest,
          registered)
    refs(referrer -> paths.id ON DELETE CASCADE, reference -> paths.id ON DELETE RESTRICT)
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlpkg.errors import FormatVersionError, StoreError
from mlpkg.store.path import StorePath
from mlpkg.store.space import disk_full, is_full

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paths (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    archive_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    recipe_hash TEXT NOT NULL,
    deriver TEXT NOT NULL,
    manifest TEXT NOT NULL,
    registered REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    referrer INTEGER NOT NULL REFERENCES paths(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES paths(id) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
);
CREATE INDEX IF NOT EXISTS refs_reference ON refs(reference);
"""


@dataclass
class PathInfo:
    """What the database knows of one valid path."""

    path: StorePath
    kind: str  # the caller's name for how it was made (fetch, build, ...); never read here
    archive_hash: str  # "sha256:<hex>"
    size: int  # archive size in bytes
    recipe_hash: str  # "sha256:<hex>" of the derivation
    deriver: dict[str, object]  # the derivation, enough to make the path again
    references: list[StorePath] = field(default_factory=list)
    manifest: list[list[object]] = field(default_factory=list)
    registered: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "archive_hash": self.archive_hash,
            "size": self.size,
            "recipe_hash": self.recipe_hash,
            "references": [str(r) for r in self.references],
            "registered": self.registered,
        }


def _no_space(file: Path) -> bool:
    """True when the file system holding ``file`` has (almost) no block left; SQLite often
    says "unable to open" or "disk I/O error" when it cannot grow its WAL index."""
    try:
        st = os.statvfs(file.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


class Database:
    """A connection to ``<home>/db.sqlite``; one per Store, not shared between threads."""

    def __init__(self, file: Path) -> None:
        self.file = file
        try:
            self.conn = sqlite3.connect(file, timeout=60.0, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"Cannot open the store database '{file}': {e}.") from e
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA busy_timeout = 60000")
            self._init_schema()
            self.conn.execute("SELECT 1 FROM paths LIMIT 1").fetchone()  # reads the WAL index
        except sqlite3.Error as e:
            self.conn.close()
            if is_full(e) or _no_space(file):
                raise disk_full(file.parent, "opening the store database") from None
            raise StoreError(f"Cannot open the store database '{file}': {e}.") from e
        except BaseException:
            self.conn.close()
            raise

    def _init_schema(self) -> None:
        c = self.conn
        row = None
        try:
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError:
            pass  # a new database: no meta table yet
        except sqlite3.DatabaseError as e:
            raise StoreError(f"The store database '{self.file}' is not readable: {e}.") from e
        if row is not None:
            version = int(row[0])
            if version != SCHEMA_VERSION:
                raise FormatVersionError(
                    f"The store database '{self.file}' has schema version {version}; "
                    f"this mlpkg understands version {SCHEMA_VERSION}.",
                    file=str(self.file),
                )
            return
        c.execute("PRAGMA journal_mode = WAL")
        c.executescript(_SCHEMA)  # idempotent: every statement is IF NOT EXISTS
        c.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def close(self) -> None:
        self.conn.close()

    def is_valid(self, path: StorePath) -> bool:
        q = "SELECT 1 FROM paths WHERE path = ?"
        return self.conn.execute(q, (str(path),)).fetchone() is not None

    def valid_among(self, paths: Iterable[StorePath]) -> set[StorePath]:
        """The subset of ``paths`` that is valid, in one query per 500 paths."""
        wanted = {str(p): p for p in paths}
        names = list(wanted)
        found: set[StorePath] = set()
        for i in range(0, len(names), 500):
            batch = names[i : i + 500]
            marks = ",".join("?" * len(batch))
            q = f"SELECT path FROM paths WHERE path IN ({marks})"
            found.update(wanted[r[0]] for r in self.conn.execute(q, batch))
        return found

    def register(self, info: PathInfo) -> None:
        """Record a complete path. Its references must already be valid."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            cur = c.execute(
                "INSERT INTO paths(path, kind, archive_hash, size, recipe_hash, deriver,"
                " manifest, registered) VALUES (?,?,?,?,?,?,?,?)",
                (
                    str(info.path),
                    info.kind,
                    info.archive_hash,
                    info.size,
                    info.recipe_hash,
                    json.dumps(info.deriver, sort_keys=True),
                    json.dumps(info.manifest),
                    info.registered or time.time(),
                ),
            )
            referrer = cur.lastrowid
            for ref in info.references:
                row = c.execute("SELECT id FROM paths WHERE path = ?", (str(ref),)).fetchone()
                if row is None:
                    raise StoreError(
                        f"Cannot register {info.path}: its reference {ref} is not valid."
                    )
                c.execute("INSERT INTO refs(referrer, reference) VALUES (?, ?)", (referrer, row[0]))
            c.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error) and is_full(e):
                raise disk_full(self.file.parent, f"registering {info.path}") from None
            raise

    def invalidate(self, path: StorePath) -> None:
        """Forget a path (its referrers must be gone first)."""
        try:
            self.conn.execute("DELETE FROM paths WHERE path = ?", (str(path),))
        except sqlite3.IntegrityError as e:
            raise StoreError(f"Cannot forget {path}: valid paths still refer to it.") from e

    def info(self, path: StorePath) -> PathInfo | None:
        row = self.conn.execute(
            "SELECT id, kind, archive_hash, size, recipe_hash, deriver, manifest, registered"
            " FROM paths WHERE path = ?",
            (str(path),),
        ).fetchone()
        if row is None:
            return None
        refs = [
            StorePath.parse(r[0])
            for r in self.conn.execute(
                "SELECT p.path FROM refs JOIN paths p ON p.id = refs.reference"
                " WHERE refs.referrer = ? ORDER BY p.path",
                (row[0],),
            )
        ]
        return PathInfo(
            path=path,
            kind=row[1],
            archive_hash=row[2],
            size=row[3],
            recipe_hash=row[4],
            deriver=json.loads(row[5]),
            manifest=json.loads(row[6]),
            registered=row[7],
            references=refs,
        )

    def all_paths(self) -> list[StorePath]:
        return [
            StorePath.parse(r[0]) for r in self.conn.execute("SELECT path FROM paths ORDER BY path")
        ]

    def reference_graph(self) -> dict[StorePath, list[StorePath]]:
        """Every valid path with its references (one query, for gc and closures)."""
        graph: dict[StorePath, list[StorePath]] = {p: [] for p in self.all_paths()}
        q = (
            "SELECT a.path, b.path FROM refs JOIN paths a ON a.id = refs.referrer"
            " JOIN paths b ON b.id = refs.reference"
        )
        for referrer, reference in self.conn.execute(q):
            graph[StorePath.parse(referrer)].append(StorePath.parse(reference))
        return graph

    def iter_infos(self) -> Iterator[PathInfo]:
        for p in self.all_paths():
            info = self.info(p)
            if info is not None:
                yield info
