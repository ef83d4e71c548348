"""A wheel's core metadata (``*.dist-info/METADATA``), read without downloading the wheel.

Contract of :func:`read_remote_wheel_metadata` (``client``, ``url``) → METADATA text:

* It reads the remote zip by HTTP range requests: first a suffix range (``bytes=-N``) for the
  end of the file, which holds the End Of Central Directory record (ZIP64 too: the ZIP64
  locator and record are followed when present); then the central directory (unless the
  suffix already covered it); then the local file header and compressed data of the one
  top-level ``*.dist-info/METADATA`` member (unless already covered). Stored and deflated
  members are supported; the CRC-32 and size are checked.
* A server that ignores ``Range`` (answers 200 with the whole body) is tolerated: the whole
  wheel is then read once, and ``on_progress`` is told so.
* Anything else (HTTP errors, a body that is not a zip, no METADATA, an unsupported
  compression, a bad CRC) raises :class:`~mlpkg.errors.FetchError` naming the URL.

:func:`fetch_metadata_file` GETs a PEP 658 ``<url>.metadata`` file and checks its sha256
(a mismatch is a :class:`~mlpkg.errors.FetchError`; a missing file gives None).
:func:`parse_metadata` turns METADATA text into a :class:`CoreMetadata`.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx
from packaging.metadata import parse_email

from mlpkg.errors import FetchError
from mlpkg.importer.transport import get

Progress = Callable[[str], None]

__all__ = ["CoreMetadata", "fetch_metadata_file", "parse_metadata", "read_remote_wheel_metadata"]

TAIL_BYTES = 64 * 1024  # the first suffix read: EOCD plus, for most wheels, the directory
_MAX_COMMENT = 0xFFFF
_MAX_METADATA = 32 * 1024 * 1024
_LOCAL_SLACK = 1024  # room for a local header's extra field, which may differ from central

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_SIG_EOCD, _SIG_LOCATOR = b"PK\x05\x06", b"PK\x06\x07"
_SIG_ZIP64, _SIG_CENTRAL, _SIG_LOCAL = b"PK\x06\x06", b"PK\x01\x02", b"PK\x03\x04"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_METADATA_MEMBER = re.compile(r"([^/]+)\.dist-info/METADATA")


@dataclass(frozen=True)
class CoreMetadata:
    """The fields of METADATA the importer uses."""

    name: str
    version: str
    summary: str
    requires_python: str | None
    requires_dist: tuple[str, ...]


def parse_metadata(text: str) -> CoreMetadata:
    """Parse METADATA text leniently (unknown or malformed fields are ignored)."""
    raw, _ = parse_email(text)
    summary = (raw.get("summary") or "").strip().splitlines()
    return CoreMetadata(
        name=raw.get("name", ""),
        version=raw.get("version", ""),
        summary=summary[0].strip() if summary else "",
        requires_python=(raw.get("requires_python") or "").strip() or None,
        requires_dist=tuple(raw.get("requires_dist", [])),
    )


def _bad(url: str, reason: str) -> FetchError:
    return FetchError(f"Could not read the metadata of the wheel {url}: {reason}.")


def fetch_metadata_file(client: httpx.Client, url: str, sha256: str | None) -> str | None:
    """GET ``url`` + ``.metadata`` (PEP 658) and check it against ``sha256`` when given;
    None when the server has no such file (404/410)."""
    meta_url = url.split("#", 1)[0] + ".metadata"
    resp = get(client, meta_url, accept=(200, 404, 410))
    if resp.status_code != 200:
        return None
    body = resp.content
    if sha256 is not None and hashlib.sha256(body).hexdigest() != sha256.lower():
        raise FetchError(
            f"The metadata file {meta_url} does not match the sha256 the index gives "
            f"({sha256.lower()}, got {hashlib.sha256(body).hexdigest()})."
        )
    return body.decode("utf-8", errors="replace")


class _Remote:
    """A remote file read by byte ranges; the spans already fetched are kept."""

    def __init__(self, client: httpx.Client, url: str, on_progress: Progress | None) -> None:
        self.client, self.url, self.on_progress = client, url, on_progress
        self.size = 0
        self.spans: list[tuple[int, bytes]] = []

    def _whole(self, body: bytes) -> None:
        if self.on_progress is not None:
            self.on_progress(
                f"the server ignores HTTP Range requests; reading the whole wheel {self.url}"
            )
        self.size, self.spans = len(body), [(0, body)]

    def open(self) -> None:
        """Fetch the tail of the file, learning its size."""
        resp = get(
            self.client, self.url, headers={"Range": f"bytes=-{TAIL_BYTES}"}, accept=(200, 206)
        )
        if resp.status_code == 200:
            return self._whole(resp.content)
        m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
        if m is None or m.group(3) == "*":
            raise _bad(
                self.url, "the server's answer to a range request has no usable Content-Range"
            )
        self.size = int(m.group(3))
        self._keep(int(m.group(1)), int(m.group(2)), resp.content)
        return None

    def _keep(self, first: int, last: int, body: bytes) -> None:
        if len(body) != last - first + 1:
            raise _bad(
                self.url, f"the server sent {len(body)} bytes for a {last - first + 1}-byte range"
            )
        self.spans.append((first, body))

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file (fetched unless already held)."""
        if start < 0 or end > self.size or start > end:
            raise _bad(self.url, f"it points at bytes {start}-{end} of a {self.size}-byte file")
        for first, data in self.spans:
            if first <= start and end <= first + len(data):
                return data[start - first : end - first]
        if start == end:
            return b""
        resp = get(
            self.client, self.url, headers={"Range": f"bytes={start}-{end - 1}"}, accept=(200, 206)
        )
        if resp.status_code == 200:
            self._whole(resp.content)
            return resp.content[start:end]
        m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
        if m is None or int(m.group(1)) != start:
            raise _bad(
                self.url, f"the server answered the range {start}-{end - 1} with another one"
            )
        self._keep(start, int(m.group(2)), resp.content)
        return resp.content[: end - start]


