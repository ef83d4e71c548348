"""Derivations: what a store path is made from, and the hash that names it (invariant 1).

A :class:`Derivation` is self-contained: the recipe content, the store paths of its
inputs, and (for externals) the detected tool. It is stored with the path in the database,
so a path can be made again (``verify --repair``) without the recipe collection.

Store path hashes are computed from a *fingerprint*, canonical JSON of what one function
per kind says (:data:`FINGERPRINTS`; this module is the one place that decides what is
hashed, and ``tests/resolver/test_hashing_golden.py`` pins one store path per kind):

- fixed-output (``fetch``): name, version, declared content hash and unpack mode only.
- ``build``: the recipe's hashed content (``Recipe.hashed_content``: no cosmetic fields,
  no fields at their defaults), the platform, and each input's store path (whose hash
  part already covers that input's own inputs: hashing is bottom-up).
- ``wheel``: as ``build``, but of its ``[source]`` only the declared hash: the wheel file
  is pinned by its sha256, so a mirror added to ``urls`` changes nothing.
- ``external``: as ``build``, plus the detected version and probe facts, not where the
  tool lives.
- ``app``: as ``build``, less where the source was found (``app.located``) and the
  command's ``run.description``.

URLs are never hashed for a kind whose content is pinned by a declared hash (``fetch``,
``wheel``). Nothing in a fingerprint depends on the store root, the home directory or
the time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mlpkg.recipes.model import Recipe
from mlpkg.resolver.machine import current_platform
from mlpkg.store.path import StorePath

FINGERPRINT_VERSION = 1


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Detected:
    """An external tool as found on this machine."""

    version: str
    locations: dict[str, str] = field(default_factory=dict)  # executable -> absolute path
    # What a probe learnt that decides compatibility (for Python: implementation, ABI, the
    # tags it accepts); hashed, unlike the locations. Never holds paths.
    info: dict[str, Any] = field(default_factory=dict)
    # For Python: the wheel tags accepted on this machine (not hashed; see pyprobe).
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Derivation:
    """Everything needed to name and make one store path."""

    recipe: Recipe
    inputs: dict[str, StorePath]
    platform: str
    detected: Detected | None = None
    # A fetch's sha256 when the recipe declares only MD5, learnt at the first fetch and
    # pinned by a lockfile; checked too, but not hashed (the path is named by the MD5).
    source_sha256: str | None = None

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def version(self) -> str:
        return self.detected.version if self.detected else self.recipe.version

    @property
    def kind(self) -> str:
        return self.recipe.kind

    def fingerprint(self) -> dict[str, Any]:
        """What the store path hash covers: the function of :data:`FINGERPRINTS` for the
        recipe's kind (a kind without one there is hashed as ``build``: all its hashed
        content, the platform and its inputs)."""
        return FINGERPRINTS.get(self.kind, build_fingerprint)(self)

    @cached_property
    def _fingerprint_bytes(self) -> bytes:
        return canonical_json(self.fingerprint())

    @cached_property
    def path(self) -> StorePath:
        suffix = "".join(f"+{v}" for v in self.recipe.selected)
        return StorePath.from_fingerprint(
            self._fingerprint_bytes, f"{self.name}-{self.version}{suffix}"
        )

    @cached_property
    def recipe_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self._fingerprint_bytes).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The record kept in the database with the path."""
        return {
            "recipe": self.recipe.model_dump(mode="json", exclude_defaults=True),
            "inputs": {k: str(v) for k, v in sorted(self.inputs.items())},
            "platform": self.platform,
            "detected": (
                {
                    "version": self.detected.version,
                    "locations": self.detected.locations,
                    "info": self.detected.info,
                    "tags": self.detected.tags,
                }
                if self.detected
                else None
            ),
            "source_sha256": self.source_sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Derivation:
        det = data.get("detected")
        return cls(
            recipe=Recipe.model_validate(data["recipe"]),
            inputs={k: StorePath.parse(v) for k, v in data["inputs"].items()},
            platform=data["platform"],
            detected=(
                Detected(
                    det["version"],
                    dict(det["locations"]),
                    dict(det.get("info") or {}),
                    list(det.get("tags") or []),
                )
                if det
                else None
            ),
            source_sha256=data.get("source_sha256"),
        )


def fixed_output_fingerprint(drv: Derivation) -> dict[str, Any]:
    """``fetch``: name, version, the declared content hash and how it is unpacked; never
    the URLs (invariant 1), nor the platform (the bytes are the same everywhere)."""
    r = drv.recipe
    assert r.source is not None
    declared = f"sha256:{r.source.sha256}" if r.source.sha256 else f"md5:{r.source.md5}"
    return {
        "mlpkg": FINGERPRINT_VERSION,
        "type": "fixed",
        "name": r.name,
        "version": r.version,
        "hash": declared,
        "unpack": r.source.unpack,
        "strip_components": r.source.strip_components,
    }


def build_fingerprint(drv: Derivation, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """``build``: the recipe's hashed content (or ``recipe``, what another kind's rule
    left of it), the platform, and each input's store path by input name."""
    return {
        "mlpkg": FINGERPRINT_VERSION,
        "type": drv.kind,
        "platform": drv.platform,
        "recipe": drv.recipe.hashed_content() if recipe is None else recipe,
        "inputs": {k: str(v) for k, v in sorted(drv.inputs.items())},
    }


def wheel_fingerprint(drv: Derivation) -> dict[str, Any]:
    """``wheel``: as :func:`build_fingerprint`, with ``[source]`` reduced to its declared
    hash: the file is pinned by it, so its URLs (mirrors) are not hashed. (A recipe with
    ``[[wheel.files]]`` is hashed once specialised to one file, as ``[source]``; were it
    hashed whole, each file would count without its URLs.)"""
    content = drv.recipe.hashed_content()
    if "source" in content:
        content["source"].pop("urls", None)
    for file in content.get("wheel", {}).get("files", []):
        file.pop("urls", None)
    return build_fingerprint(drv, content)


def external_fingerprint(drv: Derivation) -> dict[str, Any]:
    """``external``: as :func:`build_fingerprint`, plus the detected version and what a
    probe learnt (``detected.info``); never where the tool was found."""
    fp = build_fingerprint(drv)
    if drv.detected is not None:
        fp["detected_version"] = drv.detected.version
        if drv.detected.info:
            fp["detected_info"] = drv.detected.info
    return fp


def app_fingerprint(drv: Derivation) -> dict[str, Any]:
    """``app``: as :func:`build_fingerprint`, less where the source was found on this
    machine (``app.located``; its ``digest`` is what it is) and ``run.description``."""
    content = drv.recipe.hashed_content()
    if "app" in content:
        content["app"].pop("located", None)
    if "run" in content:
        content["run"].pop("description", None)
    return build_fingerprint(drv, content)


# What is hashed, by recipe kind: the one place that says it.
FINGERPRINTS: dict[str, Callable[[Derivation], dict[str, Any]]] = {
    "fetch": fixed_output_fingerprint,
    "build": build_fingerprint,
    "wheel": wheel_fingerprint,
    "external": external_fingerprint,
    "app": app_fingerprint,
}

__all__ = ["FINGERPRINTS", "Derivation", "Detected", "canonical_json", "current_platform"]
