"""Offline bundles: a closure, its signed info files and its lock in one file, for a
machine without network (docs/caches.md, "Bundles").

A bundle is an uncompressed tar (PAX) file, written and read as a stream (never loaded
whole; the objects inside are zstd frames already). Its members, in this order:

1. ``bundle.json`` (:class:`Manifest`): format ``mlpkg-bundle``, version 1, the store
   paths it holds in closure order (references first), the lock's roots, when it was made
   and by which mlpkg;
2. ``mlpkg.lock``: the lockfile of the closure;
3. ``cache-info.json`` and then the binary cache layout (:mod:`mlpkg.cache.format`)
   exactly as :func:`mlpkg.cache.push.push` writes it: ``objects/<2 hex>/<64 hex>`` and
   ``info/<hash>.json``, an info file after the objects it names and after the info files
   of its references (:class:`TarWriter` is the transport push writes through).

A bundle holds every non-external path of its lock (build-time inputs too, so that
``mlpkg build --lock`` and ``mlpkg run --lock`` make nothing on the target); external
paths (links to host tools) are made on the target from the lock, never taken from it.

Import contract (:func:`import_bundle`):

* Members are read in order. Objects go to a private staging directory under
  ``$MLPKG_HOME/bundles/`` (removed at the end, also on failure). When an info file
  arrives, its signature is checked against the trusted keys (unless the user trusts the
  file), its archive hash against the lock's, its references against the lock
  derivation's; then the path is assembled from the staging objects and becomes valid
  through :meth:`mlpkg.store.Store.realise` only if its archive hash is the signed one.
  The derivation registered is the lock's for that path (whose store path it computes).
* Nothing invalid enters the store. A bundle cut short is refused naming the first path of
  ``bundle.json`` that was not imported (the paths before it were verified and stay
  valid); a damaged member or one with a name outside the layout (``../x``) is a
  CacheError naming the bundle and the path; a file that is no bundle, or of a newer
  format version, is BadInput (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mlpkg import __version__
from mlpkg.cache.format import CACHE_INFO_KEY, CacheInfo, Listing, PathEntry, object_key
from mlpkg.cache.keys import SecretKey, TrustedKeys, trusted_keys
from mlpkg.cache.push import PushReport, push
from mlpkg.cache.restore import decode_listing, restore
from mlpkg.cache.transport import CHUNK, Transport, check_key
from mlpkg.errors import BadInput, CacheError, CheckError, FormatVersionError
from mlpkg.store.fs import fsync_dir, write_atomic
from mlpkg.store.path import StorePath

if TYPE_CHECKING:
    from mlpkg.resolver.lockfile import Lockfile
    from mlpkg.resolver.plan import PlanNode
    from mlpkg.session import Session

BUNDLE_FORMAT = "mlpkg-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
LOCK_MEMBER = "mlpkg.lock"
HEADER_ORDER = (MANIFEST, LOCK_MEMBER, CACHE_INFO_KEY)
MAX_DOCUMENT = 64 * 1024 * 1024  # bundle.json, mlpkg.lock
MAX_INFO = 16 * 1024 * 1024
BUNDLES_DIR = "bundles"  # under $MLPKG_HOME: saved locks, and staging while importing
_OBJECT_RE = re.compile(r"objects/([0-9a-f]{2})/(\1[0-9a-f]{62})")
_INFO_RE = re.compile(r"info/([0-9a-z]{32})\.json")

Progress = Callable[[str, StorePath], None]
"""Told ``("imported" | "valid" | "made", path)`` for each path an import handles."""


# -- bundle.json ----------------------------------------------------------------------------


@dataclass
class Manifest:
    """``bundle.json``: what a bundle holds (``paths`` in closure order) and its roots."""

    paths: list[StorePath]
    roots: list[StorePath]
    created: str = ""
    mlpkg_version: str = __version__

    def to_bytes(self) -> bytes:
        doc = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created": self.created,
            "mlpkg_version": self.mlpkg_version,
            "roots": [str(r) for r in self.roots],
            "paths": [str(p) for p in self.paths],
        }
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, bundle: str) -> Manifest:
        """Parse ``bundle.json``: BadInput when it is no bundle's, FormatVersionError for
        another version, CacheError when it is damaged."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(bundle, f"its {MANIFEST} is not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise BadInput(f"{bundle} is not an mlpkg bundle: its {MANIFEST} is another format.")
        version = doc.get("version")
        if version != BUNDLE_VERSION:
            raise FormatVersionError(
                f"{bundle} is an mlpkg bundle of format version {version}; this mlpkg reads "
                f"version {BUNDLE_VERSION}.",
                hint="Upgrade mlpkg on this machine, or make the bundle with this version.",
                file=bundle,
            )
        try:
            paths = [StorePath.parse(p) for p in doc["paths"]]
            roots = [StorePath.parse(r) for r in doc["roots"]]
            created, made_by = str(doc.get("created", "")), str(doc.get("mlpkg_version", ""))
        except (KeyError, TypeError, BadInput) as e:
            raise _damaged(bundle, f"its {MANIFEST} is malformed ({e})") from None
        if not set(roots) <= set(paths):
            raise _damaged(bundle, f"its {MANIFEST} names roots it does not hold")
        return cls(paths, roots, created, made_by)


