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
written on disk before :meth:`MemoryTree.write`, which writes the files in a few threads
(creating and writing a file lets go of the GIL) while it feeds the scan in order.

:func:`source_class` reads a wheel's members in a few threads before installer asks for
them (zlib and the CRC let go of the GIL), so the decompression of a large wheel uses
every core.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mlpkg.store.archive import StreamScan

if TYPE_CHECKING:
    from pathlib import Path

Tree = dict[str, "Tree | tuple[bytes, bool]"]  # a directory: name -> subtree or (data, x)
JOBS = max(1, min(4, os.cpu_count() or 1))  # threads that read members / write files


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
        """Write the tree at the prefix in archive order, feeding ``scan`` (if any); the
        files are written by :data:`JOBS` threads, all of them before this returns (the
        first error is raised once every write has ended)."""
        with ThreadPoolExecutor(JOBS, thread_name_prefix="mlpkg-write") as pool:
            writes: list[Future[None]] = []
            try:
                self._write_dir(self.prefix, "", self.root, scan, pool, writes)
            finally:
                errors = [e for w in writes if (e := w.exception()) is not None]
            if errors:
                raise errors[0]

    def _write_dir(
        self,
        path: str,
        rel: str,
        tree: Tree,
        scan: StreamScan | None,
        pool: ThreadPoolExecutor,
        writes: list[Future[None]],
    ) -> None:
        os.mkdir(path)
        names = sorted(tree, key=os.fsencode)
        if scan is not None:
            scan.directory(rel, names)
        for name in names:
            child = tree[name]
            child_rel = f"{rel}/{name}" if rel else name
            if isinstance(child, dict):
                self._write_dir(f"{path}/{name}", child_rel, child, scan, pool, writes)
                continue
            data, executable = child
            if scan is not None:
                scan.file(child_rel, executable, len(data), digest=self.digests[child_rel])
                scan.data(data)
                scan.end_file()
            mode = 0o755 if executable else 0o644
            writes.append(pool.submit(_write_file, f"{path}/{name}", data, mode))


def _write_file(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_members(zf: zipfile.ZipFile) -> dict[str, bytes]:
    """Every file member of ``zf`` by name, read (decompressed, CRC checked) by
    :data:`JOBS` threads, each given about as many compressed bytes."""
    infos = sorted(
        (i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.compress_size, reverse=True
    )
    batches: list[list[zipfile.ZipInfo]] = [[] for _ in range(JOBS)]
    loads = [0] * JOBS
    for info in infos:  # the largest first, each to the least loaded batch
        k = loads.index(min(loads))
        batches[k].append(info)
        loads[k] += info.compress_size + 512

    def read(batch: list[zipfile.ZipInfo]) -> list[tuple[str, bytes]]:
        return [(i.filename, zf.read(i)) for i in batch]

    with ThreadPoolExecutor(JOBS, thread_name_prefix="mlpkg-unzip") as pool:
        return {name: data for part in pool.map(read, batches) for name, data in part}


def source_class() -> type[Any]:
    """A subclass of installer's ``WheelFile`` whose ``get_contents`` gives what
    installer's does (the same records, streams and executable bits, in the same order)
    from members read beforehand by :func:`read_members`."""
    from installer.records import parse_record_file
    from installer.sources import WheelFile

    class PreloadedWheel(WheelFile):
        def get_contents(self) -> Any:
            zf: zipfile.ZipFile = self._zipfile
            contents = read_members(zf)
            records = parse_record_file(self.read_dist_info("RECORD").splitlines())
            mapping = {record[0]: record for record in records}
            for item in zf.infolist():
                if item.filename[-1:] == "/":  # as installer: a directory
                    continue
                record = mapping.pop(item.filename, (item.filename, "", ""))
                mode = item.external_attr >> 16
                executable = bool(mode and stat.S_ISREG(mode) and mode & 0o111)
                with io.BytesIO(contents.pop(item.filename)) as stream:
                    yield record, stream, executable

    return PreloadedWheel


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
