"""Quality per second: PSNR of the central view against a 2048-sample reference.

For a few scenes (laid out exactly as `generate` does), renders the central view at 480x320
for a sweep of sample counts with and without adaptive sampling and denoising, plus CLEVR's
own setting (512 samples, no denoising, no adaptive sampling), and a 2048-sample reference
(no denoising, no adaptive sampling).  PSNR is computed on the stored 8-bit sRGB images.
Times are Blender's render calls as the worker measures them (same process, same machine,
interleaved per scene).

    python bench/quality.py --scenes 3 --out bench/results/quality.json --plot docs/images/quality.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from clevr_remv import config
from clevr_remv.render import blender, exr
from clevr_remv.run.scene_task import sample_visible_scene

SWEEP = [4, 8, 16, 32, 64, 128, 256]
VARIANTS = {  # name: (adaptive threshold, denoise)
    "adaptive+denoise": (0.02, True),
    "denoise": (0.0, True),
    "adaptive": (0.02, False),
    "plain": (0.0, False),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def shot(worker, record, centre, settings):
    ev = list(worker.render(record, [centre], tag="q", settings=settings))[0]
    rgb = exr.read_view(ev.path, ["images"])["images"]
    return rgb, ev.seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--reference-samples", type=int, default=2048)
    ap.add_argument("--out", default="bench/results/quality.json")
    ap.add_argument("--plot", default="docs/images/quality.png")
    ap.add_argument("--thresholds", type=float, nargs="*", default=[],
                    help="also: adaptive+denoise with --max-samples and these noise thresholds")
    ap.add_argument("--max-samples", type=int, default=256)
    ap.add_argument("--skip-sweep", action="store_true", help="only the reference and --thresholds")
    args = ap.parse_args()
    cfg = config.load_config()
    g = cfg["rig"]["grid"]
    centre = (g // 2, g // 2)
    worker = blender.BlenderWorker()
    worker.hello()
    worker.configure({**cfg["render"], "device": "cpu"})
    rows = []
    try:
        for index in range(args.scenes):
            record, _, _ = sample_visible_scene(worker, cfg, args.seed, index)
            ref, ref_s = shot(worker, record, centre, {"samples": args.reference_samples,
                                                       "adaptive_threshold": 0.0, "denoise": False})
            for t in args.thresholds:
                img, sec = shot(worker, record, centre, {"samples": args.max_samples, "adaptive_threshold": t,
                                                         "denoise": True})
                rows.append({"scene": index, "setting": f"adaptive {t}+denoise", "samples": args.max_samples,
                             "seconds": sec, "psnr": psnr(img, ref)})
            if args.skip_sweep:
                continue
            clevr, clevr_s = shot(worker, record, centre, {"samples": 512, "adaptive_threshold": 0.0, "denoise": False})
            rows.append({"scene": index, "setting": "clevr-512", "samples": 512, "seconds": clevr_s,
                         "psnr": psnr(clevr, ref)})
            for name, (thr, dn) in VARIANTS.items():
                for s in SWEEP:
                    img, sec = shot(worker, record, centre, {"samples": s, "adaptive_threshold": thr, "denoise": dn})
                    rows.append({"scene": index, "setting": name, "samples": s, "seconds": sec, "psnr": psnr(img, ref)})
            print(json.dumps({"scene": index, "reference_seconds": ref_s}), flush=True)
    finally:
        worker.close()
    summary = {}
    for r in rows:
        key = f"{r['setting']}@{r['samples']}"
        summary.setdefault(key, {"setting": r["setting"], "samples": r["samples"], "psnr": [], "seconds": []})
        summary[key]["psnr"].append(r["psnr"])
        summary[key]["seconds"].append(r["seconds"])
    table = []
    for key, s in summary.items():
        table.append({"setting": s["setting"], "samples": s["samples"], "psnr_mean": float(np.mean(s["psnr"])),
                      "seconds_median": float(np.median(s["seconds"]))})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "table": table, "scenes": args.scenes,
                               "reference_samples": args.reference_samples}, indent=1) + "\n")
    clevr = next((t for t in table if t["setting"] == "clevr-512"), None)
    if clevr is None:  # --skip-sweep: CLEVR's time from an earlier full run, if given
        clevr = {"psnr_mean": float("nan"), "seconds_median": float("nan")}
    print(f"\nCLEVR's setting: {clevr['psnr_mean']:.2f} dB in {clevr['seconds_median']:.2f} s")
    print("| setting | samples | PSNR (dB, mean) | time (s, median) | time / CLEVR's |")
    print("|---|---|---|---|---|")
    for t in sorted(table, key=lambda t: (t["setting"], t["samples"])):
        print(f"| {t['setting']} | {t['samples']} | {t['psnr_mean']:.2f} | {t['seconds_median']:.2f} | "
              f"{t['seconds_median'] / clevr['seconds_median']:.3f} |")
    if args.plot and not args.skip_sweep:
        plot(table, args.plot)


def plot(table, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name in VARIANTS:
        pts = sorted((t["seconds_median"], t["psnr_mean"], t["samples"]) for t in table if t["setting"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        for x, y, s in pts:
            ax.annotate(str(s), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    c = next(t for t in table if t["setting"] == "clevr-512")
    ax.scatter([c["seconds_median"]], [c["psnr_mean"]], marker="*", s=160, color="black", zorder=5,
               label="CLEVR (512 samples, no denoising)")
    ax.axhline(c["psnr_mean"], color="black", lw=0.6, ls=":")
    ax.axvline(c["seconds_median"] / 8, color="gray", lw=0.6, ls="--", label="1/8 of CLEVR's time")
    ax.set_xscale("log")
    ax.set_xlabel("render time of the central view, s (2 CPU cores, log scale)")
    ax.set_ylabel("PSNR vs 2048-sample reference, dB")
    ax.set_title("Quality per second, 480x320 (labels: samples)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"({time.time() - t0:.0f} s)")
