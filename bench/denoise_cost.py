"""Where a denoised view's time goes: CPU seconds per view, in one worker, one setting after
another (twice), at the given size; then OIDN's filters alone on one view's passes.

Worker settings (the worker process's CPU time per view, render calls including the EXR):
  cycles-denoise  Cycles' denoiser in each render call (new OIDN device, 2 prefilters, filter)
  passes          no Cycles denoiser; the noisy colour plus the denoising-data passes
  no-denoise      neither
Then, on the passes of the central view: pyoidn filters kept across calls (CPU per call,
median of 3 after one warm call), quality high / balanced / fast, with the albedo and normal
prefilters as Cycles runs them ("prefilter+main"), and the main filter alone without
prefilters (cleanAux off: "main only").

    python bench/denoise_cost.py --width 96 --height 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from _common import proc_cpu
from clevr_remv import config, denoise, layout, outputs, render


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
    w = render.BlenderWorker()
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
    print("\n| OIDN quality | prefilter+main CPU ms | main only CPU ms |")
    print("|---|---|---|")
    for q in ("high", "balanced", "fast"):
        dn = denoise.Denoiser("cpu", quality=q)
        full = _cpu(lambda: dn(color, albedo, normal))
        main_only = _cpu(lambda: _main_only(dn, color, albedo, normal))
        dn.close()
        print(f"| {q} | {1000 * full:.0f} | {1000 * main_only:.0f} |")


def _cpu(fn):
    fn()
    xs = []
    for _ in range(3):
        c = time.process_time()
        fn()
        xs.append(time.process_time() - c)
    return statistics.median(xs)


def _main_only(dn, color, albedo, normal):
    """The colour filter alone, fed the raw guides (cleanAux off, no prefilters)."""
    p = dn._pyoidn
    if not hasattr(dn, "_raw"):
        h, w = color.shape[:2]
        f = p.Filter(dn.device, p.OIDN_FILTER_TYPE_RT)
        dn._raw = (f, [np.empty((h, w, 3), np.float32) for _ in range(4)])
        for name, arr in zip(("color", "albedo", "normal", "output"), dn._raw[1]):
            f.set_image(name, arr, p.OIDN_FORMAT_FLOAT3)
        f.set_bool("hdr", True)
        f.set_int("quality", dn.quality)
        f.commit()
    f, (c, a, n, _) = dn._raw
    c[...], a[...], n[...] = color, albedo, normal
    f.execute()


if __name__ == "__main__":
    main()
