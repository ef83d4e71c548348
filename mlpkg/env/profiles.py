"""Profiles: named, versioned sets of installed specs (after Nix profiles).

``$MLPKG_HOME/profiles/<name>/`` holds one manifest per generation,
``generations/<N>.json``, and ``current``, a symlink to the generation in use, replaced
atomically. A manifest (format version 1) records the specs asked for, the store paths
they resolved to (the roots), and when it was made::

    {"version": 1, "generation": 3, "created": 1764332000.0,
     "specs": ["loadgen@4.0", "onnxruntime"], "roots": ["<hash>-mlcommons-loadgen-4.0", ...]}

Every generation is a GC root (``gcroots/profiles/<name>/<N>/<i>`` links) until its
history is wiped. Changing a profile holds ``profiles/<name>/.lock``, so two processes
changing one profile both get a generation and neither change is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpkg.errors import BadInput, FormatVersionError, StoreError
from mlpkg.store.fs import remove_tree, write_atomic
from mlpkg.store.locks import FileLock
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

MANIFEST_VERSION = 1
DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Generation:
    number: int
    created: float
    specs: list[str]
    roots: list[StorePath]

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "generation": self.number, "created": self.created,
                "specs": self.specs, "roots": [str(r) for r in self.roots]}  # fmt: skip


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"'{name}' is not a valid profile name (letters, digits, '.', '_' and '-'; "
            "no slashes).",
            field="--profile",
        )
    return name


class Profile:
    """One profile of a store; see the module docstring."""

    def __init__(self, store: Store, name: str = DEFAULT) -> None:
        self.store = store
        self.name = check_name(name)
        self.dir = store.home / "profiles" / name
        self.generations_dir = self.dir / "generations"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the profile's lock (changes are read-modify-write)."""
        self.generations_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.dir / ".lock"):
            yield

    def generations(self) -> list[Generation]:
        if not self.generations_dir.is_dir():
            return []
        found = [self._read(p) for p in self.generations_dir.glob("*.json")]
        return sorted(found, key=lambda g: g.number)

    def _read(self, file: Path) -> Generation:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"The profile generation {file} is unreadable: {e}.") from None
        if data.get("version") != MANIFEST_VERSION:
            raise FormatVersionError(
                f"{file} has manifest version {data.get('version')}; this mlpkg reads "
                f"version {MANIFEST_VERSION}.",
                file=str(file),
            )
        roots = [StorePath.parse(r) for r in data["roots"]]
        return Generation(
            int(data["generation"]), float(data["created"]), list(data["specs"]), roots
        )

    def current(self) -> Generation | None:
        link = self.dir / "current"
        if not link.is_symlink():
            return None
        return self._read(self.dir / os.readlink(link))

    def require_current(self, hint: str | None = None) -> Generation:
        """The current generation; BadInput when the profile has none yet."""
        current = self.current()
        if current is None:
            raise BadInput(f"Profile {self.name} has no generation yet.", hint=hint)
        return current

    def add_generation(self, specs: Sequence[str], roots: Sequence[StorePath]) -> Generation:
        """Write a new generation and switch to it (call with the lock held)."""
        number = max((g.number for g in self.generations()), default=0) + 1
        gen = Generation(number, time.time(), list(specs), list(roots))
        file = self.generations_dir / f"{number}.json"
        write_atomic(file, json.dumps(gen.to_json(), indent=2, sort_keys=True) + "\n")
        self._root(gen)
        self.switch(number)
        return gen

    def switch(self, number: int) -> Generation:
        """Make generation ``number`` current (call with the lock held)."""
        file = self.generations_dir / f"{number}.json"
        if not file.is_file():
            have = ", ".join(str(g.number) for g in self.generations()) or "none"
            raise BadInput(f"Profile {self.name} has no generation {number} (it has {have}).")
        gen = self._read(file)
        missing = [r for r in gen.roots if not self.store.is_valid(r)]
        if missing:
            raise StoreError(
                f"Generation {number} of profile {self.name} uses {missing[0]}, which is no "
                "longer valid.",
                hint="`mlpkg verify --repair` remakes deleted paths.",
            )
        tmp = self.dir / f".current.{secrets.token_hex(4)}"
        os.symlink(f"generations/{number}.json", tmp)
        os.replace(tmp, self.dir / "current")
        return gen

    def rollback(self) -> Generation:
        current = self.current()
        older = [g for g in self.generations() if current and g.number < current.number]
        if current is None or not older:
            raise BadInput(f"Profile {self.name} has no generation before the current one.")
        return self.switch(older[-1].number)

    def _root(self, gen: Generation) -> None:
        for i, root in enumerate(gen.roots):
            self.store.add_root(f"profiles/{self.name}/{gen.number}/{i}", root)

    def wipe_history(self, older_than: float | None = None) -> list[int]:
        """Delete generations other than the current one (only those older than
        ``older_than`` seconds, if given); their GC roots go with them."""
        current = self.current()
        now = time.time()
        wiped = []
        for gen in self.generations():
            if current is not None and gen.number == current.number:
                continue
            if older_than is not None and now - gen.created < older_than:
                continue
            (self.generations_dir / f"{gen.number}.json").unlink()
            remove_tree(self.store.gcroots_dir / "profiles" / self.name / str(gen.number))
            wiped.append(gen.number)
        return wiped


def profiles(store: Store) -> list[str]:
    root = store.home / "profiles"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``45m`` or ``90s`` as seconds."""
    m = re.fullmatch(r"(\d+)([dhms])", text.strip())
    if not m:
        raise BadInput(f"'{text}' is not an age like 30d, 12h, 45m or 90s.")
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]
