"""A wheel's core metadata (``*.dist-info/METADATA``), read without downloading the wheel.

Contract of :func:`read_remote_wheel_metadata` (``client``, ``url``) → METADATA text:

* It reads the remote zip with :mod:`zipfile` through a
  :class:`~mlpkg.importer.rangefile.RangeFile`, which fetches by HTTP range requests only
  the bytes zipfile reads: first a suffix range (``bytes=-TAIL_BYTES``) for the end of the
  file, which holds the End Of Central Directory record wherever a zip comment puts it
  (ZIP64 records too) and, for most wheels, the central directory; then the central
  directory (unless the suffix already covered it); then the local file header and
  compressed data of the one top-level ``*.dist-info/METADATA`` member, with one request
  (unless already covered). A usual wheel thus takes one or two requests. Stored and
  deflated members are supported; the CRC-32 and size are checked. (Like zipfile, it
  tolerates bytes added before the zip, as self-extracting archives have.)
* A server that ignores ``Range`` (answers 200 with the whole body) is tolerated: the whole
  wheel is then read once, and ``on_progress`` is told so.
* Anything else (HTTP errors, a body that is not a zip or is truncated or corrupt, no
  METADATA, a METADATA over 32 MiB, an unsupported compression, a bad CRC) raises
  :class:`~mlpkg.errors.FetchError` naming the URL, in one sentence.

:func:`fetch_metadata_file` GETs a PEP 658 ``<url>.metadata`` file and checks its sha256
(a mismatch is a :class:`~mlpkg.errors.FetchError`; a missing file gives None).
:func:`parse_metadata` turns METADATA text into a :class:`CoreMetadata`.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx
from packaging.metadata import parse_email

from mlpkg.errors import FetchError
from mlpkg.importer.rangefile import RangeAnswerError, RangeFile
from mlpkg.importer.transport import get

Progress = Callable[[str], None]

__all__ = ["CoreMetadata", "fetch_metadata_file", "parse_metadata", "read_remote_wheel_metadata"]

# The first suffix read: it holds all that zipfile searches for the end record (the last
# 64 KiB + 22 bytes, room for the longest zip comment) and the ZIP64 records before it, so
# that takes no second request; for most wheels, it holds the central directory too.
TAIL_BYTES = 65 * 1024
_MAX_METADATA = 32 * 1024 * 1024
_LOCAL_HEADER = 30  # the fixed part of a zip local file header
_LOCAL_SLACK = 1024  # room for a local header's extra field, which may differ from central
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
    """The error for the wheel at ``url``, whose metadata cannot be read for ``reason``."""
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


def _open_zip(remote: RangeFile, url: str) -> zipfile.ZipFile:
    """The zip directory of ``remote`` (zipfile reads the end records and the directory)."""
    try:
        return zipfile.ZipFile(remote)
    except zipfile.BadZipFile as exc:
        if str(exc) == "File is not a zip file":
            raise _bad(url, "it is not a zip file (no end of central directory record)") from exc
        raise _bad(url, f"its zip directory is corrupt ({exc})") from exc
    except (EOFError, OSError, ValueError) as exc:  # e.g. an undecodable UTF-8 member name
        raise _bad(url, f"its zip directory is corrupt ({exc})") from exc


def _pick_metadata(url: str, members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The top-level ``*.dist-info/METADATA`` member; of several, the one whose dist-info is
    named like the wheel file."""
    found = [m for m in members if _METADATA_MEMBER.fullmatch(m.filename)]
    if not found:
        raise _bad(url, "it has no *.dist-info/METADATA")
    if len(found) > 1:  # prefer the dist-info named like the wheel file
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        stem = "-".join(filename.split("-")[:2]).lower()
        found.sort(key=lambda m: m.filename.split(".dist-info")[0].lower() != stem)
    return found[0]


def _extract(zf: zipfile.ZipFile, remote: RangeFile, member: zipfile.ZipInfo) -> bytes:
    """The bytes of ``member``, fetched with (at most) one request for its local header
    and its data together."""
    url = remote.url
    if max(member.file_size, member.compress_size) > _MAX_METADATA:
        raise _bad(url, f"its METADATA claims {max(member.file_size, member.compress_size)} bytes")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _bad(url, f"its METADATA uses zip compression method {member.compress_type}")
    name_room = len(member.orig_filename.encode("utf-8")) + _LOCAL_SLACK
    remote.prefetch(
        member.header_offset,
        member.header_offset + _LOCAL_HEADER + name_room + member.compress_size,
    )
    try:
        return zf.read(member)
    except zlib.error as exc:
        raise _bad(url, f"its METADATA does not inflate ({exc})") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, EOFError) or str(exc).startswith("Bad CRC-32"):
            raise _bad(url, "its METADATA fails the size or CRC-32 check") from exc
        raise _bad(url, f"its METADATA cannot be read ({exc})") from exc
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. encrypted, or a bad offset
        raise _bad(url, f"its METADATA cannot be read ({exc})") from exc


def read_remote_wheel_metadata(
    client: httpx.Client, url: str, *, on_progress: Progress | None = None
) -> str:
    """The METADATA text of the remote wheel at ``url``, read by HTTP range requests."""

    def whole() -> None:
        if on_progress is not None:
            on_progress(f"the server ignores HTTP Range requests; reading the whole wheel {url}")

    try:
        remote = RangeFile(client, url, tail=TAIL_BYTES, on_whole=whole)
        if remote.size == 0:
            raise _bad(url, "it is empty")
        with _open_zip(remote, url) as zf:
            data = _extract(zf, remote, _pick_metadata(url, zf.infolist()))
    except RangeAnswerError as exc:
        raise _bad(url, exc.reason) from exc
    return data.decode("utf-8", errors="replace")
