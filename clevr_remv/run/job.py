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

from ..errors import DiskFullError, UsageError, WorkerError
from ..gpu.prepare import FirstRenderWatch, GpuRunPrep, prepare_gpu_run
from ..progress import Progress
from ..render import denoise, outputs, system_libs
from ..render.blender import BlenderWorker, ReplyTimeouts
from ..render.devices import choose_device, render_settings, worker_count
from ..scene import layout
from ..store.files import disk_full_message, is_disk_full
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


def blender_worker(cfg: dict, slot: int, log_path: Path | None) -> BlenderWorker:
    """A started Blender worker that answered hello (the default worker factory)."""
    w = BlenderWorker(cfg["workers"]["blender"], log_path=log_path, name=f"worker-{slot}",
                             timeouts=ReplyTimeouts.from_config(cfg))
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


class GenerateJob:
    def __init__(self, out: Path, scenes: int, seed: int, cfg: dict, *, workers: int | None = None,
                 overwrite: bool = False, part: str | None = None, progress: bool | None = None,
                 worker_factory: Callable[[dict, int, Path | None], object] = blender_worker,
                 cpus: int | None = None):
        """``cpus``: the CPU cores this task may use (``farm.schedulers.usable_cpus``); None:
        the device policy's count, which knows no scheduler's variables."""
        self.plan = RunPlan.from_args(scenes, seed, cfg, workers=workers, part=part)
        self.cfg = cfg
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
        self.folder.take_lock()  # one writer per part: a second one is refused before Blender starts
        try:
            probe = self.worker_factory(self.cfg, 0, None)  # asks Blender which devices exist
            try:
                hello = probe.info
                self.device_info = choose_device(self.cfg["render"]["device"], hello.get("devices", {}))
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

    def _settings(self, slot: int, nworkers: int) -> dict:
        settings = render_settings(self.cfg, self.device_info, slot, nworkers, self.passes, cpu_count=self.cpus)
        if self.gpu_prep.cycles_path:  # kernels built for a read-only Blender install
            settings["cycles_path"] = self.gpu_prep.cycles_path
        return settings

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
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
        self.pool = WorkerPool(start=self._start_worker, setup=lambda w, slot: self._setup_worker(w, slot, nworkers),
                               restart_every=self.cfg["workers"]["restart_every"], retire=self._record_peak,
                               tries=self.cfg["workers"].get("tries", 3))
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
        return manifest

    def _setup_worker(self, worker, slot: int, nworkers: int) -> None:
        settings = self._settings(slot, nworkers)
        worker.configure(settings)
        if denoise.driver_denoises(self.cfg):
            if slot not in self.denoisers:  # one per slot, kept when its Blender is restarted
                self.denoisers[slot] = denoise.open_denoiser(
                    settings["device"], settings.get("gpu_index"), settings.get("threads"),
                    quality=settings.get("denoise_quality", "high"), prefilter=settings["denoise_prefilter"])
            worker.denoiser = self.denoisers[slot]

    def _start_worker(self, slot: int):
        w = self.worker_factory(self.cfg, slot, self.folder.log_dir / f"worker-{slot}.log")
        if isinstance(w, BlenderWorker):
            w.timeouts = self.timeouts
        return w

    def _record_peak(self, worker) -> None:
        rss = worker.peak_rss_bytes()
        with self.stats.lock:
            self.stats.peak_worker_rss = max(self.stats.peak_worker_rss, rss or 0)

    def _scene_task(self, worker, index: int) -> None:
        path = self.folder.scene_path(index)
        self.folder.ensure_space(path.parent, self.folder.scene_bytes_needed(), path)
        first = not getattr(worker, "rendered", False)  # fakes in tests have no such attribute
        # A worker's first GPU render may wait minutes on the driver's JIT: say so meanwhile.
        with FirstRenderWatch(self.gpu_prep.kernels if first else [], name=getattr(worker, "name", "worker")) as watch:
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

    def _record(self, result: SceneResult, worker) -> None:
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
                "worker": getattr(worker, "name", None), "worker_pid": worker.proc.pid, "worker_rss": worker.rss_bytes(),
                "worker_peak_rss": worker.peak_rss_bytes()}
        with self.folder.lock:
            with open(self.folder.log_dir / "scenes.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")

    def _assemble(self, p: ShardPlan) -> None:
        t0 = time.perf_counter()
        entry = self.folder.assemble(p, self.stats.as_dict(), self.device_info.get("device"))
        if self.progress is not None:
            self.progress.shard_done(p.name, entry, time.perf_counter() - t0)