def _find_eocd(remote: _Remote) -> tuple[int, bytes]:
    """(offset, bytes from there to the end) of the End Of Central Directory record."""
    for window in (TAIL_BYTES, _EOCD.size + _MAX_COMMENT + _ZIP64_LOCATOR.size):
        start = max(0, remote.size - window)
        data = remote.read(start, remote.size)
        pos = len(data)
        while (pos := data.rfind(_SIG_EOCD, 0, pos)) >= 0:
            if pos + _EOCD.size <= len(data):
                comment = _EOCD.unpack_from(data, pos)[7]
                if pos + _EOCD.size + comment == len(data):
                    return start + pos, data[pos:]
        if start == 0:
            break
    raise _bad(remote.url, "it is not a zip file (no end of central directory record)")


def _central_directory(remote: _Remote) -> bytes:
    eocd_at, eocd = _find_eocd(remote)
    _, _, _, _, _, cd_size, cd_offset, _ = _EOCD.unpack_from(eocd)
    if eocd_at >= _ZIP64_LOCATOR.size:
        locator = remote.read(eocd_at - _ZIP64_LOCATOR.size, eocd_at)
        sig, _, zip64_at, _ = _ZIP64_LOCATOR.unpack(locator)
        if sig == _SIG_LOCATOR:
            if zip64_at + _ZIP64_EOCD.size > remote.size:
                raise _bad(remote.url, "its ZIP64 locator points past the end of the file")
            record = _ZIP64_EOCD.unpack(remote.read(zip64_at, zip64_at + _ZIP64_EOCD.size))
            if record[0] != _SIG_ZIP64:
                raise _bad(remote.url, "its ZIP64 end of central directory record is missing")
            cd_size, cd_offset = record[8], record[9]
    if cd_offset + cd_size > remote.size:
        raise _bad(remote.url, "its central directory lies past the end of the file")
    return remote.read(cd_offset, cd_offset + cd_size)


