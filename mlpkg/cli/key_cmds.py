"""``mlpkg key``: signing keys (generate, show) and trusted keys (trust, list)."""

from __future__ import annotations

import os
from typing import Any

import click

from mlpkg.cli.context import App, common
from mlpkg.config import ENV_TRUSTED_KEYS, add_trusted_key, config_path, load_config


@click.group("key")
def key() -> None:
    """Signing keys for binary caches, and the keys whose signatures are trusted."""


@key.command("generate")
@click.argument("name")
@common
def generate_cmd(app: App, name: str) -> None:
    """Make a new key pair NAME under $MLPKG_HOME/keys and print its public key."""
    from mlpkg.cache.keys import SecretKey, save_key  # (cryptography: not at CLI start)

    secret = SecretKey.generate(name)
    secret_file, public_file = save_key(app.home, secret)
    public = str(secret.public())
    if app.json:
        app.emit(
            {
                "name": name,
                "public_key": public,
                "secret_file": str(secret_file),
                "public_file": str(public_file),
            }
        )
        return
    app.out(public)
    app.info(f"wrote {secret_file} (keep it secret) and {public_file}.")
    app.info(
        f"To trust it, add it to trusted-keys in {config_path(app.home)}, or "
        f"{ENV_TRUSTED_KEYS}: `mlpkg key trust {public}`."
    )


@key.command("show")
@click.argument("name")
@common
def show_cmd(app: App, name: str) -> None:
    """Print the public key of the key pair NAME (or of a secret key file)."""
    from mlpkg.cache.keys import load_signing_key

    public = load_signing_key(app.home, name).public()
    if app.json:
        app.emit({"name": public.name, "public_key": str(public)})
    else:
        app.out(str(public))


@key.command("trust")
@click.argument("public_key", metavar="PUBLIC_KEY")
@common
def trust_cmd(app: App, public_key: str) -> None:
    """Add PUBLIC_KEY (name:base64) to trusted-keys in $MLPKG_HOME/config.toml."""
    from mlpkg.cache.keys import PublicKey

    parsed = PublicKey.parse(public_key, "the key to trust")
    added = add_trusted_key(app.home, str(parsed))
    path = config_path(app.home)
    if app.json:
        app.emit({"public_key": str(parsed), "config_file": str(path), "added": added})
    elif added:
        app.info(f"added {parsed.name} to trusted-keys in {path}.")
    else:
        app.info(f"{parsed.name} is already in trusted-keys in {path}.")
    if ENV_TRUSTED_KEYS in os.environ:
        app.info(f"note: {ENV_TRUSTED_KEYS} is set, and replaces trusted-keys of {path}.")


@key.command("list")
@common
def list_cmd(app: App) -> None:
    """List the trusted keys (from config.toml or MLPKG_TRUSTED_KEYS) and this home's key
    pairs."""
    from mlpkg.cache.keys import key_pairs, keys_dir, trusted_keys

    config = load_config(app.home)
    trusted = sorted(trusted_keys(config), key=lambda k: (k.name, str(k)))
    pairs = key_pairs(app.home)
    doc: dict[str, Any] = {
        "trusted_keys": [{"name": k.name, "public_key": str(k)} for k in trusted],
        "trusted_keys_source": config.trusted_keys_source,
        "signing_key": config.signing_key,
        "key_pairs": [
            {
                "name": p.public.name,
                "public_key": str(p.public),
                "secret_file": str(p.secret_file),
                "public_file": str(p.public_file),
                "trusted": p.public in trusted,
            }
            for p in pairs
        ],
    }
    if app.json:
        app.emit(doc)
        return
    app.out(f"trusted keys ({config.trusted_keys_source}):")
    for k in trusted:
        app.out(f"  {k}")
    if not trusted:
        app.out("  (none)")
    app.out(f"key pairs ({keys_dir(app.home)}):")
    for p in pairs:
        marks = ["trusted"] if p.public in trusted else []
        if config.signing_key == p.public.name:
            marks.append("signing key")
        app.out(f"  {p.public}" + (f"  ({', '.join(marks)})" if marks else ""))
    if not pairs:
        app.out("  (none)")


COMMANDS = [key]
