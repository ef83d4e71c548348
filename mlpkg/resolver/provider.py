"""The resolver's view of the recipe index (the Provider of :mod:`mlpkg.resolver.resolve`).

Candidates are lazy: a version is known from the file name, and the recipe file is read
only when the resolver asks for the candidate's inputs, so resolving ``loadgen@4.0`` reads
one file of that package, not all of them. External tools are detected when first listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Protocol

from packaging.version import Version

from mlpkg.errors import BadInput, ExternalNotFound, RecipeError, UnknownPackage
from mlpkg.recipes.index import RecipeFile, RecipeIndex, canonical
from mlpkg.recipes.model import Recipe
from mlpkg.resolver.derivation import Detected
from mlpkg.resolver.external import Detector
from mlpkg.resolver.spec import Spec, parse_spec


class RecipeBacked(Protocol):
    """A candidate that can be hashed into a derivation: what :func:`plan.derive` needs.

    ``inputs`` are what the resolver sees: the inputs that stay in the path's closure
    (all of them, unless a build names its ``runtime_inputs``); ``build_inputs`` are the
    others, needed only while the path is made, resolved in a scope of their own."""

    @property
    def inputs(self) -> Mapping[str, Spec]: ...

    @property
    def build_inputs(self) -> Mapping[str, Spec]: ...

    @property
    def recipe(self) -> Recipe: ...

    @property
    def detected(self) -> Detected | None: ...


class InputOverrides:
    """``--with NAME=SPEC``: every input whose key is NAME, or whose package is NAME, is
    replaced by SPEC, anywhere in the closure. ``applied`` records where (requester and
    input key), so ``show`` can explain it and unused overrides can be refused."""

    def __init__(self, specs: Mapping[str, Spec]) -> None:
        self.specs = dict(specs)
        self.applied: dict[str, list[str]] = {name: [] for name in specs}

    def apply(self, requester: str, inputs: dict[str, Spec]) -> None:
        for key, spec in list(inputs.items()):
            name = key if key in self.specs else canonical(spec.name)
            if name in self.specs:
                inputs[key] = self.specs[name]
                self.applied[name].append(f"{requester} (input {key})")


class RecipeCandidate:
    """One version of a package, backed by its recipe file."""

    def __init__(
        self,
        index: RecipeIndex,
        rf: RecipeFile,
        detected: Detected | None,
        variants: tuple[str, ...] = (),
        overrides: InputOverrides | None = None,
    ) -> None:
        self.index = index
        self.file = rf
        self.detected = detected
        self.variants = variants
        self.overrides = overrides
        self.name = rf.name
        self.version = Version(detected.version if detected else rf.version)
        # An external (found on the machine) is tried before versions that would be built:
        # the machine's Python before a source-built one, unless a spec excludes it.
        self.preferred = rf.is_external

    @cached_property
    def recipe(self) -> Recipe:
        recipe = self.index.load(self.file)
        if self.variants:
            from mlpkg.recipes.variants import apply

            recipe = apply(recipe, self.variants)
        if recipe.app is not None:  # an app's local source: digest it (and stamp its files)
            from mlpkg.recipes.appsource import pin

            recipe = pin(recipe, self.file.path, self.index.record_file)
        return recipe

    @cached_property
    def _all_inputs(self) -> dict[str, Spec]:
        specs: dict[str, Spec] = {}
        for key, text in self.recipe.inputs.items():
            try:
                specs[key] = parse_spec(text)
            except RecipeError:
                raise
            except Exception as e:  # BadInput from the spec parser, with the file named
                raise RecipeError(
                    f"{self.file.path}: field inputs.{key}: {getattr(e, 'message', e)}",
                    file=str(self.file.path),
                    field=f"inputs.{key}",
                ) from None
        if self.overrides is not None:
            self.overrides.apply(f"{self.name}@{self.version}", specs)
        return specs

    @cached_property
    def inputs(self) -> Mapping[str, Spec]:
        """The inputs that stay in the closure (see :class:`RecipeBacked`)."""
        return split_inputs(self.recipe, self._all_inputs)[0]

    @cached_property
    def build_inputs(self) -> Mapping[str, Spec]:
        """The inputs needed only to make the path."""
        return split_inputs(self.recipe, self._all_inputs)[1]

    def __repr__(self) -> str:
        return f"{self.name}@{self.version}"


def split_inputs(
    recipe: Recipe, specs: Mapping[str, Spec]
) -> tuple[dict[str, Spec], dict[str, Spec]]:
    """``specs`` (a recipe's inputs) as (kept in the closure, needed only to build): a
    build that names ``runtime_inputs`` keeps those; every other recipe keeps all."""
    keep = recipe.build.runtime_inputs if recipe.build is not None else None
    if keep is None:
        return dict(specs), {}
    runtime = {k: v for k, v in specs.items() if k in keep}
    return runtime, {k: v for k, v in specs.items() if k not in keep}


def _declares(index: RecipeIndex, cand: RecipeCandidate, wanted: tuple[str, ...]) -> bool:
    return all(v in index.load(cand.file).variants for v in wanted)


class IndexProvider:
    """Provider over a :class:`RecipeIndex`, detecting externals with a :class:`Detector`."""

    def __init__(self, index: RecipeIndex, detector: Detector | None = None) -> None:
        self.index = index
        self.detector = detector or Detector()
        self._candidates: dict[str, list[RecipeCandidate]] = {}
        self.variants: dict[str, tuple[str, ...]] = {}
        self.overrides: InputOverrides | None = None

    def set_overrides(self, overrides: Mapping[str, Spec]) -> None:
        """Use ``--with`` overrides (keys: input keys or package names); before resolving."""
        resolved: dict[str, Spec] = {}
        for name, spec in overrides.items():
            try:
                resolved[self.index.canonical_name(name)] = spec
            except UnknownPackage:
                resolved[name] = spec  # an input key, like "compiler"
        self.overrides = InputOverrides(resolved) if resolved else None
        self._candidates.clear()

    def select_variants(self, variants: dict[str, tuple[str, ...]]) -> None:
        """Use these variants of these (canonical) package names; call before resolving."""
        self.variants = dict(variants)
        self._candidates.clear()

    def canonical_name(self, name: str) -> str:
        return self.index.canonical_name(name)

    def _with_variants(
        self, name: str, found: list[RecipeCandidate], wanted: tuple[str, ...]
    ) -> list[RecipeCandidate]:
        """Only the versions that declare every wanted variant."""
        having = [c for c in found if _declares(self.index, c, wanted)]
        if not having:
            asked = " ".join(f"+{v}" for v in wanted)
            have = sorted({v for c in found for v in self.index.load(c.file).variants})
            there = ", ".join(f"+{v}" for v in have) or "none"
            raise BadInput(
                f"No version of {name} declares the variant {asked} (its variants: {there}).",
                package=name,
            )
        return having

    def candidates(self, name: str) -> Sequence[RecipeCandidate]:
        found = self._candidates.get(name)
        if found is None:
            found = []
            for rf in self.index.files(name):
                detected = None
                if rf.is_external:
                    detected = self.detector(self.index.load(rf))  # raises ExternalNotFound
                variants = self.variants.get(name, ())
                found.append(RecipeCandidate(self.index, rf, detected, variants, self.overrides))
            wanted = self.variants.get(name, ())
            if wanted:
                found = self._with_variants(name, found, wanted)
            self._candidates[name] = found
        return found


__all__ = [
    "ExternalNotFound",
    "IndexProvider",
    "RecipeBacked",
    "RecipeCandidate",
    "split_inputs",
]
