"""Fewer render calls per scene: Blender's multi-view rendering against one render call per view.

Today the worker renders a scene's U x V views with one ``bpy.ops.render.render`` each, moving
one camera between calls (``blender_scripts/scene_builder.py: render_view``).  Blender can
render several cameras in one call: ``scene.render.use_multiview`` with ``views_format =
'MULTIVIEW'``, one ``SceneRenderView`` per camera, each naming its camera by ``camera_suffix``
(the scene camera ``rig_u04v04`` and the view suffix ``_u00v00`` select the object
``rig_u00v00``), and ``image_settings.views_format = 'INDIVIDUAL'``, which writes one multilayer
EXR per view, as today.

One process, one scene, the worker's own settings for the config given (the default config at
the size asked: the driver's denoiser, so Cycles renders the noisy colour and the denoising
passes), alternating the two ways round after round:

  per_view   one render call per view (SceneBuilder.render_view, what the worker does)
  multiview  one render call for all views, one camera object per view

and compares every channel of every view's EXR between the two (ids and depth must be
bit-identical).  Also measured: one render call of a single view, alone (the per-call cost
against a multi-view call's cost per view).

    nice -n 10 .venv/bin/python bench/render_calls.py                      # 3x3, 96x64, 1 sample, 3 rounds
    nice -n 10 .venv/bin/python bench/render_calls.py --grid 9 --rounds 2

Prints one JSON line per round and a summary (JSON, then a table).  CPU time is this process's
(Blender renders in it, all threads).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blender_scripts"))
sys.path.insert(0, str(HERE.parent))

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import OpenEXR  # noqa: E402
import scene_builder  # noqa: E402

from clevr_remv import config  # noqa: E402
from clevr_remv.render.devices import render_settings  # noqa: E402
from clevr_remv.render.outputs import render_passes, rendered  # noqa: E402
from clevr_remv.scene import layout, lightfield  # noqa: E402


def suffix(u: int, v: int) -> str:
    return f"_u{u:02d}v{v:02d}"


def read_exr(path: Path) -> dict:
    with OpenEXR.File(str(path), separate_channels=True) as exr:
        return {name: np.array(ch.pixels) for part in exr.parts for name, ch in part.channels.items()}


class MultiView:
    """One camera object per view and one SceneRenderView per camera, on the builder's scene."""

    def __init__(self, builder, rig: dict, views: list):
        self.b, self.rig, self.views = builder, rig, views
        sc = builder.scene
        self.cams = {}
        for u, v in views:
            data = bpy.data.cameras.new(f"rig{suffix(u, v)}")
            data.sensor_fit = "HORIZONTAL"
            data.clip_start, data.clip_end = builder.camera.data.clip_start, builder.camera.data.clip_end
            ob = bpy.data.objects.new(f"rig{suffix(u, v)}", data)
            sc.collection.objects.link(ob)
            cam = lightfield.blender_camera(rig, u, v)
            data.lens, data.sensor_width = cam["lens_mm"], cam["sensor_width_mm"]
            data.shift_x, data.shift_y = cam["shift_x"], cam["shift_y"]
            import mathutils
            m = mathutils.Matrix(cam["rotation_matrix"]).to_4x4()
            m.translation = mathutils.Vector(cam["location"])
            ob.matrix_world = m
            self.cams[(u, v)] = ob
        for name in ("left", "right"):  # Blender's two stereo views: off, not removable
            if name in sc.render.views:
                sc.render.views[name].use = False
        for u, v in views:
            rv = sc.render.views.new(f"v{suffix(u, v)}")
            rv.camera_suffix = suffix(u, v)
            rv.use = True

    def on(self):
        sc = self.b.scene
        sc.render.use_multiview = True
        sc.render.views_format = "MULTIVIEW"
        sc.render.image_settings.views_format = "INDIVIDUAL"
        sc.camera = self.cams[self.views[len(self.views) // 2]]

    def off(self):
        sc = self.b.scene
        sc.render.use_multiview = False
        sc.camera = self.b.camera

    def render(self, out: Path) -> tuple[dict, float]:
        """One render call; returns ({(u, v): EXR path}, seconds of the call)."""
        self.on()
        self.b.scene.render.filepath = str(out / "scene.exr")
        t = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        dt = time.perf_counter() - t
        self.off()
        paths = {}
        for u, v in self.views:
            p = out / f"scene{suffix(u, v)}.exr"
            if not p.exists():
                raise SystemExit(f"multiview wrote no {p.name}; found {sorted(x.name for x in out.iterdir())}")
            paths[(u, v)] = p
        return paths, dt


def per_view(builder, rig, views, out: Path) -> tuple[dict, float]:
    paths = {}
    t = time.perf_counter()
    for u, v in views:
        p = out / f"view{suffix(u, v)}.exr"
        builder.render_view(rig, u, v, str(p))
        paths[(u, v)] = p
    return paths, time.perf_counter() - t


def compare(a: dict, b: dict) -> dict:
    """Every channel of every view: ids and depth bit-identical?  Largest difference per channel."""
    worst: dict = {}
    for k in a:
        ca, cb = read_exr(a[k]), read_exr(b[k])
        if set(ca) != set(cb):
            raise SystemExit(f"view {k}: channels differ: {sorted(set(ca) ^ set(cb))}")
        for name in ca:
            x, y = ca[name].astype(np.float64), cb[name].astype(np.float64)
            fin = np.isfinite(x) & np.isfinite(y)
            d = float(np.max(np.abs(x[fin] - y[fin]))) if fin.any() else 0.0
            same = bool(np.array_equal(ca[name], cb[name], equal_nan=True))
            w = worst.setdefault(name, {"max_abs_diff": 0.0, "identical_views": 0})
            w["max_abs_diff"] = max(w["max_abs_diff"], d)
            w["identical_views"] += same
    n = len(a)
    ids = [c for c in worst if "IndexOB" in c]
    depth = [c for c in worst if c.endswith("Depth.Z") and "Denoising" not in c]
    return {"views": n, "channels": worst,
            "ids_exact": bool(ids) and all(worst[c]["identical_views"] == n for c in ids),
            "depth_exact": bool(depth) and all(worst[c]["identical_views"] == n for c in depth),
            "all_exact": all(w["identical_views"] == n for w in worst.values())}


def quiet_blender():
    """Blender prints a "Saved:" and a "Time:" line per render on C stdout: send those to
    /dev/null and keep this script's own output (sys.stdout now writes to a copy of fd 1)."""
    keep = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    sys.stdout = os.fdopen(keep, "w", buffering=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the summary here")
    a = ap.parse_args()
    quiet_blender()
    cfg = config.load_config(None, {"render.width": a.width, "render.height": a.height, "render.samples": a.samples,
                                    "rig.grid": a.grid})
    settings = render_settings(cfg, {"device": "cpu", "names": ["CPU"], "count": 1}, 0, 1,
                               render_passes(rendered(cfg)), cpu_count=a.threads)
    b = scene_builder.SceneBuilder()
    b.configure(settings)
    rec = layout.sample_scene(cfg, 0, 1)
    t = time.perf_counter()
    b.build(rec)
    build_s = time.perf_counter() - t
    rig = rec["rig"]
    views = [(u, v) for u in range(a.grid) for v in range(a.grid)]
    mv = MultiView(b, rig, views)
    tmp = Path(tempfile.mkdtemp(prefix="render-calls-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        # warm-up (kernels, first sync), then the exactness check
        d1, d2 = tmp / "pv", tmp / "mv"
        d1.mkdir(), d2.mkdir()
        per_view(b, rig, views, d1)
        mv.render(d2)
        pa, _ = per_view(b, rig, views, d1)
        pb, _ = mv.render(d2)
        check = compare(pa, pb)
        print(json.dumps({"check": {k: v for k, v in check.items() if k != "channels"}}), flush=True)
        rounds = []
        for r in range(a.rounds):
            row = {"round": r}
            for name in ("per_view", "multiview", "one_view") if r % 2 == 0 else ("multiview", "per_view", "one_view"):
                d = tmp / f"{name}{r}"
                d.mkdir()
                c0 = time.process_time()
                t0 = time.perf_counter()
                if name == "per_view":
                    _, call_s = per_view(b, rig, views, d)
                elif name == "multiview":
                    _, call_s = mv.render(d)
                else:  # one render call of the central view alone: the per-call cost plus one view
                    u, v = views[len(views) // 2]
                    call_s = b.render_view(rig, u, v, str(d / "one.exr"))
                row[name] = {"wall_s": round(time.perf_counter() - t0, 4), "cpu_s": round(time.process_time() - c0, 4),
                             "render_calls_s": round(call_s, 4)}
                shutil.rmtree(d)
            rounds.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(views)
    med = {k: {m: statistics.median(r[k][m] for r in rounds) for m in ("wall_s", "cpu_s", "render_calls_s")}
           for k in ("per_view", "multiview", "one_view")}
    # A render call of n views costs c + n*r (c: fixed cost per call, r: per view); one view alone
    # costs c + r.  From the per-view path (n calls: n*(c + r)) and the multi-view call (c + n*r):
    per_call = (med["per_view"]["render_calls_s"] - med["multiview"]["render_calls_s"]) / max(1, n - 1)
    summary = {"grid": a.grid, "width": a.width, "height": a.height, "samples": a.samples, "threads": a.threads,
               "blender": bpy.app.version_string, "denoiser": cfg["render"]["denoiser"], "passes": settings["passes"],
               "build_s": round(build_s, 3), "views": n, "rounds": a.rounds, "median": med,
               "per_call_fixed_cost_s": round(per_call, 4),
               "one_view_call_s": med["one_view"]["render_calls_s"],
               "speedup_wall": round(med["per_view"]["wall_s"] / med["multiview"]["wall_s"], 3),
               "speedup_cpu": round(med["per_view"]["cpu_s"] / med["multiview"]["cpu_s"], 3),
               "check": check}
    print(json.dumps(summary), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{a.grid}x{a.grid} views at {a.width}x{a.height}, {a.samples} sample(s), {a.threads} threads, "
          f"median of {a.rounds} rounds\n"
          f"| way | render calls | wall s/scene | CPU s/scene | wall s/view |\n|---|---|---|---|---|\n"
          f"| one call per view | {n} | {med['per_view']['wall_s']:.3f} | {med['per_view']['cpu_s']:.3f} "
          f"| {med['per_view']['wall_s'] / n:.4f} |\n"
          f"| multi-view, one call | 1 | {med['multiview']['wall_s']:.3f} | {med['multiview']['cpu_s']:.3f} "
          f"| {med['multiview']['wall_s'] / n:.4f} |\n"
          f"one view alone: {med['one_view']['render_calls_s']:.4f} s per call; fixed cost per call "
          f"(difference / {n - 1} calls saved): {per_call:.4f} s\n"
          f"ids exact: {check['ids_exact']}, depth exact: {check['depth_exact']}, every channel exact: "
          f"{check['all_exact']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
