"""A remote file read by HTTP range requests, as a seekable, read-only binary file.

Contract of :class:`RangeFile` (``client``, ``url``, ``tail=N``), the file object that
:mod:`zipfile` reads a remote wheel through (:mod:`mlpkg.importer.metadata`):

* Creating one sends one suffix range request (``Range: bytes=-N``) for the last ``N``
  bytes of the file (all of it when it is shorter); the answer's ``Content-Range`` gives the
  file's :attr:`~RangeFile.size`. Requests go through :func:`mlpkg.importer.transport.get`
  (its headers, retries and :class:`~mlpkg.errors.FetchError` for HTTP failures).
* ``seek``, ``tell`` and ``read`` behave as on a read-only local file: a read at or past the
  end is short or empty, and a seek before the start raises :class:`OSError` (which
  :mod:`zipfile` relies on for files shorter than its records).
* Every byte fetched is kept, and never fetched again. A read fetches the part of its span
  not yet held (from its first to its last byte not held) with one request.
  :meth:`~RangeFile.prefetch` does that for a span a caller knows it is about to read in
  small pieces (as zipfile reads a member's local header, name, extra field and data).
* A server that ignores ``Range`` (answers 200 with the whole body) is tolerated: the body
  is kept as the whole file and ``on_whole`` is called; later reads need no request.
* A 206 answer without a usable ``Content-Range``, for another range than asked, or whose
  body is not as long as its range, raises :class:`RangeAnswerError` naming the URL.
"""

from __future__ import annotations

import errno
import io
import re
from collections.abc import Callable

import httpx

from mlpkg.errors import FetchError
from mlpkg.importer.transport import get

__all__ = ["RangeAnswerError", "RangeFile"]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


class RangeAnswerError(FetchError):
    """The server answered a range request with something unusable; ``reason`` says what,
    as a clause."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Could not read {url} by HTTP range requests: {reason}.")
        self.url = url
        self.reason = reason


class RangeFile:
    """The remote file at ``url``, read by HTTP range requests (see the module docstring)."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        tail: int,
        on_whole: Callable[[], None] | None = None,
    ) -> None:
        self.client, self.url = client, url
        self.on_whole = on_whole
        self.size = 0
        self._pos = 0
        self._spans: list[tuple[int, bytes]] = []  # sorted, neither overlapping nor touching
        self._fetch(f"bytes=-{tail}", None)

    def readable(self) -> bool:
        """Always True."""
        return True

    def seekable(self) -> bool:
        """Always True."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        """Move to ``offset`` from the start, the current position or the end (``whence``
        0, 1 or 2); return the new position. A position before the start is an OSError."""
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence})")
        if bases[whence] + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = bases[whence] + offset
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all up to the end when negative) from the current position,
        fetched unless already held."""
        start = min(self._pos, self.size)
        end = self.size if size < 0 else min(self.size, start + size)
        data = self._bytes(start, end)
        self._pos += len(data)
        return data

    def prefetch(self, start: int, end: int) -> None:
        """Hold bytes ``[start, end)`` (clipped to the file), fetching with one request the
        part not yet held."""
        self._bytes(max(0, start), min(end, self.size))

    def _bytes(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file (within it), fetched as the contract says."""
        if start >= end:
            return b""
        gap = self._gap(start, end)
        if gap is not None:
            self._fetch(f"bytes={gap[0]}-{gap[1] - 1}", gap)
        for first, data in self._spans:
            if first <= start < first + len(data):
                return data[start - first : end - first]
        return b""  # only when a whole body, sent instead of a range, is shorter than before

    def _gap(self, start: int, end: int) -> tuple[int, int] | None:
        """The smallest span holding every byte of ``[start, end)`` not yet held, if any."""
        lo, hi = start, end
        for first, data in self._spans:
            if first <= lo < first + len(data):
                lo = first + len(data)
            if first < hi <= first + len(data):
                hi = first
        return (lo, hi) if lo < hi else None

    def _fetch(self, byte_range: str, want: tuple[int, int] | None) -> None:
        """GET ``Range: <byte_range>`` and keep the answer; ``want`` is the span asked for
        (None for the suffix range, whose answer also gives the file's size)."""
        resp = get(self.client, self.url, headers={"Range": byte_range}, accept=(200, 206))
        if resp.status_code == 200:
            self.size, self._spans = len(resp.content), [(0, resp.content)]
            if self.on_whole is not None:
                self.on_whole()
            return
        m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
        if m is None or (want is None and m.group(3) == "*"):
            raise RangeAnswerError(
                self.url, "the server's answer to a range request has no usable Content-Range"
            )
        first, last = int(m.group(1)), int(m.group(2))
        if want is not None and (first != want[0] or last < want[1] - 1):
            raise RangeAnswerError(
                self.url, f"the server answered the range {want[0]}-{want[1] - 1} with another one"
            )
        if len(resp.content) != last - first + 1:
            raise RangeAnswerError(
                self.url,
                f"the server sent {len(resp.content)} bytes for a {last - first + 1}-byte range",
            )
        if want is None:
            self.size = int(m.group(3))
        self._keep(first, resp.content)

    def _keep(self, first: int, data: bytes) -> None:
        """Add ``data`` at ``first`` to the held spans, merging those it overlaps or touches."""
        end = first + len(data)
        kept: list[tuple[int, bytes]] = []
        joined = [(first, data)]
        for start, held in self._spans:
            touches = start <= end and first <= start + len(held)
            (joined if touches else kept).append((start, held))
        lo = min(start for start, _ in joined)
        buf = bytearray(max(start + len(held) for start, held in joined) - lo)
        for start, held in [*joined[1:], joined[0]]:  # the new bytes last: they win
            buf[start - lo : start - lo + len(held)] = held
        kept.append((lo, bytes(buf)))
        self._spans = sorted(kept, key=lambda span: span[0])
