"""The output folder of a run: checks, init, overwrite, recover, adopt, assembly, manifest.

Layout of ``OUT`` (docs/format.md): ``manifest.json`` (or ``manifest.part-K-of-M.json``),
``<split>/<split>-NNNNN.h5`` shards, ``.work/scene-NNNNNNN.h5`` finished scenes waiting for
their shard, ``logs/``.  Everything that reads or changes the folder's state is here; the
worker pool and the renderer only ask it for paths and hand it finished scenes.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import DiskFullError, UsageError
from ..render import blender
from ..store import files, schema, shards
from ..store.files import (
    can_write,
    disk_full_message,
    free_bytes,
    nearest_existing,
)
from ..store.manifest import dataset_stats, manifest_problem
from ..store.refexps import expression_stats, read_refexps
from . import budget
from .guard import FolderGuard
from .lock import LOCK_PREFIX, FolderLock
from .plan import RunPlan, ShardPlan, split_ranges

__all__ = ["LOCK_PREFIX", "FolderLock", "RunFolder"]

log = logging.getLogger("clevr_remv")


class RunFolder:
    def __init__(self, out: Path, plan: RunPlan, *, overwrite: bool = False):
        self.out = Path(out)
        self.plan = plan
        self.cfg = plan.cfg
        self.overwrite = overwrite
        # A part works in its own folder: parts running at once never touch each other's files.
        self.work_dir = self.out / ".work" / plan.part_tag if plan.part else self.out / ".work"
        self.log_dir = self.out / "logs" / plan.part_tag
        self.manifest_path = self.out / plan.manifest_name
        self.guard = FolderGuard(self.out)  # every write and removal under OUT
        self.attrs = schema.file_attrs(self.cfg, plan.digest, plan.grid, plan.format_version)
        self.lock = threading.Lock()
        self.done_shards: dict[str, dict] = {}
        self.done_scenes: set[int] = set()
        self.assembling: set[str] = set()
        self.damaged: list[str] = []  # shards that failed their checksum on resume (re-rendered)
        self.rebuild = False

    def refresh_attrs(self, cfg: dict) -> None:
        """The shards' attributes from the settings the job runs with (``cfg``: this run's
        settings with the denoiser made concrete); the manifest keeps the settings as given."""
        self.attrs = schema.file_attrs(cfg, self.plan.digest, self.plan.grid, self.plan.format_version)

    # -- checks: before anything is written ------------------------------------------------
    def check(self) -> None:
        """Refuse (exit 2) what this run must not write into; nothing is written here."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out '{out}' is a file; give a folder")
        probe_dir = out if out.exists() else nearest_existing(out.resolve())
        if not probe_dir.is_dir():
            probe_dir = None
        if probe_dir is None or not can_write(probe_dir):
            raise UsageError(f"cannot write to '{probe_dir or out}'; choose a folder you can write to")
        self.rebuild = False
        if not out.exists():
            return
        # Links out of OUT where the run writes or cleans up: refused before anything is touched
        # (--overwrite removes them as links instead, in init).
        if not self.overwrite:
            for folder in self._folders():
                self.guard.check_dir(folder)
        self.guard.check_no_links(self.log_dir)  # the run appends to its logs
        manifests = self._manifests()
        for path, m in manifests.items():
            if m is None:
                if path == self.manifest_path and not self.overwrite:
                    self.rebuild = True  # rebuilt from the shards' own attributes in recover()
                continue
            if m["config_digest"] == self.plan.digest:
                continue
            mine = path == self.manifest_path or not self.plan.part
            if mine and self.overwrite:
                continue
            if self.overwrite:  # a part replacing its own files; the others are re-run the same way
                log.warning("%s holds other settings (digest %s); re-run those parts with --overwrite "
                            "too before 'clevr-remv merge'", path.name, m["config_digest"])
                continue
            if mine:
                raise UsageError(
                    f"'{out}' holds a run with other settings (digest {m['config_digest']}, "
                    f"{m.get('scenes')} scenes, seed {m.get('seed')}); use another --out or --overwrite")
            raise UsageError(
                f"'{out}' holds {path.name} of a run with other settings (digest {m['config_digest']}, "
                f"{m.get('scenes')} scenes, seed {m.get('seed')}); every part must use the same settings: "
                f"fix the command, use another --out, or replace the whole run with --overwrite without --part")
        other = [p for p in out.iterdir() if p.name != "logs" and not p.name.startswith(LOCK_PREFIX)]
        if other and not manifests and not self._looks_like_run():
            raise UsageError(f"'{out}' is not empty and holds no clevr-remv run; choose an empty or new folder")

    def _folders(self) -> list[Path]:
        """The folders below OUT this run writes into."""
        return [self.work_dir, self.log_dir, *(self.out / split for split in self.cfg["output"]["splits"])]

    def _manifests(self) -> dict[Path, dict | None]:
        """Every manifest in OUT (whole run, parts, merged): its checked content, or None."""
        found = {}
        for path in sorted(self.out.glob("manifest*.json")):
            try:
                m = files.read_json(path)
            except (OSError, ValueError):
                found[path] = None
                continue
            found[path] = m if manifest_problem(m) is None else None
        return found

    def _looks_like_run(self) -> bool:
        if (self.out / ".work").exists():  # (a manifest is seen by the caller already)
            return True
        # Shards without a manifest (it was removed): recognised by the layout's names.
        return any(any((self.out / split).glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].h5"))
                   for split in self.cfg["output"]["splits"])

    # -- init and recovery -----------------------------------------------------------------------
    def take_lock(self) -> None:
        """Take this part's writer lock (creating OUT), then check the folder again under it:
        a second writer is refused here, before Blender starts."""
        self._initialised = False
        try:
            self.out.mkdir(parents=True)
            self._created = True  # by this process: only then may it remove OUT again
        except FileExistsError:
            self._created = False
        self.writer_lock = FolderLock(self.out, self.plan.part_tag)
        try:
            self.writer_lock.acquire()
            self.check()  # again, under the lock: another writer may have changed the folder
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release the writer lock; a folder this run created but never used is removed."""
        lock = getattr(self, "writer_lock", None)
        if lock is None:
            return
        give_up = getattr(self, "_created", False) and not getattr(self, "_initialised", False)
        lock.release(remove_files=give_up)
        self.writer_lock = None
        if give_up:
            try:
                self.out.rmdir()  # only when empty: another writer's files keep it
            except OSError:
                pass

    def init(self, stats: dict, device: str | None) -> None:
        """Create the run's folders and (with --overwrite) remove the run with other settings
        that this run replaces.  Call :meth:`take_lock` first."""
        if getattr(self, "writer_lock", None) is None:
            self.take_lock()
        self._initialised = True
        if self.overwrite:
            for folder in self._folders():
                for link in self.guard.drop_links(folder):
                    log.warning("--overwrite: removed the symbolic link %s (not its target)", link)
            self._remove_replaced_run()
        for attempt in range(5):  # another part may remove an empty .work at this moment
            try:
                self.guard.mkdir(self.work_dir)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        self.guard.mkdir(self.log_dir)
        for split in self.cfg["output"]["splits"]:
            self.guard.mkdir(self.out / split)
        blender.clean_stale_scratch()
        if self.rebuild:
            log.warning("'%s' is unreadable: rebuilding it from the shards' own attributes "
                        "(each carries its settings digest)", self.manifest_path)
        if self.rebuild or not self.manifest_path.exists():
            self.write_manifest(complete=False, stats=stats, device=device)

    def _remove_replaced_run(self) -> None:
        """--overwrite: remove the run with other settings, and only what its manifest and the
        shard layout name, only inside OUT (never following a symlink out of it).  A part
        removes only its own files: its manifest's shards, work folder, logs and manifest."""
        if self.plan.part:
            targets = {self.manifest_path: self._manifests().get(self.manifest_path)} \
                if self.manifest_path.exists() else {}
        else:
            targets = self._manifests()
        replaced = {p: m for p, m in targets.items() if m is None or m["config_digest"] != self.plan.digest}
        if not replaced:
            return
        log.warning("--overwrite: removing the previous run%s in %s",
                    f" (part {self.plan.part[0]} of {self.plan.part[1]})" if self.plan.part else "", self.out)
        removed = 0
        for path, m in replaced.items():
            if m is None:
                log.warning("--overwrite: %s is unreadable; removing only it, not the names in it", path.name)
            else:
                for e in m["shards"]:
                    removed += self.guard.remove(e["path"])
                if not self.plan.part:  # the whole run: also shards the manifest did not list yet
                    for split in m["splits"]:
                        folder = self.out / split
                        if folder.is_symlink() or not folder.is_dir():
                            continue
                        for f in list(folder.glob(f"{split}-[0-9]*.h5")) + list(folder.glob(f".{split}-*.tmp")):
                            removed += self.guard.remove(f.relative_to(self.out))
                        try:
                            folder.rmdir()  # only when empty: files of the user's stay
                        except OSError:
                            pass
            self.guard.remove(path.name)
        if self.plan.part:
            self.guard.remove(self.work_dir.relative_to(self.out))
            self.guard.remove(self.log_dir.relative_to(self.out))
        else:
            self.guard.remove(".work")
            self.guard.remove("logs")
        log.info("--overwrite: removed %d shards", removed)

    def recover(self) -> None:
        """Keep what earlier runs finished (checked), remove what they left half-written."""
        # This part's writer lock is held: every temporary file of its own is a leftover.
        for tmp in self._own_temporaries():
            log.info("removing unfinished file %s", tmp)
            self.guard.unlink(tmp)
        old = {}
        if self.manifest_path.exists() and not self.rebuild:
            old = self._manifests().get(self.manifest_path) or {}
        listed = {e["path"]: e for e in old.get("shards", [])}
        for plan in self.plan.plans_mine:
            path = self.out / plan.name
            entry = listed.get(plan.name)
            if path.is_symlink():  # not a shard this tool wrote: the link goes, its target stays
                log.warning("removing %s: a symbolic link where a shard belongs", path)
                self.guard.unlink(path)
            if entry and path.exists() and path.stat().st_size == entry.get("bytes") \
                    and shards.sha256_file(path) == entry.get("sha256"):
                self.done_shards[plan.name] = entry
            elif entry and path.exists():
                log.warning("%s does not match its SHA-256 in %s: re-rendering its %d scenes",
                            plan.name, self.manifest_path.name, len(plan.scenes))
                self.damaged.append(plan.name)
                self.guard.unlink(path)
            elif path.exists():
                adopted = self.adopt(plan, path)
                if adopted:
                    self.done_shards[plan.name] = adopted
        plan_of = self.plan.plan_of()
        for i in self.plan.my_scenes:
            path = self.scene_path(i)
            if not path.exists() and not path.is_symlink():
                continue
            if path.is_symlink() or plan_of[i].name in self.done_shards:
                log.info("removing %s: its shard is finished", path)  # a kill after the shard's rename
                self.guard.unlink(path)
            elif not self._scene_file_ok(path, i):
                log.warning("removing %s: not a finished scene %d of this run (other settings or damaged)", path, i)
                self.guard.unlink(path)
            else:
                self.done_scenes.add(i)
        if self.done_shards or self.done_scenes:
            log.info("resuming: %d shards (checksums verified) and %d scenes already finished",
                     len(self.done_shards), len(self.done_scenes))

    def _own_temporaries(self) -> list[Path]:
        found = [p for p in self.work_dir.glob("*.tmp") if p.is_file()] if self.work_dir.is_dir() else []
        for plan in self.plan.plans_mine:
            folder = self.out / plan.split
            if folder.is_dir():
                found += folder.glob(f".{Path(plan.name).name}*.tmp")
        return found

    def _scene_file_ok(self, path: Path, index: int) -> bool:
        """A scene file of this run (settings digest) and of this scene, readable."""
        import h5py
        try:
            with h5py.File(path, "r") as f:
                return (f.attrs.get("config_digest") == self.plan.digest
                        and json.loads(f["scenes"][0])["index"] == index)
        except (OSError, ValueError, KeyError):
            return False

    def adopt(self, plan: ShardPlan, path: Path) -> dict | None:
        """A complete shard renamed into place just before a kill, not yet in the manifest
        (or a manifest being rebuilt): recognised by its own attributes."""
        import h5py
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("config_digest") != self.plan.digest or f["scenes"].shape[0] != len(plan.scenes):
                    raise ValueError("other run")
                refexps = read_refexps(f)
                records = [json.loads(r) for r in f["scenes"][:]]
                visible = f["visible_pixels"][()]
        except (OSError, ValueError, KeyError):
            log.warning("removing %s: not a finished shard of this run", path)
            self.guard.unlink(path)
            return None
        return self.entry(plan, {"sha256": shards.sha256_file(path), "bytes": path.stat().st_size,
                                 "refexps": len(refexps), "expression_stats": expression_stats(refexps, records, visible)})

    # -- scenes and shards -------------------------------------------------------------------------
    def scene_path(self, index: int) -> Path:
        return self.work_dir / f"scene-{index:07d}.h5"

    def pending(self) -> tuple[list[ShardPlan], list[int]]:
        """(shards still to write, scenes still to render), in plan order."""
        plans = [p for p in self.plan.plans_mine if p.name not in self.done_shards]
        return plans, [i for p in plans for i in p.scenes if i not in self.done_scenes]

    def entry(self, plan: ShardPlan, info: dict) -> dict:
        grid = self.plan.grid
        return {"path": plan.name, "split": plan.split, "number": plan.number,
                "scene_range": [plan.first, plan.end], "num_scenes": plan.end - plan.first,
                "views": (plan.end - plan.first) * grid[0] * grid[1], **info}

    def scene_done(self, index: int) -> None:
        with self.lock:
            self.done_scenes.add(index)

    def claim_if_ready(self, plan: ShardPlan) -> bool:
        """True (once) when every scene of ``plan`` is done: the caller assembles it."""
        with self.lock:
            if plan.name in self.done_shards or plan.name in self.assembling:
                return False
            if all(i in self.done_scenes for i in plan.scenes):
                self.assembling.add(plan.name)
                return True
            return False

    def ensure_space(self, folder: Path, need: int, what: Path) -> None:
        """Stop cleanly (DiskFullError, exit 1) before a write that would not fit: a full disk
        mid-write makes HDF5 fail in ways that are hard to clean up."""
        free = free_bytes(folder)
        if free is not None and free < need:
            raise DiskFullError(disk_full_message(what, need))

    def scene_bytes_needed(self) -> int:
        """Room for one more scene file: 1.5 x the largest so far, or the raw size of its views
        before the first one (compression only makes it smaller)."""
        sizes = [p.stat().st_size for p in self.work_dir.glob("scene-*.h5")] if self.work_dir.is_dir() else []
        if sizes:
            return int(max(sizes) * 1.5) + (64 << 10)
        return budget.estimate(self.cfg).scene_disk

    def assemble(self, plan: ShardPlan, stats: dict, device: str | None) -> dict:
        """Write the shard from its scene files, record it in the manifest, drop the scenes."""
        paths = [self.scene_path(i) for i in plan.scenes]
        need = int(sum(p.stat().st_size for p in paths if p.exists()) * 1.05) + (64 << 10)
        try:
            self.ensure_space(self.out / plan.split, need, self.out / plan.name)
        except DiskFullError:
            with self.lock:
                self.assembling.discard(plan.name)
            raise
        info = shards.assemble_shard(paths, self.out / plan.name, self.cfg, self.plan.grid, self.attrs)
        entry = self.entry(plan, info)
        with self.lock:
            self.done_shards[plan.name] = entry
            self.assembling.discard(plan.name)
            self.write_manifest(complete=False, stats=stats, device=device)
        for p in paths:
            self.guard.unlink(p)
        return entry

    @property
    def complete(self) -> bool:
        return len(self.done_shards) == len(self.plan.plans_mine)

    def finish(self) -> None:
        if self.complete:
            # Only empty folders: another part's files (in its own folder) are never touched.
            for folder in (self.work_dir, self.out / ".work"):
                try:
                    folder.rmdir()
                except OSError:
                    pass

    # -- manifest -----------------------------------------------------------------------------------
    def write_manifest(self, complete: bool, stats: dict, device: str | None) -> dict:
        plan = self.plan
        order = {p.name: i for i, p in enumerate(plan.plans)}
        entries = sorted(self.done_shards.values(), key=lambda e: order.get(e["path"], 0))
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        created = now
        if self.manifest_path.exists():
            try:
                old = files.read_json(self.manifest_path)
            except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
                old = None
            if isinstance(old, dict):
                created = old.get("created", now)
        manifest = {
            "format_version": plan.format_version,
            "generator": {"name": "clevr-remv", "version": __version__},
            "created": created,
            "updated": now,
            "complete": complete,
            "seed": plan.seed,
            "scenes": plan.scenes,
            "config_digest": plan.digest,
            "grid": list(plan.grid),
            "resolution": [self.cfg["render"]["width"], self.cfg["render"]["height"]],
            "splits": {k: {"scene_range": list(v)} for k, v in
                       split_ranges(plan.scenes, self.cfg["output"]["splits"]).items()},
            "part": list(plan.part) if plan.part else None,
            "shards_planned": len(plan.plans_mine),
            "shards": entries,
            "device": device,
            "stats": dataset_stats(entries),
            "last_run": stats,
            "config": self.cfg,
        }
        self.guard.write_json_atomic(self.manifest_path, manifest)
        return manifest
