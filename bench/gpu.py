"""GPU throughput: per-view time by samples, by denoiser device and by worker count.

For anyone with a GPU (it runs on the CPU too, for a dry run).  Three parts:

1. Kernels: what `clevr-remv doctor` says about this machine's GPUs (a kernel that is JIT-
   compiled on first use makes the first render take minutes: run `doctor --prepare` first).
2. One worker, one scene: the render call per view for each sample count, with
   OpenImageDenoise on the GPU, on the CPU, and off.  The denoiser's device is the one
   Blender reports after configuration (`denoising_use_gpu` and an OIDN-capable GPU), so
   the table shows where denoising really ran, and its cost.
3. Whole runs with `clevr-remv generate --workers K` at the defaults: seconds per scene and per
   view from the wall clock, the time a slot's driver thread spent on views (`driver_view_s`)
   as a share of the render time (the target is at most 25%), and the per-view work summed
   over the decode/compress threads (`view_work_s`).

    python bench/gpu.py                                   # defaults: 480x320, the 9x9 rig
    python bench/gpu.py --samples 1,16,64,256 --workers 1,2,3 --scenes 6
    python bench/gpu.py --device cpu --width 96 --height 64 --grid 3 --samples 1,2 --workers 1 --scenes 2   # dry run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _common import cleanup, generate, scene_log

from clevr_remv import config
from clevr_remv.render import blender, devices, outputs
from clevr_remv.scene import layout


def kernels() -> None:
    r = subprocess.run([sys.executable, "-m", "clevr_remv", "doctor", "--json"], capture_output=True, text=True)
    try:
        rep = json.loads(r.stdout)
    except json.JSONDecodeError:
        print("doctor failed:", r.stderr.strip())
        return
    g = rep["gpus"]["list"]
    names = ", ".join(f"{x['name']} ({x['sm']})" for x in g) or "none"
    print(f"GPUs: {names}; Blender "
          f"{rep['blender'].get('blender')}; auto device {rep['blender'].get('auto_device')}")
    for p in rep["kernels"].get("plans", []):
        print(f"  kernel {p['status']['sm']}: {p['status']['status']} ({p['status']['detail']})")


def per_view(args, cfg) -> None:
    w = blender.BlenderWorker(name="bench")
    try:
        found = w.hello()["devices"]
        info = devices.choose_device(args.device, found)
        device = info["device"]
        grid = cfg["rig"]["grid"]
        views = [(u, v) for u in range(grid) for v in range(grid)][: args.views]
        record = layout.sample_scene(cfg, args.seed, 0, 0)
        print(f"\nOne worker, device {device}, {len(views)} views of one scene at {cfg['render']['width']}x"
              f"{cfg['render']['height']}, adaptive threshold {cfg['render']['adaptive_threshold']}:")
        print("| samples | denoiser asked | denoiser used (Blender) | first view s | median s per view | views/s |")
        print("|---|---|---|---|---|---|")
        for samples in args.samples:
            for denoise in ("gpu", "cpu", "off"):
                if denoise == "gpu" and device == "cpu":
                    continue
                c = {**cfg, "render": {**cfg["render"], "samples": samples, "denoise": denoise != "off"}}
                settings = devices.render_settings(c, info, 0, 1, outputs.render_passes(outputs.rendered(cfg)))
                settings["denoising_use_gpu"] = denoise == "gpu"
                used = w.configure(settings)
                t0 = time.perf_counter()
                times = [ev.seconds for ev in w.render(record, views, tag="bench")]
                wall = time.perf_counter() - t0
                print(f"| {samples} | {denoise} | {used.get('denoiser')} | {times[0]:.3f} | "
                      f"{statistics.median(times):.3f} | {len(times) / wall:.2f} |")
    finally:
        w.kill()


def per_workers(args) -> None:
    print(f"\nWhole runs at the defaults (plus your options), {args.scenes} scenes each:")
    print("| workers | wall s | s per scene | s per view | render s per view | driver s per view | driver / render "
          "| view work s per view (all threads) |")
    print("|---|---|---|---|---|---|---|---|")
    for k in args.workers:
        out, wall = generate(["--scenes", args.scenes, "--seed", args.seed, "--shard-size", args.scenes,
                              "--workers", k, "--device", args.device, *args.extra])
        rows = scene_log(out)
        views = sum(1 for _ in rows) * args.grid ** 2
        render_s = sum(r["render_s"] for r in rows)
        driver_s = sum(r["driver_view_s"] for r in rows)
        work_s = sum(r.get("view_work_s", r["driver_view_s"]) for r in rows)
        print(f"| {k} | {wall:.1f} | {wall / args.scenes:.2f} | {wall / views:.3f} | {render_s / views:.3f} | "
              f"{driver_s / views:.4f} | {driver_s / render_s:.0%} | {work_s / views:.4f} |")
        cleanup(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--samples", default="1,16,64,256", help="comma-separated sample counts")
    ap.add_argument("--workers", default="1,2,3", help="comma-separated worker counts")
    ap.add_argument("--scenes", type=int, default=6, help="scenes per whole run")
    ap.add_argument("--views", type=int, default=81, help="views per sample/denoiser setting")
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--seed", type=int, default=4000)
    ap.add_argument("--skip", default="", help="parts to skip: kernels,views,workers")
    args = ap.parse_args()
    args.samples = [int(x) for x in args.samples.split(",") if x]
    args.workers = [int(x) for x in args.workers.split(",") if x]
    args.extra = ["--width", args.width, "--height", args.height, "--grid", args.grid]
    cfg = config.load_config(None, {"render.width": args.width, "render.height": args.height, "rig.grid": args.grid})
    skip = set(args.skip.split(","))
    if "kernels" not in skip:
        kernels()
    if "views" not in skip:
        per_view(args, cfg)
    if "workers" not in skip:
        per_workers(args)


if __name__ == "__main__":
    main()
