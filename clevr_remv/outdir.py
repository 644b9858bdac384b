"""Safety of the folders and files the commands write: checked before any work is done.

* :func:`writable_folder` / :func:`new_file`: an output that cannot be written is refused up
  front with one line (exit 2), not after minutes of work with a traceback.
* :func:`remove_inside`: removal that never leaves a given root, never follows a symlink out
  of it, and only removes what it is told to by name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import UsageError


def can_write(folder: Path) -> bool:
    """Really try (permission bits say little for root or on read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".clevr-remv-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and not p.is_symlink():
        if p.parent == p:
            break
        p = p.parent
    return p


def writable_folder(path: Path, what: str) -> None:
    """``path`` is a folder that exists and can be written, or can be created and written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} '{path}' is a file; give a folder")
    base = nearest_existing(path)
    if not base.is_dir():
        raise UsageError(f"{what} '{path}': '{base}' is a file, so the folder cannot be created; give another path")
    if not can_write(base):
        raise UsageError(f"cannot write to '{base}' ({what} '{path}'); choose a folder you can write to")


def new_file(path: Path, what: str) -> None:
    """``path`` does not exist yet and its folder exists and can be written."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{what} '{path}' exists; give a new file name")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{what} '{path}': folder '{parent}' does not exist; create it first")
    if not parent.is_dir():
        raise UsageError(f"{what} '{path}': '{parent}' is a file, not a folder")
    if not can_write(parent):
        raise UsageError(f"cannot write to '{parent}' ({what} '{path}'); choose a folder you can write to")


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` (not resolving its last component) lies strictly inside ``root``."""
    root_r = Path(os.path.realpath(root))
    parent_r = Path(os.path.realpath(Path(path).parent))
    try:
        parent_r.relative_to(root_r)
    except ValueError:
        return False
    name = Path(path).name
    return name not in ("", ".", "..")


def remove_inside(root: Path, relative: str | Path) -> bool:
    """Remove ``root/relative`` (file, symlink or folder tree) only if it lies inside ``root``.

    A symlink is removed as a link, never followed; ``shutil.rmtree`` itself does not follow
    symlinks inside the tree.  Returns True when something was removed.
    """
    rel = Path(relative)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or not rel.parts:
        return False
    target = Path(root) / rel
    if not is_inside(target, root):
        return False
    if target.is_symlink() or target.is_file():
        target.unlink(missing_ok=True)
        return True
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        return True
    return False
