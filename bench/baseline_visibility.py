"""How the rig baseline trades view change against lost objects (docs/scenes.md, the light-field rig).

For each baseline, lays out scenes exactly as `generate` does (including the central-view
pixel check), renders every view's object-index pass at 1 sample (the id pass is exact at
any sample count), and reports:

* invisible share: (object, view) pairs in which the object shows 0 pixels, split into
  out of frame (its bounding sphere projects outside the image) and occluded;
* corner change: median |visible pixels(corner) - visible pixels(centre)| / visible(centre)
  over objects, and the share of objects whose visible area changes by more than 20%;
* corner parallax: median shift of object centres between the centre and a corner, pixels.

    python bench/baseline_visibility.py --scenes 12 --baselines 0.1 0.25 0.4 0.6
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from clevr_remv import config
from clevr_remv.render import blender, exr
from clevr_remv.render.devices import CHEAP_CHECK
from clevr_remv.run.scene_task import sample_visible_scene
from clevr_remv.scene import lightfield


def measure(worker, cfg, seed, scenes):
    grid = cfg["rig"]["grid"]
    views = [(u, v) for u in range(grid) for v in range(grid)]
    corners = lightfield.corner_views((grid, grid))
    c = (grid // 2, grid // 2)
    w, h = cfg["render"]["width"], cfg["render"]["height"]
    pairs = invisible = out_of_frame = 0
    changes, parallax = [], []
    for index in range(scenes):
        record, _, _ = sample_visible_scene(worker, cfg, seed, index)
        n = len(record["objects"])
        counts = {}
        for ev in worker.render(record, views, tag="vis", settings=CHEAP_CHECK):
            ids = exr.read_view(ev.path, ["instances"])["instances"]
            counts[(ev.u, ev.v)] = np.bincount(ids.ravel(), minlength=n + 1)[1:n + 1]
        rig = record["rig"]
        for (u, v), cnt in counts.items():
            for k, obj in enumerate(record["objects"]):
                pairs += 1
                if cnt[k] == 0:
                    invisible += 1
                    xy, z = lightfield.project(rig, u, v, np.asarray(obj["position"]))
                    r_px = lightfield.focal_px(rig) * obj["radius"] / z
                    if xy[0] < -r_px or xy[0] > w + r_px or xy[1] < -r_px or xy[1] > h + r_px:
                        out_of_frame += 1
        for k, obj in enumerate(record["objects"]):
            centre_count = counts[c][k]
            xy_c, _ = lightfield.project(rig, *c, np.asarray(obj["position"]))
            for cu, cv in corners:
                changes.append(abs(int(counts[(cu, cv)][k]) - int(centre_count)) / max(1, centre_count))
                xy, _ = lightfield.project(rig, cu, cv, np.asarray(obj["position"]))
                parallax.append(float(np.hypot(*(xy - xy_c))))
    changes = np.asarray(changes)
    return {
        "pairs": pairs,
        "invisible_share": invisible / pairs,
        "out_of_frame_share": out_of_frame / pairs,
        "occluded_share": (invisible - out_of_frame) / pairs,
        "corner_change_median": float(np.median(changes)),
        "corner_change_over_20pct": float((changes > 0.2).mean()),
        "corner_parallax_median_px": float(np.median(parallax)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--baselines", type=float, nargs="+", default=[0.1, 0.25, 0.4, 0.6])
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    worker = blender.BlenderWorker()
    worker.hello()
    results = []
    try:
        for b in args.baselines:
            cfg = config.load_config(args.config, {"rig.baseline": b})
            worker.configure({**cfg["render"], "device": "cpu"})
            t0 = time.perf_counter()
            res = {"baseline": b, **measure(worker, cfg, args.seed, args.scenes),
                   "seconds": round(time.perf_counter() - t0, 1)}
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        worker.close()
    print("\n| baseline | invisible pairs | out of frame | occluded | corner visible-area change (median) "
          "| objects changing > 20% | corner parallax (median px) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['baseline']} | {100 * r['invisible_share']:.3f}% | {100 * r['out_of_frame_share']:.3f}% "
              f"| {100 * r['occluded_share']:.3f}% | {100 * r['corner_change_median']:.1f}% "
              f"| {100 * r['corner_change_over_20pct']:.1f}% | {r['corner_parallax_median_px']:.1f} |")


if __name__ == "__main__":
    main()
