"""Fuzzing the recipe loader (issue 15): arbitrary TOML text, edits of the text of bundled
recipes, and structurally plausible but wrong documents (a value of a bundled recipe
replaced by one of any TOML type, a key deleted or added, in any table, variants included).

Property: :func:`mlpkg.recipes.loader.load` gives a recipe or raises a
:class:`~mlpkg.errors.RecipeError` whose one sentence names the file; never another
exception. Profiles: tests/fuzz_support.py."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import strategies as st

from mlpkg.errors import RecipeError
from mlpkg.recipes import loader
from tests.fuzz_support import PROFILES, TEXT_EDITS, edit_text, fuzz, mutate, toml_text

COLLECTION = Path(__file__).resolve().parents[2] / "recipes"
# One recipe of each kind (an app with variants among them), as the seeds of the mutations.
SEEDS = [
    "hello/1.0.toml",
    "six-src/1.16.0.toml",
    "flatbuffers/25.12.19.toml",
    "retinanet-offline/1.0.toml",
    "cmake/external.toml",
]


def check_load(text: str, relative: str = "fuzz/1.0.toml") -> None:
    """Load ``text`` as ``<dir>/<relative>``: a recipe, or a RecipeError naming the file."""
    with tempfile.TemporaryDirectory(prefix="mlpkg-recipefuzz-") as tmp:
        file = Path(tmp) / relative
        file.parent.mkdir()
        file.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            loader.load(file)
        except RecipeError as e:
            assert str(file) in e.message, e.message
            assert "\n" not in e.message, e.message


@pytest.mark.parametrize("seed", SEEDS)
def test_the_seeds_load(seed: str) -> None:
    loader.load(COLLECTION / seed)


@pytest.mark.parametrize("profile", PROFILES)
def test_arbitrary_text(profile: str) -> None:
    fuzz(profile, st.text(max_size=300), lambda t: check_load(t))


_TOML_LINE = st.sampled_from(
    [
        'name = "fuzz"',
        'version = "1.0"',
        'kind = "build"',
        'kind = "fetch"',
        "[build]",
        'script = "x"',
        "[source]",
        'urls = ["https://x.org/a"]',
        f'sha256 = "{"0" * 64}"',
        "unpack = true",
        "[inputs]",
        'a = "b"',
        "[env]",
        'PATH = { prepend = "bin" }',
        "[variants.v]",
        "[variants.v.source]",
        "x = 1979-05-27",
        "[[a]]",
        "a.b.c = 1",
    ]
)


@pytest.mark.parametrize("profile", PROFILES)
def test_lines_of_recipe_tables(profile: str) -> None:
    """Plausible lines in any order: valid TOML far more often than random text."""
    fuzz(profile, st.lists(_TOML_LINE, max_size=14), lambda lines: check_load("\n".join(lines)))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("seed", SEEDS)
def test_edited_bundled_recipe(profile: str, seed: str) -> None:
    text = (COLLECTION / seed).read_text()
    fuzz(profile, TEXT_EDITS, lambda e: check_load(edit_text(text, e), seed))


@st.composite
def _mutated(draw: st.DrawFn, text: str) -> str:
    return toml_text(mutate(draw, tomllib.loads(text), rounds=2), text)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("seed", SEEDS)
def test_mutated_bundled_recipe(profile: str, seed: str) -> None:
    text = (COLLECTION / seed).read_text()
    fuzz(profile, _mutated(text), lambda t: check_load(t, seed))


# -- regressions the fuzzing found ------------------------------------------------------------

FETCH = f"""name = "fuzz"
version = "1.0"
kind = "fetch"
[source]
urls = ["https://x.org/a.tgz"]
sha256 = "{"0" * 64}"
unpack = true
"""


@pytest.mark.parametrize("size", ["9" * 400 + "PiB", "1" * 310, "1" * 400 + ".5 KB"])
def test_a_size_too_big_for_a_float_is_a_recipe_error(tmp_path: Path, size: str) -> None:
    """``max_unpacked_size = "999…9PiB"`` overflowed a float to infinity: OverflowError."""
    file = tmp_path / "fuzz" / "1.0.toml"
    file.parent.mkdir()
    file.write_text(FETCH + f'max_unpacked_size = "{size}"\n')
    with pytest.raises(RecipeError) as e:
        loader.load(file)
    assert e.value.field == "source.max_unpacked_size"
    assert "is not a size" in e.value.details[0], e.value.details


@pytest.mark.parametrize(
    "extra",
    [
        '[build]\n"\\n" = []\nscript = "x"\n',  # found by the slow profile
        '[build]\nscript = "x"\n[env]\n"A\\nB" = "v"\n',
        '[build]\nscript = "x"\n[variants."a\\nb".build]\nscript = 3\n',
    ],
)
def test_a_key_with_a_newline_is_escaped_in_the_one_sentence(tmp_path: Path, extra: str) -> None:
    file = tmp_path / "fuzz" / "1.0.toml"
    file.parent.mkdir()
    file.write_text('name = "fuzz"\nversion = "1.0"\nkind = "build"\n' + extra)
    with pytest.raises(RecipeError) as e:
        loader.load(file)
    assert "\n" not in e.value.message, e.value.message
    assert "\n" not in "".join(e.value.details) and "\n" not in (e.value.field or "")
    assert "\\n" in e.value.message + "".join(e.value.details), e.value.details


@pytest.mark.parametrize(
    ("table", "phrase"),
    [
        ("inputs = []", "inputs must be a table of specs"),  # found by the slow profile
        ("inputs = { a = 1 }", "inputs must be a table of specs"),
        ("remove = 5", "remove must be a list of table names"),
        ("remove = [[]]", "remove must be a list of table names"),
    ],
)
def test_a_variant_of_the_wrong_shape_is_a_recipe_error(
    tmp_path: Path, table: str, phrase: str
) -> None:
    """``[variants.v] inputs = []`` raised TypeError while merging the variant."""
    file = tmp_path / "fuzz" / "1.0.toml"
    file.parent.mkdir()
    text = 'name = "fuzz"\nversion = "1.0"\nkind = "build"\n[build]\nscript = "x"\n'
    file.write_text(text + f"[variants.v]\n{table}\n")
    with pytest.raises(RecipeError) as e:
        loader.load(file)
    assert e.value.field == "variants" and phrase in e.value.details[0], e.value.details
