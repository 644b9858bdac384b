"""Where a denoised view's time goes: CPU seconds per view, in one worker, one setting after
another (twice), at the given size; then OIDN's filters alone on one view's passes.

Worker settings (the worker process's CPU time per view, render calls including the EXR):
  cycles-denoise  Cycles' denoiser in each render call (new OIDN device, 2 prefilters, filter)
  passes          no Cycles denoiser; the noisy colour plus the denoising-data passes
  no-denoise      neither
Then, on the passes of the central view: clevr_remv.render.denoise.Denoiser, filters kept across
calls (CPU and wall per call, medians of 5 after one warm call), for each OIDN quality
(high / balanced / fast) and each prefilter as Cycles names them: accurate (albedo and normal
prefilters, then the colour filter with cleanAux), fast (the colour filter alone with the raw
guides) and none (the colour filter alone, guides taken as clean).

    python bench/denoise_cost.py --width 96 --height 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import proc_cpu

from clevr_remv import config
from clevr_remv.render import blender, denoise, outputs
from clevr_remv.scene import layout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--views", type=int, default=27)
    args = ap.parse_args()
    cfg = config.load_config(None, {"render.width": args.width, "render.height": args.height,
                                    "render.samples": args.samples})
    stored = outputs.render_passes(outputs.stored(cfg))
    settings = {
        "cycles-denoise": {"denoise": True, "passes": stored},
        "passes": {"denoise": False, "passes": stored + ["cycles.denoising_store_passes"]},
        "no-denoise": {"denoise": False, "passes": stored},
    }
    w = blender.BlenderWorker()
    w.hello()
    rec = layout.sample_scene(cfg, 0, 0)
    g = cfg["rig"]["grid"]
    views = [(u, v) for u in range(g) for v in range(g)][:args.views]
    per_view = {k: [] for k in settings}
    try:
        for _ in range(2):
            for name, extra in settings.items():
                w.configure({**cfg["render"], "device": "cpu", "threads": os.cpu_count() or 1, **extra})
                list(w.render(rec, views[:1], tag="warm"))
                c0 = proc_cpu(w.proc.pid)
                list(w.render(rec, views, tag="x"))
                per_view[name].append((proc_cpu(w.proc.pid) - c0) / len(views))
        w.configure({**cfg["render"], "device": "cpu", **settings["passes"]})
        ev = list(w.render(rec, [(g // 2, g // 2)], tag="p"))[0]
        px = w.read_view(ev, ["noisy_color", "denoising_albedo", "denoising_normal"])
    finally:
        w.close()
    print(f"{args.width}x{args.height}, {args.samples} sample(s), {len(views)} views per setting, 2 rounds")
    print("| worker setting | CPU ms per view (rounds) |")
    print("|---|---|")
    for name, xs in per_view.items():
        print(f"| {name} | {', '.join(f'{1000 * x:.0f}' for x in xs)} |")
    color, albedo, normal = px["noisy_color"], px["denoising_albedo"], px["denoising_normal"]
    print("\n| OIDN quality | prefilter | CPU ms per view | wall ms per view |")
    print("|---|---|---|---|")
    for q in denoise.QUALITIES:
        for pf in denoise.PREFILTERS:
            dn = denoise.Denoiser("cpu", quality=q, prefilter=pf)
            cpu, wall = _time(lambda: dn(color, albedo, normal))
            dn.close()
            print(f"| {q} | {pf} | {1000 * cpu:.1f} | {1000 * wall:.1f} |")


def _time(fn, n=5):
    """Median CPU and wall seconds of n calls, after one warm call (which sets the filters up)."""
    fn()
    cpu, wall = [], []
    for _ in range(n):
        c, t = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return statistics.median(cpu), statistics.median(wall)


if __name__ == "__main__":
    main()
