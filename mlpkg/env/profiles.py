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

A generation file that cannot be read (empty or truncated, as a power loss could leave one
written without fsync; wrongly typed, of another version, nested too deep, or missing) is
a :class:`BrokenGeneration`: one sentence naming the generation, the profile and the file,
and what to do (switch to the newest good generation before it, or delete the file). It
breaks nothing else: :meth:`Profile.scan` lists the good generations beside the broken
ones, rollback and switch reach the good ones, and new generations take new numbers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg.documents import load_json, validate
from mlpkg.errors import BadInput, StoreError
from mlpkg.store.fs import symlink_atomic, write_atomic
from mlpkg.store.locks import FileLock
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

if TYPE_CHECKING:
    from pydantic import BaseModel

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


class BrokenGeneration(StoreError):
    """A generation file that cannot be read (see the module docstring); ``number`` is the
    generation, ``file`` its file."""

    def __init__(self, message: str, *, number: int, file: Path) -> None:
        super().__init__(message, file=str(file))
        self.number = number


class _Unreadable(Exception):
    """Why a generation file cannot be read (``problem``: what it "is"); ``crash`` when it
    looks cut short by a crash."""

    def __init__(self, problem: str, crash: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.crash = crash


@functools.cache
def _manifest_model() -> type[BaseModel]:
    """The pydantic model of a generation file (made on first use: pydantic is slow to
    import, and the CLI imports this module at start)."""
    from pydantic import BaseModel, ConfigDict

    class Manifest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        version: int
        generation: int
        created: float
        specs: list[str]
        roots: list[str]

    return Manifest


def _parse(file: Path, number: int) -> Generation:
    """Generation ``number`` from its ``file``; :class:`_Unreadable` if it cannot be."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _Unreadable("missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _Unreadable(f"unreadable ({e})") from None
    try:
        data = load_json(text, str(file))
    except ValueError:
        raise _Unreadable("empty or truncated", crash=True) from None
    except BadInput as e:
        raise _Unreadable(e.message.removeprefix(f"{file} is ").rstrip(".")) from None
    if isinstance(data, dict) and data.get("version") != MANIFEST_VERSION:
        raise _Unreadable(f"of manifest version {data.get('version')}; this mlpkg reads "
                          f"version {MANIFEST_VERSION}")  # fmt: skip
    try:
        doc: Any = validate(_manifest_model(), data, str(file), "generation")
    except BadInput as e:
        raise _Unreadable(e.message.removeprefix(f"{file} is ").rstrip(".")) from None
    try:
        roots = [StorePath.parse(r) for r in doc.roots]
    except BadInput as e:
        raise _Unreadable(f"not a valid generation: {e.message.rstrip('.')}") from None
    if doc.generation != number:
        raise _Unreadable(f"not a valid generation: it says it is generation {doc.generation}")
    return Generation(number, doc.created, doc.specs, roots)


def check_profile_name(name: str) -> str:
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
        self.name = check_profile_name(name)
        self.dir = store.home / "profiles" / name
        self.generations_dir = self.dir / "generations"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the profile's lock (changes are read-modify-write)."""
        self.generations_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.dir / ".lock"):
            yield

    def _files(self) -> dict[int, Path]:
        """Every generation file by number, readable or not."""
        if not self.generations_dir.is_dir():
            return {}
        files = {}
        for p in self.generations_dir.iterdir():
            if p.suffix == ".json" and p.stem.isdigit() and p.stem == str(int(p.stem)):
                files[int(p.stem)] = p
        return files

    def scan(self) -> tuple[list[Generation], list[BrokenGeneration]]:
        """The readable generations and the broken ones, each by number."""
        good: list[Generation] = []
        bad: list[tuple[int, Path, _Unreadable]] = []
        for number, file in sorted(self._files().items()):
            try:
                good.append(_parse(file, number))
            except _Unreadable as e:
                bad.append((number, file, e))
        return good, [self._broken(n, f, e, good) for n, f, e in bad]

    def generations(self) -> list[Generation]:
        """The readable generations, by number (broken ones are left out: :meth:`scan`)."""
        return self.scan()[0]

    def _broken(
        self, number: int, file: Path, why: _Unreadable, good: list[Generation]
    ) -> BrokenGeneration:
        """The sentence for generation ``number``, with what to do given the ``good`` ones."""
        how = " (written during a crash?)" if why.crash else ""
        earlier = [g.number for g in good if g.number < number]
        option = "" if self.name == DEFAULT else f" --profile {self.name}"
        if earlier:
            todo = (f"`mlpkg profile switch {earlier[-1]}{option}` goes back to the newest "
                    "good generation before it, or delete the file")  # fmt: skip
        else:
            todo = "there is no earlier generation: delete the file and install again"
        return BrokenGeneration(
            f"Generation {number} of profile {self.name} ({file}) is {why.problem}{how}; {todo}.",
            number=number,
            file=file,
        )

    def _read(self, number: int) -> Generation:
        """Generation ``number``; BrokenGeneration, saying what to do, if it is broken."""
        file = self.generations_dir / f"{number}.json"
        try:
            return _parse(file, number)
        except _Unreadable as e:
            raise self._broken(number, file, e, self.generations()) from None

    def current_number(self) -> int | None:
        """The number of the current generation (read from the link alone), or None."""
        link = self.dir / "current"
        if not link.is_symlink():
            return None
        stem = Path(os.readlink(link)).stem
        return int(stem) if stem.isdigit() else None

    def current(self) -> Generation | None:
        """The current generation, or None; BrokenGeneration if it cannot be read."""
        number = self.current_number()
        return None if number is None else self._read(number)

    def require_current(self, hint: str | None = None) -> Generation:
        """The current generation; BadInput when the profile has none yet."""
        current = self.current()
        if current is None:
            raise BadInput(f"Profile {self.name} has no generation yet.", hint=hint)
        return current

    def add_generation(self, specs: Sequence[str], roots: Sequence[StorePath]) -> Generation:
        """Write a new generation and switch to it (call with the lock held)."""
        number = max(self._files(), default=0) + 1  # broken ones keep their numbers
        gen = Generation(number, time.time(), list(specs), list(roots))
        file = self.generations_dir / f"{number}.json"
        write_atomic(file, json.dumps(gen.to_json(), indent=2, sort_keys=True) + "\n")
        self._root(gen)
        self.switch(number)
        return gen

    def switch(self, number: int) -> Generation:
        """Make generation ``number`` current (call with the lock held)."""
        if number not in self._files():
            have = ", ".join(str(g.number) for g in self.generations()) or "none"
            raise BadInput(f"Profile {self.name} has no generation {number} (it has {have}).")
        gen = self._read(number)
        missing = [r for r in gen.roots if not self.store.is_valid(r)]
        if missing:
            raise StoreError(
                f"Generation {number} of profile {self.name} uses {missing[0]}, which is no "
                "longer valid.",
                hint="`mlpkg verify --repair` remakes deleted paths.",
            )
        symlink_atomic(f"generations/{number}.json", self.dir / "current")
        return gen

    def rollback(self) -> Generation:
        """Switch to the newest readable generation before the current one (the current
        one may be broken)."""
        number = self.current_number()
        older = [g for g in self.generations() if number is not None and g.number < number]
        if number is None or not older:
            raise BadInput(f"Profile {self.name} has no generation before the current one.")
        return self.switch(older[-1].number)

    def _root(self, gen: Generation) -> None:
        for i, root in enumerate(gen.roots):
            self.store.add_root(f"profiles/{self.name}/{gen.number}/{i}", root)

    def wipe_history(self, older_than: float | None = None) -> list[int]:
        """Delete generations other than the current one, broken ones included (only those
        older than ``older_than`` seconds, if given: by their creation, or a broken one's
        file time); their GC roots go with them."""
        current, now = self.current_number(), time.time()
        created = {g.number: g.created for g in self.generations()}
        wiped = []
        for number, file in sorted(self._files().items()):
            if number == current:
                continue
            when = created.get(number)
            if when is None:  # a broken one
                with contextlib.suppress(OSError):
                    when = file.stat().st_mtime
            if older_than is not None and now - (when or now) < older_than:
                continue
            file.unlink(missing_ok=True)
            self.store.remove_roots(f"profiles/{self.name}/{number}")
            wiped.append(number)
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
