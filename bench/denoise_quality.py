"""Quality and time of the driver's denoiser (pyoidn, one filter set per worker) against Cycles'
own (a new OIDN device and filters per render call), on the same noisy renders, for OIDN's
qualities and Cycles' three prefilters.

For a few scenes (laid out exactly as `generate` does), renders the central view at the
given size and sample settings twice in one worker: once with Cycles' denoiser (its defaults,
and ours before the driver's denoiser: prefilter "Accurate", quality "High"), once with the denoising-data passes and Cycles' denoiser
off, then denoises that with clevr_remv.render.denoise for every QUALITY:PREFILTER variant asked for.
Both are compared with a reference of --reference-samples (no denoising, no adaptive
sampling) as in bench/quality.py: PSNR on the stored 8-bit sRGB images.  Times: the worker's
render call (CPU seconds), plus the driver's denoise call (CPU seconds, second call of a
filter set, so without the set-up).

References are rendered by a second worker, and cached under --cache (keyed by seed, scene,
size and samples), so a sweep of settings re-renders only the noisy images.  A second worker,
because Cycles' sampling pattern in a process depends on the sample counts it has rendered
before: after a 2048-sample render, the same 1-sample render has different noise (measured
with bpy 4.5.15; instance ids do not change).  `generate` never renders above the run's own
sample count, so the noisy renders here are the ones a run makes.

    python bench/denoise_quality.py --scenes 2 --out bench/results/denoise_quality.json
    python bench/denoise_quality.py --scenes 4 --width 96 --height 64 --samples 1 --adaptive 0 \\
        --out bench/results/denoise_quality_96x64_1spp.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import proc_cpu

from clevr_remv import config
from clevr_remv.render import blender, denoise, exr, outputs
from clevr_remv.run.scene_task import sample_visible_scene

VARIANTS = [f"{q}:{p}" for q in denoise.QUALITIES for p in denoise.PREFILTERS]


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--width", type=int, help="default: the config's")
    ap.add_argument("--height", type=int, help="default: the config's")
    ap.add_argument("--samples", type=int, help="default: the config's")
    ap.add_argument("--adaptive", type=float, help="adaptive threshold; default: the config's")
    ap.add_argument("--reference-samples", type=int, default=2048)
    ap.add_argument("--variants", nargs="*", default=VARIANTS,
                    help="QUALITY:PREFILTER pairs for the driver's denoiser (default: all nine)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "clevr-remv-bench"),
                    help="folder for the reference renders")
    ap.add_argument("--out", default="bench/results/denoise_quality.json")
    args = ap.parse_args()
    overrides = {f"render.{k}": v for k, v in (("width", args.width), ("height", args.height),
                                               ("samples", args.samples), ("adaptive_threshold", args.adaptive))
                 if v is not None}
    cfg = config.load_config(None, overrides)
    rc = cfg["render"]
    g = cfg["rig"]["grid"]
    centre = (g // 2, g // 2)
    stored_passes = outputs.render_passes(outputs.stored(cfg))
    # Cycles denoises, as before the driver's denoiser: prefilter accurate, quality high
    base = {**rc, "device": "cpu", "passes": stored_passes, "denoise_prefilter": "accurate", "denoise_quality": "high"}
    driver = {"denoise": False, "passes": stored_passes + ["cycles.denoising_store_passes"]}
    worker = blender.BlenderWorker()
    worker.hello()
    worker.configure(base)
    ref_worker = None
    dns = {}
    for v in args.variants:
        q, p = v.split(":")
        dns[v] = denoise.Denoiser("cpu", quality=q, prefilter=p)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for index in range(args.scenes):
            record, _, _ = sample_visible_scene(worker, cfg, args.seed, index)
            key = cache / f"ref_s{args.seed}_i{index}_{rc['width']}x{rc['height']}_{args.reference_samples}.npy"
            row = {"scene": index, "width": rc["width"], "height": rc["height"], "samples": rc["samples"],
                   "adaptive_threshold": rc["adaptive_threshold"]}
            if key.exists():
                ref = np.load(key)
            else:
                if ref_worker is None:
                    ref_worker = blender.BlenderWorker()
                    ref_worker.hello()
                    ref_worker.configure(base)
                ev = list(ref_worker.render(record, [centre], tag="ref", settings={
                    "samples": args.reference_samples, "adaptive_threshold": 0.0, "denoise": False}))[0]
                ref = exr.read_view(ev.path, ["images"])["images"]
                np.save(key, ref)
                row["reference_seconds"] = ev.seconds
            c0 = proc_cpu(worker.proc.pid)
            ev = list(worker.render(record, [centre], tag="cy"))[0]
            row["cycles_cpu_s"] = proc_cpu(worker.proc.pid) - c0
            cy = exr.read_view(ev.path, ["images"])["images"]
            row.update(cycles_seconds=ev.seconds, cycles_psnr=psnr(cy, ref))
            c0 = proc_cpu(worker.proc.pid)
            ev = list(worker.render(record, [centre], tag="px", settings=driver))[0]
            row["passes_cpu_s"] = proc_cpu(worker.proc.pid) - c0
            px = worker.read_view(ev, ["noisy_color", "denoising_albedo", "denoising_normal"])
            color, albedo, normal = px["noisy_color"], px["denoising_albedo"], px["denoising_normal"]
            row["passes_seconds"] = ev.seconds
            for v, dn in dns.items():
                dn(color, albedo, normal)  # first call of a size sets the filters up
                t0, c0 = time.perf_counter(), time.process_time()
                out = dn(color, albedo, normal)
                row[f"{v}_denoise_seconds"] = time.perf_counter() - t0
                row[f"{v}_denoise_cpu_s"] = time.process_time() - c0
                img = outputs.linear_to_srgb8(out)
                row[f"{v}_psnr"] = psnr(img, ref)
                row[f"{v}_vs_cycles_max_levels"] = int(np.abs(img.astype(int) - cy.astype(int)).max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        worker.close()
        if ref_worker is not None:
            ref_worker.close()
        for dn in dns.values():
            dn.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1) + "\n")
    summarise(rows, list(dns))


def summarise(rows, variants):
    """A Markdown table: mean PSNR over scenes and mean CPU per view, per denoiser."""
    n = len(rows)
    mean = lambda k: sum(r[k] for r in rows) / n  # noqa: E731
    print(f"\n{n} scene(s), {rows[0]['width']}x{rows[0]['height']}, samples {rows[0]['samples']}, "
          f"adaptive {rows[0]['adaptive_threshold']}")
    print("| denoiser | PSNR dB (mean) | per scene | CPU s per view (render + denoise) |")
    print("|---|---|---|---|")
    each = lambda k: ", ".join("%.2f" % r[k] for r in rows)  # noqa: E731
    print(f"| Cycles, in the render call (accurate, high) | {mean('cycles_psnr'):.3f} | "
          f"{each('cycles_psnr')} | {mean('cycles_cpu_s'):.3f} |")
    for v in variants:
        print(f"| driver {v} | {mean(v + '_psnr'):.3f} | {each(v + '_psnr')} | "
              f"{mean('passes_cpu_s') + mean(v + '_denoise_cpu_s'):.3f} |")


if __name__ == "__main__":
    main()
