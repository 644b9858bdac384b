"""Files inside an output folder: atomic writes, fsync, removal that never leaves the folder, checks before work."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UsageError


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill leaves no temporary file behind
        raise
    _fsync_dir(path.parent)


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


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
    """``path`` does not exist yet and its folder exists and can be written, or can be created
    (the writer creates it)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise UsageError(f"{what} '{path}' exists; give a new file name")
    writable_folder(path.parent, f"folder of {what} '{path}'")


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


# -- folders written whole ---------------------------------------------------------------------
class AtomicFolder:
    """A folder written under a temporary sibling name (``.NAME.PID.partial``) and renamed into
    place by :meth:`commit`: a killed writer leaves no half folder under the final name (only
    the hidden temporary one, removed on any failure it sees).  ``out`` must not exist or be an
    empty folder (which the rename replaces)."""

    def __init__(self, out: Path, what: str = "output folder"):
        self.out = Path(out)
        writable_folder(self.out, what)
        if self.out.exists() and any(self.out.iterdir()):
            raise UsageError(f"'{self.out}' is not empty; give a new or empty {what}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()

    def commit(self) -> Path:
        os.replace(self.tmp, self.out)  # replaces an empty folder of that name
        _fsync_dir(self.out.parent)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
