"""The user configuration: ``$MLPKG_HOME/config.toml`` (docs/caches.md).

A flat TOML table with kebab-case keys, as Nix's ``nix.conf``::

    format = 1                                  # optional; the only format there is
    trusted-keys = ["name:base64…"]             # public keys whose signatures are trusted
    substituters = ["https://cache.example"]    # binary caches to substitute from, in order
    signing-key = "mykey"                       # a key name in keys/, or a secret key file
    substituter-negative-ttl = 300              # seconds a "not in this cache" is remembered

A missing file means the defaults. Anything else the file says wrongly (bad TOML, an unknown
key, a value of the wrong type) is a :class:`~mlpkg.errors.BadInput` sentence naming the file
and the key (or the line), so that typos never pass silently.

Environment overrides: ``MLPKG_TRUSTED_KEYS`` and ``MLPKG_SUBSTITUTERS`` (whitespace-separated;
when set, even to nothing, they replace the file's list) and ``MLPKG_SIGNING_KEY`` (empty
means no signing key).

The file is only read here; :func:`add_trusted_key` edits it through ``tomlkit`` so that the
user's comments and layout survive.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from mlpkg.documents import load_toml
from mlpkg.errors import BadInput, FormatVersionError

CONFIG_FILE = "config.toml"
FORMAT = 1
DEFAULT_NEGATIVE_TTL = 300  # seconds

TRUSTED_KEYS = "trusted-keys"
SUBSTITUTERS = "substituters"
SIGNING_KEY = "signing-key"
NEGATIVE_TTL = "substituter-negative-ttl"
KNOWN_KEYS = ("format", TRUSTED_KEYS, SUBSTITUTERS, SIGNING_KEY, NEGATIVE_TTL)

ENV_TRUSTED_KEYS = "MLPKG_TRUSTED_KEYS"
ENV_SUBSTITUTERS = "MLPKG_SUBSTITUTERS"
ENV_SIGNING_KEY = "MLPKG_SIGNING_KEY"


@dataclass(frozen=True)
class Config:
    """The settings of one home, after the environment's overrides.

    ``trusted_keys`` are unparsed ``name:base64`` texts (see
    :func:`mlpkg.cache.keys.trusted_keys`); ``trusted_keys_source`` says where they came
    from, for error messages (``MLPKG_TRUSTED_KEYS`` or ``trusted-keys in …/config.toml``).
    ``path`` is the configuration file (which need not exist).
    """

    path: Path
    trusted_keys: tuple[str, ...] = ()
    substituters: tuple[str, ...] = ()
    signing_key: str | None = None
    substituter_negative_ttl: int = DEFAULT_NEGATIVE_TTL
    trusted_keys_source: str = TRUSTED_KEYS
    substituters_source: str = SUBSTITUTERS


def config_path(home: Path) -> Path:
    """``$MLPKG_HOME/config.toml``."""
    return home / CONFIG_FILE


def _type_name(value: object) -> str:
    """How TOML calls the type of ``value``, with an article."""
    names: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        ((datetime, date, time), "a date or time"),
    ]
    return next((name for t, name in names if isinstance(value, t)), type(value).__name__)


def _read_file(path: Path) -> dict[str, Any]:
    """The parsed file, ``{}`` when it does not exist; BadInput when unreadable or not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text.", file=str(path)) from None
    except OSError as e:
        raise BadInput(f"Cannot read {path}: {e.strerror or e}.", file=str(path)) from None
    try:
        return load_toml(text, str(path))
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path} is not valid TOML: {e}.", file=str(path)) from None


def _wrong(path: Path, key: str, want: str, value: object) -> BadInput:
    return BadInput(
        f"{path}: {key} must be {want}, not {_type_name(value)}.", file=str(path), field=key
    )