@dataclass(frozen=True)
class _Member:
    name: str
    method: int
    crc: int
    compressed: int
    size: int
    offset: int


def _zip64_extra(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Replace the 0xFFFFFFFF fields by their values from a ZIP64 extra field (id 1)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == 1:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if size == 0xFFFFFFFF and values:
                size = values.pop(0)
            if compressed == 0xFFFFFFFF and values:
                compressed = values.pop(0)
            if offset == 0xFFFFFFFF and values:
                offset = values.pop(0)
            break
        pos += 4 + length
    return size, compressed, offset


def _members(directory: bytes) -> list[_Member]:
    members: list[_Member] = []
    pos = 0
    while pos + _CENTRAL.size <= len(directory):
        fields = _CENTRAL.unpack_from(directory, pos)
        if fields[0] != _SIG_CENTRAL:
            break
        flags, method, crc, compressed, size = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len, offset = fields[10], fields[11], fields[12], fields[16]
        raw_name = directory[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        extra_at = pos + _CENTRAL.size + name_len
        extra = directory[extra_at : extra_at + extra_len]
        size, compressed, offset = _zip64_extra(extra, size, compressed, offset)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        members.append(_Member(name, method, crc, compressed, size, offset))
        pos = extra_at + extra_len + comment_len
    return members


def _pick_metadata(url: str, members: list[_Member]) -> _Member:
    found = [m for m in members if _METADATA_MEMBER.fullmatch(m.name)]
    if not found:
        raise _bad(url, "it has no *.dist-info/METADATA")
    if len(found) > 1:  # prefer the dist-info named like the wheel file
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        stem = "-".join(filename.split("-")[:2]).lower()
        found.sort(key=lambda m: m.name.split(".dist-info")[0].lower() != stem)
    return found[0]


def _extract(remote: _Remote, member: _Member) -> bytes:
    if member.size > _MAX_METADATA:
        raise _bad(remote.url, f"its METADATA claims {member.size} bytes")
    name_room = len(member.name.encode("utf-8")) + _LOCAL_SLACK
    end = min(remote.size, member.offset + _LOCAL.size + name_room + member.compressed)
    remote.read(member.offset, end)  # one request for the header and the data together
    head = remote.read(member.offset, min(remote.size, member.offset + _LOCAL.size))
    if len(head) < _LOCAL.size or head[:4] != _SIG_LOCAL:
        raise _bad(remote.url, "the local header of its METADATA is missing")
    local = _LOCAL.unpack(head)
    data_at = member.offset + _LOCAL.size + local[9] + local[10]
    if data_at + member.compressed > remote.size:
        raise _bad(remote.url, "its METADATA runs past the end of the file")
    data = remote.read(data_at, data_at + member.compressed)
    if member.method == 0:
        out = data
    elif member.method == 8:
        try:
            inflater = zlib.decompressobj(-15)
            out = inflater.decompress(data, member.size + 1) + inflater.flush()
        except zlib.error as exc:
            raise _bad(remote.url, f"its METADATA does not inflate ({exc})") from exc
    else:
        raise _bad(remote.url, f"its METADATA uses zip compression method {member.method}")
    if len(out) != member.size or zlib.crc32(out) != member.crc:
        raise _bad(remote.url, "its METADATA fails the size or CRC-32 check")
    return out


def read_remote_wheel_metadata(
    client: httpx.Client, url: str, *, on_progress: Progress | None = None
) -> str:
    """The METADATA text of the remote wheel at ``url``, read by HTTP range requests."""
    remote = _Remote(client, url, on_progress)
    remote.open()
    if remote.size == 0:
        raise _bad(url, "it is empty")
    member = _pick_metadata(url, _members(_central_directory(remote)))
    return _extract(remote, member).decode("utf-8", errors="replace")
