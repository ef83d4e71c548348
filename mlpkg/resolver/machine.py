"""The platform string that enters build hashes (kept free of heavy imports)."""

from __future__ import annotations

import platform
import sys


def current_platform() -> str:
    """``<machine>-<os>``, e.g. ``x86_64-linux``."""
    return f"{platform.machine().lower()}-{sys.platform}"
