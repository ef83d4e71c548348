"""A small, deterministic TOML writer for the documents mlpkg writes (lockfiles).

``tomllib`` reads TOML but does not write it. This writer covers what mlpkg needs:
strings, integers, booleans, lists of scalars, tables and arrays of tables. Keys are
sorted, so the same document always gives the same bytes (diff-friendly lockfiles).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _multiline(value: str) -> str:
    """A multi-line basic string that reads like the script it holds. A quote is escaped
    only where it could be taken for a delimiter: in a run of two or more, or last."""
    out = []
    for i, ch in enumerate(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            near = value[i - 1 : i] == '"' or value[i + 1 : i + 2] == '"' or i == len(value) - 1
            out.append('\\"' if near else '"')
        elif ch in "\n\t" or (ord(ch) >= 0x20 and ord(ch) != 0x7F):
            out.append(ch)
        else:
            out.append(f"\\u{ord(ch):04x}")
    return '"""\n' + "".join(out) + '"""'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # repr gives TOML's spelling, inf and nan included
        return repr(value)
    if isinstance(value, str):
        return _multiline(value) if "\n" in value else _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_array(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _is_scalar(value: Any) -> bool:
    return value is not None and not _is_table(value) and not _is_table_array(value)


def _write_table(lines: list[str], table: Mapping[str, Any], prefix: str) -> None:
    items = sorted((k, v) for k, v in table.items() if v is not None)
    for key, value in items:
        if _is_scalar(value):
            lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in items:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        if _is_table(value):
            has_scalars = any(_is_scalar(v) for v in value.values())
            if has_scalars or not value:  # a header only for tables that hold values
                lines.append("")
                lines.append(f"[{name}]")
            _write_table(lines, value, name)
        elif _is_table_array(value):
            for element in value:
                lines.append("")
                lines.append(f"[[{name}]]")
                _write_table(lines, element, name)


def dumps(document: Mapping[str, Any], header: str = "") -> str:
    """Serialise ``document`` (``None`` values are left out). ``header`` lines become
    comments at the top."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _write_table(lines, document, "")
    return "\n".join(lines).lstrip("\n") + "\n"
