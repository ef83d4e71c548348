"""One error hierarchy for all of mlpkg.

Components raise these; only :mod:`mlpkg.cli` formats them and picks exit codes. Every error
carries a one-sentence ``message`` plus structured fields naming what is at fault, so that
``--json`` output and tests can inspect them without parsing text.

Exit codes (design.md): ``BadInput`` → 2, every other :class:`MlpkgError` → 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MlpkgError(Exception):
    """Base of every error mlpkg reports to a user.

    ``message`` is one clear sentence. ``details`` are extra lines (e.g. every problem of a
    recipe file). ``hint`` says what to do about it. ``file``, ``field`` and ``package``
    name what is at fault, where known. ``reported`` says that the command already printed
    its ``--json`` document, so the CLI prints no second one.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[str] = (),
        hint: str | None = None,
        file: str | None = None,
        field: str | None = None,
        package: str | None = None,
        reported: bool = False,
    ) -> None:
        super().__init__(message)
        self.reported = reported  # the command already printed its --json document
        self.message = message
        self.details = list(details)
        self.hint = hint
        self.file = file
        self.field = field
        self.package = package

    def to_json(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
            "file": self.file,
            "field": self.field,
            "package": self.package,
            "exit_code": self.exit_code,
        }


class BadInput(MlpkgError):
    """The user gave something invalid: a spec, a recipe, a lockfile, an option (exit 2)."""

    exit_code = 2


class UnknownPackage(BadInput):
    """No recipe has this name (or no version of it matches)."""


class RecipeError(BadInput):
    """A recipe file is malformed or invalid."""


class ResolutionError(BadInput):
    """No consistent set of versions exists, or the inputs form a cycle."""


class LockError(BadInput):
    """A lockfile is malformed, of another platform, or inconsistent with itself."""


class CheckError(MlpkgError):
    """A rebuild or a locked build gave other bytes than recorded (exit 1)."""


class StoreError(MlpkgError):
    """The store is inconsistent, or a store operation failed (exit 1)."""


class FormatVersionError(BadInput):
    """An on-disk format has a version this mlpkg does not understand."""


class FetchError(MlpkgError):
    """A download failed, or its content did not match the declared hash (exit 1)."""


class UnsafeArchive(MlpkgError):
    """An archive holds a member that would escape or corrupt the unpack directory (exit 1)."""


class BuildError(MlpkgError):
    """A build script failed, or its output broke a store invariant (exit 1)."""


class VerifyError(MlpkgError):
    """``verify`` found problems (exit 1)."""


class CacheError(MlpkgError):
    """A binary cache failed us: unreachable, broken, or an entry that is not trusted
    (exit 1). ``cache`` is the cache's URL as the user wrote it (no credentials)."""

    def __init__(self, message: str, *, cache: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.cache = cache


class CacheMissing(CacheError):
    """A cache does not have a file it was asked for (a 404, a missing key)."""


class CacheUnavailable(CacheError):
    """A cache is down: refused or dropped the connection, timed out, or answered 5xx
    (after retries). A substituter that raises it is skipped for the rest of the command."""


class ExternalNotFound(MlpkgError):
    """An external tool a recipe needs is not on this machine, or its version is unreadable."""


class RunError(MlpkgError):
    """``mlpkg run``: the app failed; its run directory keeps what it wrote (exit 1)."""


class Interrupted(MlpkgError):
    """``mlpkg run``: the user interrupted the app; the run directory is kept (exit 130)."""

    exit_code = 130
