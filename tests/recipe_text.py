"""Recipe texts for tests: small, valid TOML for the recipe kinds the CLI tests use."""

from __future__ import annotations

import json


def fetch_toml(
    name: str, version: str, urls: list[str], sha: str, *, unpack: bool = True, summary: str = ""
) -> str:
    """A fetch recipe; unpacked with the top directory stripped unless ``unpack=False``."""
    lines = [f"name = {json.dumps(name)}", f"version = {json.dumps(version)}"]
    if summary:
        lines.append(f"summary = {json.dumps(summary)}")
    lines += ['kind = "fetch"', "[source]", f"urls = {json.dumps(urls)}", f'sha256 = "{sha}"']
    if unpack:
        lines += ["unpack = true", "strip_components = 1"]
    return "\n".join(lines) + "\n"


def build_toml(
    name: str, version: str, script: str, inputs: dict[str, str] | None = None, summary: str = ""
) -> str:
    """A build recipe running ``script`` with ``inputs`` (input name → spec)."""
    assert "'''" not in script
    lines = [f"name = {json.dumps(name)}", f"version = {json.dumps(version)}"]
    if summary:
        lines.append(f"summary = {json.dumps(summary)}")
    lines += [
        'kind = "build"',
        "[inputs]",
        *(f"{k} = {json.dumps(v)}" for k, v in (inputs or {}).items()),
        "[build]",
        f"script = '''{script}'''",
    ]
    return "\n".join(lines) + "\n"
