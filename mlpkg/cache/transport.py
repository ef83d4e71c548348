"""Where a binary cache's files live: one :class:`Transport` per cache URL.

Nothing else in mlpkg does I/O with a cache. A transport moves opaque files addressed by
*keys*: relative ``/``-separated paths such as ``cache-info.json``, ``info/<hash>.json`` or
``objects/ab/ab12…``. What the files mean is :mod:`mlpkg.cache.format`'s business.

URLs (:func:`open_transport`):

* ``file:///abs/dir``, or a plain absolute path: a directory on this machine
  (:class:`FileTransport`);
* ``http://…`` and ``https://…``: a web server that serves GET and HEAD, and for pushing
  also PUT and DELETE (nginx with WebDAV; :mod:`mlpkg.cache.httpcache`);
* ``s3://bucket/prefix?endpoint=http://host:port&region=…``: an S3 bucket, credentials
  from boto3's default chain (:mod:`mlpkg.cache.s3cache`, needs the ``s3`` extra).

The query parameters ``priority=N`` and ``trusted=true`` may appear on any URL; they are
the substituter's (:func:`split_url` separates them), never a transport's.

Errors. Absence is not an error for :meth:`Transport.get` and :meth:`Transport.has`. A
cache that refuses or drops the connection, times out, or answers 5xx after
:data:`ATTEMPTS` attempts (backoff :data:`BACKOFF` s, doubling) raises
:class:`~mlpkg.errors.CacheUnavailable`; other failures raise
:class:`~mlpkg.errors.CacheError`. Both name the cache (:attr:`Transport.url`) and what
was asked. Timeouts: :func:`timeouts` (``MLPKG_CACHE_TIMEOUT`` overrides them).

Every transport is safe to use from several threads at once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from mlpkg.errors import BadInput, CacheError, CacheMissing, CacheUnavailable
from mlpkg.store.fs import fsync_dir

__all__ = [
    "ATTEMPTS",
    "BACKOFF",
    "CHUNK",
    "SUBSTITUTER_PARAMS",
    "FileTransport",
    "Transport",
    "check_key",
    "display_url",
    "open_transport",
    "parallel_has",
    "retrying",
    "split_url",
    "timeouts",
]

ATTEMPTS = 3
"""Attempts at one request before a cache counts as unavailable."""
BACKOFF = 0.1
"""Seconds before the first retry; doubled before each next one."""
CHUNK = 1 << 20
"""The size of the pieces :meth:`Transport.stream` yields (the last may be shorter)."""
HAS_WORKERS = 16
"""Concurrent existence checks of one :meth:`Transport.has` call (http and s3)."""
SUBSTITUTER_PARAMS = ("priority", "trusted")
"""Query parameters that configure the substituter, not the transport."""
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
TIMEOUT_ENV = "MLPKG_CACHE_TIMEOUT"

_T = TypeVar("_T")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the substituter's query parameters (``priority``, ``trusted``), and
    those parameters. Other parameters and their order are kept: ``"s3://b?priority=10&
    region=x"`` gives ``("s3://b?region=x", {"priority": "10"})``."""
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    kept: list[tuple[str, str]] = []
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in SUBSTITUTER_PARAMS:
            params[name] = value
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept, safe=":/"))), params


def display_url(url: str) -> str:
    """The URL as messages show it: no credentials (``user:password@``), no query."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))


def check_key(key: str) -> str:
    """``key`` itself if it is a valid key: a relative ``/``-separated path with no empty,
    ``.`` or ``..`` component and no backslash. Otherwise ValueError (callers build keys,
    so a bad one is a bug)."""
    if (
        not isinstance(key, str)
        or not key
        or "\\" in key
        or "\0" in key
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise ValueError(f"not a cache key: {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    """A listing prefix: ``""`` (everything) or a key-like directory path, with or without
    a trailing ``/``. Returned without the trailing ``/``."""
    prefix = prefix.rstrip("/")
    if prefix:
        check_key(prefix)
    return prefix


def timeouts() -> tuple[float, float]:
    """``(connect, read)`` timeouts in seconds: 10 and 30, or both ``MLPKG_CACHE_TIMEOUT``
    (a positive number) where it is set."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return CONNECT_TIMEOUT, READ_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BadInput(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds.")
    return value, value


