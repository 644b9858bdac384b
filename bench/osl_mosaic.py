"""Exploration: one render call per scene, a CUSTOM (OSL) camera mapping one mosaic image onto
all U x V views (docs/benchmarks.md, "One render call per scene").

Builds one scene, renders every view the usual way (a perspective camera per view, one render
call each) and as one mosaic (tiles of W x H plus a gutter of --gutter pixels on each side, so
that the pixel filter's samples near a tile's edge stay in that tile's camera), then compares
instance ids, depth and time, alternating, in one process.  1 sample, no denoising.

    python bench/osl_mosaic.py 9 96 64 3        # grid, width, height, timing rounds

With the Position pass (world position of the first hit, which does not depend on the camera),
each tile's planar depth is recovered as dot(P - C_view, forward) and compared with the
per-view renders' Z pass ("depth_from_position" in the first JSON line).
"""
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blender_scripts")); sys.path.insert(0, str(HERE.parent))
import bpy
import numpy as np
import OpenEXR
import scene_builder

# The bpy module's Cycles add-on compiles camera shaders with `oslquery`, which bpy ships
# inside its own Python tree but not on sys.path.
sys.path.append(os.path.normpath(os.path.join(os.path.dirname(bpy.__file__), "..", "..", "..", "python", "lib", "python3.11", "site-packages")))
from clevr_remv import config
from clevr_remv.scene import layout, lightfield

G_PAD = int(os.environ.get("GUTTER", 2))  # gutter pixels per tile side

def osl_source(rig, U, V, W, H, G):
    f = lightfield.focal_px(rig)
    return f'''
shader mosaic(output point position = 0, output vector direction = 0, output color throughput = 1)
{{
  float U = {U}, V = {V}, W = {W}, H = {H}, G = {G}, f = {f!r}, b = {rig["baseline"]!r}, F = {rig["focus_distance"]!r};
  point r = camera_shader_raster_position();
  float X = r[0] * V * (W + 2 * G);
  float Y = (1.0 - r[1]) * U * (H + 2 * G);
  float tv = floor(X / (W + 2 * G));
  float tu = floor(Y / (H + 2 * G));
  float x = X - tv * (W + 2 * G) - G;
  float y = Y - tu * (H + 2 * G) - G;
  float ox = (tv - floor(V / 2)) * b;
  float oy = (tu - floor(U / 2)) * b;
  float cx = W / 2 + f * ox / F;
  float cy = H / 2 + f * oy / F;
  vector d = vector((x - cx) / f, -(y - cy) / f, 1.0);
  direction = normalize(d);
  position = point(ox, -oy, 0.0);
  throughput = color(1.0);
}}
'''

def read(path):
    with OpenEXR.File(path, separate_channels=True) as exr:
        ch = {n: np.array(c.pixels) for p in exr.parts for n, c in p.channels.items()}
    os.unlink(path)
    g = lambda s: next(v for k, v in ch.items() if k.endswith("." + s))
    rgb = np.stack([g("Combined.R"), g("Combined.G"), g("Combined.B")], -1)
    pos = np.stack([g("Position.X"), g("Position.Y"), g("Position.Z")], -1)
    return rgb, g("Depth.Z"), np.rint(g("IndexOB.X")).astype(int), pos

def main():
    grid, W, H = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg = config.load_config(None, {"render.width": W, "render.height": H, "render.samples": 1,
                                    "render.denoise": False, "rig.grid": grid})
    b = scene_builder.SceneBuilder()
    b.configure({**cfg["render"], "device": "cpu", "threads": 2,
                 "passes": ["use_pass_z", "use_pass_object_index", "use_pass_position"]})
    rec = layout.sample_scene(cfg, 0, 1)
    b.build(rec)
    rig = rec["rig"]
    sc = b.scene
    tmp = "/dev/shm/i11osl"; os.makedirs(tmp, exist_ok=True)
    views = [(u, v) for u in range(grid) for v in range(grid)]
    cam = b.camera.data
    G = G_PAD
    text = bpy.data.texts.new("mosaic.osl")
    text.from_string(osl_source(rig, grid, grid, W, H, G))

    def per_view():
        cam.type = "PERSP"
        sc.render.resolution_x, sc.render.resolution_y = W, H
        out = {}
        t0 = time.perf_counter()
        for u, v in views:
            p = os.path.join(tmp, f"v{u}{v}.exr")
            b.render_view(rig, u, v, p)
            out[(u, v)] = read(p)
        return out, time.perf_counter() - t0

    def mosaic():
        t0 = time.perf_counter()
        b.place_camera(rig, grid // 2, grid // 2)
        cam.type = "CUSTOM"; cam.custom_mode = "INTERNAL"; cam.custom_shader = text
        sc.render.resolution_x, sc.render.resolution_y = grid * (W + 2 * G), grid * (H + 2 * G)
        p = os.path.join(tmp, "mosaic.exr")
        sc.render.filepath = p
        t1 = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        t_render = time.perf_counter() - t1
        rgb, z, ids, pos = read(p)
        out = {}
        for u, v in views:
            y0, x0 = u * (H + 2 * G) + G, v * (W + 2 * G) + G
            out[(u, v)] = (rgb[y0:y0 + H, x0:x0 + W], z[y0:y0 + H, x0:x0 + W], ids[y0:y0 + H, x0:x0 + W],
                           pos[y0:y0 + H, x0:x0 + W])
        cam.type = "PERSP"
        return out, time.perf_counter() - t0, t_render

    a, ta = per_view()
    m, tm, tr = mosaic()
    # geometry: ids agreement and depth difference where ids agree and depth finite
    agree = np.mean([np.mean(a[k][2] == m[k][2]) for k in views])
    dz = []
    for k in views:
        ok = (a[k][2] == m[k][2]) & (a[k][1] < 1e9) & (m[k][1] < 1e9)
        dz.append(np.max(np.abs(a[k][1][ok] - m[k][1][ok]) / a[k][1][ok]) if ok.any() else 0)
    # depth: the custom camera's Z pass is the distance to the camera object (the central
    # camera), not each view's planar depth; the central tile divided by the ray length matches
    # planar depth per view from the mosaic's Position pass: dot(P - C_view, forward)
    fwd = lightfield.rotation(rig)[2]
    dp, dp_exact = [], 0
    for k in views:
        c = lightfield.view_position(rig, *k)
        zp = ((m[k][3] - c) @ fwd).astype(np.float32)
        ok = (a[k][2] == m[k][2]) & (a[k][1] < 1e9) & np.isfinite(zp)  # same object hit, not background
        dp.append(float(np.max(np.abs(a[k][1][ok] - zp[ok]) / a[k][1][ok])) if ok.any() else 0.0)
        dp_exact += int(np.array_equal(a[k][1][ok], zp[ok]))
    print(json.dumps({"depth_from_position": {"rel_max": max(dp), "views_bit_identical": dp_exact, "views": len(views)}}))
    print(json.dumps({"grid": grid, "W": W, "H": H, "gutter": G, "ids_agree": float(agree),
                      "depth_rel_max": float(np.max(dz)), "bg_agree": float(np.mean([np.mean((a[k][1] >= 1e9) == (m[k][1] >= 1e9)) for k in views]))}))
    for r in range(int(sys.argv[4]) if len(sys.argv) > 4 else 2):
        _, ta = per_view()
        _, tm, tr = mosaic()
        print(json.dumps({"round": r, "per_view_s": round(ta, 3), "mosaic_s": round(tm, 3), "mosaic_render_s": round(tr, 3)}), flush=True)

main()
