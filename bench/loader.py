"""Training-side reading speed: random-access samples per second from RefexpDataset, in-process
and through torch's DataLoader with 0 and 2 workers, plus bytes per view on disk.  Several
folders (e.g. the storage profiles that bench/storage.py --profiles-out writes) are measured side
by side, alternating rounds, so that their ratio is taken under the same machine load.

    python bench/loader.py DIR [DIR ...] --split train --views all --samples 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from clevr_remv.data import RefexpDataset


def rate(ds, order) -> float:
    t0 = time.perf_counter()
    for i in order:
        ds[int(i)]
    return len(order) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--split", default="train")
    ap.add_argument("--views", default="all")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    sets, results = {}, {}
    for root in args.roots:
        ds = RefexpDataset(root, split=args.split, views=args.views)
        m = ds.reader.manifest
        views = sum(e["views"] for e in m["shards"])
        size = sum(e["bytes"] for e in m["shards"])
        order = np.random.default_rng(0).permutation(len(ds))[:args.samples]
        ds[int(order[0])]  # open the files
        sets[root] = (ds, order)
        results[root] = {"pairs": len(ds), "bytes_per_view": size / views, "profile":
                         m["config"]["output"].get("profile", "standard"), "direct": []}
        print(f"{root}: {len(ds)} pairs in {args.split}, {size / views / 1e3:.1f} KB per view, "
              f"{m['resolution'][0]}x{m['resolution'][1]}")
    for _ in range(args.rounds):  # alternate: every folder sees the same load
        for root, (ds, order) in sets.items():
            results[root]["direct"].append(rate(ds, order))
    try:
        import torch
        from torch.utils.data import DataLoader, Subset
    except ImportError:
        print("torch not installed: DataLoader figures skipped")
        torch = None
    if torch is not None:
        for workers in (0, 2):
            for root, (ds, order) in sets.items():
                loader = DataLoader(Subset(ds, [int(i) for i in order]), batch_size=args.batch_size,
                                    num_workers=workers, shuffle=False, collate_fn=lambda b: b)
                t0 = time.perf_counter()
                n = sum(len(b) for b in loader)
                results[root][f"dataloader_{workers}_workers"] = n / (time.perf_counter() - t0)
    print("\n| folder | profile | KB/view | in-process samples/s (median of rounds) | DataLoader 0 workers | "
          "DataLoader 2 workers |\n|---|---|---|---|---|---|")
    for root, r in results.items():
        r["direct_median"] = float(np.median(r["direct"]))
        print(f"| {root} | {r['profile']} | {r['bytes_per_view'] / 1e3:.1f} | {r['direct_median']:.0f} | "
              f"{r.get('dataloader_0_workers', float('nan')):.0f} | {r.get('dataloader_2_workers', float('nan')):.0f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
