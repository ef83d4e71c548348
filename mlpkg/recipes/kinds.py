"""The recipe kinds and the rules each puts on a recipe: one :class:`KindRules` a kind.

The recipe model (:mod:`mlpkg.recipes.model`) accepts the kinds registered here and
checks a recipe against its kind's rules: which tables it needs and may have, whether it
may have inputs, whether its version is detected, and any further rule of its own. The
five kinds of recipe format 1 are registered below; a kind added later registers its rules
from its builder's module (``mlpkg/build/<kind>.py``, see docs/architecture.md), which also
says how its paths are made. This module imports nothing of mlpkg: the rules are plain
functions over a recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlpkg.recipes.model import Recipe

# The tables a recipe can have beside its fields, in the order they are checked.
TABLES = ("source", "build", "external", "wheel", "app", "run")


@dataclass(frozen=True)
class KindRules:
    """What recipes of kind ``name`` must look like.

    ``needs``: the tables such a recipe must have; ``allows``: others it may have (every
    other table is refused); ``inputs``: whether it may have inputs; ``detected_version``:
    whether its version is ``"external"`` (found on the machine), which no other kind may
    use; ``check``: further rules, raising :class:`mlpkg.recipes.model.FieldError`.
    """

    name: str
    needs: tuple[str, ...]
    allows: tuple[str, ...] = ()
    inputs: bool = True
    detected_version: bool = False
    check: Callable[[Recipe], None] | None = None


_RULES: dict[str, KindRules] = {}


def register(rules: KindRules) -> KindRules:
    """Accept recipes of kind ``rules.name`` from now on (a second registration of a name
    replaces the first)."""
    _RULES[rules.name] = rules
    return rules


def registered() -> list[str]:
    """The kinds recipes may have, in the order they were registered."""
    return list(_RULES)


def rules_of(kind: str) -> KindRules:
    """The rules of a registered ``kind`` (KeyError for another)."""
    return _RULES[kind]


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def check_tables(recipe: Recipe, rules: KindRules) -> None:
    """Refuse a missing table the kind needs, or a table it does not allow."""
    from mlpkg.recipes.model import FieldError

    a_kind = f"{_article(rules.name)} {rules.name}"
    for section in TABLES:
        present = getattr(recipe, section) is not None
        if section in rules.needs and not present:
            raise FieldError(section, f"{a_kind} recipe needs a [{section}] table")
        if section not in (*rules.needs, *rules.allows) and present:
            raise FieldError(section, f"{a_kind} recipe cannot have a [{section}] table")


def _wheel(recipe: Recipe) -> None:
    from mlpkg.recipes.model import FieldError

    if "python" not in recipe.inputs:
        raise FieldError("inputs", "a wheel recipe needs an input named python (the interpreter)")
    if recipe.source is not None and recipe.source.unpack:
        raise FieldError(
            "source.unpack", "a wheel's [source] is installed, not unpacked: drop unpack"
        )
    wheel = recipe.wheel
    assert wheel is not None
    if wheel.files:
        if recipe.source is not None or wheel.filename is not None:
            raise FieldError(
                "wheel.files",
                "a wheel recipe gives [[wheel.files]] or [source] and wheel.filename, not both",
            )
        for i, file in enumerate(wheel.files):
            if file.sha256 is None and file.md5 is None:
                raise FieldError(f"wheel.files.{i}", "a wheel file needs sha256 (or md5)")
    elif recipe.source is None or wheel.filename is None:
        raise FieldError(
            "wheel", "a wheel recipe needs [source] and wheel.filename, or [[wheel.files]]"
        )


def _app(recipe: Recipe) -> None:
    from mlpkg.recipes.model import FieldError

    if recipe.app is not None and "python" not in recipe.inputs:
        raise FieldError("inputs", "an app with an [app] package needs an input named python")


# Recipe format 1's kinds: a fixed-output download, a sandboxed bash script, a tool found
# on the machine, a Python wheel, and an application (a [run] command, and optionally a
# local Python package, [app]).
register(KindRules("fetch", needs=("source",), inputs=False))
register(KindRules("build", needs=("build",)))
register(KindRules("external", needs=("external",), inputs=False, detected_version=True))
register(KindRules("wheel", needs=("wheel",), allows=("source",), check=_wheel))
register(KindRules("app", needs=("run",), allows=("app",), check=_app))
