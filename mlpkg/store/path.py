"""Store paths as validated values (after Nix's libstore).

A store path is ``<hash>-<name>`` where ``<hash>`` is 32 characters of Nix base32 (160 bits)
and ``<name>`` is ``<package>-<version>``. A :class:`StorePath` is independent of where
the store lives: :meth:`mlpkg.store.Store.real_path` joins it to a store root.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mlpkg.errors import BadInput

BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
HASH_BYTES = 20
HASH_CHARS = 32  # ceil(160 / 5)
_NAME_RE = re.compile(r"[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*")
_HASH_RE = re.compile(f"[{BASE32_ALPHABET}]{{{HASH_CHARS}}}")
MAX_NAME_LEN = 211


def nix_base32(data: bytes) -> str:
    """Encode bytes in Nix's base32 (least significant 5-bit group first, as Nix prints)."""
    n = int.from_bytes(data, "little")
    length = (len(data) * 8 + 4) // 5
    return "".join(BASE32_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(length)))


def compress_hash(digest: bytes, size: int = HASH_BYTES) -> bytes:
    """XOR-fold ``digest`` to ``size`` bytes, as Nix does for store path hashes."""
    out = bytearray(size)
    for i, b in enumerate(digest):
        out[i % size] ^= b
    return bytes(out)


def hash_part_of(fingerprint: bytes) -> str:
    """The 32-character store hash part for a fingerprint (sha256, folded to 160 bits)."""
    return nix_base32(compress_hash(hashlib.sha256(fingerprint).digest()))


def check_name(name: str) -> str:
    """Return ``name`` if it may be the name part of a store path, else raise BadInput."""
    if not name or len(name) > MAX_NAME_LEN or not _NAME_RE.fullmatch(name):
        raise BadInput(
            f"'{name}' is not a valid store path name "
            "(letters, digits and + - . _ ? = only, not starting with a dot)."
        )
    return name


@dataclass(frozen=True, order=True, slots=True)
class StorePath:
    """A validated store path: hash part plus name, with no store root."""

    hash_part: str
    name: str

    def __post_init__(self) -> None:
        if not _HASH_RE.fullmatch(self.hash_part):
            raise BadInput(f"'{self.hash_part}' is not a valid store path hash.")
        check_name(self.name)

    @classmethod
    def parse(cls, base: str) -> StorePath:
        """Parse ``<hash>-<name>`` (a base name, no directories)."""
        if len(base) < HASH_CHARS + 2 or base[HASH_CHARS] != "-":
            raise BadInput(f"'{base}' is not a store path (expected <hash>-<name>).")
        return cls(base[:HASH_CHARS], base[HASH_CHARS + 1 :])

    @classmethod
    def from_fingerprint(cls, fingerprint: bytes, name: str) -> StorePath:
        return cls(hash_part_of(fingerprint), name)

    def __str__(self) -> str:
        return f"{self.hash_part}-{self.name}"
