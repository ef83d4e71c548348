"""The signed fingerprint and its test vector (docs/caches.md, "The signed fingerprint")."""

from __future__ import annotations

import re
from pathlib import Path

from mlpkg.cache.format import PathEntry, fingerprint
from mlpkg.cache.keys import PublicKey, SecretKey, TrustedKeys
from mlpkg.store.path import StorePath

DOC = Path(__file__).resolve().parents[2] / "docs" / "caches.md"
PATH = StorePath.parse("1b2ndf8yxjbmhynq5ia6x2jy0zckm1q6-hello-1.0")
REFS = [
    StorePath.parse("2fmfz956nz8ppzgl3p62p5jzv04d9i28-gcc-12.2.0"),
    StorePath.parse("0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1"),
]
HASH = "sha256:" + "ab" * 32


def _documented(label: str) -> str:
    match = re.search(rf"^{label} +(\S+)$", DOC.read_text(), re.MULTILINE)
    assert match, f"docs/caches.md lost its '{label}' line"
    return match.group(1)


def test_fingerprint_is_the_documented_bytes() -> None:
    got = fingerprint(PATH, HASH, 1234, REFS)
    assert got == _documented("fingerprint").encode()
    assert not got.endswith(b"\n")


def test_signature_of_the_vector_is_the_documented_one() -> None:
    key = SecretKey("test-1", bytes(range(32)))
    assert str(key.public()) == _documented("public key")
    assert key.sign(fingerprint(PATH, HASH, 1234, REFS)) == _documented("signature")


def test_references_order_does_not_matter_but_each_field_does() -> None:
    base = fingerprint(PATH, HASH, 1234, REFS)
    assert fingerprint(PATH, HASH, 1234, list(reversed(REFS))) == base
    assert fingerprint(PATH, HASH, 1235, REFS) != base
    assert fingerprint(PATH, "sha256:" + "cd" * 32, 1234, REFS) != base
    assert fingerprint(PATH, HASH, 1234, REFS[:1]) != base
    assert fingerprint(PATH, HASH, 0, []).endswith(b";0;")


def test_a_documented_signature_verifies_only_its_fingerprint() -> None:
    trusted = TrustedKeys([PublicKey.parse(_documented("public key"), "docs")])
    sig = _documented("signature")
    entry = PathEntry(PATH, HASH, 1234, REFS, HASH, "build", {}, "ab" * 32, 1, 1, [sig])
    assert trusted.verify(entry.fingerprint(), entry.signatures) == "test-1"
    entry.archive_size = 1
    assert trusted.verify(entry.fingerprint(), entry.signatures) is None
