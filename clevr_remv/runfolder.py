"""The output folder of a run: checks, init, overwrite, recover, adopt, assembly, manifest.

Layout of ``OUT`` (docs/format.md): ``manifest.json`` (or ``manifest.part-K-of-M.json``),
``<split>/<split>-NNNNN.h5`` shards, ``.work/scene-NNNNNNN.h5`` finished scenes waiting for
their shard, ``logs/``.  Everything that reads or changes the folder's state is here; the
worker pool and the renderer only ask it for paths and hand it finished scenes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

from . import FORMAT_VERSION, __version__, render, shards
from .errors import UsageError
from .plan import RunPlan, ShardPlan, split_ranges

log = logging.getLogger("clevr_remv")


class RunFolder:
    def __init__(self, out: Path, plan: RunPlan, *, overwrite: bool = False):
        self.out = Path(out)
        self.plan = plan
        self.cfg = plan.cfg
        self.overwrite = overwrite
        self.work_dir = self.out / ".work"
        self.log_dir = self.out / "logs" / plan.part_tag
        self.manifest_path = self.out / plan.manifest_name
        self.attrs = shards.file_attrs(self.cfg, plan.digest, plan.grid)
        self.lock = threading.Lock()
        self.done_shards: dict[str, dict] = {}
        self.done_scenes: set[int] = set()
        self.assembling: set[str] = set()

    # -- checks: before anything is written ------------------------------------------------
    def check(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out '{out}' is a file; give a folder")
        probe_dir = out if out.exists() else _existing_parent(out)
        if probe_dir is None or not _can_write(probe_dir):
            raise UsageError(f"cannot write to '{probe_dir or out}'; choose a folder you can write to")
        manifest = self.manifest_path
        if out.exists():
            other = [p for p in out.iterdir() if p.name not in ("logs",)]
            if manifest.exists():
                try:
                    old = shards.read_json(manifest)
                except (OSError, json.JSONDecodeError):
                    raise UsageError(f"'{manifest}' is unreadable; remove it or use --overwrite") from None
                if old.get("config_digest") != self.plan.digest and not self.overwrite:
                    raise UsageError(
                        f"'{out}' holds a run with other settings (digest {old.get('config_digest')}, "
                        f"{old.get('scenes')} scenes, seed {old.get('seed')}); use another --out or --overwrite")
            elif other and not self._looks_like_run():
                raise UsageError(f"'{out}' is not empty and holds no clevr-remv run; choose an empty or new folder")

    def _looks_like_run(self) -> bool:
        return any(self.out.glob("manifest*.json")) or self.work_dir.exists()

    # -- init and recovery -----------------------------------------------------------------------
    def init(self, stats: dict, device: str | None) -> None:
        """Create the folder (after --overwrite removed a run with other settings)."""
        if self.overwrite and self.manifest_path.exists():
            old = shards.read_json(self.manifest_path)
            if old.get("config_digest") != self.plan.digest:
                log.warning("--overwrite: removing the previous run in %s", self.out)
                for name in list(old.get("config", {}).get("output", {}).get("splits", {})) + [".work", "logs"]:
                    shutil.rmtree(self.out / name, ignore_errors=True)
                for m in self.out.glob("manifest*.json"):
                    m.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for split in self.cfg["output"]["splits"]:
            (self.out / split).mkdir(exist_ok=True)
        render.clean_stale_scratch()
        if not self.manifest_path.exists():
            self.write_manifest(complete=False, stats=stats, device=device)

    def recover(self) -> None:
        """Keep what earlier runs finished; remove what they left half-written."""
        # Only this run's own files: other farm parts may be writing beside it.
        mine = [self.out / p.split / f".{Path(p.name).name}.tmp" for p in self.plan.plans_mine]
        mine += [self.scene_path(i).with_name(self.scene_path(i).name + ".tmp") for i in self.plan.my_scenes]
        for tmp in mine:
            if tmp.exists():
                log.info("removing unfinished file %s", tmp)
                tmp.unlink()
        old = shards.read_json(self.manifest_path) if self.manifest_path.exists() else {}
        listed = {e["path"]: e for e in old.get("shards", [])}
        for plan in self.plan.plans_mine:
            path = self.out / plan.name
            entry = listed.get(plan.name)
            if entry and path.exists() and path.stat().st_size == entry.get("bytes"):
                self.done_shards[plan.name] = entry
            elif path.exists():
                adopted = self.adopt(plan, path)
                if adopted:
                    self.done_shards[plan.name] = adopted
        for i in self.plan.my_scenes:
            if self.scene_path(i).exists():
                self.done_scenes.add(i)
        if self.done_shards or self.done_scenes:
            log.info("resuming: %d shards and %d scenes already finished", len(self.done_shards), len(self.done_scenes))

    def adopt(self, plan: ShardPlan, path: Path) -> dict | None:
        """A complete shard renamed into place just before a kill, not yet in the manifest."""
        import h5py
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("config_digest") != self.plan.digest or f["scenes"].shape[0] != len(plan.scenes):
                    raise ValueError("other run")
                refexps = shards.read_refexps(f)
                records = [json.loads(r) for r in f["scenes"][:]]
        except (OSError, ValueError, KeyError):
            log.warning("removing %s: not a finished shard of this run", path)
            path.unlink(missing_ok=True)
            return None
        return self.entry(plan, {"sha256": shards.sha256_file(path), "bytes": path.stat().st_size,
                                 "refexps": len(refexps), "expression_stats": shards.expression_stats(refexps, records)})

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

    def assemble(self, plan: ShardPlan, stats: dict, device: str | None) -> dict:
        """Write the shard from its scene files, record it in the manifest, drop the scenes."""
        paths = [self.scene_path(i) for i in plan.scenes]
        info = shards.assemble_shard(paths, self.out / plan.name, self.cfg, self.plan.grid, self.attrs)
        entry = self.entry(plan, info)
        with self.lock:
            self.done_shards[plan.name] = entry
            self.assembling.discard(plan.name)
            self.write_manifest(complete=False, stats=stats, device=device)
        for p in paths:
            p.unlink(missing_ok=True)
        return entry

    @property
    def complete(self) -> bool:
        return len(self.done_shards) == len(self.plan.plans_mine)

    def finish(self) -> None:
        if self.complete:
            try:
                self.work_dir.rmdir()  # empty unless another farm part is still working
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
                created = shards.read_json(self.manifest_path).get("created", now)
            except (OSError, json.JSONDecodeError):
                pass
        manifest = {
            "format_version": FORMAT_VERSION,
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
            "stats": shards.dataset_stats(entries),
            "last_run": stats,
            "config": self.cfg,
        }
        shards.write_json_atomic(self.manifest_path, manifest)
        return manifest


def _existing_parent(path: Path) -> Path | None:
    p = path.resolve()
    while not p.exists():
        if p.parent == p:
            return None
        p = p.parent
    return p if p.is_dir() else None


def _can_write(folder: Path) -> bool:
    """Really try (permission bits say little for root or on read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".clevr-remv-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True
