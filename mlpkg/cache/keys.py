"""Ed25519 signing keys and the set of trusted keys, in Nix's text formats.

* A public key is ``name:base64(32 raw bytes)``.
* A secret key file holds ``name:base64(64 bytes)`` and a newline; the 64 bytes are the
  32-byte seed followed by the 32-byte public key (libsodium's layout, as Nix).
* A signature is ``name:base64(64-byte signature)``; ``name`` says which key made it.

Key names are letters, digits, ``.``, ``_`` and ``-`` (starting with a letter or digit, at
most 128 characters), so that a name is also a safe file name: a home's key pairs are
``$MLPKG_HOME/keys/NAME.secret`` (mode 0600) and ``NAME.public``.

Trust is by key, not by name: a signature counts only if a trusted key of the same name
verifies it. A signature whose name is unknown, or whose text is malformed, counts for
nothing (:meth:`TrustedKeys.verify` never raises on what a cache sends).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlpkg.errors import BadInput

if TYPE_CHECKING:
    from mlpkg.config import Config

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PUBLIC_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64
KEYS_DIR = "keys"


def valid_name(name: str) -> bool:
    """Whether ``name`` is a valid key name."""
    return NAME_RE.fullmatch(name) is not None


def check_name(name: str, source: str | None = None) -> str:
    """``name`` if it is a valid key name, else BadInput (naming ``source`` if given)."""
    if not valid_name(name):
        where = f"{source}: " if source else ""
        raise BadInput(
            f"{where}{name!r} is not a valid key name (letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters).",
            field="name",
        )
    return name


def _split(text: str, size: int, what: str, source: str) -> tuple[str, bytes]:
    """``name:base64`` → (name, the ``size`` decoded bytes); BadInput naming ``source``."""
    name, sep, b64 = text.strip().partition(":")
    if not sep:
        raise BadInput(f"{source}: {what} {_shorten(text)!r} is not of the form name:base64.")
    check_name(name, source)
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{source}: {what} {name!r} has invalid base64.") from None
    if len(raw) != size:
        raise BadInput(f"{source}: {what} {name!r} holds {len(raw)} bytes instead of {size}.")
    return name, raw


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    """An ed25519 public key and its name; ``str()`` gives ``name:base64``."""

    name: str
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_BYTES:
            raise ValueError(f"an ed25519 public key has {PUBLIC_BYTES} bytes")

    def __str__(self) -> str:
        return f"{self.name}:{_b64(self.raw)}"

    @classmethod
    def parse(cls, text: str, source: str) -> PublicKey:
        """The key ``text`` (``name:base64``, surrounding whitespace ignored). Raises
        BadInput naming ``source`` (an environment variable, a file, ``trusted-keys in
        …/config.toml``) when the text is malformed."""
        return cls(*_split(text, PUBLIC_BYTES, "public key", source))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 raw bytes) is this key's signature of ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SecretKey:
    """An ed25519 secret key (its 32-byte seed) and its name. Its repr hides the seed."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ValueError(f"an ed25519 seed has {SEED_BYTES} bytes")

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def public(self) -> PublicKey:
        """The public half, with the same name."""
        raw = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.name, raw)

    def sign(self, message: bytes) -> str:
        """The signature of ``message``: ``name:base64(64 bytes)`` (deterministic)."""
        return f"{self.name}:{_b64(self._private().sign(message))}"

    @classmethod
    def generate(cls, name: str) -> SecretKey:
        """A new random key named ``name`` (BadInput if the name is invalid)."""
        check_name(name)
        return cls(name, os.urandom(SEED_BYTES))

    def to_text(self) -> str:
        """The secret key file's content: ``name:base64(seed ‖ public key)`` and a newline."""
        return f"{self.name}:{_b64(self.seed + self.public().raw)}\n"

    @classmethod
    def parse(cls, text: str, source: str) -> SecretKey:
        """The secret key ``text`` (as :meth:`to_text` writes it). Raises BadInput naming
        ``source`` when malformed, or when its public half is not the seed's."""
        name, raw = _split(text, SEED_BYTES + PUBLIC_BYTES, "secret key", source)
        key = cls(name, raw[:SEED_BYTES])
        if key.public().raw != raw[SEED_BYTES:]:
            raise BadInput(
                f"{source}: secret key {name!r} is damaged: its public half does not match "
                "its seed."
            )
        return key


def parse_signature(text: object) -> tuple[str, bytes] | None:
    """``name:base64(64 bytes)`` → (name, raw signature); None for anything else."""
    if not isinstance(text, str):
        return None
    name, sep, b64 = text.strip().partition(":")
    if not sep or not valid_name(name):
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return (name, raw) if len(raw) == SIGNATURE_BYTES else None