def _damaged(bundle: str, what: str, **kw: Any) -> CacheError:
    return CacheError(f"The bundle {bundle} is damaged: {what}.", cache=bundle, **kw)


# -- writing --------------------------------------------------------------------------------


class TarWriter(Transport):
    """A write-only transport that appends each file put as a member of a tar stream.

    Thread-safe (one member at a time); a key put twice is written once (objects are named
    by their content); :meth:`has` answers from what was written; :meth:`get` finds
    nothing, so :func:`~mlpkg.cache.push.push` treats it as a new, empty cache."""

    def __init__(self, tar: tarfile.TarFile, url: str, mtime: int) -> None:
        self.tar = tar
        self.url = url
        self.mtime = mtime
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}

    def add(self, name: str, source: bytes | Path) -> None:
        """Append ``source`` as the member ``name`` (unless ``name`` was written)."""
        with self._lock:
            if name in self._written:
                return
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = self.mtime, 0o644
            if isinstance(source, Path):
                with source.open("rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    self.tar.addfile(info, f)
            else:
                info.size = len(source)
                self.tar.addfile(info, io.BytesIO(source))
            self._written[name] = info.size

    def put(self, key: str, source: bytes | Path) -> None:
        self.add(check_key(key), source)

    def get(self, key: str) -> bytes | None:
        check_key(key)
        return None

    def stream(self, key: str) -> AbstractContextManager[Iterator[bytes]]:
        raise CacheError(f"The bundle {self.url} is being written; {key} cannot be read.")

    def has(self, keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {k for k in keys if k in self._written}

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        with self._lock:
            items = list(self._written.items())
        p = prefix.rstrip("/")
        return iter([(k, n) for k, n in items if not p or k.startswith(p + "/")])

    def delete(self, key: str) -> None:
        raise CacheError(f"The bundle {self.url} is written once; {key} cannot be deleted.")


@dataclass
class CreateReport:
    """What :func:`create_bundle` wrote."""

    file: str
    paths: list[StorePath]
    roots: list[StorePath]
    size: int
    signed_by: str | None
    push: PushReport

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "paths": [str(p) for p in self.paths],
            "roots": [str(r) for r in self.roots],
            "bytes": self.size,
            "signed_by": self.signed_by,
            "objects": self.push.objects_uploaded,
            "archive_bytes": self.push.bytes_read,
        }


def create_bundle(
    session: Session,
    output: Path,
    lock: Lockfile,
    lock_bytes: bytes,
    key: SecretKey | None,
) -> CreateReport:
    """Write the bundle of ``lock`` (every non-external node valid in this store; see
    :func:`complete_lock`) at ``output``, signing its info files with ``key``. The file
    appears only when complete (written beside it, then renamed); BadInput when
    ``output``'s directory cannot hold it."""
    store = session.store
    wanted = [*lock.roots, *(n.path for n in lock.nodes if n.drv.kind != "external")]
    paths = store.closure_order(list(dict.fromkeys(wanted)))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = Manifest(paths, list(lock.roots), created)
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part")
    try:
        f = tmp.open("xb")
    except OSError as e:
        raise BadInput(
            f"Cannot write the bundle {output}: {e.strerror}.", file=str(output)
        ) from None
    try:
        with f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            writer = TarWriter(tar, str(output), int(time.time()))
            writer.add(MANIFEST, manifest.to_bytes())
            writer.add(LOCK_MEMBER, lock_bytes)
            report = push(store, writer, paths, key)
            tar.close()  # the end-of-archive blocks, before the sync
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, output)
        fsync_dir(output.parent)
    finally:
        tmp.unlink(missing_ok=True)
    size = output.stat().st_size
    signer = key.name if key is not None else None
    return CreateReport(str(output), paths, list(lock.roots), size, signer, report)


