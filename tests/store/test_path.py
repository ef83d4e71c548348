"""Store paths as validated values, and Nix base32."""

from __future__ import annotations

import hashlib

import pytest

from mlpkg.errors import BadInput
from mlpkg.store.path import BASE32_ALPHABET, StorePath, compress_hash, hash_part_of, nix_base32


def test_nix_base32_matches_nix() -> None:
    # Nix prints sha256("") in base32 as this (nix-hash --type sha256 --to-base32 ...).
    digest = hashlib.sha256(b"").digest()
    assert nix_base32(digest) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
    assert nix_base32(b"\xff") == "7z"


def test_hash_part_is_32_chars_of_the_alphabet_and_160_bits() -> None:
    h = hash_part_of(b"anything")
    assert len(h) == 32 and set(h) <= set(BASE32_ALPHABET)
    assert len(compress_hash(hashlib.sha256(b"x").digest())) == 20


def test_parse_and_print_round_trip() -> None:
    p = StorePath.from_fingerprint(b"fp", "hello-1.0")
    assert StorePath.parse(str(p)) == p
    assert str(p).endswith("-hello-1.0")


@pytest.mark.parametrize(
    "text",
    [
        "short-hello",
        "e" * 32 + "-hello",  # 'e' is not in the alphabet
        "0" * 32 + "-.hidden",
        "0" * 32 + "-bad/name",
        "0" * 32 + "-",
        "0" * 32 + "hello",
    ],
)
def test_invalid_store_paths_are_refused(text: str) -> None:
    with pytest.raises(BadInput):
        StorePath.parse(text)
