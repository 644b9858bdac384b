"""Storage: bytes per view of every stored per-view output (RGB, instance map, depth, normals)
under each compression option, with write and read speed, measured on real rendered views (a
finished shard of a run).

    python bench/storage.py DIR --scenes 1 --out bench/results/storage.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

from clevr_remv.data import Reader
from clevr_remv.render import outputs
from clevr_remv.store import schema

OPTIONS = [("none", 0), ("lzf", 0), ("gzip", 1), ("gzip", 4), ("gzip", 9), ("zstd", 3), ("zstd", 9),
           ("blosc2-zstd", 5), ("blosc2-lz4", 5)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--scenes", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench/results/storage.json")
    args = ap.parse_args()
    r = Reader(args.root)
    rows, cols = r.grid
    # Every stored per-view output of the registry that this run holds (normals from 1.1).
    first = r.view(r.scene_indices[0], 0, 0)
    outs = [o for o in outputs.stored() if o.key in first]
    views = []
    for index in r.scene_indices[:args.scenes]:
        for u in range(rows):
            for v in range(cols):
                d = r.view(index, u, v)
                views.append({o.name: np.asarray(d[o.key], o.dtype_for({"output": {"depth_dtype": "float32"}}))
                              for o in outs})
    n = len(views)
    h, w = views[0]["instances"].shape
    raw = {o.name: views[0][o.name].nbytes for o in outs}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, level in OPTIONS:
            best_w = best_r = float("inf")
            sizes = {}
            for rep in range(args.repeat):
                path = Path(tmp) / f"{name}-{level}-{rep}.h5"
                t0 = time.perf_counter()
                with h5py.File(path, "w") as f:
                    ds = {}
                    for o in outs:
                        shape, dtype = (n, *views[0][o.name].shape), views[0][o.name].dtype
                        ds[o.name] = f.create_dataset(o.name, shape, dtype, chunks=(1,) + shape[1:],
                                                      **schema.compression_kwargs(name, level, floating=o.floating))
                    for i, arrays in enumerate(views):
                        for o in outs:
                            ds[o.name][i] = arrays[o.name]
                best_w = min(best_w, time.perf_counter() - t0)
                with h5py.File(path, "r") as f:
                    for o in outs:
                        sizes[o.name] = f[o.name].id.get_storage_size() / n
                    t0 = time.perf_counter()
                    for i in range(n):
                        for o in outs:
                            f[o.name][i]
                    best_r = min(best_r, time.perf_counter() - t0)
            total_raw = sum(raw.values()) * n
            res = {"compression": name, "level": level, "bytes_per_view": sizes,
                   "bytes_per_view_total": sum(sizes.values()), "write_MBps": total_raw / best_w / 1e6,
                   "read_MBps": total_raw / best_r / 1e6, "write_ms_per_view": 1000 * best_w / n,
                   "read_ms_per_view": 1000 * best_r / n}
            results.append(res)
            print(json.dumps(res), flush=True)
    per_scene = rows * cols
    names = [o.name for o in outs]
    print(f"\n{n} real views of {w}x{h}; raw bytes per view: " + ", ".join(f"{k} {raw[k]}" for k in names))
    print("| compression | " + " | ".join(f"{k} B/view" for k in names)
          + " | total KB/view | write ms/view | read ms/view | 10,000 scenes (GB) |")
    print("|---|" + "---|" * (len(names) + 4))
    for res in results:
        s = res["bytes_per_view"]
        print(f"| {res['compression']} {res['level'] or ''} | " + " | ".join(f"{s[k]:.0f}" for k in names)
              + f" | {res['bytes_per_view_total'] / 1e3:.1f} | {res['write_ms_per_view']:.2f} | "
              f"{res['read_ms_per_view']:.2f} | {res['bytes_per_view_total'] * per_scene * 10000 / 1e9:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"views": n, "width": w, "height": h, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
