"""A recipe kind is one module: its recipe rules and its builder, registered (issue 11).

This module is that module for a toy kind, ``note``: a recipe with no tables whose path
holds one file, ``note``, naming the package and the notes of its inputs. The kind is
registered for each test only (the registries are restored afterwards), and its recipes go
through the real loader, resolver, plan, store and CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import mlpkg.build as build
from mlpkg.build import BuildContext, Builder
from mlpkg.errors import MlpkgError, RecipeError
from mlpkg.recipes import kinds, loader
from mlpkg.recipes.index import RecipeIndex
from mlpkg.recipes.model import FieldError, Recipe
from mlpkg.resolver.derivation import Derivation
from mlpkg.resolver.plan import make_plan
from mlpkg.resolver.provider import IndexProvider
from mlpkg.resolver.realise import realise_plan
from mlpkg.resolver.spec import parse_spec
from mlpkg.store.store import Maker, Store

if TYPE_CHECKING:  # the fixtures' types (tests/conftest.py); nothing is imported at run time
    from tests.conftest import MlpkgCli, RecipeDir

# -- the kind: its recipe rules and its builder -----------------------------------------------


def _note_rules(recipe: Recipe) -> None:
    if recipe.summary == "":
        raise FieldError("summary", "a note recipe needs a summary (its text)")


NOTE_RULES = kinds.KindRules("note", needs=(), check=_note_rules)


class Note(Builder):
    kind = "note"
    action = "build"
    relocatable = True

    def maker(self, drv: Derivation, ctx: BuildContext) -> Maker:
        def make(tmp: Path) -> dict[str, object]:
            inputs = {
                key: (ctx.store.real_path(path) / "note").read_text()
                for key, path in sorted(drv.inputs.items())
            }
            tmp.mkdir()
            text = json.dumps({"name": drv.name, "summary": drv.recipe.summary, "inputs": inputs})
            (tmp / "note").write_text(text)
            return {"inputs": len(inputs)}

        return make


@pytest.fixture
def note_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registration of ``note`` (what its module would do once, at import)."""
    monkeypatch.setattr(kinds, "_RULES", dict(kinds._RULES))
    monkeypatch.setattr(build, "_BUILDERS", dict(build._BUILDERS))
    kinds.register(NOTE_RULES)
    build.register(Note())
    yield


# -- recipes of the kind ----------------------------------------------------------------------


def write_notes(recipes: RecipeDir) -> None:
    recipes.add("base", "1.0", 'name = "base"\nversion = "1.0"\nkind = "note"\nsummary = "B"\n')
    recipes.add(
        "greeting",
        "2.0",
        'name = "greeting"\nversion = "2.0"\nkind = "note"\nsummary = "hello"\n'
        '[inputs]\nBASE = "base@1"\n',
    )


def test_an_unregistered_kind_is_refused_naming_the_registered_ones() -> None:
    text = 'name = "x"\nversion = "1.0"\nkind = "note"\nsummary = "s"\n'
    with pytest.raises(RecipeError) as e:
        loader.parse(text, "x.toml")
    assert e.value.field == "kind"
    assert all(k in " ".join(e.value.details) for k in kinds.registered())
    with pytest.raises(MlpkgError, match="Recipe kind 'note' of x cannot be realised"):
        build.builder_for("note", "x")


def test_a_registered_kind_s_recipe_rules_apply(note_kind: None) -> None:
    assert "note" in " ".join(kinds.registered())
    recipe = loader.parse('name = "x"\nversion = "1.0"\nkind = "note"\nsummary = "s"\n', "x.toml")
    assert recipe.kind == "note"
    with pytest.raises(RecipeError) as e:  # its own rule
        loader.parse('name = "x"\nversion = "1.0"\nkind = "note"\n', "x.toml")
    assert e.value.field == "summary"
    with pytest.raises(RecipeError) as e:  # a table it does not allow
        loader.parse(
            'name = "x"\nversion = "1.0"\nkind = "note"\nsummary = "s"\n[build]\nscript = "s"\n',
            "x.toml",
        )
    assert e.value.field == "build"
    assert "a note recipe cannot have a [build] table" in " ".join(e.value.details)


def test_a_registered_kind_is_resolved_planned_and_realised(
    note_kind: None, recipe_dir: RecipeDir, tmp_path: Path
) -> None:
    write_notes(recipe_dir)
    provider = IndexProvider(RecipeIndex([recipe_dir.path]))
    with Store(tmp_path / "home") as store:
        plan = make_plan(provider, [parse_spec("greeting")], store)
        assert [(n.drv.name, n.action) for n in plan.nodes] == [
            ("base", "build"),
            ("greeting", "build"),
        ]
        [info] = realise_plan(plan, store)
        assert info.kind == "note"
        assert info.references == [plan.nodes[0].path]
        note = json.loads((store.real_path(info.path) / "note").read_text())
        assert note["name"] == "greeting"
        assert json.loads(note["inputs"]["BASE"])["summary"] == "B"
        # hashed as a build is: the recipe, the platform, the inputs' paths
        assert plan.nodes[1].drv.fingerprint()["type"] == "note"


def test_the_cli_builds_and_repairs_a_registered_kind(note_kind: None, mlpkg_cli: MlpkgCli) -> None:
    write_notes(mlpkg_cli.recipes)
    out = Path(mlpkg_cli.run("build", "greeting").ok().out.strip())
    assert json.loads((out / "note").read_text())["summary"] == "hello"
    (out / "note").chmod(0o644)
    (out / "note").write_text("tampered")
    mlpkg_cli.run("verify", "--check-contents", "--repair").ok()
    assert json.loads((out / "note").read_text())["summary"] == "hello"
