"""Importing an offline bundle (:mod:`mlpkg.cache.bundle` describes the file and the
contract): members read in order, objects staged, each path made valid as soon as its
info file arrives and checks out, a bundle cut short refused naming the first path it
did not deliver."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mlpkg.cache.bundle import (
    BUNDLES_DIR,
    HEADER_ORDER,
    LOCK_MEMBER,
    MANIFEST,
    MAX_DOCUMENT,
    MAX_INFO,
    Manifest,
    damaged,
)
from mlpkg.cache.format import MAX_LISTING, CacheInfo, Listing, PathEntry, object_key
from mlpkg.cache.keys import TrustedKeys, trusted_keys
from mlpkg.cache.restore import decode_listing, restore
from mlpkg.cache.transport import CHUNK
from mlpkg.errors import BadInput, CacheError, CheckError, LockError, RecipeError, StoreError
from mlpkg.store.fs import write_atomic
from mlpkg.store.locks import FileLock, lock_existing
from mlpkg.store.path import StorePath

if TYPE_CHECKING:
    from mlpkg.resolver.plan import PlanNode
    from mlpkg.session import Session

_OBJECT_RE = re.compile(r"objects/([0-9a-f]{2})/(\1[0-9a-f]{62})")
_INFO_RE = re.compile(r"info/([0-9a-z]{32})\.json")

MAX_OBJECT_MEMBER = MAX_LISTING + MAX_LISTING // 64 + (1 << 20)  # zstd's bound, and more
STALE_AFTER = 60.0  # seconds untouched before an unlocked staging directory is removed

Progress = Callable[[str, StorePath], None]
"""Told ``("imported" | "valid" | "made", path)`` for each path an import handles."""


class _Source:
    """A bundle's bytes as read (``read`` only, no seeking). Its first block is kept, to
    tell a bundle cut within its first header from a file that is not one, and its last
    32 KiB, to tell how it ends."""

    TAIL = 32 * 1024

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.head = b""
        self.tail = b""
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if self.pos < 512:
            self.head += data[: 512 - self.pos]
        self.tail = (self.tail + data)[-self.TAIL :]
        self.pos += len(data)
        return data

    def begins_a_bundle(self) -> bool:
        return self.head.startswith(MANIFEST.encode() + b"\0")

    def ending(self, offset: int) -> str:
        """How the archive ends after its last member, which ends at ``offset``: ``"end"``
        (the end-of-archive blocks: at least two blocks of zeros, and nothing but zeros up
        to 64 KiB on), ``"cut"`` (less than that, all zeros) or ``"damaged"`` (other
        bytes: a header that does not read)."""
        after = self.pos - offset
        if not 0 <= after <= len(self.tail):
            return "damaged"
        trailing = self.tail[len(self.tail) - after :] + self.f.read(65536)
        if trailing.strip(b"\0"):
            return "damaged"
        return "end" if len(trailing) >= 1024 else "cut"


@dataclass
class ImportReport:
    """What :func:`import_bundle` did."""

    bundle: str
    manifest: Manifest
    lock_text: str
    imported: list[StorePath] = field(default_factory=list)
    valid_already: list[StorePath] = field(default_factory=list)
    made: list[StorePath] = field(default_factory=list)  # externals, made here
    not_in_bundle: list[StorePath] = field(default_factory=list)  # lock paths still invalid


class _Importer:
    """One import: the members of a bundle, in order (see the module docstring)."""

    def __init__(
        self, session: Session, name: str, staging: Path, trust: bool, allow_drift: bool
    ) -> None:
        self.session, self.store, self.name, self.staging = session, session.store, name, staging
        self.keys: TrustedKeys | None = None if trust else trusted_keys(session.config)
        self.allow_drift = allow_drift
        self.progress: Progress = lambda status, path: None
        self.manifest: Manifest | None = None
        self.lock_text = ""
        self.nodes: dict[StorePath, PlanNode] = {}
        self.expected: dict[StorePath, str] = {}
        self.report: ImportReport | None = None
        self.last = ""  # the last member read whole
        self.done: set[StorePath] = set()  # paths imported or found valid

    def read(self, f: IO[bytes]) -> str:
        """Read the bundle; how it ended: ``"end"``, ``"cut"`` or ``"damaged"``."""
        source = _Source(f)
        try:
            tar = tarfile.open(fileobj=source, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
        except tarfile.TarError as e:
            if source.begins_a_bundle():
                return "cut"
            raise BadInput(f"{self.name} is not an mlpkg bundle (not a tar file: {e}).") from None
        with tar:
            index = 0
            while True:
                try:
                    member = tar.next()
                    if member is None:
                        return source.ending(tar.offset)
                    self.member(tar, member, index)
                except (tarfile.ReadError, EOFError):
                    return "cut"
                self.last = member.name
                index += 1

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo, index: int) -> None:
        name = m.name
        if index < len(HEADER_ORDER) and name != HEADER_ORDER[index]:
            if index == 0:
                raise BadInput(
                    f"{self.name} is not an mlpkg bundle: its first member is {name!r}, "
                    f"not {MANIFEST}."
                )
            raise damaged(self.name, f"{HEADER_ORDER[index]} is missing ({name!r} is there)")
        if not m.isreg():
            raise damaged(self.name, f"its member {name!r} is not a regular file")
        if index == 0:
            self.manifest = Manifest.from_bytes(self._small(tar, m, MAX_DOCUMENT), self.name)
        elif index == 1:
            self._lock(self._small(tar, m, MAX_DOCUMENT))
        elif index == 2:
            CacheInfo.from_bytes(self._small(tar, m, MAX_DOCUMENT), self.name)
        elif _OBJECT_RE.fullmatch(name):
            self._object(tar, m)
        elif match := _INFO_RE.fullmatch(name):
            self._info(self._small(tar, m, MAX_INFO), match.group(1))
        else:
            raise damaged(self.name, f"it has a member {name!r} outside the bundle layout")

    def _small(self, tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int) -> bytes:
        if m.size > limit:
            raise damaged(self.name, f"its member {m.name!r} is {m.size} bytes, over {limit}")
        f = tar.extractfile(m)
        assert f is not None
        data = f.read()
        if len(data) != m.size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def _object(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if m.size > MAX_OBJECT_MEMBER:
            raise damaged(self.name, f"its object {m.name!r} is {m.size} bytes, too many")
        dest = self.staging / m.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        src = tar.extractfile(m)
        assert src is not None
        with part.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            if out.tell() != m.size:
                raise tarfile.ReadError("unexpected end of data")
        os.replace(part, dest)

    def _lock(self, raw: bytes) -> None:
        """The lock's plan for this machine; its externals made here right away."""
        from mlpkg.resolver.lockfile import parse, to_plan
        from mlpkg.resolver.realise import Reporter, realise_derivation

        assert self.manifest is not None
        try:
            self.lock_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise damaged(self.name, f"its {LOCK_MEMBER} is not UTF-8 text") from None
        try:
            lock = parse(self.lock_text, f"{self.name} ({LOCK_MEMBER})")
        except (LockError, RecipeError) as e:  # a newer lock version is FormatVersionError
            why = f"its {LOCK_MEMBER} is not a valid lock"
            raise damaged(self.name, why, details=[e.message]) from None

        plan, self.expected = to_plan(
            lock, self.store, self.session.provider.detector,
            allow_external_drift=self.allow_drift, trusted=self.session.index,
        )  # fmt: skip
        self.nodes = {n.path: n for n in plan.nodes}
        self.report = ImportReport(self.name, self.manifest, self.lock_text)
        for path in self.manifest.paths:
            if path not in self.nodes:
                raise damaged(self.name, f"it holds {path}, which its lock does not name")
        for node in plan.nodes:
            if node.drv.kind == "external" and not self.store.is_valid(node.path):
                realise_derivation(node.drv, self.store, Reporter(), node)
                self.report.made.append(node.path)
                self.progress("made", node.path)

    def _info(self, raw: bytes, hash_part: str) -> None:
        assert self.manifest is not None
        if self.report is None:
            raise damaged(self.name, f"an info file comes before its {LOCK_MEMBER}")
        listed = {p.hash_part: p for p in self.manifest.paths}
        path = listed.get(hash_part)
        if path is None:
            raise damaged(self.name, f"it has info/{hash_part}.json for a path it does not list")
        try:
            entry = PathEntry.from_bytes(raw, self.name, path)
        except CacheError as e:
            raise self._bad_copy(path, e.message) from None
        node = self.nodes[path]
        if node.drv.kind == "external" or path in self.done:
            return  # made here from the lock, or a second copy
        if self.store.is_valid(path):
            self.report.valid_already.append(path)
            self.done.add(path)
            self.progress("valid", path)
            return
        self._check(entry, node)
        self._realise(entry, node)
        self.report.imported.append(path)
        self.done.add(path)
        self.progress("imported", path)

    def _check(self, entry: PathEntry, node: PlanNode) -> None:
        """Refuse an entry no trusted key signed, or that disagrees with the lock."""
        from mlpkg.resolver.realise import runtime_references

        path = entry.path
        if self.keys is not None and not self.keys.verify(entry.fingerprint(), entry.signatures):
            signers = sorted({s.partition(":")[0] for s in entry.signatures}) or ["nobody"]
            raise CacheError(
                f"The bundle {self.name} holds {path} signed by no trusted key (signed by: "
                f"{', '.join(signers)}); it is not imported.",
                cache=self.name,
                hint="Trust the signer's public key (`mlpkg key trust NAME:KEY`), or pass "
                "--trust if you trust this file itself.",
            )
        want = self.expected.get(path)
        if want is not None and want != entry.archive_hash:
            raise self._bad_copy(
                path, f"its archive hash {entry.archive_hash} is not the lock's {want}"
            )
        refs = sorted(runtime_references(node.drv))
        if sorted(entry.references) != refs:
            raise self._bad_copy(path, "its references are not its derivation's")
        missing = [r for r in refs if not self.store.is_valid(r)]
        if missing:
            raise self._bad_copy(path, f"it comes before its reference {missing[0]}")

    def _realise(self, entry: PathEntry, node: PlanNode) -> None:
        from mlpkg.resolver.realise import is_relocatable, runtime_references

        path, drv = entry.path, node.drv

        def fetch(digest: str) -> bytes:
            try:
                return (self.staging / object_key(digest)).read_bytes()
            except FileNotFoundError:
                raise CacheError(f"the object {digest} is not in it", cache=self.name) from None

        try:
            raw = decode_listing(fetch(entry.listing), entry.listing, self.name)
            listing = Listing.from_bytes(raw, self.name, path)
            self.store.realise(
                path,
                lambda tmp: restore(listing, tmp, fetch, self.name),
                kind=drv.kind,
                recipe_hash=drv.recipe_hash,
                deriver=drv.to_json(),
                references=runtime_references(drv),
                relocatable=is_relocatable(drv.kind),
                expected_hash=entry.archive_hash,
            )
        except (CacheError, CheckError) as e:
            raise self._bad_copy(path, e.message) from None

    def _bad_copy(self, path: StorePath, why: str) -> CacheError:
        return CacheError(
            f"The bundle {self.name} has a damaged or inconsistent copy of {path}; it is not "
            "imported.",
            cache=self.name,
            details=[why],
        )

    def finish(self, ended: str) -> ImportReport:
        """Refuse a bundle whose paths did not all become valid (naming the first)."""
        if self.manifest is None or self.report is None:
            what = f"{self.manifest.paths[0]}, its first path" if self.manifest else MANIFEST
            raise CacheError(f"The bundle {self.name} is cut short: it ends before {what}.")
        valid = self.store.valid_among(self.manifest.paths)
        missing = [p for p in self.manifest.paths if p not in valid]
        if missing:
            first = missing[0]
            why = {
                "cut": "is cut short: it ends before",
                "damaged": f"is damaged after its member {self.last}: it cannot be read up to",
            }.get(ended, "lacks")
            raise CacheError(
                f"The bundle {self.name} {why} {first}, the first path it lists that is "
                "not imported.",
                cache=self.name,
            )
        made = self.store.valid_among(self.nodes)
        self.report.not_in_bundle = [p for p in self.nodes if p not in made]
        return self.report


