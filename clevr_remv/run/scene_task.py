"""One scene, from its seed to a committed scene file: sample, render, finish."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LayoutError, WorkerError
from ..language import selection, validity
from ..render import denoise, outputs
from ..render.codecs import encode_view_chunks
from ..render.devices import CHEAP_CHECK
from ..render.protocol import Worker
from ..scene import amodal, layout, lightfield, visibility
from ..store import shards
from . import viewpool


@dataclass
class SceneResult:
    """What :func:`render_scene` reports about one committed scene."""

    index: int
    record: dict
    views: int
    rejections: list
    timings: dict   # render_s, check_s, build_s, driver_view_s, view_work_s (denoise_s within), expressions_s, commit_s
    wall: float


@dataclass
class RenderedViews:
    """What the render step leaves for the finish step: the visibility table and cameras."""

    table: visibility.Table
    amodal_pixels: object  # [U, V, K] int32, or None where the format stores no amodal masks
    ks: object          # intrinsics per view
    es: object          # world-to-camera per view
    views: int
    timings: dict       # render_s, build_s, driver_view_s, view_work_s, denoise_s


def render_scene(worker: Worker, cfg: dict, seed: int, index: int, grid, path: Path, attrs: dict, *,
                 on_view: Callable[[], None] | None = None,
                 stopping: threading.Event | None = None, view_threads: int = 1,
                 wanted: list | None = None) -> SceneResult:
    """Scene ``index`` from its seed to a committed scene file at ``path``, in three steps:
    :func:`sample_visible_scene` (the layout, with the visibility check), :func:`render_views`
    (every view into the scene file) and :func:`finish_scene` (expressions, commit).
    ``wanted``: ``outputs.rendered(cfg)``, when the caller has it already."""
    t_scene = time.perf_counter()
    record, rejections, check_s = sample_visible_scene(worker, cfg, seed, index)
    # The scene's temporary file: opened last, so that everything that may fail before the
    # try below leaves no open handle and no file behind (SceneWriter cleans up its own
    # failure).
    writer = shards.SceneWriter(path, cfg, grid, attrs)
    try:
        rendered = render_views(worker, cfg, record, grid, writer, wanted=wanted, on_view=on_view,
                                stopping=stopping, view_threads=view_threads)
        finished = finish_scene(cfg, seed, record, rendered, writer)
    except BaseException:
        writer.abort()
        raise
    timings = {"render_s": rendered.timings["render_s"], "check_s": check_s, **rendered.timings, **finished}
    return SceneResult(index, record, rendered.views, rejections, timings, time.perf_counter() - t_scene)


def render_views(worker: Worker, cfg: dict, record: dict, grid, writer: shards.SceneWriter, *,
                 wanted: list | None = None, on_view: Callable[[], None] | None = None,
                 stopping: threading.Event | None = None, view_threads: int = 1) -> RenderedViews:
    """Render every view of ``record`` and write it into ``writer``; count visible pixels.

    Each view is decoded and compressed in a pool of ``view_threads`` threads while Blender
    renders the next ones (the stored bytes do not depend on the thread count); this thread
    only writes the compressed chunks, in view order."""
    views = [(u, v) for u in range(grid[0]) for v in range(grid[1])]
    table = visibility.Table(grid, cfg["scene"]["max_objects"], len(record["objects"]))
    ks, es = lightfield.all_cameras(record["rig"])
    if wanted is None:
        wanted = outputs.rendered(cfg)
    wanted = outputs.from_render(wanted)  # what the EXR carries; the amodal masks are computed below
    driver_denoises = denoise.driver_denoises(cfg)
    denoiser = worker.denoiser if driver_denoises else None
    if driver_denoises and denoiser is None:
        raise WorkerError("the driver denoises but this worker has no denoiser")
    codecs = writer.chunk_codecs()
    render_s = driver_s = work_s = denoise_s = 0.0
    done: dict = {}
    k_max = cfg["scene"]["max_objects"]
    placed = None
    amodal_px = None
    if any(o.name == "amodal" for o in writer.outputs):  # computed here, from the worker's meshes
        placed = amodal.place_scene(_meshes(worker), record)
        amodal_px = np.full((grid[0], grid[1], k_max), visibility.ABSENT, np.int32)

    def work(ev):  # in a pool thread: decode the EXR, denoise (driver), compress the chunks
        t0 = time.perf_counter()
        arrays = worker.read_view(ev, wanted, {"intrinsics": ks[ev.u, ev.v], "world_to_camera": es[ev.u, ev.v]})
        if placed is not None:
            arrays["amodal"], arrays["amodal_pixels"] = amodal.view_amodal(record["rig"], ev.u, ev.v, placed, k_max)
        dn_s = 0.0
        if denoiser is not None:  # one filter set per worker; its calls are serialised
            td = time.perf_counter()
            arrays["images"] = outputs.linear_to_srgb8(denoiser(
                arrays.pop("noisy_color"), arrays.pop("denoising_albedo"), arrays.pop("denoising_normal")))
            dn_s = time.perf_counter() - td
        chunks = encode_view_chunks(arrays, codecs)
        return ev, arrays, chunks, time.perf_counter() - t0, dn_s

    def store(results):
        nonlocal work_s, denoise_s
        for ev, arrays, chunks, seconds, dn_s in results:
            writer.write_view(ev.u, ev.v, arrays, chunks)
            table.add(ev.u, ev.v, arrays["instances"])
            if amodal_px is not None:
                amodal_px[ev.u, ev.v] = arrays["amodal_pixels"]
            work_s += seconds
            denoise_s += dn_s
            if on_view is not None:
                on_view()

    pool = viewpool.ViewPool(view_threads)  # its threads start on the first submit
    try:
        gen = worker.render(record, views, tag="view")
        while True:
            try:
                ev = next(gen)
            except StopIteration as end:
                done = end.value or {}
                break
            t0 = time.perf_counter()
            store(pool.submit(work, ev))
            driver_s += time.perf_counter() - t0
            render_s += ev.seconds
            if stopping is not None and stopping.is_set():
                raise WorkerError("stopping")
        t0 = time.perf_counter()
        store(pool.drain())
        driver_s += time.perf_counter() - t0
    finally:
        pool.close()
    # driver_view_s: time this thread spent on views (waiting on the pool included);
    # view_work_s: the per-view work itself, summed over the pool's threads.
    timings = {"render_s": render_s, "build_s": done.get("build_seconds", 0.0), "driver_view_s": driver_s,
               "view_work_s": work_s, "denoise_s": denoise_s}
    return RenderedViews(table, amodal_px, ks, es, len(views), timings)


# Each worker's meshes, prepared for silhouettes once (a worker builds them once and keeps them).
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _meshes(worker: Worker) -> dict:
    try:
        return _PREPARED[worker]
    except (KeyError, TypeError):
        pass
    meshes = amodal.prepare_meshes(worker.meshes())
    try:
        _PREPARED[worker] = meshes
    except TypeError:  # a worker that cannot be weakly referenced: prepare every time
        pass
    return meshes


def finish_scene(cfg: dict, seed: int, record: dict, rendered: RenderedViews, writer: shards.SceneWriter) -> dict:
    """The expressions from the visible pixels, then the scene file completed and committed
    (atomic rename).  Returns its timings (expressions_s, commit_s)."""
    t0 = time.perf_counter()
    refexps = scene_expressions(cfg, seed, record, rendered.table.pixels)
    expr_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    writer.finish(record, rendered.ks, rendered.es, rendered.table.pixels, refexps, rendered.amodal_pixels)
    writer.commit()
    return {"expressions_s": expr_s, "commit_s": time.perf_counter() - t0}


def scene_expressions(cfg: dict, seed: int, record: dict, visible) -> list[dict]:
    """The scene's expressions, each with its valid views.  What the drop rule removed (and
    why the scene has fewer than ``per_scene``, if it has) goes into ``record["expressions"]``."""
    ec = cfg["expressions"]
    got = selection.select(record, seed, ec["per_scene"], visible=visible,
                           min_pixels=ec["min_visible_pixels"], when_hidden=ec["when_hidden"],
                           **selection.settings(cfg))
    validity.mark_valid_views(cfg, got.kept, record, visible)
    record["expressions"] = {"when_hidden": ec["when_hidden"], "dropped_hidden": len(got.dropped),
                             "shortfall": got.shortfall}
    return got.kept


def sample_visible_scene(worker: Worker, cfg: dict, seed: int, index: int):
    """The scene record for ``index`` whose objects all show enough pixels in the central
    view, judged on a 1-sample render of the object-index pass.  Bounded re-sampling; the
    rejected attempts are recorded.  Returns (record, rejections, seconds spent checking)."""
    threshold = visibility.threshold(cfg)
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
        ids = worker.read_view(events[0], ["instances"])["instances"]
        check_s += time.perf_counter() - tc
        counts = visibility.count(ids, len(record["objects"]))
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
