"""Reading recipe files: TOML → :class:`Recipe`, every problem of a file reported at once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlpkg.documents import load_toml, printable
from mlpkg.errors import RecipeError
from mlpkg.recipes.model import FieldError, Recipe


def _field(loc: tuple[int | str, ...], err: Any = None) -> str:
    """The dotted field of a validation error: its location, refined by the field a
    :class:`FieldError` (a rule over several fields) names."""
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    cause = (err or {}).get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        parts.append(cause.field)
    return printable(".".join(parts)) or "(top level)"  # a TOML key may hold a newline


def parse(text: str, file: str) -> Recipe:
    """Validate recipe TOML. ``file`` names the source in errors (RecipeError: invalid TOML,
    nested too deep (:func:`mlpkg.documents.load_toml`), or not a valid recipe)."""
    try:
        data = load_toml(text, file, RecipeError)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{file} is not valid TOML: {e}.", file=file) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = printable(err["msg"].removeprefix("Value error, "))
            if err["type"] == "extra_forbidden":
                msg = "unknown field (not part of recipe format 1)"
            problems.append(f"{file}: field {_field(err['loc'], err)}: {msg}")
        first = e.errors()[0]
        count = len(problems)
        raise RecipeError(
            f"{file} is not a valid recipe: {count} problem{'s' if count > 1 else ''}, "
            f"first in field {_field(first['loc'], first)}.",
            details=problems,
            file=file,
            field=_field(first["loc"], first),
        ) from None


def check_variants(recipe: Recipe, file: str) -> None:
    """Every variant must give a valid recipe; problems name the file and the variant."""
    from mlpkg.recipes import variants

    for name, table in recipe.variants.items():
        data = recipe.model_dump(mode="json", exclude_defaults=True)
        data.pop("variants", None)
        variants.merge(data, table)
        try:
            Recipe.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = f"variants.{name}.{_field(err['loc'], err)}"
            msg = printable(err["msg"].removeprefix("Value error, "))
            raise RecipeError(f"{file}: field {where}: {msg}.", file=file, field=where) from None


def load(path: Path) -> Recipe:
    """Load ``<dir>/<name>/<version>.toml`` and check that name and version match the path."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"Cannot read recipe {path}: {e}.", file=str(path)) from None
    recipe = parse(text, str(path))
    check_variants(recipe, str(path))
    if recipe.name != path.parent.name:
        raise RecipeError(
            f"{path}: field name is '{recipe.name}' but the recipe lies in directory "
            f"'{path.parent.name}'.",
            file=str(path),
            field="name",
        )
    if recipe.version != path.stem:
        raise RecipeError(
            f"{path}: field version is '{recipe.version}' but the file is named "
            f"'{path.name}' (expected '{recipe.version}.toml').",
            file=str(path),
            field="version",
        )
    return recipe
