"""The driver's per-view work (EXR decode, sRGB conversion, compression, HDF5 writes), today's
serial path against the threaded one, side by side on real EXRs from a real render.

At GPU speed this work must stay below 25% of the render time per view (an H100 renders a
default view in about 0.1 s; the driver took 40 to 48 ms there).  The serial path decodes
each view and writes it through h5py's gzip filter; the threaded path decodes and
compresses views in a pool (zlib and numpy release the GIL) and writes the compressed
chunks with write_direct_chunk.  The two files are checked chunk for chunk.

    python bench/driver_view.py                         # 480x320, default render settings
    python bench/driver_view.py --rounds 5 --threads 1,2,4

The EXRs (9 views, a 3x3 rig at the default settings) are rendered once into --cache, with
the worker's meshes (meshes.json): the per-view work includes the amodal masks (format 1.4).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from clevr_remv import config
from clevr_remv.render import blender, devices, outputs
from clevr_remv.render import codecs as view_codec
from clevr_remv.render import exr as exr_mod
from clevr_remv.run import viewpool
from clevr_remv.scene import amodal, layout, lightfield
from clevr_remv.store import schema, shards


def make_views(cache: Path, cfg: dict) -> list[Path]:
    views = sorted(cache.glob("view_*.exr"))
    if len(views) == 9 and (cache / "meshes.json").exists():
        return views
    cache.mkdir(parents=True, exist_ok=True)
    w = blender.BlenderWorker(name="bench")
    try:
        w.hello()
        w.configure(devices.render_settings(cfg, {"device": "cpu"}, 0, 1, outputs.render_passes(outputs.rendered(cfg))))
        for ev in w.render(RECORD(cfg), [(u, v) for u in range(3) for v in range(3)], tag="view"):
            shutil.copy(ev.path, cache / Path(ev.path).name)
        (cache / "meshes.json").write_text(json.dumps(w.meshes()))
    finally:
        w.kill()
    return sorted(cache.glob("view_*.exr"))


def RECORD(cfg):
    return layout.sample_scene(cfg, 11, 0, 0)


def _uv(path: Path) -> tuple[int, int]:
    _, u, v = path.stem.split("_")
    return int(u), int(v)


class Reader:
    """Stands for the worker: reads a kept EXR (not removed) with the view's camera."""

    def __init__(self, cfg, cache: Path):
        self.wanted = outputs.from_render(outputs.rendered(cfg))
        self.record = RECORD(cfg)
        self.ks, self.es = lightfield.all_cameras(self.record["rig"])
        meshes = amodal.prepare_meshes(json.loads((cache / "meshes.json").read_text()))
        self.placed = amodal.place_scene(meshes, self.record)
        self.k_max = cfg["scene"]["max_objects"]

    def read_view(self, ev, wanted=None, view=None):
        arrays = exr_mod.read_view(ev.path, wanted or self.wanted, view, remove=False)
        arrays["amodal"], _ = amodal.view_amodal(self.record["rig"], ev.u, ev.v, self.placed, self.k_max)
        return arrays


class Event:
    def __init__(self, path):
        self.path = str(path)
        self.u, self.v = _uv(path)


def serial(views, writer, reader) -> float:
    """The path before threaded chunk compression: decode, then write through h5py's filters, one view after
    the other."""
    return _serial(views, writer, reader)


def _serial(views, writer, reader) -> float:
    t0 = time.perf_counter()
    for p in views:
        ev = Event(p)
        arrays = reader.read_view(ev, None, {"intrinsics": reader.ks[ev.u, ev.v], "world_to_camera": reader.es[ev.u, ev.v]})
        writer.write_view(ev.u, ev.v, arrays)
    return time.perf_counter() - t0


def threaded(views, writer, reader, threads) -> tuple[float, float]:
    """The pipeline's path: the same loop as pipeline.render_scene (pool of threads, chunks
    written directly).  Returns (wall seconds, seconds the calling thread was busy)."""
    codecs = writer.chunk_codecs()
    ks, es = reader.ks, reader.es

    def work(ev):
        arrays = reader.read_view(ev, None, {"intrinsics": ks[ev.u, ev.v], "world_to_camera": es[ev.u, ev.v]})
        return ev, arrays, view_codec.encode_view_chunks(arrays, codecs)

    def store(results):
        for ev, arrays, chunks in results:
            writer.write_view(ev.u, ev.v, arrays, chunks)

    pool = viewpool.ViewPool(threads)
    busy = 0.0
    t0 = time.perf_counter()
    try:
        for p in views:
            tb = time.perf_counter()
            store(pool.submit(work, Event(p)))
            busy += time.perf_counter() - tb
        tb = time.perf_counter()
        store(pool.drain())
        busy += time.perf_counter() - tb
    finally:
        pool.close()
    return time.perf_counter() - t0, busy