def retrying(
    call: Callable[[], _T],
    *,
    transient: Callable[[BaseException], bool],
    fail: Callable[[BaseException], CacheUnavailable],
) -> _T:
    """``call()``, tried up to :data:`ATTEMPTS` times while it raises an exception for
    which ``transient`` is true, sleeping :data:`BACKOFF` s (doubling) in between. The last
    transient exception becomes ``fail(exc)``, raised from it; other exceptions pass."""
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == ATTEMPTS - 1:
                raise fail(exc) from exc
            time.sleep(BACKOFF * (1 << attempt))
    raise AssertionError("unreachable")


def parallel_has(keys: Sequence[str], exists: Callable[[str], bool]) -> set[str]:
    """The keys for which ``exists(key)`` is true, asked :data:`HAS_WORKERS` at a time.
    The first exception (a cache that is down) is raised after the pool is shut down."""
    unique = list(dict.fromkeys(check_key(k) for k in keys))
    if len(unique) <= 1:
        return {k for k in unique if exists(k)}
    with ThreadPoolExecutor(max_workers=min(HAS_WORKERS, len(unique))) as pool:
        found = list(pool.map(exists, unique))
    return {k for k, hit in zip(unique, found, strict=True) if hit}


def read_at_most(pieces: Iterable[bytes], limit: int) -> bytes | None:
    """The pieces joined, or None as soon as they add up to more than ``limit`` bytes
    (the rest is not read): how a reader refuses to hold more than a file can be."""
    parts: list[bytes] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            return None
        parts.append(piece)
    return b"".join(parts)