def complete_lock(session: Session, lock: Lockfile, allow_drift: bool = False) -> int:
    """Make every path of ``lock`` valid here, build-time inputs too (a realisation that
    substituted their users skips them, but the target of a bundle has no cache to skip
    them with); how many were made."""
    from mlpkg.resolver.lockfile import to_plan
    from mlpkg.resolver.realise import realise_plan

    plan, expected = to_plan(
        lock, session.store, session.provider.detector,
        allow_external_drift=allow_drift, trusted=session.index,
    )  # fmt: skip
    pending = plan.pending()
    if pending:
        reporter = session.reporter()
        try:
            realise_plan(plan, session.store, reporter, expected)
        finally:
            reporter.close()
    return len(pending)


# -- reading --------------------------------------------------------------------------------


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
            raise _damaged(self.name, f"{HEADER_ORDER[index]} is missing ({name!r} is there)")
        if not m.isreg():
            raise _damaged(self.name, f"its member {name!r} is not a regular file")
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
            raise _damaged(self.name, f"it has a member {name!r} outside the bundle layout")

    def _small(self, tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int) -> bytes:
        if m.size > limit:
            raise _damaged(self.name, f"its member {m.name!r} is {m.size} bytes, over {limit}")
        f = tar.extractfile(m)
        assert f is not None
        data = f.read()
        if len(data) != m.size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    def _object(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
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
            raise _damaged(self.name, f"its {LOCK_MEMBER} is not UTF-8 text") from None
        lock = parse(self.lock_text, f"{self.name} ({LOCK_MEMBER})")
        plan, self.expected = to_plan(
            lock, self.store, self.session.provider.detector,
            allow_external_drift=self.allow_drift, trusted=self.session.index,
        )  # fmt: skip
        self.nodes = {n.path: n for n in plan.nodes}
        self.report = ImportReport(self.name, self.manifest, self.lock_text)
        for path in self.manifest.paths:
            if path not in self.nodes:
                raise _damaged(self.name, f"it holds {path}, which its lock does not name")
        for node in plan.nodes:
            if node.drv.kind == "external" and not self.store.is_valid(node.path):
                realise_derivation(node.drv, self.store, Reporter(), node)
                self.report.made.append(node.path)
                self.progress("made", node.path)

    def _info(self, raw: bytes, hash_part: str) -> None:
        assert self.manifest is not None
        if self.report is None:
            raise _damaged(self.name, f"an info file comes before its {LOCK_MEMBER}")
        listed = {p.hash_part: p for p in self.manifest.paths}
        path = listed.get(hash_part)
        if path is None:
            raise _damaged(self.name, f"it has info/{hash_part}.json for a path it does not list")
        try:
            entry = PathEntry.from_bytes(raw, self.name, path)
        except CacheError as e:
            raise self._bad_copy(path, e.message) from None
        node = self.nodes[path]
        if node.drv.kind == "external":
            return  # made here from the lock
        if self.store.is_valid(path):
            self.report.valid_already.append(path)
            self.progress("valid", path)
            return
        self._check(entry, node)
        self._realise(entry, node)
        self.report.imported.append(path)
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
    parent = session.home / BUNDLES_DIR
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    try:
        importer = _Importer(session, name, staging, trust, allow_drift)
        if progress is not None:
            importer.progress = progress
        return importer.finish(importer.read(f))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
