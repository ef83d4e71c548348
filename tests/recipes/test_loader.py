"""Recipe format 1: validation, with every problem of a file reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpkg.errors import RecipeError
from mlpkg.recipes import loader

GOOD_BUILD = """
name = "hello"
version = "1.0"
kind = "build"
[inputs]
src = "hello-src@1.0"
[build]
script = "mkdir $out"
[env]
PATH = { prepend = "bin" }
GREETING = "hi"
"""


def write(root: Path, name: str, version: str, text: str) -> Path:
    f = root / name / f"{version}.toml"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f


def test_a_good_recipe_loads(tmp_path: Path) -> None:
    r = loader.load(write(tmp_path, "hello", "1.0", GOOD_BUILD))
    assert r.inputs == {"src": "hello-src@1.0"}
    assert r.env["PATH"].prepend == "bin" and r.env["GREETING"].set == "hi"


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    f = write(tmp_path, "hello", "1.0", 'name = "hello\nversion = 1')
    with pytest.raises(RecipeError, match="is not valid TOML") as e:
        loader.load(f)
    assert e.value.file == str(f) and str(f) in e.value.message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = 'name = "hello"\nversion = "1.0"\nkind = "build"\ncolour = "red"\n[build]\n'
    f = write(tmp_path, "hello", "1.0", text)
    with pytest.raises(RecipeError) as e:
        loader.load(f)
    err = e.value
    assert "2 problems" in err.message and err.field == "build.script"
    assert any("field build.script: Field required" in d for d in err.details)
    assert any("field colour: unknown field" in d for d in err.details)
    assert all(d.startswith(str(f)) for d in err.details)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('name = "x"\nversion = "1.0"\nkind = "fetch"\n', "source", "needs a [source]"),
        ('name = "x"\nversion = "1.0"\nkind = "teleport"\n', "kind", "fetch"),
        ('name = "x"\nversion = "one"\nkind = "build"\n[build]\nscript="s"\n', "version", "valid version"),
        ('name = "x"\nversion = "1.0"\nkind = "fetch"\n[source]\nurls = ["ftp://a/b"]\nsha256 = "' + "a" * 64 + '"\n', "source.urls", "ftp://a/b"),
        ('name = "x"\nversion = "1.0"\nkind = "fetch"\n[source]\nurls = ["https://a/b"]\n', "source", "needs sha256"),
        ('name = "x"\nversion = "1.0"\nkind = "fetch"\n[source]\nurls = ["https://a/b"]\nsha256 = "abc"\n', "source.sha256", "pattern"),
        ('name = "x"\nversion = "1.0"\nkind = "build"\n[inputs]\n"bad key" = "y"\n[build]\nscript="s"\n', "inputs", "environment variable"),
        ('name = "x"\nversion = "1.0"\nkind = "build"\n[inputs]\nout = "y"\n[build]\nscript="s"\n', "inputs.out", "reserved"),
        ('name = "x"\nversion = "1.0"\nkind = "build"\n[inputs]\nTZ = "y"\n[build]\nscript="s"\n', "inputs.TZ", "reserved"),
        ('name = "x"\nversion = "1.0"\nkind = "build"\n[inputs]\nPYTHONPATH = "y"\n[build]\nscript="s"\n', "inputs.PYTHONPATH", "reserved"),
        ('format = 2\nname = "x"\nversion = "1.0"\nkind = "build"\n[build]\nscript="s"\n', "format", "format 2"),
        ('name = "x"\nversion = "1.0"\nkind = "build"\n[build]\nscript="s"\n[env]\nP = {prepend="a", append="b"}\n', "env.P", "exactly one"),
    ],
    ids=["fetch-without-source", "unknown-kind", "bad-version", "bad-scheme", "no-hash",
         "short-hash", "bad-input-key", "reserved-input", "reserved-tz", "reserved-pythonpath",
         "future-format", "env-two-actions"],
)  # fmt: skip
def test_invalid_recipes_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(RecipeError) as e:
        loader.parse(text, "x.toml")
    assert e.value.field == field
    assert words in " ".join(e.value.details)


def test_name_and_version_must_match_the_path(tmp_path: Path) -> None:
    f = write(tmp_path, "other", "1.0", GOOD_BUILD)
    with pytest.raises(RecipeError, match=r"lies in directory 'other'"):
        loader.load(f)
    f = write(tmp_path, "hello", "2.0", GOOD_BUILD)
    with pytest.raises(RecipeError, match=r"expected '1\.0\.toml'"):
        loader.load(f)


def test_hashed_content_leaves_out_cosmetics_and_defaults() -> None:
    a = loader.parse(GOOD_BUILD, "a")
    b = loader.parse('summary = "changed"\naliases = ["hi"]\n' + GOOD_BUILD, "b")
    assert a.hashed_content() == b.hashed_content()
    c = loader.parse(GOOD_BUILD.replace("mkdir $out", "mkdir -p $out"), "c")
    assert a.hashed_content() != c.hashed_content()