def breakdown(views, cfg, reader, rounds: int) -> None:
    """CPU time (this thread's) per view of each step of the new path."""
    import OpenEXR

    acc: dict = {}

    def add(name, t0):
        acc[name] = acc.get(name, 0.0) + time.thread_time() - t0

    for _ in range(rounds):
        for p in views:
            ev = Event(p)
            view = {"intrinsics": reader.ks[ev.u, ev.v], "world_to_camera": reader.es[ev.u, ev.v]}
            t0 = time.thread_time()
            with OpenEXR.File(str(p), separate_channels=False) as exr:
                channels = {n: c.pixels for part in exr.parts for n, c in part.channels.items()}
            add("read EXR", t0)
            for o in reader.wanted:
                t0 = time.thread_time()
                arr = o.decode(outputs.find_pixels(channels, o), view)
                add(f"decode {o.name}", t0)
                t0 = time.thread_time()
                view_codec.gzip_chunk(arr, cfg["output"]["compression_level"], o.floating)
                add(f"deflate {o.name}", t0)
    n = rounds * len(views)
    print("\n| step | CPU ms per view |\n|---|---|")
    for k, v in acc.items():
        print(f"| {k} | {v / n * 1e3:.1f} |")
    print(f"| total | {sum(acc.values()) / n * 1e3:.1f} |")


def same_chunks(a: Path, b: Path) -> bool:
    import h5py

    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in [o.name for o in outputs.stored()]:
            da, db = fa[name].id, fb[name].id
            for i in range(da.get_num_chunks()):
                info = da.get_chunk_info(i)
                if da.read_direct_chunk(info.chunk_offset) != db.read_direct_chunk(info.chunk_offset):
                    return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "clevr-remv-bench-exr-1.1"))
    args = ap.parse_args()
    threads = [int(x) for x in args.threads.split(",")]
    cfg = config.load_config(None, {"rig.grid": 3})
    views = make_views(Path(args.cache), cfg)
    reader = Reader(cfg, Path(args.cache))
    grid = (3, 3)
    attrs = schema.file_attrs(cfg, "bench", grid)
    tmp = Path(tempfile.mkdtemp(prefix="clevr-remv-bench-"))
    res = {"before: serial": []} | {f"after: threads={t}": [] for t in threads}
    busy = {k: [] for k in res}
    cpu = {k: [] for k in res}
    try:
        for r in range(args.rounds):  # A/B/C... alternating, one round at a time
            w = shards.SceneWriter(tmp / f"serial-{r}.h5", cfg, grid, attrs)
            c0 = time.process_time()
            wall = serial(views, w, reader)
            cpu["before: serial"].append((time.process_time() - c0) / len(views))
            res["before: serial"].append(wall / len(views))
            busy["before: serial"].append(wall / len(views))
            w.commit()
            for t in threads:
                key = f"after: threads={t}"
                w = shards.SceneWriter(tmp / f"t{t}-{r}.h5", cfg, grid, attrs)
                c0 = time.process_time()
                wall, b = threaded(views, w, reader, t)
                cpu[key].append((time.process_time() - c0) / len(views))
                w.commit()
                res[key].append(wall / len(views))
                busy[key].append(b / len(views))
                assert same_chunks(tmp / f"serial-{r}.h5", tmp / f"t{t}-{r}.h5"), "chunks differ"
        print(f"{len(views)} views at {cfg['render']['width']}x{cfg['render']['height']}, {args.rounds} rounds "
              f"alternating, medians; compressed chunks identical in every file")
        print("| path | wall ms per view | CPU ms per view (all threads) | driver thread busy ms per view |")
        print("|---|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {statistics.median(v) * 1e3:.1f} | {statistics.median(cpu[k]) * 1e3:.1f} | "
                  f"{statistics.median(busy[k]) * 1e3:.1f} |")
        breakdown(views, cfg, reader, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
