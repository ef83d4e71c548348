"""File-system helpers: canonical permissions and robust removal of store content, and
atomic replacement of the small files mlpkg keeps beside it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path


def canonicalise(root: Path) -> None:
    """Make a tree read-only with canonical modes: 0555 for directories and executables,
    0444 for other files. Symlinks are left alone (their mode means nothing on Linux), and
    never followed: a root that is a symlink is not walked."""
    if os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o555)
    st = os.lstat(root)
    if stat.S_ISDIR(st.st_mode):
        os.chmod(root, 0o555)
    elif stat.S_ISREG(st.st_mode):
        os.chmod(root, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)


def make_writable(root: Path) -> None:
    """Give the owner write access to every directory of a tree, so it can be removed."""
    if not os.path.isdir(root) or os.path.islink(root):
        return
    os.chmod(root, 0o755)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o755)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree, read-only or not; missing is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        make_writable(path)
        shutil.rmtree(path)
    else:
        os.unlink(path)


def write_atomic(file: Path, text: str) -> None:
    """Replace ``file`` with ``text`` so that a reader sees the old or the new content,
    never part of it (a temporary file in the same directory, then a rename)."""
    tmp = file.with_name(f".{file.name}.{secrets.token_hex(4)}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
