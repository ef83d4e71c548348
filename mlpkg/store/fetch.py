"""Download one file from a list of mirrors into the store, verified against its hash.

Contract of :func:`fetch`:

* ``urls`` are mirrors, tried in order. ``http://``, ``https://`` and ``file://`` are
  supported; ``file://`` goes through the same hashing path. Any other scheme fails that URL
  and the next mirror is tried.
* The body is streamed in chunks into ``partial`` (a caller-chosen path in the store's file
  system; the caller holds a lock, so nobody else writes it) while sha256 and md5 are
  computed. Bytes are taken as sent (``Accept-Encoding: identity``, no decoding). The HTTP
  client and headers are :mod:`mlpkg.store.http`'s: ``HTTP(S)_PROXY``/``NO_PROXY``
  honoured (``trust_env``), redirects followed, ``User-Agent: mlpkg/<version>``.
* Transient failures (:mod:`mlpkg.store.http`'s retry policy: connect/read errors and
  timeouts, a connection dropped mid-body, HTTP 408, 425, 429, 500, 502, 503, 504) are
  retried up to ``retries`` times per URL, sleeping ``backoff``, ``2*backoff``, ... in
  between. Permanent failures (every other status, bad URLs) move on to the next mirror at
  once.
* Resume: when ``partial`` exists as a transfer starts (an earlier attempt, or a killed
  process), ``Range: bytes=N-`` is sent. A 206 whose Content-Range starts at N is appended
  (the existing prefix is re-hashed first); a 200 starts over; a 416 starts over, unless its
  Content-Range says the partial file already holds the whole body. If a body completed
  on top of a prefix that this URL did not serve fails verification, that URL is tried
  once more from scratch before it is blamed.
* Verify: the complete body is compared with ``expected`` (sha256 and/or md5, every one
  given). On a mismatch ``partial`` is deleted and the next mirror tried. On success
  ``partial`` is fsynced and ``os.replace``-d onto ``dest``, and a :class:`Fetched` is
  returned.
* If every URL fails, :class:`~mlpkg.errors.FetchError` is raised: ``message`` is one
  sentence naming ``label`` (and the expected and served hashes when a mismatch happened),
  ``details`` has one ``"<url>: <failure>"`` line per URL. Nothing is written to ``dest``;
  ``partial`` survives only a transient failure, so that a later run can resume.
  A local I/O error on ``partial``/``dest`` raises ``FetchError`` at once; a full disk
  raises :class:`~mlpkg.errors.StoreError` naming the directory, and ``partial`` is
  deleted (it is what filled the disk).
* ``on_progress(done, total)`` is called as bytes arrive (throttled), ``total`` being
  Content-Length plus the resume offset when known. It may go backwards when a transfer
  restarts from zero. This module never prints or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from mlpkg.errors import FetchError
from mlpkg.store import http
from mlpkg.store.fs import fsync_dir
from mlpkg.store.space import disk_full, is_full

ProgressFn = Callable[[int, int | None], None]

_CHUNK = 1 << 16
_PROGRESS_INTERVAL = 0.05  # seconds between progress callbacks
_HEX = re.compile(r"[0-9a-fA-F]+")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


@dataclass(frozen=True)
class Expected:
    """The hashes a download must have (hex). At least one must be set."""

    sha256: str | None = None
    md5: str | None = None  # legacy upstream checksum

    def __post_init__(self) -> None:
        if self.sha256 is None and self.md5 is None:
            raise ValueError("Expected needs a sha256 or an md5")
        for name, value, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if value is not None and (len(value) != length or not _HEX.fullmatch(value)):
                raise ValueError(f"expected {name} must be {length} hex digits, not {value!r}")


@dataclass(frozen=True)
class Fetched:
    """A verified download, now at ``path``; the digests are hex."""

    path: Path
    url: str
    size: int
    sha256: str
    md5: str


class _Transient(Exception):
    """This attempt failed in a way worth retrying (with resume)."""


class _Permanent(Exception):
    """This URL will not work; go to the next mirror."""


class _Mismatch(_Permanent):
    """The URL served a complete body with the wrong hash."""

    def __init__(self, algorithm: str, expected: str, got: str) -> None:
        super().__init__(f"served {algorithm} {got}, expected {expected}")
        self.algorithm, self.expected, self.got = algorithm, expected, got


class _Restart(Exception):
    """The partial file was discarded; try again from zero at once."""


class _Local(Exception):
    """Reading or writing our own files failed; no mirror can help."""


@dataclass(frozen=True)
class _Job:
    client: httpx.Client
    partial: Path
    expected: Expected
    on_progress: ProgressFn | None
    retries: int
    backoff: float
    timeout: float


class _Sink:
    """The partial file being written, with running hashes and throttled progress."""

    def __init__(self, job: _Job, start: int, total: int | None) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.start = start
        self.total = total
        self._report = job.on_progress
        self._last = 0.0
        try:
            job.partial.parent.mkdir(parents=True, exist_ok=True)
            if start:
                with open(job.partial, "rb") as old:
                    while self.size < start and (chunk := old.read(min(1 << 20, start))):
                        self._hash(chunk[: start - self.size])
                if self.size != start:
                    raise _Restart  # the partial file shrank under us
                self._file: IO[bytes] = open(job.partial, "r+b")  # noqa: SIM115
                self._file.truncate(start)
                self._file.seek(start)
            else:
                self._file = open(job.partial, "wb")  # noqa: SIM115
        except OSError as exc:
            raise _Local(f"cannot write {job.partial}: {exc}") from exc
        self.progress(force=True)

    def _hash(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)
        self.size += len(chunk)

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise _Local(f"cannot write {self._file.name}: {exc}") from exc
        self._hash(chunk)
        self.progress()

    def progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._report is not None and (force or now - self._last >= _PROGRESS_INTERVAL):
            self._last = now
            self._report(self.size, self.total)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise _Local(f"cannot write {self._file.name}: {exc}") from exc

    def drain(self, chunks: Iterable[bytes]) -> _Sink:
        """Write every chunk, then check the length against ``total`` when known."""
        try:
            for chunk in chunks:
                self.write(chunk)
        finally:
            self.close()
        if self.total is not None and self.size < self.total:
            raise _Transient(f"transfer ended after {self.size} of {self.total} bytes")
        self.progress(force=True)
        return self


def _partial_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise _Local(f"cannot read {path}: {exc}") from exc


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise _Local(f"cannot remove {path}: {exc}") from exc


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, complete length) of a Content-Range header, None where unknown."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if m is None:
        return None, None
    first = int(m.group(1)) if m.group(1) else None
    return first, int(m.group(3)) if m.group(3) != "*" else None


def _check_status(resp: httpx.Response) -> None:
    code = resp.status_code
    if 200 <= code < 300:
        return
    what = f"HTTP {code} {resp.reason_phrase}".rstrip()
    if http.retryable(code):
        raise _Transient(what)
    raise _Permanent(what)


def _http_attempt(job: _Job, url: str) -> _Sink:
    offset = _partial_size(job.partial)
    headers = http.request_headers()
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with job.client.stream(
        "GET", url, headers=headers, follow_redirects=True, timeout=job.timeout
    ) as resp:
        first, complete = _content_range(resp.headers.get("content-range"))
        if resp.status_code == 416 and offset:
            if complete == offset:  # the partial file already holds the whole body
                return _Sink(job, offset, offset).drain(())
            _discard(job.partial)
            raise _Restart
        _check_status(resp)
        start = 0
        if resp.status_code == 206:
            if not offset or first != offset:
                _discard(job.partial)
                raise _Restart if offset else _Permanent("HTTP 206 to a request without Range")
            start = offset
        length = resp.headers.get("content-length")
        total = start + int(length) if length and length.isdigit() else complete
        return _Sink(job, start, total).drain(resp.iter_raw())


def _read_file(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    except OSError as exc:
        raise _Permanent(f"cannot read: {exc}") from exc


def _file_attempt(job: _Job, url: str) -> _Sink:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise _Permanent(f"file URL on another host {parts.netloc!r}")
    source = Path(urllib.request.url2pathname(parts.path))
    try:
        handle = open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        raise _Permanent(f"cannot open {source}: {exc.strerror or exc}") from exc
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise _Permanent(f"cannot stat {source}: {exc}") from exc
        offset = _partial_size(job.partial)
        start = offset if 0 < offset <= size else 0
        handle.seek(start)
        return _Sink(job, start, size).drain(_read_file(handle))


def _attempt(job: _Job, url: str) -> _Sink:
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return _file_attempt(job, url)
    if scheme not in ("http", "https"):
        raise _Permanent(f"unsupported URL scheme {scheme + '://' if scheme else 'none'}")
    try:
        return _http_attempt(job, url)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError
        if http.retryable_error(exc):
            raise _Transient(http.describe(exc)) from exc
        raise _Permanent(http.describe(exc)) from exc


def _with_retries(job: _Job, url: str) -> _Sink:
    """Run attempts on one URL until one completes; raise _Permanent when it gives up."""
    failures = restarts = 0
    while True:
        try:
            return _attempt(job, url)
        except _Restart:
            restarts += 1
            if restarts > 2:
                raise _Permanent("server keeps rejecting resumed transfers") from None
        except _Transient as exc:
            if failures >= job.retries:
                raise _Permanent(f"{exc} (gave up after {failures + 1} attempts)") from exc
            time.sleep(http.backoff_delay(job.backoff, failures))
            failures += 1


def _mismatch(expected: Expected, got: _Sink) -> tuple[str, str, str] | None:
    """(algorithm, expected, got) of the first hash that does not match, else None."""
    pairs = (("sha256", expected.sha256, got.sha256), ("md5", expected.md5, got.md5))
    for name, want, digest in pairs:
        if want is not None and digest.hexdigest() != want.lower():
            return name, want.lower(), digest.hexdigest()
    return None


def _from_url(job: _Job, url: str) -> _Sink:
    """Download and verify one URL; raise _Permanent (with a mismatch noted) on failure."""
    inherited = _partial_size(job.partial) > 0  # a prefix this URL may not have served
    got = _with_retries(job, url)
    bad = _mismatch(job.expected, got)
    if bad is not None and inherited and got.start > 0:
        _discard(job.partial)
        got = _with_retries(job, url)
        bad = _mismatch(job.expected, got)
    if bad is not None:
        _discard(job.partial)
        raise _Mismatch(*bad)
    return got


def _failure(label: str, details: list[str], mismatches: list[_Mismatch]) -> FetchError:
    if mismatches:
        m = mismatches[0]
        return FetchError(
            f"Download of {label} has the wrong {m.algorithm}: expected {m.expected}, got {m.got}.",
            details=details,
            hint="The upstream file changed or a mirror is corrupt; check the recipe's hash.",
        )
    return FetchError(
        f"Could not download {label} from any of its {len(details)} URL(s).",
        details=details,
        hint="Check the URLs and the network (HTTP(S)_PROXY); a rerun resumes partial data.",
    )


@contextlib.contextmanager
def _client(client: httpx.Client | None, timeout: float) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with http.new_client(timeout) as own:
        yield own


def fetch(
    urls: Sequence[str],
    dest: Path,
    expected: Expected,
    *,
    partial: Path,
    label: str,
    on_progress: ProgressFn | None = None,
    retries: int = 4,
    backoff: float = 0.25,
    timeout: float = 30.0,
    client: httpx.Client | None = None,
) -> Fetched:
    """Download ``label`` from the first mirror in ``urls`` that serves the expected bytes.

    See the module docstring for the full contract.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise FetchError(f"No URL to download {label} from.")
    details: list[str] = []
    mismatches: list[_Mismatch] = []
    try:
        with _client(client, timeout) as http:
            job = _Job(http, partial, expected, on_progress, retries, backoff, timeout)
            for url in urls:
                try:
                    got = _from_url(job, url)
                except _Permanent as exc:
                    details.append(f"{url}: {exc}")
                    if isinstance(exc, _Mismatch):
                        mismatches.append(exc)
                    continue
                _install(partial, dest)
                return Fetched(dest, url, got.size, got.sha256.hexdigest(), got.md5.hexdigest())
    except _Local as exc:
        if is_full(exc.__cause__ or exc):
            # The partial file is what filled the disk: keeping it for a resumption would
            # leave every other command without space.
            with contextlib.suppress(OSError):
                partial.unlink()
            raise disk_full(partial.parent, f"the download of {label}") from None
        raise FetchError(f"Could not store the download of {label}: {exc}.") from exc
    raise _failure(label, details, mismatches)


def _install(partial: Path, dest: Path) -> None:
    try:
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, dest)
        fsync_dir(dest.parent)  # the new name is durable too
    except OSError as exc:
        raise _Local(f"cannot move {partial} to {dest}: {exc}") from exc