def import_bundle(
    session: Session,
    f: IO[bytes],
    name: str,
    *,
    trust: bool = False,
    allow_drift: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Make every path of the bundle read from ``f`` (named ``name`` in messages) valid in
    ``session``'s store; see the module docstring for the checks. With ``trust``, info
    files need no trusted signature (the user trusts this file)."""
    staging, lock = _staging(session.home / BUNDLES_DIR)
    try:
        importer = _Importer(session, name, staging, trust, allow_drift)
        if progress is not None:
            importer.progress = progress
        return importer.finish(importer.read(f))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _staging(parent: Path) -> tuple[Path, FileLock]:
    """A new staging directory ``parent/.staging-*``, locked while this import runs. Those
    of imports that died (unlocked, and untouched for a minute) are removed first."""
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(".staging-*"):
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime < STALE_AFTER:
                continue
        stale = lock_existing(old)
        if stale is not None:
            shutil.rmtree(old, ignore_errors=True)
            stale.release()
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    lock = lock_existing(staging)
    if lock is None:
        raise StoreError(f"Cannot lock the staging directory {staging}.")
    return staging, lock


def keep_lock(session: Session, report: ImportReport) -> tuple[Path, Path]:
    """Save the imported lock as ``$MLPKG_HOME/bundles/<digest>.lock`` and register the
    lock's valid paths as the root ``gcroots/bundles/<digest>`` (a file of paths), so
    that a collection keeps them; both paths."""
    digest = hashlib.sha256(report.lock_text.encode()).hexdigest()[:16]
    lock_file = session.home / BUNDLES_DIR / f"{digest}.lock"
    write_atomic(lock_file, report.lock_text)
    store = session.store
    root = store.gcroots_dir / BUNDLES_DIR / digest
    root.parent.mkdir(parents=True, exist_ok=True)
    paths = [*report.manifest.paths, *report.made]
    write_atomic(root, "".join(f"{store.real_path(p)}\n" for p in dict.fromkeys(paths)))
    return lock_file, root
