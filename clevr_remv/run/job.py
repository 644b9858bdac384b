"""The generate job: config -> layout -> render -> visibility -> expressions -> shards, for every scene of this part."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import FORMAT_VERSION
from ..errors import DiskFullError, UsageError, WorkerError
from ..gpu.prepare import FirstRenderWatch, GpuRunPrep, prepare_gpu_run
from ..progress import Progress
from ..render import denoise, outputs, system_libs
from ..render.blender import BlenderWorker, ReplyTimeouts
from ..render.devices import choose_device, render_settings, worker_count
from ..render.protocol import Denoise, Worker
from ..scene import layout
from ..store.files import disk_full_message, is_disk_full
from . import budget
from ..store.manifest import follow_existing_run
from .folder import RunFolder
from .plan import RunPlan, ShardPlan, empty_split_warning
from .scene_task import SceneResult, render_scene
from .viewpool import view_threads
from .workerpool import WorkerPool

log = logging.getLogger("clevr_remv")


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


def blender_worker(cfg: dict, slot: int, log_path: Path | None, timeouts: ReplyTimeouts | None = None,
                   denoiser: Denoise | None = None) -> Worker:
    """A started Blender worker that answered hello (the default worker factory).  A worker
    factory takes these arguments and returns a :class:`Worker` that answered hello."""
    w = BlenderWorker(cfg["workers"]["blender"], log_path=log_path, name=f"worker-{slot}",
                      timeouts=timeouts or ReplyTimeouts.from_config(cfg), denoiser=denoiser)
    try:
        w.hello()
    except WorkerError as exc:
        w.kill()
        blender = cfg["workers"]["blender"]
        missing = system_libs.missing_library_message(str(exc), (system_libs.blender_binary(blender) or blender) if blender else None)
        if missing:  # e.g. libGL.so.1 on a bare GPU server: name the packages
            raise UsageError(missing) from None
        raise UsageError(f"Blender did not start: {exc}; check the bpy install "
                         f"(pip install bpy) or --blender / workers.blender") from None
    return w


def check_split_folders(out: Path, cfg: dict) -> None:
    """Each split's folder under OUT is a folder that can be written, or is not there yet:
    anything else (a file in its place, a read-only folder) is bad input, said before the
    lock, Blender or a manifest."""
    from ..store.files import can_write

    for split in cfg["output"]["splits"]:
        path = out / split
        if path.is_symlink():
            continue  # the run folder's guard: refused, or removed as a link with --overwrite
        if path.exists() and not path.is_dir():
            raise UsageError(f"'{path}' is not a folder, but the {split} split's shards go there; "
                             f"move it out of '{out}' and run again")
        if path.is_dir() and not can_write(path):
            raise UsageError(f"cannot write to the {split} split's folder '{path}'; make it writable "
                             f"(chmod u+w) and run again")


class GenerateJob:
    def __init__(self, out: Path, scenes: int, seed: int, cfg: dict, *, workers: int | None = None,
                 overwrite: bool = False, part: str | None = None, progress: bool | None = None,
                 worker_factory: Callable[..., Worker] = blender_worker,
                 cpus: int | None = None):
        """``cpus``: the CPU cores this task may use (``farm.schedulers.usable_cpus``); None:
        the device policy's count, which knows no scheduler's variables."""
        version = FORMAT_VERSION
        if not overwrite:  # a folder of an older format keeps its storage settings
            cfg, version = follow_existing_run(Path(out), cfg, seed, scenes)
            if version != FORMAT_VERSION:
                log.info("resuming a format %s run in %s: its storage settings are kept", version, out)
        self.plan = RunPlan.from_args(scenes, seed, cfg, workers=workers, part=part, format_version=version)
        self.cfg = cfg
        check_split_folders(Path(out), cfg)
        self.folder = RunFolder(out, self.plan, overwrite=overwrite)
        self.worker_factory = worker_factory
        self.cpus = cpus
        self.outputs = outputs.rendered(cfg)
        self.passes = outputs.render_passes(self.outputs)
        self.stats = RunStats()
        self.device_info: dict = {}
        self.progress_enabled = progress
        self.progress: Progress | None = None
        self.pool: WorkerPool | None = None
        self.timeouts = ReplyTimeouts.from_config(cfg)  # shared: restarted workers keep the measurements
        self.nworkers = 1
        self.gpu_prep = GpuRunPrep()
        self.view_threads = 1
        self.denoisers: dict[int, denoise.Denoiser] = {}  # per worker slot, outliving restarts

    @property
    def manifest_name(self) -> str:
        return self.plan.manifest_name

    # -- preparation: everything that can fail on bad input, before anything is written ----
    def prepare(self) -> None:
        rc = self.cfg["render"]  # a pure config check: before the folder is touched
        if rc["denoise"] and rc["denoiser"] == "driver" and denoise.pyoidn_version() is None:
            raise UsageError("render.denoiser is 'driver' but the pyoidn package is missing; "
                             "pip install pyoidn, or set render.denoiser to auto or cycles")
        self.folder.check()
        layout.check_feasible(self.cfg, self.plan.seed)  # an impossible layout fails here
        # A rig whose scene cannot fit the disk or whose views cannot fit the memory: refused
        # with the figures, before the lock file, the folder or Blender exist.
        budget.check(self.cfg, self.folder.out, self.plan.requested_workers or 1,
                     scene_disk=self.folder.scene_bytes_needed())
        self.folder.take_lock()  # one writer per part: a second one is refused before Blender starts
        try:
            probe = self.worker_factory(self.cfg, 0, None, timeouts=self.timeouts, denoiser=None)  # which devices exist
            try:
                hello = probe.info
                self.device_info = choose_device(self.cfg["render"]["device"], hello.get("devices", {}))
                self._resolve_denoiser()
                # Apply the run's render settings once: a Blender that cannot (no such denoiser,
                # device refused) fails here, before anything is written.
                probe.configure(self._settings(0, 1))
            finally:
                probe.close()
        except BaseException:
            self.folder.release()  # removes OUT again when this run created it
            raise
        log.info("Blender %s, device %s (%s)", hello.get("blender"), self.device_info["device"],
                 ", ".join(self.device_info.get("names", [])))
        # NVIDIA: a Cycles kernel for every GPU before the first render (built with ptxas
        # where the wheel has none), and a persistent, large CUDA JIT cache for the workers.
        self.gpu_prep = prepare_gpu_run(self.device_info["device"], self.cfg["workers"]["blender"])
        for key, value in self.gpu_prep.env.items():
            os.environ.setdefault(key, value)
        log.info("denoiser: %s", denoise.describe(self.cfg))

    def _resolve_denoiser(self) -> None:
        """'auto' becomes the denoiser for this device (render.denoise.resolve_auto) in the
        job's settings: the passes Blender renders and the shards' ``denoiser`` attribute follow
        it.  The manifest keeps the settings as given ('auto', in the settings digest), so the
        same command, or its recorded config, resumes or reproduces the run on any device."""
        rc = self.cfg["render"]
        chosen = denoise.resolve_auto(self.cfg, self.device_info["device"])
        if chosen == rc.get("denoiser"):
            return
        self.cfg = {**self.cfg, "render": {**rc, "denoiser": chosen}}
        self.outputs = outputs.rendered(self.cfg)
        self.passes = outputs.render_passes(self.outputs)
        self.folder.refresh_attrs(self.cfg)

    def _settings(self, slot: int, nworkers: int) -> dict:
        settings = render_settings(self.cfg, self.device_info, slot, nworkers, self.passes, cpu_count=self.cpus)
        if self.gpu_prep.cycles_path:  # kernels built for a read-only Blender install
            settings["cycles_path"] = self.gpu_prep.cycles_path
        return settings

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        if self.plan.part and not self.plan.plans_mine:
            log.warning(self.plan.nothing_to_do())
        self.prepare()
        warning = empty_split_warning(self.plan.scenes, self.cfg["output"]["splits"])
        if warning:  # after the checks of bad input, so an error stays one line
            log.warning(warning)
        try:
            self.folder.init(self.stats.as_dict(), self.device_info.get("device"))
            self.folder.recover()
            result = self._execute()
        except (OSError, RuntimeError) as exc:  # h5py reports ENOSPC as either
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise DiskFullError(disk_full_message(getattr(exc, "filename", None) or self.folder.out)) from exc
            raise
        finally:
            if self.pool is not None:
                self.pool.kill_all()
            for dn in self.denoisers.values():
                dn.close()
            self.folder.release()
        return result

    def _execute(self) -> dict:
        folder, plan = self.folder, self.plan
        pending_plans, queue = folder.pending()
        # Shards whose scenes all finished before a kill: assemble now.
        for p in pending_plans:
            if folder.claim_if_ready(p):
                self._assemble(p)
        nworkers = max(1, min(worker_count(plan.requested_workers, self.device_info), len(queue) or 1))
        log.info("%d scenes to render in %d shards (%d already done), %d worker(s), %dx%d views at %dx%d",
                 len(queue), len(pending_plans), len(folder.done_shards), nworkers, *plan.grid,
                 self.cfg["render"]["width"], self.cfg["render"]["height"])
        self._plan_of = plan.plan_of()
        self.view_threads = view_threads(nworkers)
        self.progress = Progress(total_scenes=len(queue), views_per_scene=plan.views_per_scene,
                                 shards_total=len(plan.plans_mine), shards_done=len(folder.done_shards),
                                 enabled=self.progress_enabled)
        self.nworkers = nworkers
        self.pool = WorkerPool(start=self._start_worker, setup=lambda w, slot: self._setup_worker(w, slot, nworkers),
                               restart_every=self.cfg["workers"]["restart_every"], retire=self._record_peak,
                               tries=self.cfg["workers"]["tries"])
        t0 = time.perf_counter()
        try:
            self.pool.run(queue, nworkers, self._scene_task)
        finally:
            self.progress.close()
        wall = time.perf_counter() - t0
        manifest = folder.write_manifest(complete=folder.complete, stats=self.stats.as_dict(),
                                         device=self.device_info.get("device"))
        folder.finish()
        if folder.damaged:
            log.warning("re-rendered %d shard(s) that did not match their SHA-256: %s",
                        len(folder.damaged), ", ".join(folder.damaged))
        log.info("finished: %d shards, %d scenes rendered in %.1f s", len(folder.done_shards),
                 self.stats.scenes_rendered, wall)
        st = manifest["stats"]
        if st["expressions"]:
            log.info("dataset: %d scenes, %d expressions (%.2f per scene, %.2f words on average; %s)",
                     st["scenes"], st["expressions"], st["expressions_per_scene"], st["mean_words"],
                     ", ".join(f"{k} {v}" for k, v in sorted(st["families"].items())))
            short = st["scenes_short"]
            log.info("expressions dropped because their target or anchor is hidden in some view "
                     "(expressions.when_hidden = %s): %d of %d (%.3f%%); scenes with fewer than %d "
                     "expressions: %d (too few unique descriptions %d, the rest dropped as hidden %d)",
                     self.cfg["expressions"]["when_hidden"], st["expressions_dropped_hidden"],
                     st["expressions"] + st["expressions_dropped_hidden"], 100.0 * st["expressions_dropped_hidden_share"],
                     self.cfg["expressions"]["per_scene"], sum(short.values()),
                     short.get("too_few_descriptions", 0), short.get("hidden", 0))
            log.info("(expression, view) pairs kept but not valid in that view (target or anchor hidden "
                     "there, or a relation false there): %d of %d (%.3f%%)",
                     st["view_pairs_not_valid"], st["view_pairs"], 100.0 * st["view_pairs_not_valid_share"])
        warn_unseen(st, self.cfg)
        return manifest

    def _setup_worker(self, worker: Worker, slot: int, nworkers: int) -> None:
        worker.configure(self._settings(slot, nworkers))

    def _denoiser(self, slot: int) -> Denoise | None:
        """The driver's denoiser of a worker slot (one per slot, kept when its Blender is
        restarted); None where Cycles denoises."""
        if not denoise.driver_denoises(self.cfg):
            return None
        if slot not in self.denoisers:
            settings = self._settings(slot, self.nworkers)
            self.denoisers[slot] = denoise.open_denoiser(
                settings["device"], settings.get("gpu_index"), settings.get("threads"),
                quality=settings.get("denoise_quality", "high"), prefilter=settings["denoise_prefilter"])
        return self.denoisers[slot]

    def _start_worker(self, slot: int) -> Worker:
        return self.worker_factory(self.cfg, slot, self.folder.log_dir / f"worker-{slot}.log",
                                   timeouts=self.timeouts, denoiser=self._denoiser(slot))

    def _record_peak(self, worker: Worker) -> None:
        rss = worker.peak_rss_bytes()
        with self.stats.lock:
            self.stats.peak_worker_rss = max(self.stats.peak_worker_rss, rss or 0)

    def _scene_task(self, worker: Worker, index: int) -> None:
        path = self.folder.scene_path(index)
        self.folder.ensure_space(path.parent, self.folder.scene_bytes_needed(), path)
        # A worker's first GPU render may wait minutes on the driver's JIT: say so meanwhile.
        with FirstRenderWatch(self.gpu_prep.kernels if not worker.rendered else [], name=worker.name) as watch:
            def on_view():
                watch.seen()
                self.progress.advance_view()
            result = render_scene(worker, self.cfg, self.plan.seed, index, self.plan.grid,
                                  path, self.folder.attrs,
                                  on_view=on_view, stopping=self.pool.stopping, view_threads=self.view_threads,
                                  wanted=self.outputs)
        self._record(result, worker)
        self.folder.scene_done(index)
        self.progress.scene_done(index, result.wall)
        p = self._plan_of[index]
        if self.folder.claim_if_ready(p):
            self._assemble(p)

    def _record(self, result: SceneResult, worker: Worker) -> None:
        t = result.timings
        with self.stats.lock:
            s = self.stats
            s.scenes_rendered += 1
            s.views_rendered += result.views
            s.render_seconds += t["render_s"]
            s.check_seconds += t["check_s"]
            s.build_seconds += t["build_s"]
            s.scene_wall_seconds += result.wall
            s.visibility_resamples += len(result.rejections)
        line = {"scene": result.index, "objects": len(result.record["objects"]), "wall_s": round(result.wall, 3),
                **{k: round(v, 3) for k, v in t.items()},
                "visibility_resamples": len(result.rejections),
                "layout_restarts": result.record["layout"]["restarts"],
                "expressions_dropped_hidden": result.record.get("expressions", {}).get("dropped_hidden", 0),
                "worker": worker.name, "worker_pid": worker.pid, "worker_rss": worker.rss_bytes(),
                "worker_peak_rss": worker.peak_rss_bytes()}
        with self.folder.lock:
            with self.folder.guard.open_append(self.folder.log_dir / "scenes.jsonl") as fh:
                fh.write(json.dumps(line) + "\n")

    def _assemble(self, p: ShardPlan) -> None:
        t0 = time.perf_counter()
        entry = self.folder.assemble(p, self.stats.as_dict(), self.device_info.get("device"))
        if self.progress is not None:
            self.progress.shard_done(p.name, entry, time.perf_counter() - t0)


def warn_unseen(st: dict, cfg: dict) -> bool:
    """Warn (True) when more objects than ``rig.warn_unseen_share`` show 0 pixels in some view:
    expressions then quietly describe only the objects every view shows."""
    limit = cfg["rig"].get("warn_unseen_share", 0.05)
    if not st.get("objects") or st["objects_unseen_share"] <= limit:
        return False
    log.warning("%d of %d objects (%.1f%%) show 0 pixels in some view (out of its frame, or wholly "
                "hidden there), more than rig.warn_unseen_share = %g; expressions can only refer to "
                "the others. A smaller rig.baseline (now %g) keeps the objects in every view's frame",
                st["objects_unseen"], st["objects"], 100.0 * st["objects_unseen_share"], limit,
                cfg["rig"]["baseline"])
    return True
