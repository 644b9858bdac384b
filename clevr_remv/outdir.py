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


# -- one writer per part per folder ------------------------------------------------------------
LOCK_PREFIX = ".clevr-remv"


class FolderLock:
    """At most one writer per part of a run folder, and no part beside a whole run.

    ``flock`` on lock files inside ``OUT``: a whole run holds ``OUT/.clevr-remv.lock``
    exclusively; a part (``--part K/M``) holds it shared and ``OUT/.clevr-remv.part-K-of-M.lock``
    exclusively.  The kernel releases the locks when the process ends, however it ends
    (SIGKILL included), so a stale lock never blocks a re-run.  On NFS, Linux maps ``flock``
    to POSIX locks that the server arbitrates (NFSv4, or NFSv3 with lockd): it works across
    nodes unless the share is mounted with ``nolock`` (then it only sees writers on the same
    node).  The lock files stay (removing a lock file races with a waiting writer).
    """

    def __init__(self, out: Path, part_tag: str = ""):
        self.out = Path(out)
        self.part_tag = part_tag
        self._fds: list[int] = []
        self._held: list[tuple[Path, int]] = []

    def _path(self, tag: str) -> Path:
        return self.out / (f"{LOCK_PREFIX}.{tag}.lock" if tag else f"{LOCK_PREFIX}.lock")

    def acquire(self) -> None:
        import fcntl

        steps = [("", fcntl.LOCK_SH if self.part_tag else fcntl.LOCK_EX)]
        if self.part_tag:
            steps.append((self.part_tag, fcntl.LOCK_EX))
        try:
            for tag, mode in steps:
                path = self._path(tag)
                for _ in range(10):
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    except BaseException:
                        os.close(fd)
                        raise
                    # A lock file removed (by a run that gave the folder up) between our open
                    # and our flock: the lock is on a file nobody else will open; try again.
                    try:
                        same = os.stat(path).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        break
                    os.close(fd)
                self._fds.append(fd)
                self._held.append((path, mode))
                if mode == fcntl.LOCK_EX:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
        except BlockingIOError:
            path = self._path(tag)
            holder = _holder(path) if (tag or self.part_tag) else ""
            if tag:
                k, m = (int(x) for x in tag.replace("part-", "").split("-of-"))
                what = f"part {k}/{m}"
            else:
                what = "a whole run (without --part)" if self.part_tag else "this run (whole, or a --part)"
            self.release()
            raise UsageError(
                f"another clevr-remv generate{holder} is writing {what} in '{self.out}'; "
                f"wait for it to end (it is resumable), or use another --out") from None
        except OSError as exc:
            self.release()
            raise UsageError(f"cannot lock '{self._path('')}' ({exc.strerror}); on NFS mount with locking "
                             f"(not 'nolock'), or use a local --out") from None
        except BaseException:
            self.release()
            raise

    def release(self, remove_files: bool = False) -> None:
        """Release the locks.  ``remove_files`` (a run that created OUT and gives it up before
        writing anything): also remove the lock files this process alone holds, while holding
        them (a waiting writer re-checks the file's inode after its flock)."""
        import fcntl

        if remove_files and len(self._held) == (2 if self.part_tag else 1):
            for (path, mode), fd in reversed(list(zip(self._held, self._fds))):
                try:
                    if mode != fcntl.LOCK_EX:  # shared: only when no other part holds it
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink(missing_ok=True)
                except OSError:
                    break
        for fd in self._fds:
            try:
                os.close(fd)  # closing the last descriptor releases the flock
            except OSError:
                pass
        self._fds = []
        self._held = []


def _holder(path: Path) -> str:
    try:
        pid, host = path.read_text().split()[:2]
        return f" (pid {pid} on {host})"
    except (OSError, ValueError):
        return ""


# -- free space --------------------------------------------------------------------------------
def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_message(path: Path, need: int | None = None) -> str:
    free = free_bytes(Path(path).parent if not Path(path).is_dir() else path)
    free_mb = f"{free / 1e6:.1f} MB free" if free is not None else "no space left"
    need_s = f", about {need / 1e6:.1f} MB needed" if need else ""
    more = max(1.0, (need or 0) / 1e6 - (free or 0) / 1e6 + 1)
    return (f"disk full while writing {path} ({free_mb}{need_s}): free at least {more:.0f} MB "
            f"and re-run the same command (everything finished is kept)")


def is_disk_full(exc: BaseException) -> bool:
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text
