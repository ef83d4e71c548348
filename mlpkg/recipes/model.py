"""The recipe model, format version 1 (design.md), validated by pydantic.

A recipe declares one package version: its ``kind``, its ``source`` (fetch), its
``inputs`` (specs, by the environment variable a build sees them under), its ``build``
script, how an ``external`` tool is detected, and the ``env`` a profile applies. Unknown
fields are errors, so typos do not pass silently.

Kinds in this version: ``fetch`` (fixed-output download), ``build`` (a sandboxed bash
script), ``external`` (a tool found on the machine), ``wheel`` (a Python wheel) and ``app``
(an application: a ``[run]`` command that ``mlpkg run`` starts in the activated closure,
and optionally a local Python package, ``[app]``, pinned by the digest of its files).
Each kind's rules (the tables it needs, whether it has inputs) are registered in
:mod:`mlpkg.recipes.kinds`, where a later kind registers its own.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlpkg.recipes import kinds

FORMAT_VERSION = 1
NAME_RE = r"[a-z0-9][a-z0-9._-]*"
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Fields that describe a recipe without changing what it makes: not hashed. (``variants``
# are alternatives; the ones selected are merged in and named by ``selected``.)
COSMETIC_FIELDS = frozenset({"summary", "aliases", "variants"})
VARIANT_KEYS = frozenset({"summary", "kind", "inputs", "source", "build", "external", "wheel",
                          "app", "run", "env", "remove"})  # fmt: skip
_DOTTED = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
RESERVED_INPUT_KEYS = frozenset({
    "PATH", "HOME", "TMPDIR", "out", "SOURCE_DATE_EPOCH", "TZ", "LC_ALL", "LANG", "TERM",
    "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "name", "version",
})  # fmt: skip
"""Variables the build sandbox sets itself (``mlpkg.store.sandbox.RESERVED_NAMES``, which
refuses them again at build time): an input may not take one as its name."""


class FieldError(ValueError):
    """A rule over several fields, reported under the ``field`` that must change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1} | {f"{p}b": 1000**i for i, p in enumerate("kmgtp", 1)}
_UNITS |= {f"{p}ib": 1024**i for i, p in enumerate("kmgtp", 1)}