class Transport(ABC):
    """A cache's files, addressed by keys (see the module docstring). Thread-safe; a
    context manager that closes it.

    ``url`` is the cache URL as the user wrote it, with credentials and the query removed
    (:func:`display_url`); every message names it.
    """

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The whole content of a small file, or None where it is absent (ENOENT, 404, 403,
        NoSuchKey). CacheUnavailable where the cache cannot be reached."""

    def get_bounded(self, key: str, limit: int) -> bytes | None:
        """As :meth:`get`, read in pieces and refused (CacheError naming the cache and the
        key) once longer than ``limit`` bytes: for what a cache sends that is not checked
        by its size beforehand (info files), so that it cannot make a reader hold more."""
        try:
            with self.stream(key) as pieces:
                data = read_at_most(pieces, limit)
        except CacheMissing:
            return None
        if data is None:
            raise CacheError(
                f"The cache {self.url} has {key} of more than {limit} bytes, more than such "
                "a file can be.",
                cache=self.url,
            )
        return data

    @abstractmethod
    def stream(self, key: str) -> AbstractContextManager[Iterator[bytes]]:
        """The content of a file in pieces of about :data:`CHUNK` bytes, never all in
        memory: ``with t.stream(key) as pieces: for piece in pieces: ...``. An absent file
        is a CacheError naming the cache and the key; a connection dropped mid-body is
        CacheUnavailable."""

    @abstractmethod
    def has(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` exist (asked concurrently where a request costs a round
        trip). Absence is no error; a cache that cannot be reached is CacheUnavailable."""

    @abstractmethod
    def put(self, key: str, source: bytes | Path) -> None:
        """Store ``source`` (bytes, or a file's content read in pieces) under ``key``,
        replacing what was there. Atomic for readers: they see the old file or no file,
        or the whole new one, never a part. A refusal (4xx) is CacheError naming the key
        and the status."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every file under the directory ``prefix`` (``""``: the whole
        cache; ``"info"`` and ``"info/"`` are the same), recursively, in no set order. A
        prefix with nothing under it yields nothing. A cache that cannot be listed is
        CacheError."""

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """``(key, size, mtime)`` of every file under ``prefix``: the files :meth:`list`
        gives, each with the time it was last written (a put that replaced it included), in
        POSIX seconds (UTC, since the epoch). The time is the cache's own: the server's
        clock, not this machine's, and in whole seconds on http (nginx's index). It is
        what ``mlpkg cache gc`` compares with its grace period
        (:mod:`mlpkg.cache.collect`), so a transport must not guess it.

        A transport that cannot tell modification times keeps this default, which raises
        NotImplementedError; one that finds out only while listing (an http server whose
        index has no ``mtime``) raises NotImplementedError while iterated. Other failures
        are those of :meth:`list`."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell modification times")

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; an absent key is fine."""

    def close(self) -> None:  # noqa: B027 - a transport without resources needs no close
        """Release connections; the transport is unusable afterwards."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class FileTransport(Transport):
    """A cache in a local directory (``file:///abs/dir`` or ``/abs/dir``). Writes go to a
    hidden temporary file in the target's directory (``.<name>.<random>.part``), fsynced,
    then renamed into place; :meth:`list` and :meth:`list_mtimes` skip such temporaries,
    :meth:`list_temporaries` gives them (a crashed put leaves its temporary behind)."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _error(self, what: str, key: str, exc: OSError) -> CacheError:
        reason = exc.strerror or str(exc)
        return CacheError(f"The cache {self.url} could not {what} {key}: {reason}.", cache=self.url)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self._error("read", key, exc) from exc

    @contextlib.contextmanager
    def stream(self, key: str) -> Iterator[Iterator[bytes]]:
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise CacheMissing(f"The cache {self.url} has no {key}.", cache=self.url) from exc
        except OSError as exc:
            raise self._error("read", key, exc) from exc
        with f:
            yield iter(lambda: f.read(CHUNK), b"")

    def has(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if self._path(k).is_file()}

    def put(self, key: str, source: bytes | Path) -> None:
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("xb") as out:
                if isinstance(source, Path):
                    with source.open("rb") as src:
                        shutil.copyfileobj(src, out, CHUNK)
                else:
                    out.write(source)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        except OSError as exc:
            raise self._error("write", key, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for key, size, _mtime in self._walk(prefix, temporaries=False):
            yield key, size

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        return self._walk(prefix, temporaries=False)

    def list_temporaries(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """``(key, size, mtime)`` of the temporaries of puts (``.<name>.<random>.part``)
        under ``prefix``: those of puts under way, and those crashed puts left. Each key
        can be given to :meth:`delete`."""
        return self._walk(prefix, temporaries=True)

    def _walk(self, prefix: str, *, temporaries: bool) -> Iterator[tuple[str, int, float]]:
        """``(key, size, mtime)`` of the files under ``prefix``: the temporaries of puts
        only, or everything else."""
        prefix = _check_prefix(prefix)
        top = self.root / prefix if prefix else self.root
        for dirpath, _dirs, files in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if (name.startswith(".") and name.endswith(".part")) != temporaries:
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:  # removed (or renamed into place) meanwhile
                    continue
                yield (name if rel == "." else f"{rel}/{name}"), st.st_size, st.st_mtime

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("delete", key, exc) from exc


def _file_root(url: str, parts_path: str) -> Path:
    if not parts_path.startswith("/"):
        raise BadInput(f"The cache URL {url} must name an absolute directory.")
    return Path(parts_path)


def open_transport(url: str) -> Transport:
    """The transport for a cache URL (see the module docstring); ``priority`` and
    ``trusted`` query parameters are ignored. Nothing is contacted yet. An unknown scheme
    is BadInput naming the URL and the schemes accepted."""
    url, _params = split_url(url)
    shown = display_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "" and url.startswith("/"):
        return FileTransport(Path(url), url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BadInput(f"The cache URL {shown} names a host; file:// caches are local.")
        return FileTransport(_file_root(shown, unquote(parts.path)), shown)
    if scheme in ("http", "https"):
        from mlpkg.cache.httpcache import HttpTransport

        return HttpTransport(url)
    if scheme == "s3":
        from mlpkg.cache.s3cache import S3Transport

        return S3Transport(url)
    raise BadInput(
        f"The cache URL {shown} is not one mlpkg can use: caches are file:// (or an absolute "
        "path), http://, https:// or s3:// URLs."
    )
