"""``http://`` and ``https://`` caches (see :mod:`mlpkg.cache.transport` for the contract).

Reading needs GET and HEAD; pushing needs PUT and DELETE that create directories as needed
(nginx: ``dav_methods PUT DELETE; create_full_put_path on; client_max_body_size 0;``;
nginx writes a PUT body to a temporary file and renames it, so readers never see part of
a file); listing needs JSON directory indexes (nginx: ``autoindex on; autoindex_format
json;``), whose entries' ``mtime`` :meth:`HttpTransport.list_mtimes` gives. Credentials in
the URL (``https://user:token@host/…``) are sent as basic auth; other query parameters are
sent with every request.

One ``httpx.Client`` (HTTP/2 where the server offers it through TLS) is shared by all
threads. A key becomes the path below the URL's path, each component percent-encoded.
Statuses 404, 403 and 410 mean absent, as does a redirect to a directory (``key/``);
408, 425, 429, 500, 502, 503 and 504 and broken connections are retried
(:func:`mlpkg.cache.transport.retrying`) and then make the cache unavailable, as do other
5xx at once.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import email.utils
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from mlpkg.cache.transport import (
    CHUNK,
    HAS_WORKERS,
    Transport,
    _check_prefix,
    check_key,
    display_url,
    parallel_has,
    retrying,
    timeouts,
)
from mlpkg.errors import CacheError, CacheMissing, CacheUnavailable
from mlpkg.store.http import describe, request_headers, retryable, retryable_error

__all__ = ["HttpTransport"]

ABSENT = frozenset({403, 404, 410})
"""Statuses that mean "this cache has no such file"."""

_Content = Callable[[contextlib.ExitStack], Any]


class _ServerError(Exception):
    """A status that says the server is in trouble (retried, then the cache is down)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class HttpTransport(Transport):
    """A cache served over HTTP(S) (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = display_url(url)
        parts = urlsplit(url)
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self._base = parts._replace(path=path, fragment="")
        connect, read = timeouts()
        self._client = httpx.Client(
            http2=True,
            timeout=httpx.Timeout(read, connect=connect),
            headers=request_headers(),
            trust_env=True,
            follow_redirects=True,
            limits=httpx.Limits(max_connections=4 * HAS_WORKERS, max_keepalive_connections=32),
        )

    def _url(self, key: str) -> str:
        """The URL of ``key``; a key ending in ``/`` names a directory (for listings)."""
        return urlunsplit(self._base._replace(path=self._base.path + quote(key, safe="/")))

    def _down(self, what: str, exc: BaseException) -> CacheUnavailable:
        reason = str(exc) if isinstance(exc, _ServerError) else describe(exc)
        return CacheUnavailable(
            f"The cache {self.url} is unreachable: {what} failed ({reason}).",
            cache=self.url,
        )

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        return isinstance(exc, _ServerError) or retryable_error(exc)

    def _send(
        self, method: str, key: str, what: str, content: _Content | None = None
    ) -> httpx.Response:
        """One request, read whole, retried; a 5xx after the retries, or a broken
        connection, is CacheUnavailable. ``content(stack)`` gives the body of each attempt
        (files it opens are closed with ``stack``)."""

        def attempt() -> httpx.Response:
            with contextlib.ExitStack() as stack:
                body = content(stack) if content is not None else None
                r = self._client.request(method, self._url(key), content=body)
            if retryable(r.status_code) or r.status_code >= 500:
                raise _ServerError(r.status_code)
            return r

        try:
            return retrying(attempt, transient=self._transient, fail=lambda e: self._down(what, e))
        except _ServerError as exc:  # a 5xx that is not worth retrying
            raise self._down(what, exc) from exc

    @staticmethod
    def _absent(r: httpx.Response) -> bool:
        """Whether an answer means "no such file": an absent status, or a redirect to a
        directory (``key/``, as nginx answers for a key that names a directory)."""
        return r.status_code in ABSENT or (bool(r.history) and r.url.path.endswith("/"))

    def _refused(self, what: str, r: httpx.Response) -> CacheError:
        return CacheError(
            f"The cache {self.url} refused {what}: HTTP {r.status_code} {r.reason_phrase}.",
            cache=self.url,
        )

    def get(self, key: str) -> bytes | None:
        check_key(key)
        r = self._send("GET", key, f"reading {key}")
        if self._absent(r):
            return None
        if r.status_code != 200:
            raise self._refused(f"reading {key}", r)
        return r.content

    @contextlib.contextmanager
    def stream(self, key: str) -> Iterator[Iterator[bytes]]:
        check_key(key)
        what = f"reading {key}"

        def attempt() -> httpx.Response:
            request = self._client.build_request("GET", self._url(key))
            r = self._client.send(request, stream=True)
            if retryable(r.status_code) or r.status_code >= 500:
                r.close()
                raise _ServerError(r.status_code)
            return r

        try:
            r = retrying(attempt, transient=self._transient, fail=lambda e: self._down(what, e))
        except _ServerError as exc:
            raise self._down(what, exc) from exc
        try:
            if self._absent(r):
                raise CacheMissing(f"The cache {self.url} has no {key}.", cache=self.url)
            if r.status_code != 200:
                raise self._refused(what, r)
            yield self._pieces(r, what)
        finally:
            r.close()

    def _pieces(self, r: httpx.Response, what: str) -> Iterator[bytes]:
        try:
            yield from r.iter_bytes(CHUNK)
        except httpx.TransportError as exc:
            raise self._down(what, exc) from exc

    def _exists(self, key: str) -> bool:
        r = self._send("HEAD", key, f"looking up {key}")
        if self._absent(r):
            return False
        if r.status_code != 200:
            raise self._refused(f"looking up {key}", r)
        return True

    def has(self, keys: Sequence[str]) -> set[str]:
        return parallel_has(keys, self._exists)

    def put(self, key: str, source: bytes | Path) -> None:
        check_key(key)

        def content(stack: contextlib.ExitStack) -> Any:
            if isinstance(source, Path):
                # a binary file: httpx reads it in pieces and sends its Content-Length
                return stack.enter_context(source.open("rb"))
            return source

        r = self._send("PUT", key, f"storing {key}", content)
        if r.status_code not in (200, 201, 204):
            raise self._refused(f"storing {key}", r)

    def delete(self, key: str) -> None:
        check_key(key)
        r = self._send("DELETE", key, f"deleting {key}")
        if r.status_code not in (200, 202, 204, *ABSENT):
            raise self._refused(f"deleting {key}", r)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for key, size, _mtime in self._walk(prefix):
            yield key, size

    def list_mtimes(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """As :meth:`Transport.list_mtimes`: the ``mtime`` of nginx's JSON index entries
        (an RFC 1123 date, whole seconds, by the server's clock). NotImplementedError,
        while iterated, where the server's index gives a file no ``mtime`` (the server
        cannot tell; :meth:`list` still works)."""
        for key, size, mtime in self._walk(prefix):
            if mtime is None:
                raise NotImplementedError(
                    f"The cache {self.url}'s directory index gives no modification time for {key}."
                )
            yield key, size, mtime

    def _walk(self, prefix: str) -> Iterator[tuple[str, int, float | None]]:
        """``(key, size, mtime or None)`` of the files under ``prefix``, directory by
        directory."""
        todo = [_check_prefix(prefix)]
        while todo:
            directory = todo.pop()
            for name, kind, size, mtime in self._index(directory):
                key = f"{directory}/{name}" if directory else name
                if kind == "directory":
                    todo.append(key)
                elif kind == "file":
                    yield key, size, mtime

    def _index(self, directory: str) -> builtins.list[tuple[str, str, int, float | None]]:
        """``(name, type, size, mtime)`` of a directory's entries, from its JSON index."""
        what = f"listing {directory or 'the cache'}"
        r = self._send("GET", directory + "/" if directory else "", what)
        if r.status_code in ABSENT:
            return []
        if r.status_code != 200:
            raise self._refused(what, r)
        try:
            entries = json.loads(r.content)
            return [_entry(e) for e in entries]
        except (ValueError, TypeError, KeyError) as exc:
            raise CacheError(
                f"The cache {self.url} cannot be listed: the server gave no JSON directory "
                "index (nginx: autoindex on; autoindex_format json;).",
                cache=self.url,
            ) from exc

    def close(self) -> None:
        self._client.close()


def _entry(entry: Any) -> tuple[str, str, int, float | None]:
    """One entry of an nginx JSON index: ``{"name", "type", "mtime", "size"?}``; its mtime
    in POSIX seconds, or None where it is missing or not a date."""
    name, kind = entry["name"], entry["type"]
    if not isinstance(name, str) or not isinstance(kind, str) or "/" in name:
        raise ValueError(f"bad index entry {entry!r}")
    size = entry.get("size", 0)
    if not isinstance(size, int):
        raise ValueError(f"bad index entry {entry!r}")
    return name, kind, size, _http_date(entry.get("mtime"))


def _http_date(value: Any) -> float | None:
    """POSIX seconds of an RFC 1123 date (``"Sun, 29 Nov 2026 19:31:36 GMT"``, as nginx's
    index writes it), or None where ``value`` is not one. A date without a zone is UTC."""
    if not isinstance(value, str):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()
