"""The generate job: config -> layout -> render -> visibility -> expressions -> shards.

Units of work and of safety:

* a *scene* is rendered by one Blender worker and written to ``OUT/.work/scene-NNNNNNN.h5``
  (temporary name, then rename): a killed job loses no finished scene;
* a *shard* is assembled once all its scenes are done, renamed into ``OUT/<split>/`` and
  recorded in ``manifest.json`` (rewritten atomically).

Worker slots are driver threads, each owning one Blender child process (restarted every
``workers.restart_every`` scenes).  The driver reads and compresses each view while Blender
renders the next one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import FORMAT_VERSION, __version__, config as config_mod, expressions, layout, lightfield, render, seeding, shards
from .errors import LayoutError, UsageError, WorkerError
from .progress import Progress

log = logging.getLogger("clevr_remv")

CHEAP_CHECK = {"samples": 1, "adaptive_threshold": 0.0, "denoise": False}


@dataclass
class ShardPlan:
    split: str
    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.split}/{self.split}-{self.number:05d}.h5"

    @property
    def scenes(self) -> range:
        return range(self.start, self.stop)


def split_ranges(scenes: int, splits: dict) -> dict[str, tuple[int, int]]:
    """Contiguous scene-index ranges per split, in the order given (70/15/15 by default)."""
    total = float(sum(splits.values()))
    out, start, acc = {}, 0, 0.0
    names = list(splits)
    for i, name in enumerate(names):
        acc += splits[name]
        stop = scenes if i == len(names) - 1 else int(round(scenes * acc / total))
        out[name] = (start, max(start, stop))
        start = max(start, stop)
    return out


def plan_shards(scenes: int, splits: dict, shard_size: int) -> list[ShardPlan]:
    plans = []
    for name, (a, b) in split_ranges(scenes, splits).items():
        for k, s in enumerate(range(a, b, shard_size)):
            plans.append(ShardPlan(name, k, s, min(s + shard_size, b)))
    return plans


def parse_part(spec: str | None) -> tuple[int, int] | None:
    """'K/M' (1-based K): this node renders shards k with k % M == K - 1."""
    if not spec:
        return None
    try:
        k, m = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--part '{spec}' is not K/M (e.g. 3/10 for the third of ten nodes)") from None
    if not (1 <= k <= m):
        raise UsageError(f"--part '{spec}': K must be between 1 and M")
    return k, m


@dataclass
class RunStats:
    scenes_rendered: int = 0
    views_rendered: int = 0
    render_seconds: float = 0.0
    check_seconds: float = 0.0
    build_seconds: float = 0.0
    scene_wall_seconds: float = 0.0
    visibility_resamples: int = 0
    peak_worker_rss: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


class GenerateJob:
    def __init__(self, out: Path, scenes: int, seed: int, cfg: dict, *, workers: int | None = None,
                 overwrite: bool = False, part: str | None = None, progress: bool | None = None):
        if scenes < 1:
            raise UsageError("--scenes must be at least 1")
        if not 0 <= seed < 2**63:
            raise UsageError("--seed must be a non-negative integer below 2**63")
        self.out = Path(out)
        self.scenes = int(scenes)
        self.seed = int(seed)
        self.cfg = cfg
        self.overwrite = overwrite
        self.part = parse_part(part)
        self.requested_workers = workers if workers is not None else cfg["workers"]["count"]
        if self.requested_workers is not None and self.requested_workers < 1:
            raise UsageError("--workers must be at least 1")
        self.digest = config_mod.digest(cfg, seed, scenes)
        self.grid = (cfg["rig"]["grid"], cfg["rig"]["grid"])
        self.plans = plan_shards(self.scenes, cfg["output"]["splits"], cfg["output"]["shard_size"])
        if self.part:
            k, m = self.part
            self.plans_mine = [p for i, p in enumerate(self.plans) if i % m == k - 1]
        else:
            self.plans_mine = list(self.plans)
        self.manifest_name = (f"manifest.part-{self.part[0]:03d}-of-{self.part[1]:03d}.json"
                              if self.part else "manifest.json")
        self.work_dir = self.out / ".work"
        self.log_dir = self.out / "logs" / (f"part-{self.part[0]:03d}-of-{self.part[1]:03d}" if self.part else "")
        self.my_scenes = {i for p in self.plans_mine for i in p.scenes}
        self.attrs = shards.file_attrs(cfg, self.digest, self.grid)
        self.stats = RunStats()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done_shards: dict[str, dict] = {}
        self.done_scenes: set[int] = set()
        self.assembling: set[str] = set()
        self.workers: list[render.BlenderWorker] = []
        self.device_info: dict = {}
        self.progress_enabled = progress
        self.progress: Progress | None = None
        self.errors: list[BaseException] = []

    # -- preparation: everything that can fail on bad input, before anything is written ----
    def prepare(self) -> None:
        self._check_folder()
        self._check_layout_feasible()
        probe = self._start_worker(0, log_path=None)  # asks Blender which devices exist
        try:
            hello = probe.info
            self.device_info = self._choose_device(hello.get("devices", {}))
            # Apply the run's render settings once: a Blender that cannot (no such denoiser,
            # device refused) fails here, before anything is written.
            probe.configure(self._render_settings(0, 1))
        finally:
            probe.close()
        log.info("Blender %s, device %s (%s)", hello.get("blender"), self.device_info["device"],
                 ", ".join(self.device_info.get("names", [])))

    def _check_folder(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out '{out}' is a file; give a folder")
        probe_dir = out if out.exists() else _existing_parent(out)
        if probe_dir is None or not _can_write(probe_dir):
            raise UsageError(f"cannot write to '{probe_dir or out}'; choose a folder you can write to")
        manifest = out / self.manifest_name
        if out.exists():
            other = [p for p in out.iterdir() if p.name not in ("logs",)]
            if manifest.exists():
                try:
                    old = shards.read_json(manifest)
                except (OSError, json.JSONDecodeError):
                    raise UsageError(f"'{manifest}' is unreadable; remove it or use --overwrite") from None
                if old.get("config_digest") != self.digest and not self.overwrite:
                    raise UsageError(
                        f"'{out}' holds a run with other settings (digest {old.get('config_digest')}, "
                        f"{old.get('scenes')} scenes, seed {old.get('seed')}); use another --out or --overwrite")
            elif other and not self._looks_like_run(out):
                raise UsageError(f"'{out}' is not empty and holds no clevr-remv run; choose an empty or new folder")

    def _looks_like_run(self, out: Path) -> bool:
        return any(out.glob("manifest*.json")) or (out / ".work").exists()

    def _check_layout_feasible(self) -> None:
        """Place the largest object count once: an impossible layout fails here, not later."""
        sc = self.cfg["scene"]
        rig = lightfield.make_rig(sc["camera_position"], grid=self.grid, baseline=self.cfg["rig"]["baseline"],
                                  width=self.cfg["render"]["width"], height=self.cfg["render"]["height"])
        layout._place_objects(self.cfg, seeding.rng(self.seed, 0, "feasibility"), sc["max_objects"],
                              layout.directions(rig))

    def _choose_device(self, devices: dict) -> dict:
        wanted = self.cfg["render"]["device"]
        gpus = {k: v for k, v in devices.items() if k != "cpu" and v}
        if wanted == "cpu":
            return {"device": "cpu", "names": ["CPU"], "count": 1}
        if wanted == "auto":
            for backend in ("optix", "cuda", "hip", "metal", "oneapi"):
                if gpus.get(backend):
                    return {"device": backend, "names": gpus[backend], "count": len(gpus[backend])}
            return {"device": "cpu", "names": ["CPU"], "count": 1}
        if not gpus.get(wanted):
            have = ", ".join(sorted(devices)) or "cpu"
            raise UsageError(f"device '{wanted}' is not available on this machine (available: {have}); "
                             f"use --device auto or one of those")
        return {"device": wanted, "names": gpus[wanted], "count": len(gpus[wanted])}

    def _worker_count(self) -> int:
        if self.requested_workers:
            return int(self.requested_workers)
        return self.device_info.get("count", 1) if self.device_info.get("device") != "cpu" else 1

    def _render_settings(self, slot: int, nworkers: int) -> dict:
        rc = dict(self.cfg["render"])
        rc["device"] = self.device_info["device"]
        if rc["device"] != "cpu":
            rc["gpu_index"] = slot % max(1, self.device_info.get("count", 1))
        else:
            rc["threads"] = max(1, (os.cpu_count() or 1) // nworkers)
        return rc

    def _start_worker(self, slot: int, log_path: Path | None) -> render.BlenderWorker:
        w = render.BlenderWorker(self.cfg["workers"]["blender"], log_path=log_path, name=f"worker-{slot}")
        try:
            w.hello()
        except WorkerError as exc:
            w.kill()
            raise UsageError(f"Blender did not start: {exc}; check the bpy install "
                             f"(pip install bpy) or --blender / workers.blender") from None
        return w

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        self.prepare()
        try:
            self._init_folder()
            self._recover()
            result = self._execute()
        finally:
            for w in list(self.workers):
                w.kill()
        return result

    def _init_folder(self) -> None:
        if self.overwrite and (self.out / self.manifest_name).exists():
            old = shards.read_json(self.out / self.manifest_name)
            if old.get("config_digest") != self.digest:
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
        if not (self.out / self.manifest_name).exists():
            self._write_manifest(complete=False)

    def _recover(self) -> None:
        """Keep what earlier runs finished; remove what they left half-written."""
        # Only this run's own files: other farm parts may be writing beside it.
        mine = [self.out / p.split / f".{Path(p.name).name}.tmp" for p in self.plans_mine]
        mine += [self._scene_path(i).with_name(self._scene_path(i).name + ".tmp") for i in self.my_scenes]
        for tmp in mine:
            if tmp.exists():
                log.info("removing unfinished file %s", tmp)
                tmp.unlink()
        manifest_path = self.out / self.manifest_name
        old = shards.read_json(manifest_path) if manifest_path.exists() else {}
        listed = {e["path"]: e for e in old.get("shards", [])}
        for plan in self.plans_mine:
            path = self.out / plan.name
            entry = listed.get(plan.name)
            if entry and path.exists() and path.stat().st_size == entry.get("bytes"):
                self.done_shards[plan.name] = entry
            elif path.exists():
                adopted = self._adopt(plan, path)
                if adopted:
                    self.done_shards[plan.name] = adopted
        for i in self.my_scenes:
            if self._scene_path(i).exists():
                self.done_scenes.add(i)
        if self.done_shards or self.done_scenes:
            log.info("resuming: %d shards and %d scenes already finished", len(self.done_shards), len(self.done_scenes))

    def _adopt(self, plan: ShardPlan, path: Path) -> dict | None:
        """A complete shard renamed into place just before a kill, not yet in the manifest."""
        import h5py
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("config_digest") != self.digest or f["scenes"].shape[0] != len(plan.scenes):
                    raise ValueError("other run")
                refexps = shards.read_refexps(f)
        except (OSError, ValueError, KeyError):
            log.warning("removing %s: not a finished shard of this run", path)
            path.unlink(missing_ok=True)
            return None
        return self._entry(plan, {"sha256": shards.sha256_file(path), "bytes": path.stat().st_size,
                                  "refexps": len(refexps), "expression_stats": shards.expression_stats(refexps)})

    def _entry(self, plan: ShardPlan, info: dict) -> dict:
        return {"path": plan.name, "split": plan.split, "number": plan.number,
                "scene_range": [plan.start, plan.stop], "num_scenes": plan.stop - plan.start,
                "views": (plan.stop - plan.start) * self.grid[0] * self.grid[1], **info}

    def _scene_path(self, index: int) -> Path:
        return self.work_dir / f"scene-{index:07d}.h5"

    def _execute(self) -> dict:
        pending_plans = [p for p in self.plans_mine if p.name not in self.done_shards]
        queue = [i for p in pending_plans for i in p.scenes if i not in self.done_scenes]
        # Shards whose scenes all finished before a kill: assemble now.
        for plan in pending_plans:
            if all(i in self.done_scenes for i in plan.scenes):
                self._assemble(plan)
        nworkers = max(1, min(self._worker_count(), len(queue) or 1))
        views_per_scene = self.grid[0] * self.grid[1]
        log.info("%d scenes to render in %d shards (%d already done), %d worker(s), %dx%d views at %dx%d",
                 len(queue), len(pending_plans), len(self.done_shards), nworkers, *self.grid,
                 self.cfg["render"]["width"], self.cfg["render"]["height"])
        self._queue = list(reversed(queue))
        self._plan_of = {i: p for p in self.plans_mine for i in p.scenes}
        self.progress = Progress(total_scenes=len(queue), views_per_scene=views_per_scene,
                                 shards_total=len(self.plans_mine), shards_done=len(self.done_shards),
                                 enabled=self.progress_enabled)
        threads = []
        t0 = time.perf_counter()
        interrupted = threading.Event()
        restore = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):  # noqa: ARG001
                if interrupted.is_set():  # a second Ctrl-C: stop waiting for clean-up
                    raise KeyboardInterrupt
                interrupted.set()
                self.stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, on_signal)
        try:
            for slot in range(nworkers if queue else 0):
                t = threading.Thread(target=self._slot, args=(slot, nworkers), name=f"slot-{slot}", daemon=True)
                threads.append(t)
                t.start()
            # The signal handler only sets flags, so no exception ever interrupts a join:
            # every slot finishes its own clean-up (half-written scene files removed) before
            # the interrupt is reported.
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
                if interrupted.is_set():
                    with self.lock:
                        workers = list(self.workers)
                    for w in workers:
                        w.kill()
                    for t in threads:
                        t.join()
                    break
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        if interrupted.is_set():
            self.progress.close()
            raise KeyboardInterrupt
        self.progress.close()
        if self.errors:
            raise self.errors[0]
        wall = time.perf_counter() - t0
        complete = len(self.done_shards) == len(self.plans_mine)
        manifest = self._write_manifest(complete=complete)
        if complete:
            try:
                self.work_dir.rmdir()  # empty unless another farm part is still working
            except OSError:
                pass
        log.info("finished: %d shards, %d scenes rendered in %.1f s", len(self.done_shards),
                 self.stats.scenes_rendered, wall)
        st = manifest["stats"]
        if st["expressions"]:
            log.info("dataset: %d scenes, %d expressions (%.2f per scene, %.2f words on average; %s); "
                     "(expression, view) pairs dropped as not valid in that view: %d of %d (%.3f%%)",
                     st["scenes"], st["expressions"], st["expressions_per_scene"], st["mean_words"],
                     ", ".join(f"{k} {v}" for k, v in sorted(st["families"].items())),
                     st["view_pairs_dropped"], st["view_pairs"], 100.0 * st["dropped_share"])
        return manifest

    def _next_scene(self) -> int | None:
        with self.lock:
            if self.stop.is_set() or not self._queue:
                return None
            return self._queue.pop()

    def _slot(self, slot: int, nworkers: int) -> None:
        worker = None
        served = 0
        try:
            while True:
                index = self._next_scene()
                if index is None:
                    return
                if worker is None or served >= self.cfg["workers"]["restart_every"]:
                    worker = self._fresh_worker(slot, nworkers, worker)
                    served = 0
                try:
                    self._render_scene(worker, index)
                except WorkerError as exc:
                    if self.stop.is_set():
                        return
                    log.warning("%s; retrying scene %d with a new Blender process", exc, index)
                    worker = self._fresh_worker(slot, nworkers, worker)
                    served = 0
                    self._render_scene(worker, index)
                served += 1
                plan = self._plan_of[index]
                if self._ready(plan):
                    self._assemble(plan)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if not self.stop.is_set():
                self.errors.append(exc)
                self.stop.set()
        finally:
            if worker is not None:
                self._retire(worker)

    def _retire(self, worker: render.BlenderWorker) -> None:
        """Record a worker's peak memory, end it, forget it."""
        rss = worker.peak_rss_bytes()
        with self.stats.lock:
            self.stats.peak_worker_rss = max(self.stats.peak_worker_rss, rss or 0)
        worker.close()
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)

    def _fresh_worker(self, slot: int, nworkers: int, old: render.BlenderWorker | None) -> render.BlenderWorker:
        if old is not None:
            self._retire(old)
        w = self._start_worker(slot, self.log_dir / f"worker-{slot}.log")
        with self.lock:
            self.workers.append(w)
            if self.stop.is_set():
                w.kill()
                raise WorkerError("stopping")
        w.configure(self._render_settings(slot, nworkers))
        return w

    def _render_scene(self, worker: render.BlenderWorker, index: int) -> None:
        t_scene = time.perf_counter()
        cfg = self.cfg
        record, rejections, check_s = sample_visible_scene(worker, cfg, self.seed, index)

        path = self._scene_path(index)
        writer = shards.SceneWriter(path, cfg, self.grid, self.attrs)
        views = [(u, v) for u in range(self.grid[0]) for v in range(self.grid[1])]
        n = len(record["objects"])
        render_s = driver_s = 0.0
        done: dict = {}
        try:
            gen = worker.render(record, views, tag="view")
            while True:
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    done = stop.value or {}
                    break
                t0 = time.perf_counter()
                rgb, ids, depth = render.read_view(ev.path)
                writer.write_view(ev.u, ev.v, rgb, ids, depth, n)
                driver_s += time.perf_counter() - t0
                render_s += ev.seconds
                self.progress.advance_view()
                if self.stop.is_set():
                    raise WorkerError("stopping")
            t0 = time.perf_counter()
            ks, es = lightfield.all_cameras(record["rig"])
            refexps = self._expressions(record, writer.visible)
            expr_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            writer.finish(record, ks, es, refexps)
            writer.commit()
            commit_s = time.perf_counter() - t0
        except BaseException:
            writer.abort()
            raise
        timings = {"render_s": render_s, "check_s": check_s, "build_s": done.get("build_seconds", 0.0),
                   "driver_view_s": driver_s, "expressions_s": expr_s, "commit_s": commit_s}
        wall = time.perf_counter() - t_scene
        with self.stats.lock:
            s = self.stats
            s.scenes_rendered += 1
            s.views_rendered += len(views)
            s.render_seconds += render_s
            s.check_seconds += check_s
            s.build_seconds += timings["build_s"]
            s.scene_wall_seconds += wall
            s.visibility_resamples += len(rejections)
        with self.lock:
            self.done_scenes.add(index)
        self._log_scene(index, record, wall, timings, len(rejections), worker)
        self.progress.scene_done()

    def _expressions(self, record: dict, visible: np.ndarray) -> list[dict]:
        ec = self.cfg["expressions"]
        exprs = expressions.generate(record, self.seed, ec["per_scene"])
        for e in exprs:
            e["valid_views"] = expressions.valid_views(e, record, visible, ec["min_visible_pixels"])
        return exprs

    def _log_scene(self, index, record, wall, timings, resamples, worker) -> None:
        line = {"scene": index, "objects": len(record["objects"]), "wall_s": round(wall, 3),
                **{k: round(v, 3) for k, v in timings.items()},
                "visibility_resamples": resamples, "layout_restarts": record["layout"]["restarts"],
                "worker_pid": worker.proc.pid, "worker_rss": worker.rss_bytes(),
                "worker_peak_rss": worker.peak_rss_bytes()}
        with self.lock:
            with open(self.log_dir / "scenes.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def _ready(self, plan: ShardPlan) -> bool:
        with self.lock:
            if plan.name in self.done_shards or plan.name in self.assembling:
                return False
            if all(i in self.done_scenes for i in plan.scenes):
                self.assembling.add(plan.name)
                return True
            return False

    def _assemble(self, plan: ShardPlan) -> None:
        t0 = time.perf_counter()
        paths = [self._scene_path(i) for i in plan.scenes]
        info = shards.assemble_shard(paths, self.out / plan.name, self.cfg, self.grid, self.attrs)
        entry = self._entry(plan, info)
        with self.lock:
            self.done_shards[plan.name] = entry
            self.assembling.discard(plan.name)
            self._write_manifest(complete=False)
        for p in paths:
            p.unlink(missing_ok=True)
        if self.progress is not None:
            self.progress.shard_done(plan.name, entry, time.perf_counter() - t0)

    def _write_manifest(self, complete: bool) -> dict:
        order = {p.name: i for i, p in enumerate(self.plans)}
        entries = sorted(self.done_shards.values(), key=lambda e: order.get(e["path"], 0))
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        path = self.out / self.manifest_name
        created = now
        if path.exists():
            try:
                created = shards.read_json(path).get("created", now)
            except (OSError, json.JSONDecodeError):
                pass
        manifest = {
            "format_version": FORMAT_VERSION,
            "generator": {"name": "clevr-remv", "version": __version__},
            "created": created,
            "updated": now,
            "complete": complete,
            "seed": self.seed,
            "scenes": self.scenes,
            "config_digest": self.digest,
            "grid": list(self.grid),
            "resolution": [self.cfg["render"]["width"], self.cfg["render"]["height"]],
            "splits": {k: {"scene_range": list(v)} for k, v in
                       split_ranges(self.scenes, self.cfg["output"]["splits"]).items()},
            "part": list(self.part) if self.part else None,
            "shards_planned": len(self.plans_mine),
            "shards": entries,
            "device": self.device_info.get("device"),
            "stats": shards.dataset_stats(entries),
            "last_run": self.stats.as_dict(),
            "config": self.cfg,
        }
        shards.write_json_atomic(path, manifest)
        return manifest


def sample_visible_scene(worker: render.BlenderWorker, cfg: dict, seed: int, index: int):
    """The scene record for ``index`` whose objects all show enough pixels in the central
    view, judged on a 1-sample render of the object-index pass.  Bounded re-sampling; the
    rejected attempts are recorded.  Returns (record, rejections, seconds spent checking)."""
    threshold = config_mod.min_pixels(cfg)
    grid = cfg["rig"]["grid"]
    centre = (grid // 2, grid // 2)
    rejections = []
    check_s = 0.0
    for attempt in range(cfg["scene"]["max_visibility_resamples"] + 1):
        record = layout.sample_scene(cfg, seed, index, attempt)
        if threshold <= 0:
            break
        tc = time.perf_counter()
        events = list(worker.render(record, [centre], tag="check", settings=CHEAP_CHECK))
        _, ids, _ = render.read_view(events[0].path)
        check_s += time.perf_counter() - tc
        n = len(record["objects"])
        counts = np.bincount(ids.ravel(), minlength=n + 1)[1:n + 1]
        if (counts >= threshold).all():
            break
        rejections.append({"attempt": attempt, "fewest_pixels": int(counts.min()),
                           "object": int(counts.argmin()) + 1})
    else:
        raise LayoutError(
            f"scene {index}: no layout in {attempt + 1} attempts shows every object with >= "
            f"{threshold:.0f} pixels in the central view; lower scene.min_pixels_per_object or max_objects")
    record["layout"]["visibility_rejections"] = rejections
    record["layout"]["min_pixels"] = threshold
    return record, rejections, check_s


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


