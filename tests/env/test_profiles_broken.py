"""Profile generations that cannot be read: empty or truncated (what a power loss leaves of
a file written without fsync), wrongly typed, or nested 100,000 deep. Each is reported,
naming the generation and the profile, with what to do; the other generations still work:
history lists them, rollback and switch reach them, and env/shell of a good current one
work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import CliResult

DAMAGE = {
    "empty": "",
    "truncated": '{\n  "created": 1764332000.0,\n  "generation": 3,\n  "roo',
    "wrong types": json.dumps(
        {"version": 1, "generation": 3, "created": "noon", "specs": 5, "roots": [1]}
    ),
    "not a store path": json.dumps(
        {"version": 1, "generation": 3, "created": 1.0, "specs": [], "roots": ["x"]}
    ),
    "deep": "[" * 100_000 + "]" * 100_000,
}


def _tool(name: str) -> str:
    script = (f'mkdir -p "$out/bin"; printf "#!/bin/sh\\necho {name}\\n" > "$out/bin/{name}"; '
              f'chmod +x "$out/bin/{name}"')  # fmt: skip
    return (f'name = "{name}"\nversion = "1.0"\nkind = "build"\n'
            f"[build]\nscript = '''{script}'''\n[env]\nPATH = {{ prepend = \"bin\" }}\n")  # fmt: skip


@pytest.fixture
def three(mlpkg_cli: Any) -> Any:
    """A default profile of three generations: alpha; alpha beta; alpha beta gamma."""
    for name in ("alpha", "beta", "gamma"):
        mlpkg_cli.recipes.add(name, "1.0", _tool(name))
        mlpkg_cli.run("install", "-q", name).ok()
    return mlpkg_cli


def _generation(cli: Any, n: int) -> Path:
    return Path(cli.home / "profiles" / "default" / "generations" / f"{n}.json")


def _shell(cli: Any, command: str) -> CliResult:
    result: CliResult = cli.sub("shell", "--", "sh", "-c", command)
    return result


def _number(line: str) -> int:
    """The generation number of a line of ``profile history``."""
    return int(line.lstrip("* ").split()[0])


def _history(cli: Any) -> tuple[list[str], list[str]]:
    r = cli.run("profile", "history").ok()
    return r.out.splitlines(), [ln for ln in r.err.splitlines() if ln.startswith("warning:")]


def _says_what_to_do(text: str, n: int, file: Path) -> None:
    assert f"generation {n} of profile default" in text.lower() and str(file) in text, text
    assert "mlpkg profile switch 2" in text or "mlpkg profile rollback" in text, text


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_broken_current_generation(three: Any, damage: str) -> None:
    file = _generation(three, 3)
    file.write_text(DAMAGE[damage])
    # history: generations 1 and 2, and one warning that names generation 3
    lines, warnings = _history(three)
    assert [_number(ln) for ln in lines] == [1, 2], lines
    assert len(warnings) == 1, warnings
    _says_what_to_do(warnings[0], 3, file)
    if damage in ("empty", "truncated"):
        assert "empty or truncated (written during a crash?)" in warnings[0]
    # shell/env of the broken current one: one error saying what to do
    r = _shell(three, "alpha")
    assert r.code == 1 and "internal error" not in r.err, r
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r
    _says_what_to_do(r.err, 3, file)
    # rollback reaches generation 2, and everything works again
    three.run("profile", "rollback").ok()
    assert _shell(three, "alpha; beta").ok().out == "alpha\nbeta\n"
    three.run("profile", "switch", "1").ok()
    assert _shell(three, "alpha").ok().out == "alpha\n"
    env = three.run("env").ok().out
    bash = subprocess.run(["bash", "--norc", "-c", env + "\nalpha"], capture_output=True,
                          text=True, env=three.env())  # fmt: skip
    assert bash.stdout == "alpha\n", bash
    r = three.run("profile", "switch", "3")
    assert r.code == 1 and str(file) in r.err, r
    assert three.run("profile", "list").ok().out.startswith("default  generation 1: alpha")
    # a new generation gets a new number: the broken file is not overwritten
    three.run("install", "-q", "gamma").ok()
    lines, _ = _history(three)
    assert lines[-1].startswith("*    4") and file.read_text() == DAMAGE[damage], lines


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_broken_earlier_generation(three: Any, damage: str) -> None:
    file = _generation(three, 1)
    file.write_text(DAMAGE[damage].replace('"generation": 3', '"generation": 1'))
    lines, warnings = _history(three)
    assert [_number(ln) for ln in lines] == [2, 3] and lines[1].startswith("*"), lines
    assert len(warnings) == 1 and str(file) in warnings[0], warnings
    assert _shell(three, "alpha; beta; gamma").ok().out == "alpha\nbeta\ngamma\n"
    three.run("profile", "rollback").ok()
    r = three.run("profile", "rollback")  # generation 1 is no way back
    assert r.code == 2 and "no generation before" in r.err, r
    hist = three.run("profile", "history", "--json").ok().json()
    assert [g["generation"] for g in hist] == [2, 3]


def test_wipe_history_removes_broken_generations(three: Any) -> None:
    file = _generation(three, 2)
    file.write_text("")
    three.run("profile", "wipe-history").ok()
    assert not file.exists()
    lines, warnings = _history(three)
    assert len(lines) == 1 and lines[0].startswith("*    3") and not warnings
    three.run("gc").ok()
    assert _shell(three, "gamma").ok().out == "gamma\n"


def test_a_missing_current_generation(three: Any) -> None:
    file = _generation(three, 3)
    file.unlink()
    r = _shell(three, "alpha")
    assert r.code == 1 and "is missing" in r.err, r
    _says_what_to_do(r.err, 3, file)
    three.run("profile", "rollback").ok()
    assert _shell(three, "beta").ok().out == "beta\n"


def test_gc_delete_older_than_with_a_broken_current_generation(three: Any) -> None:
    """gc wipes the good old generations and keeps the broken current one, which then has
    no way back: the error says to remove it and install again."""
    file = _generation(three, 3)
    file.write_text("")
    gone = three.run("gc", "--delete-older-than", "0s").ok()
    assert "wiped generations 1, 2" in gone.err and file.exists()
    r = _shell(three, "alpha")
    assert r.code == 1 and str(file) in r.err and "no earlier generation" in r.err, r
    assert "internal error" not in r.err
