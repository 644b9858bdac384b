"""What the normals output costs: Blender's render time with the Normal pass on and off, and
the driver's decode time per view with and without normals, on real views at 480x320.

A/B side by side in one run: for each repetition, the same view is rendered with the pass off
then on (one worker, reconfigured between them), and the EXR written with the pass on is
decoded with and without the normals output, alternating.

    python bench/normals_cost.py --repeat 5 --samples 16 --out bench/results/normals_cost.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from clevr_remv import config
from clevr_remv.render import blender, exr, outputs
from clevr_remv.run.scene_task import sample_visible_scene
from clevr_remv.scene import lightfield


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--out", default="bench/results/normals_cost.json")
    args = ap.parse_args()
    cfg = config.load_config(overrides={"render.width": args.width, "render.height": args.height,
                                        "render.samples": args.samples, "rig.grid": 3})
    base = {**cfg["render"], "device": "cpu"}
    without = outputs.render_passes([o for o in outputs.rendered(cfg) if o.name != "normals"])
    with_n = outputs.render_passes(outputs.rendered(cfg))
    worker = blender.BlenderWorker(None)
    worker.hello()
    worker.configure({**base, "passes": with_n})
    record, _, _ = sample_visible_scene(worker, cfg, 0, 0)
    ks, es = lightfield.all_cameras(record["rig"])
    view = {"intrinsics": ks[1, 1], "world_to_camera": es[1, 1]}
    plain = [o for o in outputs.rendered(cfg) if o.name != "normals"]
    times = {"render_s_without": [], "render_s_with": [], "decode_ms_without": [], "decode_ms_with": []}
    try:
        for _ in range(args.repeat):
            for label, passes in (("without", without), ("with", with_n)):
                worker.configure({**base, "passes": passes})
                ev = list(worker.render(record, [(1, 1)], tag=label))[0]
                times[f"render_s_{label}"].append(ev.seconds)
            # Decode the EXR that has the normals, with and without them (copies: read_view removes).
            for label, outs in (("without", plain), ("with", outputs.rendered(cfg))):
                copy = Path(ev.path).with_name(f"copy_{label}.exr")
                shutil.copy(ev.path, copy)
                t0 = time.perf_counter()
                exr.read_view(copy, outs, view)
                times[f"decode_ms_{label}"].append(1000 * (time.perf_counter() - t0))
    finally:
        worker.close()
    summary = {k: {"median": statistics.median(v), "all": v} for k, v in times.items()}
    result = {"width": args.width, "height": args.height, "samples": args.samples, "repeat": args.repeat,
              **summary}
    for k, v in summary.items():
        print(f"{k}: median {v['median']:.4f}  (all: {', '.join(f'{x:.4f}' for x in v['all'])})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
