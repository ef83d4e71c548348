"""Laying out an installed wheel in one pass: pypa's installer decides what goes where
(schemes, ``.data`` directories, scripts and their shebangs, ``RECORD``, ``INSTALLER``);
the files it writes are kept in memory, then written in archive order while a
:class:`~mlpkg.store.archive.StreamScan` learns the store path's archive hash and manifest
from the same bytes, so the store does not read the tree again.

Contract of :class:`MemoryTree`: every file installer writes is recorded once under its
path relative to the prefix (a path outside the prefix, or written twice, is refused, as
installer's own destination refuses them); :meth:`MemoryTree.write` creates the prefix
(which must not exist), its directories and files (mode 0644, or 0755 for executables)
and feeds the scan every entry in archive order (names sorted as bytes). Nothing is
written on disk before :meth:`MemoryTree.write`.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from mlpkg.store.archive import StreamScan

if TYPE_CHECKING:
    from pathlib import Path

Tree = dict[str, "Tree | tuple[bytes, bool]"]  # a directory: name -> subtree or (data, x)


class MemoryTree:
    """The files of one prefix, kept in memory until :meth:`write`."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = os.path.normpath(os.path.abspath(prefix))
        self.root: Tree = {}
        self.digests: dict[str, str] = {}  # relative path -> sha256 hex (for the scan)

    def relative(self, directory: str, path: str) -> str:
        """The file ``path`` of the scheme directory ``directory`` (inside the prefix)
        relative to the prefix; ValueError if it is not inside ``directory`` (as pypa's
        destination checks)."""
        base = os.path.normpath(os.path.abspath(directory))
        full = os.path.normpath(os.path.join(base, path))
        if not full.startswith(base.rstrip("/") + "/") or not full.startswith(self.prefix + "/"):
            raise ValueError(f"Attempting to write {path} outside of the target directory")
        return full[len(self.prefix) + 1 :]

    def add(self, rel: str, data: bytes, executable: bool) -> str:
        """Record a file; return its sha256 hex. FileExistsError if it is there already."""
        *dirs, name = rel.split("/")
        node = self.root
        for d in dirs:
            child = node.setdefault(d, {})
            if not isinstance(child, dict):
                raise FileExistsError(f"File already exists: {self.prefix}/{rel}")
            node = child
        if name in node:
            raise FileExistsError(f"File already exists: {self.prefix}/{rel}")
        node[name] = (data, executable)
        digest = hashlib.sha256(data).hexdigest()
        self.digests[rel] = digest
        return digest

    def write(self, scan: StreamScan | None = None) -> None:
        """Write the tree at the prefix in archive order, feeding ``scan`` (if any)."""
        self._write_dir(self.prefix, "", self.root, scan)

    def _write_dir(self, path: str, rel: str, tree: Tree, scan: StreamScan | None) -> None:
        os.mkdir(path)
        names = sorted(tree, key=os.fsencode)
        if scan is not None:
            scan.directory(rel, names)
        for name in names:
            child = tree[name]
            child_rel = f"{rel}/{name}" if rel else name
            if isinstance(child, dict):
                self._write_dir(f"{path}/{name}", child_rel, child, scan)
                continue
            data, executable = child
            if scan is not None:
                scan.file(child_rel, executable, len(data), digest=self.digests[child_rel])
                scan.data(data)
                scan.end_file()
            _write_file(f"{path}/{name}", data, 0o755 if executable else 0o644)


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def destination_class(shebang: bytes) -> type[Any]:
    """A subclass of installer's ``SchemeDictionaryDestination`` that records what it
    writes in a :class:`MemoryTree` (its ``tree``, given to the constructor) and writes
    console scripts with ``shebang`` (installer would wrap a shebang with a space in a
    shell trampoline)."""
    import io

    from installer.destinations import SchemeDictionaryDestination
    from installer.records import Hash, RecordEntry
    from installer.scripts import Script
    from installer.utils import Scheme

    class Destination(SchemeDictionaryDestination):
        def __init__(self, *args: Any, tree: MemoryTree, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.tree = tree

        def write_to_fs(
            self, scheme: Scheme, path: str, stream: Any, is_executable: bool
        ) -> RecordEntry:
            rel = self.tree.relative(self.scheme_dict[scheme], path)
            data = stream.read()
            digest = self.tree.add(rel, data, is_executable)
            return RecordEntry(path, Hash("sha256", _urlsafe(digest)), len(data))

        def write_script(self, name: str, module: str, attr: str, section: Any) -> RecordEntry:
            script_name, data = Script(name, module, attr, section).generate("python3", "posix")
            data = shebang + data.split(b"\n", 1)[1]
            with io.BytesIO(data) as stream:
                entry: RecordEntry = self.write_to_fs(
                    Scheme("scripts"), script_name, stream, is_executable=True
                )
            return entry

    return Destination


def _urlsafe(hex_digest: str) -> str:
    """A sha256 hex digest as RECORD writes it: urlsafe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).decode("ascii").rstrip("=")