def parse_size(value: Any) -> Any:
    """A byte count from an int or a string like ``"200GiB"``, ``"1.5 TB"`` (powers of 1000)
    or ``"512MiB"`` (powers of 1024); anything else is returned for pydantic to refuse."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        size = float(match[1]) * _UNITS[(match[2] or "").lower()] if match else None
        if size is None or size == float("inf"):  # "999…9PiB" overflows a float
            raise ValueError(f"'{value}' is not a size (a number of bytes, or e.g. '200GiB')")
        return int(size)
    return value


class Source(_Strict):
    """Where a fixed-output path comes from, and the hash it must have.

    ``max_unpacked_size`` (bytes, or a string such as ``"200GiB"``), ``max_unpack_ratio``
    and ``max_unpacked_files`` raise (or lower) the caps an unpacked archive must stay
    under (mlpkg.store.unpack); None is the default cap. They decide whether a path can be
    made, not what it is, so they are not part of its hash.
    """

    urls: list[str] = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    unpack: bool = False
    strip_components: int = Field(default=0, ge=0)
    max_unpacked_size: int | None = Field(default=None, ge=1, strict=True)
    max_unpack_ratio: float | None = Field(default=None, gt=0, allow_inf_nan=False, strict=True)
    max_unpacked_files: int | None = Field(default=None, ge=1, strict=True)

    @field_validator("max_unpacked_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @field_validator("urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^(https?|file)://", url):
                raise ValueError(f"'{url}' is not an http://, https:// or file:// URL")
        return urls

    @model_validator(mode="after")
    def _one_hash(self) -> Source:
        if self.sha256 is None and self.md5 is None:
            raise ValueError("a source needs sha256 (or, for legacy upstream checksums, md5)")
        if self.strip_components and not self.unpack:
            raise ValueError("strip_components needs unpack = true")
        for cap in ("max_unpacked_size", "max_unpack_ratio", "max_unpacked_files"):
            if getattr(self, cap) is not None and not self.unpack:
                raise ValueError(f"{cap} needs unpack = true")
        return self


class Build(_Strict):
    """A bash script; ``$out`` and every input are environment variables.

    ``network = true`` marks a build that downloads what no checksum can pin in advance
    (a dataset assembled by its upstream procedure): it runs with the network, says so in
    ``show``, and offline it fails naming the recipe and the way in without a network
    (``mlpkg add-file DIR``). ``expect`` lists paths that ``$out`` must contain; they are
    checked after the build and when a local copy is added in its place.
    """

    script: str = Field(min_length=1)
    network: bool = False
    expect: list[str] = []
    # The inputs the output still needs when it is used (its references, kept alive by the
    # collector and activated with it). None: all of them. A data artifact made by tools
    # (a dataset, a model) needs none: ``runtime_inputs = []``.
    runtime_inputs: list[str] | None = None

    @field_validator("expect")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or item.startswith("/") or ".." in item.split("/"):
                raise ValueError(f"'{item}' is not a relative path inside $out")
        return value


class AppSource(_Strict):
    """A local Python package installed as an app's code, pinned by content.

    ``package`` names an importable package whose directory is the source (the harness is
    ``mlpkg.harness``); ``path`` is instead a directory relative to the recipe file. The
    files matching ``include`` and not ``exclude`` are installed as
    ``lib/pythonX.Y/site-packages/<module>``.
    ``digest`` is what the loader computed over those files (mlpkg.recipes.appsource); a
    recipe may declare it to pin the source, and a lockfile always carries it, so a changed
    file is a new store path, never a silently different one.
    """

    package: str | None = Field(default=None, pattern=_DOTTED)
    path: str | None = None
    module: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    include: list[str] = Field(default=["*.py"], min_length=1)
    exclude: list[str] = []
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    # Where the loader found the source (not hashed: it depends on the machine).
    located: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> AppSource:
        if (self.package is None) == (self.path is None):
            raise ValueError("give exactly one of package, path")
        if self.path is not None and (self.path.startswith("/") or ".." in self.path.split("/")):
            raise ValueError(f"path '{self.path}' must be relative to the recipe's directory")
        return self


class RunCommand(_Strict):
    """What ``mlpkg run`` starts: argv, with ``${input}`` for an input's store path,
    ``${out}`` for the app's own path and ``${output}`` for the run directory. The user's
    extra arguments are appended."""

    command: list[str] = Field(min_length=1)
    description: str = ""


class External(_Strict):
    """How to find a tool on the machine and read its version."""

    detect: str = Field(min_length=1, description="a command printing the version")
    version_regex: str = Field(default=r"(\d+(?:\.\d+)+)")
    executables: list[str] = Field(min_length=1)
    # A built-in probe run with the found tool: "python" reads the interpreter's
    # implementation, ABI and accepted wheel tags (hashed), and links the base interpreter
    # (not a virtual environment's) into the store path.
    probe: Literal["python"] | None = None

    @field_validator("version_regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            if re.compile(value).groups < 1:
                raise ValueError("version_regex needs one capturing group")
        except re.error as e:
            raise ValueError(f"version_regex does not compile: {e}") from e
        return value

    @field_validator("executables")
    @classmethod
    def _plain_names(cls, names: list[str]) -> list[str]:
        for n in names:
            if "/" in n or not n or n.startswith("."):
                raise ValueError(f"'{n}' is not a plain executable name")
        return names


def _check_wheel_filename(value: str) -> str:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        parse_wheel_filename(value)
    except InvalidWheelFilename as e:
        raise ValueError(str(e)) from None
    return value


class WheelFile(_Strict):
    """One wheel of a release in ``[[wheel.files]]``: its file name (whose tags say which
    interpreters take it), where to get it, and its hash."""

    filename: str = Field(pattern=r"^[^/]+\.whl$")
    urls: list[str] = Field(min_length=1)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    @field_validator("filename")
    @classmethod
    def _parses(cls, value: str) -> str:
        return _check_wheel_filename(value)

    def source(self) -> Source:
        return Source(urls=self.urls, sha256=self.sha256, md5=self.md5)

    def python_versions(self) -> tuple[str, bool] | None:
        """The interpreter this file is for, from its tags: ("3.9", False) for a cp39
        wheel, ("3.8", True) for cp38-abi3 (3.8 and newer); None for a pure-Python or
        version-independent wheel (py3-none-any)."""
        from packaging.utils import parse_wheel_filename

        best: tuple[str, bool] | None = None
        for tag in parse_wheel_filename(self.filename)[3]:
            m = re.fullmatch(r"cp3(\d+)", tag.interpreter)
            if m is None:
                continue
            found = (f"3.{m.group(1)}", tag.abi == "abi3")
            if best is None or Version(found[0]) < Version(best[0]):
                best = found
        return best


class Wheel(_Strict):
    """A Python wheel: ``[source]`` fetches the file (``filename``), the installer lays it
    out; or ``files``, one wheel per interpreter, of which the one for the closure's
    interpreter is installed."""

    filename: str | None = Field(default=None, pattern=r"^[^/]+\.whl$")
    requires_python: str | None = None
    files: list[WheelFile] = []

    @field_validator("filename")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return None if value is None else _check_wheel_filename(value)


class EnvAction(_Strict):
    """``set`` a value, or ``prepend``/``append`` a path relative to the store path."""

    set: str | None = None
    prepend: str | None = None
    append: str | None = None
    separator: str = ":"

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvAction:
        given = [a for a in ("set", "prepend", "append") if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of set, prepend, append")
        return self


class Recipe(_Strict):
    """One package version. See design.md, "Recipe format, version 1"."""

    format: int = FORMAT_VERSION
    name: str = Field(pattern=f"^{NAME_RE}$", max_length=100)
    version: str = Field(min_length=1, max_length=64)
    summary: str = ""
    kind: str  # one of mlpkg.recipes.kinds.registered()
    aliases: list[str] = []
    inputs: dict[str, str] = {}
    source: Source | None = None
    build: Build | None = None
    external: External | None = None
    wheel: Wheel | None = None
    app: AppSource | None = None
    run: RunCommand | None = None
    env: dict[str, EnvAction] = {}
    # [variants.NAME]: alternatives selected with NAME+VARIANT (see mlpkg.recipes.variants);
    # ``selected`` records the ones merged into this recipe.
    variants: dict[str, dict[str, Any]] = {}
    selected: list[str] = []

    @field_validator("variants")
    @classmethod
    def _variant_tables(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, table in value.items():
            if not re.fullmatch(NAME_RE, name):
                raise ValueError(f"'{name}' is not a valid variant name")
            unknown = sorted(set(table) - VARIANT_KEYS)
            if unknown:
                raise ValueError(f"variant {name} has unknown field {unknown[0]}")
            inputs = table.get("inputs", {})  # merged by mlpkg.recipes.variants itself
            if not isinstance(inputs, dict) or any(not isinstance(v, str) for v in inputs.values()):
                raise ValueError(f"variant {name}: inputs must be a table of specs")
            remove = table.get("remove", [])
            if not isinstance(remove, list) or any(not isinstance(r, str) for r in remove):
                raise ValueError(f"variant {name}: remove must be a list of table names")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(
                f"recipe format {value} is not understood; this mlpkg reads format {FORMAT_VERSION}"
            )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value == "external":
            return value
        try:
            Version(value)
        except InvalidVersion:
            raise ValueError(f"'{value}' is not a valid version") from None
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not re.fullmatch(NAME_RE, alias):
                raise ValueError(f"'{alias}' is not a valid package name")
        return value

    @field_validator("inputs", "env", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if not _ENV_KEY.fullmatch(str(key)):
                    raise ValueError(f"'{key}' is not a valid environment variable name")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"set": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        known = kinds.registered()
        if value not in known:
            listed = ", ".join(f"'{k}'" for k in known[:-1]) + f" or '{known[-1]}'"
            raise ValueError(f"Input should be {listed}")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> Recipe:
        rules = kinds.rules_of(self.kind)
        kinds.check_tables(self, rules)
        if rules.check is not None:
            rules.check(self)
        if not rules.inputs and self.inputs:
            raise FieldError("inputs", f"a {self.kind} recipe cannot have inputs")
        if (self.version == "external") != rules.detected_version:
            raise FieldError("version", 'version "external" is for external recipes, which need it')
        runtime = self.build.runtime_inputs if self.build is not None else None
        unknown = sorted(set(runtime or []) - set(self.inputs))
        if unknown:
            raise FieldError(
                "build.runtime_inputs", f"it names '{unknown[0]}', which is not an input"
            )
        bad = sorted(RESERVED_INPUT_KEYS & set(self.inputs))
        if bad:
            raise FieldError(f"inputs.{bad[0]}", f"input name '{bad[0]}' is reserved")
        return self

    def hashed_content(self) -> dict[str, Any]:
        """The recipe's canonical content, before the rules of its kind.

        Cosmetic fields are left out, and so are fields at their defaults, so that a later
        format adding an optional field does not change every existing hash. What each
        kind hashes of this (no URLs of a wheel's source, say) is decided in one place,
        ``mlpkg.resolver.derivation.FINGERPRINTS``.
        """
        content = self.model_dump(mode="json", exclude=set(COSMETIC_FIELDS), exclude_defaults=True)
        content.update(format=self.format, name=self.name, version=self.version, kind=self.kind)
        return content

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}" + "".join(f"+{v}" for v in self.selected)
