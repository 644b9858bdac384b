"""Quality and time of the driver's denoiser (pyoidn, one filter set per worker) against Cycles'
own (a new OIDN device and filters per render call), on the same noisy renders.

For a few scenes (laid out exactly as `generate` does), renders the central view at the
default settings twice in one worker: once with Cycles' denoiser (today's default), once with
the denoising-data passes and Cycles' denoiser off, then denoises that with
clevr_remv.denoise (OIDN "High", prefiltered albedo and normal, like Cycles).  Both are
compared with a 2048-sample reference (no denoising, no adaptive sampling) as in
bench/quality.py: PSNR on the stored 8-bit sRGB images.  Times: the worker's render call,
plus the driver's denoise call for the second; CPU seconds of both processes as well.

    python bench/denoise_quality.py --scenes 1 --out bench/results/denoise_quality.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import proc_cpu
from clevr_remv import config, denoise, outputs, render
from clevr_remv.pipeline import sample_visible_scene


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--reference-samples", type=int, default=2048)
    ap.add_argument("--qualities", nargs="*", default=["high"], help="also denoise with: balanced fast")
    ap.add_argument("--out", default="bench/results/denoise_quality.json")
    args = ap.parse_args()
    cfg = config.load_config()
    g = cfg["rig"]["grid"]
    centre = (g // 2, g // 2)
    stored_passes = outputs.render_passes(outputs.stored(cfg))
    base = {**cfg["render"], "device": "cpu", "passes": stored_passes}  # Cycles denoises
    driver = {"denoise": False, "passes": stored_passes + ["cycles.denoising_store_passes"]}
    worker = render.BlenderWorker()
    worker.hello()
    worker.configure(base)
    dns = {q: denoise.Denoiser("cpu", quality=q) for q in args.qualities}
    rows = []
    try:
        for index in range(args.scenes):
            record, _, _ = sample_visible_scene(worker, cfg, args.seed, index)
            ev = list(worker.render(record, [centre], tag="ref", settings={
                "samples": args.reference_samples, "adaptive_threshold": 0.0, "denoise": False}))[0]
            ref = render.read_view(ev.path, ["images"])["images"]
            row = {"scene": index, "reference_seconds": ev.seconds}
            c0 = proc_cpu(worker.proc.pid)
            ev = list(worker.render(record, [centre], tag="cy"))[0]
            row["cycles_cpu_s"] = proc_cpu(worker.proc.pid) - c0
            cy = render.read_view(ev.path, ["images"])["images"]
            row.update(cycles_seconds=ev.seconds, cycles_psnr=psnr(cy, ref))
            c0 = proc_cpu(worker.proc.pid)
            ev = list(worker.render(record, [centre], tag="px", settings=driver))[0]
            row["passes_cpu_s"] = proc_cpu(worker.proc.pid) - c0
            px = worker.read_view(ev, ["noisy_color", "denoising_albedo", "denoising_normal"])
            color, albedo, normal = px["noisy_color"], px["denoising_albedo"], px["denoising_normal"]
            row["passes_seconds"] = ev.seconds
            for q, dn in dns.items():
                dn(color, albedo, normal)  # first call of a size sets the filters up
                t0, c0 = time.perf_counter(), time.process_time()
                out = dn(color, albedo, normal)
                row[f"pyoidn_{q}_denoise_seconds"] = time.perf_counter() - t0
                row[f"pyoidn_{q}_denoise_cpu_s"] = time.process_time() - c0
                img = outputs.linear_to_srgb8(out)
                row[f"pyoidn_{q}_psnr"] = psnr(img, ref)
                row[f"pyoidn_{q}_vs_cycles_max_levels"] = int(np.abs(img.astype(int) - cy.astype(int)).max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        worker.close()
        for dn in dns.values():
            dn.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
