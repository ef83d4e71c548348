"""Derivations: what a store path is made from, and the hash that names it (invariant 1).

A :class:`Derivation` is self-contained: the recipe content, the store paths of its
inputs, and (for externals) the detected tool. It is stored with the path in the database,
so a path can be made again (``verify --repair``) without the recipe collection.

Store path hashes are computed from a *fingerprint*, canonical JSON of:

- fixed-output (``fetch``): name, version, declared content hash and unpack mode only.
  URLs are not part of it: changing a mirror changes nothing.
- ``build``: the recipe's hashed content, the platform, and each input's store path
  (whose hash part already covers that input's own inputs: hashing is bottom-up).
- ``external``: the recipe's hashed content, the platform and the detected version, not
  where the tool lives.

Nothing in a fingerprint depends on the store root, the home directory or the time.
"""

from __future__ import annotations

import hashlib
import json
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
        r = self.recipe
        if r.kind == "fetch":
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
        fp: dict[str, Any] = {
            "mlpkg": FINGERPRINT_VERSION,
            "type": r.kind,
            "platform": self.platform,
            "recipe": r.hashed_content(),
            "inputs": {k: str(v) for k, v in sorted(self.inputs.items())},
        }
        if self.detected is not None:
            fp["detected_version"] = self.detected.version
            if self.detected.info:
                fp["detected_info"] = self.detected.info
        return fp

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


__all__ = ["Derivation", "Detected", "canonical_json", "current_platform"]
