"""Training-side reading speed: random-access samples per second from RefexpDataset, in-process
and through torch's DataLoader with 0 and 2 workers, plus bytes per view on disk.

    python bench/loader.py DIR --split train --views all --samples 2000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from clevr_remv.data import RefexpDataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--views", default="all")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    ds = RefexpDataset(args.root, split=args.split, views=args.views)
    m = ds.reader.manifest
    views = sum(e["views"] for e in m["shards"])
    size = sum(e["bytes"] for e in m["shards"])
    print(f"{len(ds)} valid (expression, view) pairs in split {args.split}; {views} views on disk, "
          f"{size / views / 1e3:.1f} KB per view (RGB, instances, depth, cameras, expressions), "
          f"{m['resolution'][0]}x{m['resolution'][1]}")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds))[:args.samples]
    ds[int(order[0])]
    t0 = time.perf_counter()
    for i in order:
        ds[int(i)]
    direct = len(order) / (time.perf_counter() - t0)
    print(f"in-process random access: {direct:.0f} samples/s")
    results = {"pairs": len(ds), "bytes_per_view": size / views, "direct_samples_per_s": direct}
    try:
        import torch
        from torch.utils.data import DataLoader, Subset
    except ImportError:
        print("torch not installed: DataLoader figures skipped")
        torch = None
    if torch is not None:
        sub = Subset(ds, [int(i) for i in order])
        for workers in (0, 2):
            loader = DataLoader(sub, batch_size=args.batch_size, num_workers=workers, shuffle=False,
                                collate_fn=lambda b: b)
            t0 = time.perf_counter()
            n = sum(len(b) for b in loader)
            rate = n / (time.perf_counter() - t0)
            results[f"dataloader_{workers}_workers_samples_per_s"] = rate
            print(f"DataLoader, {workers} workers, batch {args.batch_size}: {rate:.0f} samples/s "
                  f"(including worker start-up)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