def _strings(path: Path, key: str, value: object) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings, else BadInput naming ``key``."""
    if not isinstance(value, list):
        raise _wrong(path, key, "an array of strings", value)
    for item in value:
        if not isinstance(item, str):
            raise _wrong(path, key, "an array of strings (one item is not)", item)
        if not item.strip():
            raise BadInput(f"{path}: {key} holds an empty string.", file=str(path), field=key)
    return tuple(item.strip() for item in value)


def _check_keys(path: Path, data: Mapping[str, Any]) -> None:
    """BadInput for an unknown key (with a suggestion) or a format other than 1."""
    for key in data:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            raise BadInput(
                f"{path}: unknown key {key!r} (known keys: {', '.join(KNOWN_KEYS)}).",
                hint=f"Did you mean {close[0]!r}?" if close else None,
                file=str(path),
                field=key,
            )
    fmt = data.get("format", FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise _wrong(path, "format", "an integer", fmt)
    if fmt != FORMAT:
        raise FormatVersionError(
            f"{path} has format {fmt}, but this mlpkg reads only format {FORMAT}.",
            hint="Upgrade mlpkg, or remove the format key.",
            file=str(path),
            field="format",
        )


def _file_config(path: Path, data: Mapping[str, Any]) -> Config:
    """The settings the file ``path`` (parsed as ``data``) gives, checked."""
    _check_keys(path, data)
    signing_key = data.get(SIGNING_KEY)
    if signing_key is not None and not isinstance(signing_key, str):
        raise _wrong(path, SIGNING_KEY, "a string (a key name or a file)", signing_key)
    ttl = data.get(NEGATIVE_TTL, DEFAULT_NEGATIVE_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise _wrong(path, NEGATIVE_TTL, "an integer (seconds)", ttl)
    if ttl < 0:
        raise BadInput(
            f"{path}: {NEGATIVE_TTL} must not be negative (it is {ttl}).",
            file=str(path),
            field=NEGATIVE_TTL,
        )
    return Config(
        path=path,
        trusted_keys=_strings(path, TRUSTED_KEYS, data.get(TRUSTED_KEYS, [])),
        substituters=_strings(path, SUBSTITUTERS, data.get(SUBSTITUTERS, [])),
        signing_key=(signing_key.strip() or None) if signing_key is not None else None,
        substituter_negative_ttl=ttl,
        trusted_keys_source=f"{TRUSTED_KEYS} in {path}",
        substituters_source=f"{SUBSTITUTERS} in {path}",
    )


def load_config(home: Path, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration of ``home``: ``home/config.toml`` (defaults when missing), then
    the overrides of ``environ`` (see the module's docstring). Raises BadInput, naming the
    file and the key or line, when the file is unreadable, not TOML, has an unknown key or
    a value of the wrong type; FormatVersionError (a BadInput) for a format other than 1."""
    path = config_path(home)
    config = _file_config(path, _read_file(path))
    changes: dict[str, Any] = {}
    if ENV_TRUSTED_KEYS in environ:
        changes["trusted_keys"] = tuple(environ[ENV_TRUSTED_KEYS].split())
        changes["trusted_keys_source"] = ENV_TRUSTED_KEYS
    if ENV_SUBSTITUTERS in environ:
        changes["substituters"] = tuple(environ[ENV_SUBSTITUTERS].split())
        changes["substituters_source"] = ENV_SUBSTITUTERS
    if ENV_SIGNING_KEY in environ:
        changes["signing_key"] = environ[ENV_SIGNING_KEY].strip() or None
    return replace(config, **changes) if changes else config


def add_trusted_key(home: Path, key: str) -> bool:
    """Add the public key text ``key`` (already checked by the caller) to ``trusted-keys``
    of ``home/config.toml``, creating the file if need be and keeping the rest of it
    (comments and layout included). Returns False, changing nothing, when the file already
    lists it. Raises BadInput when the existing file is not a valid configuration (it is
    never rewritten then). The file is replaced atomically, keeping its mode."""
    import tomlkit

    path = config_path(home)
    _file_config(path, _read_file(path))  # refuse to edit a file we would not read
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text)
    trusted = doc.get(TRUSTED_KEYS)
    if trusted is None:
        trusted = tomlkit.array()
        trusted.multiline(True)
        doc[TRUSTED_KEYS] = trusted
        trusted = doc[TRUSTED_KEYS]
    if any(str(item).strip() == key for item in trusted):
        return False
    trusted.append(key)
    _write_atomically(path, tomlkit.dumps(doc))
    return True


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file beside it, keeping its mode
    (0644 for a new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
