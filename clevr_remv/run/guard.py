"""The one place through which a run writes and removes under its output folder.

A run folder is untrusted: a symbolic link planted at ``.work``, ``logs``, a split folder, a
part's folder, a shard or a log file could otherwise send a resume's clean-up (``*.tmp``
removal, damaged files deleted and rewritten) or its logs out of the folder.  Every folder the
run uses below ``OUT`` must be a real folder (not a link), checked before anything is written;
files are opened without following links; removals are of names inside ``OUT`` only, a link
being removed as a link.  ``OUT`` itself may be a link: the user named it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from ..errors import UsageError
from ..store.files import _fsync_dir


class FolderGuard:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _relative(self, path: Path) -> Path:
        path = Path(path)
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            raise UsageError(f"'{path}' is outside the run folder '{self.root}'") from None
        if any(part in ("", ".", "..") for part in rel.parts):
            raise UsageError(f"'{path}' is not a plain path inside the run folder '{self.root}'")
        return rel

    def check_dir(self, path: Path) -> None:
        """Refuse (exit 2) a folder below OUT, or any folder between, that is a symbolic link
        or not a folder.  A missing one is fine (the run makes it)."""
        node = self.root
        for part in self._relative(path).parts:
            node = node / part
            try:
                st = os.lstat(node)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise UsageError(f"'{node}' is a symbolic link (to '{os.readlink(node)}'); a run folder's .work, "
                                 f"logs and split folders must be real folders inside it: remove the link")
            if not stat.S_ISDIR(st.st_mode):
                raise UsageError(f"'{node}' is a file where the run needs a folder; move it away")

    def check_no_links(self, folder: Path) -> None:
        """Refuse a symbolic link directly inside ``folder`` (one the run appends to, as logs/)."""
        if not Path(folder).is_dir() or Path(folder).is_symlink():
            return
        for entry in os.scandir(folder):
            if entry.is_symlink():
                raise UsageError(f"'{entry.path}' is a symbolic link; the run appends to the files in "
                                 f"'{folder}', which must be plain files: remove the link")

    def drop_links(self, path: Path) -> list[Path]:
        """--overwrite: remove, as links, the symbolic links on the way from OUT to ``path``
        (their targets stay), so that the run makes real folders there.  Returns them."""
        node, dropped = self.root, []
        for part in self._relative(path).parts:
            node = node / part
            if node.is_symlink():
                node.unlink()
                dropped.append(node)
                break
            if not node.is_dir():
                break
        return dropped

    def mkdir(self, path: Path) -> Path:
        """Make a folder below OUT (and those between), refusing links."""
        self.check_dir(path)
        Path(path).mkdir(parents=True, exist_ok=True)
        self.check_dir(path)  # made by someone else meanwhile
        return Path(path)

    def unlink(self, path: Path) -> None:
        """Remove a file inside OUT; a link is removed as a link, never followed."""
        self._relative(path)
        self.check_dir(Path(path).parent)
        Path(path).unlink(missing_ok=True)

    def remove(self, relative: str | Path) -> bool:
        """Remove ``OUT/relative`` (a file, a link as a link, or a folder tree) when it lies
        plainly inside OUT below real folders only; anything else (an absolute path, '..', a
        linked folder on the way: names from an untrusted manifest) is left alone.  True when
        something was removed."""
        rel = Path(relative)
        if rel.is_absolute() or not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
            return False
        p = self.root / rel
        try:
            self.check_dir(p.parent)
        except UsageError:
            return False
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
            return True
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)  # does not follow links inside the tree
            return True
        return False

    def open_append(self, path: Path, binary: bool = False):
        """A log file inside OUT opened for appending, without following a link."""
        self._relative(path)
        self.check_dir(Path(path).parent)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError:
            if os.path.islink(path):
                raise UsageError(f"'{path}' is a symbolic link; a run's log files must be plain files: "
                                 f"remove the link") from None
            raise
        return os.fdopen(fd, "ab" if binary else "a", **({} if binary else {"encoding": "utf-8"}))

    def write_json_atomic(self, path: Path, data: dict) -> None:
        """A JSON file inside OUT, written atomically (see :meth:`write_atomic`)."""
        self.write_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Write a file inside OUT atomically: a temporary file made afresh (never through a
        link), fsynced, renamed over ``path`` (a link there is replaced, not followed); a failed
        write leaves no temporary file."""
        path = Path(path)
        self._relative(path)
        self.check_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover of a killed run with this pid, or a planted link
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
