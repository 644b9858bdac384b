"""What checking shard checksums on open costs, next to reading the data once (one epoch).

    python bench/verify_cost.py ROOT [--rounds 3]

Alternates, in one process: (A) ``Reader(root).verify()`` (SHA-256 of every shard) and (B) one
pass over every valid (expression, view) pair of every split with ``RefexpDataset`` (decode
image + mask), so the ratio is taken side by side.  Drop the page cache between runs for a
cold-cache figure (``sync; echo 3 > /proc/sys/vm/drop_caches``, root).
"""

from __future__ import annotations

import argparse
import statistics
import time

from clevr_remv.data import Reader, RefexpDataset


def verify(root):
    t0 = time.perf_counter()
    n = Reader(root).verify()
    return time.perf_counter() - t0, n


def epoch(root):
    t0 = time.perf_counter()
    items = 0
    reader = Reader(root)
    for split in sorted({e["split"] for e in reader.shards}):
        ds = RefexpDataset(root, split=split, views="all")
        for i in range(len(ds)):
            ds[i]
            items += 1
    return time.perf_counter() - t0, items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    reader = Reader(a.root)
    total = sum(e["bytes"] for e in reader.shards)
    vs, es = [], []
    for _ in range(a.rounds):
        t, n = verify(a.root)
        vs.append(t)
        t, items = epoch(a.root)
        es.append(t)
    v, e = statistics.median(vs), statistics.median(es)
    print(f"{n} shards, {total / 1e6:.1f} MB, {items} items per epoch")
    print(f"verify (SHA-256): median {v:.3f} s = {total / 1e6 / v:.0f} MB/s  (runs: {', '.join(f'{x:.3f}' for x in vs)})")
    print(f"one epoch (RefexpDataset, all views): median {e:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in es)})")
    print(f"verify / epoch = {100 * v / e:.1f}%")


if __name__ == "__main__":
    main()
