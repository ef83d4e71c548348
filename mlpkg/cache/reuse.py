"""Chunks a substitution need not download: those of big files already in this store.

After a path is substituted, its listing is kept (the object as the cache had it, in
``$MLPKG_HOME/cache/listings/<path>.<sha256 of the listing>.zst``). A later substitution
reads the listings of the paths still valid (and removes the others'), and takes each
chunk of a big file it needs from the file that holds it, when the bytes there still
hash to the chunk's name; anything else (a path collected since, a listing unreadable)
is simply downloaded. So a new version of a dataset or model in which a few files
changed downloads only those files' chunks.

Only chunks of files cut on their own (``small_file`` bytes or more) are found here: the
pack stream of small files is spread over many files and cheap to download.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from mlpkg.cache.format import Listing
from mlpkg.cache.restore import decode_listing
from mlpkg.errors import BadInput, CacheError
from mlpkg.store.fs import write_atomic_bytes
from mlpkg.store.path import StorePath
from mlpkg.store.store import Store

LISTINGS_DIR = "cache/listings"
_LOCAL = "this store"


class LocalChunks:
    """Where this store holds chunks of big files, by digest (loaded on first use)."""

    def __init__(self, home: Path) -> None:
        self.dir = home / LISTINGS_DIR
        self._where: dict[str, tuple[Path, int]] | None = None

    def load(self, store: Store) -> None:
        """Read the kept listings of the paths that are valid (once)."""
        if self._where is not None:
            return
        self._where = {}
        files = sorted(self.dir.glob("*.zst")) if self.dir.is_dir() else []
        for file in files:
            name, _, digest = file.name.removesuffix(".zst").rpartition(".")
            with contextlib.suppress(BadInput, CacheError, OSError, ValueError):
                path = StorePath.parse(name)
                if not store.is_valid(path):  # collected since: at worst a lost shortcut
                    file.unlink()
                    continue
                text = decode_listing(file.read_bytes(), digest, _LOCAL)
                self.add(store.real_path(path), Listing.from_bytes(text, _LOCAL, path))

    def add(self, root: Path, listing: Listing) -> None:
        """Index the big files of the tree at ``root``, whose listing is ``listing``."""
        if self._where is None:
            self._where = {}
        for e in listing.entries:
            offset = 0
            for digest, length in e.chunks or ():
                self._where.setdefault(digest, (root / e.path if e.path else root, offset))
                offset += length

    def read(self, digest: str, length: int) -> bytes | None:
        """The chunk ``digest`` from a file of this store, checked; None when no file
        holds it (any more). Safe from several threads."""
        hit = (self._where or {}).get(digest)
        if hit is None:
            return None
        file, offset = hit
        try:
            with open(file, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError:
            return None
        if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
            return None
        return data

    def keep(self, store: Store, path: StorePath, digest: str, raw: bytes) -> None:
        """Remember the listing of ``path``, just substituted: its object ``raw``, whose
        content has sha256 ``digest``."""
        with contextlib.suppress(OSError):
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic_bytes(self.dir / f"{path}.{digest}.zst", raw)
        if self._where is not None:
            with contextlib.suppress(CacheError, BadInput):
                text = decode_listing(raw, digest, _LOCAL)
                self.add(store.real_path(path), Listing.from_bytes(text, _LOCAL, path))
