"""One writer per part of a run folder: ``flock`` on lock files inside ``OUT``."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from ..errors import UsageError

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
                    fd = _open_lock_file(path)
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
                    _write_holder(fd)
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
        except UsageError:
            self.release()
            raise
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


def _open_lock_file(path: Path) -> int:
    """Open (or create) a lock file without following a symbolic link: a link planted at the
    lock's name (dangling or not) is refused, so no file outside the folder is created, opened
    or written.  Only a plain file is accepted."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"'{path}' is a symbolic link; clevr-remv's lock file must be a plain file "
                             f"it makes itself: remove the link and run again") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UsageError(f"'{path}' is not a plain file; remove it and run again")
    return fd


_HOLDER_LINE = re.compile(rb"\A(\d+ \S+\n)?\Z")


def _write_holder(fd: int) -> None:
    """Record this process as the holder, only in a lock file clevr-remv wrote (empty, or one
    "pid host" line) with no other name (one link): a foreign file is never truncated."""
    st = os.fstat(fd)
    if st.st_nlink != 1 or st.st_size > 4096:
        return
    if not _HOLDER_LINE.match(os.pread(fd, 4096, 0)):
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.uname().nodename}\n".encode(), 0)
