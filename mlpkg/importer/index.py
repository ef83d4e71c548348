"""A Python package index's "simple" API: the files of a project, and the user's index URL.

Contract:

* :func:`fetch_project` GETs ``{index_url}/{canonical-name}/`` asking for the PEP 691 JSON
  form (``Accept: application/vnd.pypi.simple.v1+json``, HTML accepted at lower priority),
  and parses whichever the server sent (JSON by its Content-Type, otherwise the PEP 503 HTML
  page: anchors, ``#sha256=`` fragments, ``data-requires-python``, ``data-yanked``,
  ``data-core-metadata``/``data-dist-info-metadata``). File URLs are made absolute against
  the page's final URL. A 404 raises :class:`~mlpkg.errors.UnknownPackage` naming the
  project; network and other HTTP failures raise :class:`~mlpkg.errors.FetchError` naming
  the URL.
* :func:`index_url_from_environment` finds the index the user configured for pip or uv:
  ``PIP_INDEX_URL``, ``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``; then ``index-url`` in the
  ``[global]`` (or ``[install]``) section of pip's configuration files, the most specific
  first (``PIP_CONFIG_FILE``, ``$VIRTUAL_ENV/pip.conf``, ``~/.config/pip/pip.conf``,
  ``~/.pip/pip.conf``, ``/etc/pip.conf``, ``/etc/xdg/pip/pip.conf``); else
  ``https://pypi.org/simple``. Trailing slashes are removed.
"""

from __future__ import annotations

import configparser
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import httpx
from packaging.utils import canonicalize_name

from mlpkg.errors import FetchError, UnknownPackage
from mlpkg.importer.transport import get

__all__ = [
    "DEFAULT_INDEX",
    "DistFile",
    "fetch_project",
    "index_url_from_environment",
    "parse_html_page",
    "parse_json_page",
    "project_url",
]

DEFAULT_INDEX = "https://pypi.org/simple"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


@dataclass(frozen=True)
class DistFile:
    """One file of a project as the index lists it (hashes in lower-case hex)."""

    filename: str
    url: str  # absolute, without a fragment
    sha256: str | None = None
    md5: str | None = None
    requires_python: str | None = None
    yanked: bool = False
    has_metadata: bool = False  # a PEP 658 ``<url>.metadata`` file is served
    metadata_sha256: str | None = None


def project_url(index_url: str, name: str) -> str:
    return f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"


def _metadata_flag(value: Any) -> tuple[bool, str | None]:
    """(served, sha256) from a JSON ``core-metadata`` value or an HTML attribute value."""
    if isinstance(value, dict):
        digest = value.get("sha256")
        return True, digest.lower() if isinstance(digest, str) else None
    if isinstance(value, str):  # HTML: "true" or "sha256=<hex>"
        algo, _, digest = value.partition("=")
        return True, digest.lower() if algo == "sha256" and digest else None
    return bool(value), None


def parse_json_page(data: Any, base_url: str) -> list[DistFile]:
    """The files of a PEP 691 JSON project page (already decoded)."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("it has no 'files' list")
    files: list[DistFile] = []
    for entry in data["files"]:
        if not isinstance(entry, dict) or not entry.get("filename") or not entry.get("url"):
            continue
        raw_hashes = entry.get("hashes")
        hashes: dict[str, Any] = raw_hashes if isinstance(raw_hashes, dict) else {}
        meta = entry.get("core-metadata", entry.get("dist-info-metadata", False))
        has_meta, meta_sha = _metadata_flag(meta)
        url = urldefrag(urljoin(base_url, str(entry["url"]))).url
        requires_python = entry.get("requires-python")
        files.append(
            DistFile(
                filename=str(entry["filename"]),
                url=url,
                sha256=_hex(hashes.get("sha256")),
                md5=_hex(hashes.get("md5")),
                requires_python=requires_python if isinstance(requires_python, str) else None,
                yanked=entry.get("yanked") is True or isinstance(entry.get("yanked"), str),
                has_metadata=has_meta,
                metadata_sha256=meta_sha,
            )
        )
    return files


def _hex(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.base: str | None = None
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_html_page(text: str, base_url: str) -> list[DistFile]:
    """The files of a PEP 503 HTML project page."""
    parser = _Anchors()
    parser.feed(text)
    parser.close()
    base = urljoin(base_url, parser.base) if parser.base else base_url
    files: list[DistFile] = []
    for attrs, label in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(base, href))
        algo, _, digest = fragment.partition("=")
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or label
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        has_meta, meta_sha = _metadata_flag(meta) if meta is not None else (False, None)
        files.append(
            DistFile(
                filename=filename,
                url=url,
                sha256=digest.lower() if algo == "sha256" and digest else None,
                md5=digest.lower() if algo == "md5" and digest else None,
                requires_python=attrs.get("data-requires-python") or None,
                yanked="data-yanked" in attrs,
                has_metadata=has_meta,
                metadata_sha256=meta_sha,
            )
        )
    return files


def fetch_project(client: httpx.Client, index_url: str, name: str) -> list[DistFile]:
    """Every file the index lists for the project ``name``."""
    url = project_url(index_url, name)
    resp = get(client, url, headers={"Accept": _ACCEPT}, accept=(200, 404, 410))
    if resp.status_code != 200:
        raise UnknownPackage(
            f"The package index {index_url} has no project '{canonicalize_name(name)}'.",
            package=str(canonicalize_name(name)),
            hint="Check the spelling, or the index URL (PIP_INDEX_URL, pip.conf).",
        )
    base = str(resp.url)
    content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == JSON_TYPE or content_type.endswith("+json"):
            return parse_json_page(json.loads(resp.content), base)
        return parse_html_page(resp.content.decode(resp.encoding or "utf-8", "replace"), base)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FetchError(f"The package index page {url} is malformed: {exc}.") from exc


def _config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files, the most specific first."""
    home = Path(environ.get("HOME") or Path.home())
    files: list[Path] = []
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    if environ.get("VIRTUAL_ENV"):
        files.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    files += [config_home / "pip" / "pip.conf", home / ".pip" / "pip.conf", Path("/etc/pip.conf")]
    for xdg in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep):
        if xdg:
            files.append(Path(xdg) / "pip" / "pip.conf")
    return files


def _from_config(path: Path) -> str | None:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error, UnicodeDecodeError):
        return None
    for section in ("install", "global"):
        for key in ("index-url", "index_url"):
            if parser.has_option(section, key):
                value = parser.get(section, key).strip()
                if value:
                    return value
    return None


def index_url_from_environment(
    environ: Mapping[str, str] | None = None, config_files: Sequence[Path] | None = None
) -> str:
    """The index URL the user configured (see the module docstring); ``environ`` defaults
    to ``os.environ`` and ``config_files`` to pip's usual files."""
    env = os.environ if environ is None else environ
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        value = env.get(var, "").strip()
        if value:
            return value.split()[0].rstrip("/")
    for path in _config_files(env) if config_files is None else config_files:
        configured = _from_config(path)
        if configured is not None:
            return configured.split()[0].rstrip("/")
    return DEFAULT_INDEX
