"""mlpkg.config: $MLPKG_HOME/config.toml and its environment overrides."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path

import pytest

from mlpkg.config import DEFAULT_NEGATIVE_TTL, add_trusted_key, load_config
from mlpkg.errors import BadInput, FormatVersionError

KEY_A = "a:" + "A" * 43 + "="
KEY_B = "b:" + "B" * 43 + "="


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path / "home", environ={})
    assert config.path == tmp_path / "home" / "config.toml"
    assert config.trusted_keys == ()
    assert config.substituters == ()
    assert config.signing_key is None
    assert config.substituter_negative_ttl == DEFAULT_NEGATIVE_TTL == 300


def test_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        format = 1
        trusted-keys = ["{KEY_A}", "{KEY_B}"]
        substituters = ["file:///tmp/cache", "https://cache.example"]
        signing-key = "mine"
        substituter-negative-ttl = 60
        """,
    )
    config = load_config(tmp_path, environ={})
    assert config.path == path
    assert config.trusted_keys == (KEY_A, KEY_B)
    assert config.substituters == ("file:///tmp/cache", "https://cache.example")
    assert config.signing_key == "mine"
    assert config.substituter_negative_ttl == 60
    assert config.trusted_keys_source == f"trusted-keys in {path}"


def test_env_replaces_lists(tmp_path: Path) -> None:
    write(
        tmp_path,
        f"""
        trusted-keys = ["{KEY_A}"]
        substituters = ["file:///one"]
        signing-key = "mine"
        """,
    )
    env = {
        "MLPKG_TRUSTED_KEYS": f" {KEY_B}\n {KEY_A} ",
        "MLPKG_SUBSTITUTERS": "file:///two  https://three",
        "MLPKG_SIGNING_KEY": "/keys/other.secret",
    }
    config = load_config(tmp_path, environ=env)
    assert config.trusted_keys == (KEY_B, KEY_A)
    assert config.trusted_keys_source == "MLPKG_TRUSTED_KEYS"
    assert config.substituters == ("file:///two", "https://three")
    assert config.substituters_source == "MLPKG_SUBSTITUTERS"
    assert config.signing_key == "/keys/other.secret"


def test_env_set_to_nothing(tmp_path: Path) -> None:
    write(tmp_path, f'trusted-keys = ["{KEY_A}"]\nsigning-key = "mine"\n')
    env = {"MLPKG_TRUSTED_KEYS": "", "MLPKG_SIGNING_KEY": ""}
    config = load_config(tmp_path, environ=env)
    assert config.trusted_keys == ()
    assert config.signing_key is None


def test_env_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"MLPKG_SUBSTITUTERS": "file:///x"})
    assert config.substituters == ("file:///x",)


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'trusted-keys = ["a"]\nsubstituters = [nope]\n')
    with pytest.raises(BadInput) as e:
        load_config(tmp_path, environ={})
    assert str(path) in e.value.message
    assert "line" in e.value.message
    assert e.value.file == str(path)


def test_unknown_key_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, 'trusted-key = ["x"]\n')
    with pytest.raises(BadInput) as e:
        load_config(tmp_path, environ={})
    assert str(path) in e.value.message
    assert "'trusted-key'" in e.value.message
    assert e.value.field == "trusted-key"
    assert "trusted-keys" in (e.value.hint or "")


def test_unknown_table_names_it(tmp_path: Path) -> None:
    write(tmp_path, "[cache]\nurl = 'x'\n")
    with pytest.raises(BadInput, match="unknown key 'cache'"):
        load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('trusted-keys = "a:b"', "trusted-keys", "an array of strings, not a string"),
        ("trusted-keys = [1]", "trusted-keys", "not an integer"),
        ("substituters = [true]", "substituters", "not a boolean"),
        ('substituters = [""]', "substituters", "empty string"),
        ("signing-key = 3", "signing-key", "must be a string"),
        ('substituter-negative-ttl = "300"', "substituter-negative-ttl", "not a string"),
        ("substituter-negative-ttl = 1.5", "substituter-negative-ttl", "not a float"),
        ("substituter-negative-ttl = true", "substituter-negative-ttl", "not a boolean"),
        ("substituter-negative-ttl = -1", "substituter-negative-ttl", "negative"),
        ('format = "1"', "format", "an integer"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(BadInput) as e:
        load_config(tmp_path, environ={})
    assert e.value.message.startswith(f"{path}: {key} ")
    assert words in e.value.message
    assert e.value.exit_code == 2


def test_other_format(tmp_path: Path) -> None:
    write(tmp_path, "format = 2\n")
    with pytest.raises(FormatVersionError, match="format 2"):
        load_config(tmp_path, environ={})


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(BadInput, match=r"config\.toml"):
        load_config(tmp_path, environ={})
    (tmp_path / "config.toml").rmdir()
    (tmp_path / "config.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_config(tmp_path, environ={})


def test_add_trusted_key_creates_the_file(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    assert add_trusted_key(home, KEY_A)
    assert load_config(home, environ={}).trusted_keys == (KEY_A,)
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o644
    assert not add_trusted_key(home, KEY_A)
    assert load_config(home, environ={}).trusted_keys == (KEY_A,)


def test_add_trusted_key_keeps_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        # my settings
        substituters = ["file:///c"]  # the team cache
        trusted-keys = [
            "{KEY_A}",  # alice
        ]
        signing-key = "mine"
        """,
    )
    path.chmod(0o600)
    assert add_trusted_key(tmp_path, KEY_B)
    text = path.read_text()
    assert "# my settings" in text
    assert "# the team cache" in text
    assert "# alice" in text
    config = load_config(tmp_path, environ={})
    assert config.trusted_keys == (KEY_A, KEY_B)
    assert config.substituters == ("file:///c",)
    assert config.signing_key == "mine"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_add_trusted_key_refuses_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "trusted-kyes = []\n")
    with pytest.raises(BadInput, match="trusted-kyes"):
        add_trusted_key(tmp_path, KEY_A)
    assert path.read_text() == "trusted-kyes = []\n"
