"""What the amodal masks cost the driver per scene, at the default settings (480x320, 9x9):
computing them and their pixel counts from the meshes' silhouettes, and compressing them
(bool through gzip, as h5py would store a bool dataset, and bit-packed along the rows through
gzip), beside the driver's compression of one real default view's other stored outputs.

CPU seconds of this thread (``time.thread_time``, robust to a shared machine) and bytes, side
by side in one run: for every view of every scene, each variant in turn.

    python bench/amodal_cost.py --scenes 5 --out bench/results/amodal_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from clevr_remv import config
from clevr_remv.render import blender, outputs
from clevr_remv.render.codecs import BitsCodec, gzip_chunk
from clevr_remv.scene import amodal, layout, lightfield


def _cpu(fn, *args):
    t0 = time.thread_time()
    out = fn(*args)
    return out, time.thread_time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=5)
    ap.add_argument("--samples", type=int, default=16, help="samples of the one real view rendered")
    ap.add_argument("--out", default="bench/results/amodal_cost.json")
    args = ap.parse_args()
    cfg = config.load_config()
    rc, oc = cfg["render"], cfg["output"]
    level = int(oc["compression_level"])
    grid = (cfg["rig"]["grid"],) * 2
    k_max = cfg["scene"]["max_objects"]
    worker = blender.BlenderWorker(None)
    worker.hello()
    try:
        stored = outputs.stored(cfg)
        worker.configure({**rc, "device": "cpu", "samples": args.samples, "denoise": False,
                          "passes": outputs.render_passes(stored)})
        geometry, mesh_s = _cpu(worker.meshes)
        meshes, prepare_s = _cpu(amodal.prepare_meshes, geometry)
        # One real view of the defaults: the outputs the driver already compresses per view.
        rec0 = layout.sample_scene(cfg, 0, 0)
        ks, es = lightfield.all_cameras(rec0["rig"])
        centre = (grid[0] // 2, grid[1] // 2)
        [ev] = list(worker.render(rec0, [centre], tag="bench"))
        arrays = worker.read_view(ev, stored, {"intrinsics": ks[centre], "world_to_camera": es[centre]})
    finally:
        worker.close()
    floating = {o.name: o.floating for o in stored}
    existing = []
    for _ in range(5):
        t0 = time.thread_time()
        for name, arr in arrays.items():
            gzip_chunk(np.asarray(arr, outputs.get(name).dtype_for(cfg)), level, floating[name])
        existing.append(time.thread_time() - t0)
    existing_view_s = statistics.median(existing)
    existing_bytes = sum(len(gzip_chunk(np.asarray(a, outputs.get(n).dtype_for(cfg)), level, floating[n]))
                         for n, a in arrays.items())
    bits = BitsCodec(rc["width"])  # the stored codec of the amodal masks
    scenes = []
    for index in range(args.scenes):
        rec = layout.sample_scene(cfg, 1, index)
        t = {"place_s": 0.0, "masks_s": 0.0, "gzip_bool_s": 0.0, "gzip_bits_s": 0.0}
        size = {"bool": 0, "bits": 0}
        placed, t["place_s"] = _cpu(amodal.place_scene, meshes, rec)
        for u in range(grid[0]):
            for v in range(grid[1]):
                (masks, _), dt = _cpu(amodal.view_amodal, rec["rig"], u, v, placed, k_max)
                t["masks_s"] += dt
                chunk, dt = _cpu(gzip_chunk, masks, level, False)
                t["gzip_bool_s"] += dt
                size["bool"] += len(chunk)
                chunk, dt = _cpu(lambda m: gzip_chunk(bits.encode(m), level, False), masks)
                t["gzip_bits_s"] += dt
                size["bits"] += len(chunk)
        row = {"scene": index, "objects": len(rec["objects"]), **t, "bytes_bool": size["bool"],
               "bytes_bits": size["bits"]}
        scenes.append(row)
        print(json.dumps(row), flush=True)
    views = grid[0] * grid[1]
    med = {k: statistics.median(s[k] for s in scenes) for k in scenes[0] if k not in ("scene",)}
    compute = med["place_s"] + med["masks_s"]
    result = {
        "width": rc["width"], "height": rc["height"], "grid": list(grid), "max_objects": k_max,
        "compression": f"{oc['compression']} {level}", "scenes": scenes, "median": med,
        "once_per_worker_s": {"meshes": mesh_s, "prepare": prepare_s},
        "existing_outputs": {"names": sorted(arrays), "cpu_s_per_view": existing_view_s,
                             "cpu_s_per_scene": existing_view_s * views, "bytes_per_view": existing_bytes,
                             "bytes_per_scene": existing_bytes * views, "samples": args.samples},
        "amodal_cpu_s_per_scene": {"bool": compute + med["gzip_bool_s"], "bits": compute + med["gzip_bits_s"]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nper scene (median of {len(scenes)}; CPU s of one thread): compute {compute:.3f} "
          f"(place {med['place_s']:.3f}, masks and their counts {med['masks_s']:.3f}); "
          f"gzip bool {med['gzip_bool_s']:.3f}, bit-packed {med['gzip_bits_s']:.3f}")
    print(f"bytes per scene: bool {med['bytes_bool']:.0f}, bit-packed {med['bytes_bits']:.0f}; the other "
          f"stored outputs of a real view x {views}: {existing_bytes * views:.0f}")
    print(f"the driver's compression of the other outputs: {existing_view_s * 1000:.2f} ms per view, "
          f"{existing_view_s * views:.3f} s per scene")


if __name__ == "__main__":
    main()
