"""Storage: bytes per view of RGB, instance map and depth under each compression option, with
write and read speed, measured on real rendered views (a finished shard of a run).

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

from clevr_remv import shards
from clevr_remv.data import Reader

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
    views = []
    for index in r.scene_indices[:args.scenes]:
        for u in range(rows):
            for v in range(cols):
                d = r.view(index, u, v)
                views.append((d["image"], d["instances"], d["depth"].astype(np.float32)))
    n = len(views)
    h, w = views[0][1].shape
    raw = {"images": h * w * 3, "instances": h * w, "depth": h * w * 4}
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
                    for key, shape, dtype in (("images", (n, h, w, 3), np.uint8), ("instances", (n, h, w), np.uint8),
                                              ("depth", (n, h, w), np.float32)):
                        ds[key] = f.create_dataset(key, shape, dtype, chunks=(1,) + shape[1:],
                                                   **shards.compression_kwargs(name, level, floating=key == "depth"))
                    for i, (rgb, ids, depth) in enumerate(views):
                        ds["images"][i] = rgb
                        ds["instances"][i] = ids
                        ds["depth"][i] = depth
                best_w = min(best_w, time.perf_counter() - t0)
                with h5py.File(path, "r") as f:
                    for key in ("images", "instances", "depth"):
                        sizes[key] = f[key].id.get_storage_size() / n
                    t0 = time.perf_counter()
                    for i in range(n):
                        f["images"][i], f["instances"][i], f["depth"][i]
                    best_r = min(best_r, time.perf_counter() - t0)
            total_raw = sum(raw.values()) * n
            res = {"compression": name, "level": level, "bytes_per_view": sizes,
                   "bytes_per_view_total": sum(sizes.values()), "write_MBps": total_raw / best_w / 1e6,
                   "read_MBps": total_raw / best_r / 1e6, "write_ms_per_view": 1000 * best_w / n,
                   "read_ms_per_view": 1000 * best_r / n}
            results.append(res)
            print(json.dumps(res), flush=True)
    per_scene = rows * cols
    print(f"\n{n} real views of {w}x{h}; raw bytes per view: RGB {raw['images']}, instances {raw['instances']}, "
          f"depth {raw['depth']}")
    print("| compression | RGB B/view | instances B/view | depth B/view | total KB/view | write ms/view | "
          "read ms/view | 10,000 scenes (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        s = res["bytes_per_view"]
        print(f"| {res['compression']} {res['level'] or ''} | {s['images']:.0f} | {s['instances']:.0f} | "
              f"{s['depth']:.0f} | {res['bytes_per_view_total'] / 1e3:.1f} | {res['write_ms_per_view']:.2f} | "
              f"{res['read_ms_per_view']:.2f} | {res['bytes_per_view_total'] * per_scene * 10000 / 1e9:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"views": n, "width": w, "height": h, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
