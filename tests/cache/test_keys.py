"""mlpkg.cache.keys: ed25519 keys and signatures in Nix's text formats (real crypto)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from mlpkg.cache.keys import (
    KeyPair,
    PublicKey,
    SecretKey,
    TrustedKeys,
    key_pairs,
    keys_dir,
    load_signing_key,
    save_key,
    trusted_keys,
)
from mlpkg.config import Config
from mlpkg.errors import BadInput

MESSAGE = b"1;/store/abc-x;sha256:0000;42;"

# Known answers: seed bytes(range(32)), named test-1, signing b"mlpkg test vector".
KAT_PUBLIC = "test-1:A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
KAT_SIGNATURE = "test-1:t5Y957SG3Z93ry+DijXlnDYvFp9qcaiGOycnjfTZqlW/BIpO2rU4wC+DAlUXui8w+HL4ELm0avZ+bdDzRfI5DA=="
KAT_SECRET = "test-1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZZ+TWMJulDV8d3IZkElUxuA==\n"


def test_known_answer() -> None:
    key = SecretKey("test-1", bytes(range(32)))
    assert str(key.public()) == KAT_PUBLIC
    assert key.sign(b"mlpkg test vector") == KAT_SIGNATURE
    assert key.to_text() == KAT_SECRET
    assert SecretKey.parse(KAT_SECRET, "kat") == key
    assert (
        TrustedKeys([PublicKey.parse(KAT_PUBLIC, "kat")]).verify(
            b"mlpkg test vector", [KAT_SIGNATURE]
        )
        == "test-1"
    )


def test_rfc8032_vector() -> None:
    """RFC 8032, section 7.1, TEST 1 (empty message)."""
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = SecretKey("rfc", seed)
    assert key.public().raw.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    sig = base64.b64decode(key.sign(b"").partition(":")[2])
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555f"
        "b8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_sign_verify_roundtrip() -> None:
    key = SecretKey.generate("cache.example-1")
    trusted = TrustedKeys([key.public()])
    assert trusted
    assert trusted.names() == ["cache.example-1"]
    assert trusted.verify(MESSAGE, [key.sign(MESSAGE)]) == "cache.example-1"


def test_public_key_text_roundtrip() -> None:
    public = SecretKey.generate("k").public()
    assert PublicKey.parse(f"  {public}\n", "here") == public


def test_untrusted_key_counts_for_nothing() -> None:
    trusted = TrustedKeys([SecretKey.generate("a").public()])
    other = SecretKey.generate("b")
    assert trusted.verify(MESSAGE, [other.sign(MESSAGE)]) is None
    assert not TrustedKeys([])
    assert TrustedKeys([]).verify(MESSAGE, [other.sign(MESSAGE)]) is None


def test_signature_of_another_message() -> None:
    key = SecretKey.generate("a")
    assert TrustedKeys([key.public()]).verify(MESSAGE, [key.sign(MESSAGE + b"x")]) is None


def test_same_name_other_key() -> None:
    """A signature naming a trusted key but made by another key of that name."""
    trusted_key, impostor = SecretKey.generate("a"), SecretKey.generate("a")
    assert TrustedKeys([trusted_key.public()]).verify(MESSAGE, [impostor.sign(MESSAGE)]) is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "no-colon",
        "a:",
        "a:!!!not base64!!!",
        "a:" + base64.b64encode(b"short").decode(),
        "bad name:" + base64.b64encode(bytes(64)).decode(),
        "a:" + base64.b64encode(bytes(64)).decode(),  # well-formed, but not a signature
        "a:" + base64.b64encode(bytes(64)).decode()[:-2],
        ":" + base64.b64encode(bytes(64)).decode(),
    ],
)
def test_malformed_signature_counts_for_nothing(bad: str) -> None:
    key = SecretKey.generate("a")
    trusted = TrustedKeys([key.public()])
    assert trusted.verify(MESSAGE, [bad]) is None
    # ...and does not stop a valid signature after it from counting.
    assert trusted.verify(MESSAGE, [bad, key.sign(MESSAGE)]) == "a"


def test_non_string_signature_counts_for_nothing() -> None:
    key = SecretKey.generate("a")
    assert TrustedKeys([key.public()]).verify(MESSAGE, [None, 3]) is None  # type: ignore[list-item]


def test_first_valid_trusted_signature_wins() -> None:
    a, b, c = (SecretKey.generate(n) for n in "abc")
    trusted = TrustedKeys([a.public(), b.public()])
    sigs = [c.sign(MESSAGE), b.sign(MESSAGE), a.sign(MESSAGE)]
    assert trusted.verify(MESSAGE, sigs) == "b"


def test_rotated_keys_share_a_name() -> None:
    old, new = SecretKey.generate("k"), SecretKey.generate("k")
    trusted = TrustedKeys([old.public(), new.public(), new.public()])
    assert len(trusted) == 2
    assert trusted.verify(MESSAGE, [old.sign(MESSAGE)]) == "k"
    assert trusted.verify(MESSAGE, [new.sign(MESSAGE)]) == "k"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nocolon", "name:base64"),
        ("a b:" + base64.b64encode(bytes(32)).decode(), "not a valid key name"),
        ("a:%%%", "invalid base64"),
        ("a:" + base64.b64encode(bytes(31)).decode(), "31 bytes instead of 32"),
    ],
)
def test_public_key_parse_errors_name_the_source(text: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        PublicKey.parse(text, "MLPKG_TRUSTED_KEYS")
    assert e.value.message.startswith("MLPKG_TRUSTED_KEYS: ")
    assert words in e.value.message


def test_secret_key_parse_errors() -> None:
    with pytest.raises(BadInput, match=r"^/some/file: .*64"):
        SecretKey.parse("k:" + base64.b64encode(bytes(32)).decode(), "/some/file")
    seed = bytes(range(32))
    wrong_half = "k:" + base64.b64encode(seed + bytes(32)).decode()
    with pytest.raises(BadInput, match=r"^/some/file: .*does not match"):
        SecretKey.parse(wrong_half, "/some/file")


def test_generate_checks_the_name() -> None:
    for bad in ("", "a b", "a/b", "../x", ".hidden", "-x", "é", "a" * 129):
        with pytest.raises(BadInput, match="not a valid key name"):
            SecretKey.generate(bad)
    SecretKey.generate("A.b_c-9")


def test_secret_repr_hides_the_seed() -> None:
    key = SecretKey("k", bytes(range(32)))
    assert bytes(range(32)).hex() not in repr(key)
    assert str(bytes(range(32))) not in repr(key)


def test_save_and_load(tmp_path: Path) -> None:
    key = SecretKey.generate("mine")
    secret, public = save_key(tmp_path, key)
    assert (secret, public) == (keys_dir(tmp_path) / "mine.secret", tmp_path / "keys/mine.public")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text() == key.to_text()
    assert public.read_text() == f"{key.public()}\n"
    assert load_signing_key(tmp_path, "mine") == key
    assert load_signing_key(tmp_path, str(secret)) == key
    assert key_pairs(tmp_path) == [KeyPair(key.public(), secret, public)]
    assert not [p for p in keys_dir(tmp_path).iterdir() if p.name.startswith(".")]


def test_secret_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        secret, _ = save_key(tmp_path, SecretKey.generate("k"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    first = SecretKey.generate("k")
    save_key(tmp_path, first)
    with pytest.raises(BadInput, match="already exists") as e:
        save_key(tmp_path, SecretKey.generate("k"))
    assert "mlpkg key show k" in (e.value.hint or "")
    assert load_signing_key(tmp_path, "k") == first
    assert sorted(p.name for p in keys_dir(tmp_path).iterdir()) == ["k.public", "k.secret"]


def test_load_missing_key_hints_generate(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="nope") as e:
        load_signing_key(tmp_path, "nope")
    assert "mlpkg key generate nope" in (e.value.hint or "")
    with pytest.raises(BadInput, match="does not exist") as e:
        load_signing_key(tmp_path, str(tmp_path / "missing.secret"))
    assert "mlpkg key generate" in (e.value.hint or "")


def test_load_damaged_key_names_the_file(tmp_path: Path) -> None:
    save_key(tmp_path, SecretKey.generate("k"))
    secret = keys_dir(tmp_path) / "k.secret"
    secret.write_text("k:garbage\n")
    with pytest.raises(BadInput) as e:
        load_signing_key(tmp_path, "k")
    assert str(secret) in e.value.message


def test_load_by_name_checks_the_name_inside(tmp_path: Path) -> None:
    other = SecretKey.generate("other")
    keys_dir(tmp_path).mkdir()
    (keys_dir(tmp_path) / "k.secret").write_text(other.to_text())
    with pytest.raises(BadInput, match="holds the key 'other'"):
        load_signing_key(tmp_path, "k")


def test_key_pairs_without_public_file(tmp_path: Path) -> None:
    key = SecretKey.generate("k")
    secret, public = save_key(tmp_path, key)
    public.unlink()
    assert key_pairs(tmp_path) == [KeyPair(key.public(), secret, public)]
    assert key_pairs(tmp_path / "elsewhere") == []


def test_trusted_keys_from_config(tmp_path: Path) -> None:
    key = SecretKey.generate("k")
    config = Config(path=tmp_path / "config.toml", trusted_keys=(str(key.public()),))
    assert trusted_keys(config).verify(MESSAGE, [key.sign(MESSAGE)]) == "k"
    bad = Config(
        path=tmp_path / "config.toml",
        trusted_keys=("k:nope",),
        trusted_keys_source=f"trusted-keys in {tmp_path / 'config.toml'}",
    )
    with pytest.raises(BadInput, match=r"^trusted-keys in .*config\.toml: "):
        trusted_keys(bad)
