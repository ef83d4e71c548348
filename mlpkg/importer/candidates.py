"""The releases of a project that suit a target interpreter, and their metadata.

Contract:

* :class:`Project` groups an index's files by version (wheels only; sdists are remembered
  only to say why a version cannot be used). For each version :meth:`Project.release` picks
  the wheel whose tags rank best in ``target.tags`` (ties: the higher build number), among
  files that are not yanked (unless ``allow_yanked``), carry a sha256 or md5, and whose
  Requires-Python (as the index gives it) admits the target. :meth:`Project.reason` says in
  words why a version has no such wheel (None when it has one).
* :class:`IndexSource` fetches and caches projects and metadata: metadata comes from the
  PEP 658 ``.metadata`` file when the index offers one (verified; a missing file falls back),
  otherwise from the remote wheel by range requests (:mod:`mlpkg.importer.metadata`).
  :meth:`IndexSource.for_target` judges the same index for another interpreter, sharing
  what was read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from packaging.tags import Tag
from packaging.utils import (
    BuildTag,
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from mlpkg.errors import FetchError
from mlpkg.importer.index import DistFile, fetch_project
from mlpkg.importer.metadata import (
    CoreMetadata,
    fetch_metadata_file,
    parse_metadata,
    read_remote_wheel_metadata,
)
from mlpkg.importer.target import Target

__all__ = ["IndexSource", "Project", "Release"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Release:
    """One version of a project and the wheel chosen for the target."""

    name: str  # canonical
    version: Version
    version_text: str  # as the wheel's file name writes it
    file: DistFile


@dataclass(frozen=True)
class _Wheel:
    file: DistFile
    version_text: str
    build: BuildTag
    tags: frozenset[Tag]


def _interpreter_key(tag: str) -> tuple[str, int]:
    m = re.fullmatch(r"([a-z]+)(\d*)", tag)
    return (m.group(1), int(m.group(2) or 0)) if m else (tag, 0)


class Project:
    """The wheels of one project, by version, judged for one target."""

    def __init__(self, name: str, files: list[DistFile], target: Target) -> None:
        self.name = str(canonicalize_name(name))
        self.target = target
        self._rank = {tag: i for i, tag in enumerate(target.tags)}
        self.wheels: dict[Version, list[_Wheel]] = {}
        self.sdists: set[Version] = set()
        for f in files:
            if f.filename.endswith(".whl"):
                try:
                    wname, version, build, tags = parse_wheel_filename(f.filename)
                except InvalidWheelFilename:
                    continue
                if wname == self.name:
                    text = f.filename.split("-")[1]
                    self.wheels.setdefault(version, []).append(_Wheel(f, text, build, tags))
            else:
                try:
                    sname, version = parse_sdist_filename(f.filename)
                except InvalidSdistFilename:
                    continue
                if sname == self.name:
                    self.sdists.add(version)

    @property
    def versions(self) -> list[Version]:
        """Every version the index lists (wheels or sdists), newest first."""
        return sorted(set(self.wheels) | self.sdists, reverse=True)

    def _rank_of(self, wheel: _Wheel) -> int | None:
        ranks = [self._rank[str(t)] for t in wheel.tags if str(t) in self._rank]
        return min(ranks) if ranks else None

    def _judge(self, version: Version, allow_yanked: bool) -> tuple[_Wheel | None, str]:
        """(the best wheel, "") or (None, why there is none)."""
        wheels = self.wheels.get(version, [])
        if not wheels:
            if version in self.sdists:
                return None, "has no wheels (only a source distribution)"
            return None, "does not exist on the index"
        usable = [w for w in wheels if allow_yanked or not w.file.yanked]
        if not usable:
            return None, "is yanked"
        ranked = [(r, w) for w in usable if (r := self._rank_of(w)) is not None]
        if not ranked:
            interpreters = sorted(
                {t.interpreter for w in usable for t in w.tags}, key=_interpreter_key
            )
            return None, (
                f"has no wheel for {self.target.describe()} "
                f"(its wheels are for {', '.join(interpreters[:10])})"
            )
        fitting = [(r, w) for r, w in ranked if self.target.python_ok(w.file.requires_python)]
        if not fitting:
            return None, f"requires Python {ranked[0][1].file.requires_python}"
        hashed = [(r, w) for r, w in fitting if w.file.sha256 or w.file.md5]
        if not hashed:
            return None, "has no sha256 for its wheel on the index"
        hashed.sort(key=lambda rw: rw[1].build, reverse=True)
        return min(hashed, key=lambda rw: rw[0])[1], ""

    def release(self, version: Version, *, allow_yanked: bool = False) -> Release | None:
        """The release with the best wheel for the target, or None (see :meth:`reason`)."""
        wheel, _ = self._judge(version, allow_yanked)
        if wheel is None:
            return None
        return Release(self.name, version, wheel.version_text, wheel.file)

    def reason(self, version: Version, *, allow_yanked: bool = False) -> str | None:
        """Why ``version`` has no usable wheel for the target, or None if it has one."""
        wheel, why = self._judge(version, allow_yanked)
        return None if wheel is not None else why


class IndexSource:
    """An index, with every project page and metadata file fetched at most once."""

    def __init__(
        self, client: httpx.Client, index_url: str, target: Target, on_progress: Progress
    ) -> None:
        self.client, self.index_url, self.target = client, index_url, target
        self.progress = on_progress
        self._files: dict[str, list[DistFile]] = {}  # by canonical name, for every target
        self._projects: dict[str, Project] = {}
        self._metadata: dict[str, CoreMetadata] = {}  # by wheel URL, for every target

    def for_target(self, target: Target) -> IndexSource:
        """The same index judged for another interpreter: project pages and metadata read
        by either are read once for both."""
        other = IndexSource(self.client, self.index_url, target, self.progress)
        other._files, other._metadata = self._files, self._metadata
        return other

    def project(self, name: str) -> Project:
        key = str(canonicalize_name(name))
        if key not in self._projects:
            if key not in self._files:
                self.progress(f"{key}: reading the index")
                self._files[key] = fetch_project(self.client, self.index_url, key)
            self._projects[key] = Project(key, self._files[key], self.target)
        return self._projects[key]

    def versions(self, name: str) -> list[Version] | None:
        """Every version the index lists of ``name``, if its page was read already."""
        files = self._files.get(str(canonicalize_name(name)))
        return None if files is None else Project(name, files, self.target).versions

    def metadata(self, release: Release) -> CoreMetadata:
        url = release.file.url
        if url not in self._metadata:
            text = None
            if release.file.has_metadata:
                text = fetch_metadata_file(self.client, url, release.file.metadata_sha256)
            if text is None:
                self.progress(
                    f"{release.name} {release.version_text}: reading METADATA from the wheel"
                )
                text = read_remote_wheel_metadata(self.client, url, on_progress=self.progress)
            meta = parse_metadata(text)
            if meta.name and canonicalize_name(meta.name) != release.name:
                raise FetchError(
                    f"The wheel {url} holds the metadata of '{meta.name}', not '{release.name}'."
                )
            self._metadata[url] = meta
        return self._metadata[url]