class TrustedKeys:
    """The public keys whose signatures are trusted. Several keys may share a name (a
    rotated key): a signature of that name counts if any of them verifies it."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._by_name: dict[str, list[PublicKey]] = {}
        for key in keys:
            same = self._by_name.setdefault(key.name, [])
            if key not in same:
                same.append(key)

    def verify(self, message: bytes, signatures: Sequence[str]) -> str | None:
        """The name of the trusted key that made the first valid signature of ``message``
        among ``signatures``, else None. Signatures that are malformed, or by a key that is
        not trusted, count for nothing; never raises on their text."""
        for text in signatures:
            parsed = parse_signature(text)
            if parsed is None:
                continue
            name, raw = parsed
            if any(key.verify(message, raw) for key in self._by_name.get(name, ())):
                return name
        return None

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._by_name.values())

    def __iter__(self) -> Iterator[PublicKey]:
        return iter([key for keys in self._by_name.values() for key in keys])

    def names(self) -> list[str]:
        """The names of the trusted keys, sorted."""
        return sorted(self._by_name)


def trusted_keys(config: Config) -> TrustedKeys:
    """The trusted keys ``config`` lists (``MLPKG_TRUSTED_KEYS`` or the file's
    ``trusted-keys``); BadInput naming where a malformed one came from."""
    return TrustedKeys(PublicKey.parse(t, config.trusted_keys_source) for t in config.trusted_keys)


def keys_dir(home: Path) -> Path:
    """``$MLPKG_HOME/keys``: the home's key pairs."""
    return home / KEYS_DIR


def key_files(home: Path, name: str) -> tuple[Path, Path]:
    """``keys/NAME.secret`` and ``keys/NAME.public`` (the name is checked)."""
    check_name(name)
    d = keys_dir(home)
    return d / f"{name}.secret", d / f"{name}.public"


def save_key(home: Path, key: SecretKey) -> tuple[Path, Path]:
    """Write ``key`` as ``keys/NAME.secret`` (mode 0600) and ``keys/NAME.public``; return
    both paths. The secret file appears complete or not at all, and never replaces an
    existing one: BadInput if the home already has a key of that name."""
    secret, public = key_files(home, key.name)
    secret.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = secret.with_name(f".{secret.name}.tmp-{os.getpid()}")
    try:
        _write_private(tmp, key.to_text())
        try:
            os.link(tmp, secret)  # atomic, and fails if the name is taken
        except FileExistsError:
            raise BadInput(
                f"A key named {key.name!r} already exists ({secret}); mlpkg never overwrites "
                "a secret key.",
                hint=f"`mlpkg key show {key.name}` prints its public key; choose another name "
                "for a new key.",
                file=str(secret),
            ) from None
    finally:
        tmp.unlink(missing_ok=True)
    public_tmp = public.with_name(f".{public.name}.tmp-{os.getpid()}")
    public_tmp.write_text(f"{key.public()}\n", encoding="ascii")
    os.replace(public_tmp, public)
    return secret, public


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600 whatever the umask) holding ``text``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_signing_key(home: Path, name_or_path: str) -> SecretKey:
    """The secret key ``name_or_path``: with a ``/`` (or a leading ``~``), a secret key
    file; otherwise the name of a key in ``keys/``. BadInput naming it, with the hint
    ``mlpkg key generate NAME``, when it does not exist; BadInput naming the file when it
    is unreadable, malformed, or (for a name) holds a key of another name."""
    by_name = "/" not in name_or_path and not name_or_path.startswith("~")
    path = key_files(home, name_or_path)[0] if by_name else Path(name_or_path).expanduser()
    generate = f"`mlpkg key generate {name_or_path if by_name else 'NAME'}` makes one."
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        what = f"No signing key named {name_or_path!r}" if by_name else "No signing key"
        raise BadInput(f"{what}: {path} does not exist.", hint=generate, file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "not a key file"
        raise BadInput(f"Cannot read the signing key {path}: {reason}.", file=str(path)) from None
    key = SecretKey.parse(text, str(path))
    if by_name and key.name != name_or_path:
        raise BadInput(f"{path} holds the key {key.name!r}, not {name_or_path!r}.", file=str(path))
    return key


@dataclass(frozen=True)
class KeyPair:
    """A key pair of the home, as :func:`key_pairs` finds it."""

    public: PublicKey
    secret_file: Path
    public_file: Path


def key_pairs(home: Path) -> list[KeyPair]:
    """The home's key pairs (every ``keys/NAME.secret``), sorted by name; each public key
    read from ``NAME.public``, or derived from the secret key when that file is missing.
    BadInput naming the file for a malformed one."""
    d = keys_dir(home)
    if not d.is_dir():
        return []
    pairs = []
    for secret in sorted(d.glob("*.secret")):
        name = secret.name.removesuffix(".secret")
        if not valid_name(name):
            continue
        public_file = secret.with_suffix(".public")
        try:
            public = PublicKey.parse(public_file.read_text(encoding="ascii"), str(public_file))
        except FileNotFoundError:
            public = load_signing_key(home, name).public()
        except (OSError, UnicodeDecodeError):
            raise BadInput(f"Cannot read {public_file}.", file=str(public_file)) from None
        pairs.append(KeyPair(public, secret, public_file))
    return pairs
