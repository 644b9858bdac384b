"""Overhead: whole-scene wall time against the sum of the Cycles render calls of its views,
at the default settings (480x320, 9x9, 64 samples, adaptive sampling, denoising).

Reads the per-scene log that `generate` writes (logs/scenes.jsonl): wall_s is the scene from
layout to committed scene file; render_s sums the worker's bpy render calls of the 81 views;
check_s is the 1-sample central-view visibility check (including the scene build); the
driver's per-view work (EXR decode, compression, HDF5 writes) overlaps the next view's render.

    python bench/overhead.py --scenes 2
"""

from __future__ import annotations

import argparse
import json
import shutil

from _common import cleanup, generate, scene_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--extra", nargs="*", default=[], help="more generate options (e.g. --grid 3)")
    ap.add_argument("--keep", help="move the generated folder here instead of deleting it")
    args = ap.parse_args()
    out, wall = generate(["--scenes", args.scenes, "--seed", args.seed, "--shard-size", args.scenes, *args.extra])
    rows = scene_log(out)
    print("| scene | views | wall s | render calls s | wall / render | check+build s | driver view work s "
          "(overlapped) | expressions s | commit s | s per view | worker RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    views = json.loads((out / "manifest.json").read_text())["grid"]
    nviews = views[0] * views[1]
    for r in rows:
        print(f"| {r['scene']} | {nviews} | {r['wall_s']:.1f} | {r['render_s']:.1f} | {r['wall_s'] / r['render_s']:.4f} | "
              f"{r['check_s']:.2f} | {r['driver_view_s']:.2f} | {r['expressions_s']:.3f} | {r['commit_s']:.3f} | "
              f"{r['render_s'] / nviews:.2f} | {r['worker_peak_rss'] / 1e6:.0f} |")
    tw = sum(r["wall_s"] for r in rows)
    tr = sum(r["render_s"] for r in rows)
    print(f"\nall scenes: wall {tw:.1f} s, render calls {tr:.1f} s, ratio {tw / tr:.4f}; "
          f"whole command {wall:.1f} s (ratio {wall / tr:.4f}, includes start-up and shard assembly)")
    if args.keep:
        shutil.move(str(out), args.keep)
    cleanup(out)


if __name__ == "__main__":
    main()
