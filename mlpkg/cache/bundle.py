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

Import contract (:func:`mlpkg.cache.bundle_import.import_bundle`):

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

import io
import json
import os
import secrets
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpkg import __version__
from mlpkg.cache.format import CACHE_INFO_KEY
from mlpkg.cache.keys import SecretKey
from mlpkg.cache.push import PushReport, push
from mlpkg.cache.transport import Transport, check_key
from mlpkg.documents import load_json
from mlpkg.errors import BadInput, CacheError, FormatVersionError
from mlpkg.store.fs import fsync_dir
from mlpkg.store.path import StorePath

if TYPE_CHECKING:
    from mlpkg.resolver.lockfile import Lockfile
    from mlpkg.session import Session

BUNDLE_FORMAT = "mlpkg-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
LOCK_MEMBER = "mlpkg.lock"
HEADER_ORDER = (MANIFEST, LOCK_MEMBER, CACHE_INFO_KEY)
MAX_DOCUMENT = 64 * 1024 * 1024  # bundle.json, mlpkg.lock
MAX_INFO = 16 * 1024 * 1024
BUNDLES_DIR = "bundles"  # under $MLPKG_HOME: saved locks, and staging while importing


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
            doc = load_json(data.decode("utf-8"), f"{bundle} ({MANIFEST})")
        except BadInput as e:  # nested too deep
            raise damaged(bundle, e.message.rstrip(".")) from None
        except ValueError as e:  # not UTF-8, not JSON
            raise damaged(bundle, f"its {MANIFEST} is not JSON ({e})") from None
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
            raise damaged(bundle, f"its {MANIFEST} is malformed ({e})") from None
        if not set(roots) <= set(paths):
            raise damaged(bundle, f"its {MANIFEST} names roots it does not hold")
        return cls(paths, roots, created, made_by)


def damaged(bundle: str, what: str, **kw: Any) -> CacheError:
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
