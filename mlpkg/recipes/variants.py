"""Variants: named alternatives inside a recipe, selected with ``NAME+VARIANT``.

A recipe may declare ``[variants.NAME]`` tables. Selecting a variant merges its table over
the recipe: ``inputs`` are merged key by key (an empty string removes an input), every other
field replaces the recipe's, and ``remove = ["source", "wheel"]`` drops tables (to turn a
wheel into a build from source, say). The result is validated like any recipe, records the
variants in ``selected`` (hashed, so each variant has its own store path), and its store
path is named ``<name>-<version>+<variant>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlpkg.errors import BadInput
from mlpkg.recipes.model import Recipe


def apply(recipe: Recipe, names: Sequence[str]) -> Recipe:
    """``recipe`` with the variants ``names`` merged in (in name order)."""
    wanted = sorted(set(names))
    if not wanted:
        return recipe
    unknown = [n for n in wanted if n not in recipe.variants]
    if unknown:
        have = ", ".join(f"+{v}" for v in sorted(recipe.variants)) or "none"
        raise BadInput(
            f"{recipe.name}@{recipe.version} has no variant +{unknown[0]} (it has {have}).",
            package=recipe.name,
        )
    data: dict[str, Any] = recipe.model_dump(mode="json", exclude_defaults=True)
    data.pop("variants", None)
    for name in wanted:
        merge(data, recipe.variants[name])
    data["selected"] = wanted
    return Recipe.model_validate(data)


def merge(data: dict[str, Any], variant: dict[str, Any]) -> None:
    """Merge one variant table into recipe data (see the module docstring)."""
    table = dict(variant)
    table.pop("summary", None)
    for section in table.pop("remove", []):
        data.pop(str(section), None)
    inputs = table.pop("inputs", None)
    if inputs is not None:
        merged = {**data.get("inputs", {}), **inputs}
        data["inputs"] = {k: v for k, v in merged.items() if v != ""}
    data.update(table)
