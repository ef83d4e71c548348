"""``mlpkg key``: generate, show, trust, list (in process, against a private home)."""

from __future__ import annotations

import stat
from typing import Any

from mlpkg.cache.keys import PublicKey, SecretKey

# The in-process runner passes ours through; these must not leak into the tests.
CLEAN: Any = {"MLPKG_TRUSTED_KEYS": None, "MLPKG_SIGNING_KEY": None}


def test_generate_then_show(mlpkg_cli: Any) -> None:
    r = mlpkg_cli.run("key", "generate", "team-1", env=CLEAN).ok()
    public = r.out.strip()
    assert PublicKey.parse(public, "stdout").name == "team-1"
    assert "trusted-keys" in r.err
    assert "MLPKG_TRUSTED_KEYS" in r.err
    secret = mlpkg_cli.home / "keys" / "team-1.secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert str(SecretKey.parse(secret.read_text(), "file").public()) == public
    assert mlpkg_cli.run("key", "show", "team-1", env=CLEAN).ok().out.strip() == public
    assert mlpkg_cli.run("key", "show", str(secret), env=CLEAN).ok().out.strip() == public


def test_generate_json(mlpkg_cli: Any) -> None:
    doc = mlpkg_cli.run("key", "generate", "--json", "k", env=CLEAN).ok().json()
    assert doc["name"] == "k"
    assert doc["secret_file"] == str(mlpkg_cli.home / "keys" / "k.secret")
    assert doc["public_file"] == str(mlpkg_cli.home / "keys" / "k.public")
    assert PublicKey.parse(doc["public_key"], "json").name == "k"


def test_generate_refuses_to_overwrite(mlpkg_cli: Any) -> None:
    first = mlpkg_cli.run("key", "generate", "k", env=CLEAN).ok().out
    r = mlpkg_cli.run("key", "generate", "k", env=CLEAN)
    assert r.code == 2, r
    assert "already exists" in r.err
    assert mlpkg_cli.run("key", "show", "k", env=CLEAN).ok().out == first


def test_bad_key_name_exits_2(mlpkg_cli: Any) -> None:
    for args in (("generate", "a/b"), ("generate", "bad name"), ("show", "bad name")):
        r = mlpkg_cli.run("key", *args, env=CLEAN)
        assert r.code == 2, r
        assert "not a valid key name" in r.err
    assert not (mlpkg_cli.home / "keys").exists()


def test_show_missing_key_hints_generate(mlpkg_cli: Any) -> None:
    r = mlpkg_cli.run("key", "show", "nope", env=CLEAN)
    assert r.code == 2, r
    assert "mlpkg key generate nope" in r.err


def test_trust_then_list(mlpkg_cli: Any) -> None:
    public = mlpkg_cli.run("key", "generate", "mine", env=CLEAN).ok().out.strip()
    other = str(SecretKey.generate("theirs").public())
    doc = mlpkg_cli.run("key", "trust", "--json", other, env=CLEAN).ok().json()
    config = mlpkg_cli.home / "config.toml"
    assert doc == {"public_key": other, "config_file": str(config), "added": True}
    again = mlpkg_cli.run("key", "trust", "--json", other, env=CLEAN).ok().json()
    assert again["added"] is False
    assert config.read_text().count(other) == 1

    listing = mlpkg_cli.run("key", "list", "--json", env=CLEAN).ok().json()
    assert listing["trusted_keys"] == [{"name": "theirs", "public_key": other}]
    assert listing["trusted_keys_source"] == f"trusted-keys in {config}"
    assert [(p["name"], p["public_key"], p["trusted"]) for p in listing["key_pairs"]] == [
        ("mine", public, False)
    ]

    mlpkg_cli.run("key", "trust", public, env=CLEAN).ok()
    listing = mlpkg_cli.run("key", "list", "--json", env=CLEAN).ok().json()
    assert [k["name"] for k in listing["trusted_keys"]] == ["mine", "theirs"]
    assert listing["key_pairs"][0]["trusted"] is True
    text = mlpkg_cli.run("key", "list", env=CLEAN).ok().out
    assert other in text
    assert f"{public}  (trusted)" in text


def test_list_with_env_keys(mlpkg_cli: Any) -> None:
    key = str(SecretKey.generate("env-key").public())
    env = {**CLEAN, "MLPKG_TRUSTED_KEYS": key}
    listing = mlpkg_cli.run("key", "list", "--json", env=env).ok().json()
    assert listing["trusted_keys"] == [{"name": "env-key", "public_key": key}]
    assert listing["trusted_keys_source"] == "MLPKG_TRUSTED_KEYS"
    r = mlpkg_cli.run("key", "list", env={**CLEAN, "MLPKG_TRUSTED_KEYS": "garbage"})
    assert r.code == 2, r
    assert "MLPKG_TRUSTED_KEYS" in r.err


def test_trust_rejects_bad_keys_and_bad_config(mlpkg_cli: Any) -> None:
    r = mlpkg_cli.run("key", "trust", "not-a-key", env=CLEAN)
    assert r.code == 2, r
    assert not (mlpkg_cli.home / "config.toml").exists()
    mlpkg_cli.home.mkdir(parents=True, exist_ok=True)
    (mlpkg_cli.home / "config.toml").write_text("trusted_keys = []\n")
    key = str(SecretKey.generate("k").public())
    r = mlpkg_cli.run("key", "trust", key, env=CLEAN)
    assert r.code == 2, r
    assert "trusted_keys" in r.err
    assert "config.toml" in r.err
    assert (mlpkg_cli.home / "config.toml").read_text() == "trusted_keys = []\n"
