"""Per-view fixed cost: `clevr-remv generate` against two CLEVR-style peers, whole commands,
side by side.

Commands, run alternately (A B C A B C ...) so that drift of a shared machine hits all alike;
the first round (--warmup) warms caches and is not counted:
  A  clevr-remv generate                         (build once, one render per view, all passes)
  B  bench/clevr_style_peer.py --mode rebuild    (CLEVR: rebuild per view + flat mask pass)
  C  bench/clevr_style_peer.py --mode build-once (build once per scene + flat mask pass per view)
  D  clevr-remv generate with render.denoiser "cycles" (Cycles denoises in each render call: the
     state before the driver's denoiser; only with --only including D)
  E  clevr-remv generate with render.denoise_prefilter "accurate", the default (beside A when a
     --config sets another prefilter, e.g. fast; only with --only including E)
All three use the same device (--device), the same render settings (the defaults, with the
denoiser as they set it, plus --width/--height/--samples/--grid) and the same scene count.
Reported: per-run wall times and CPU times (the command with all its children: on a shared
machine, CPU time is the steadier measure), medians, ratios peer/ours pair by pair (median),
per scene and per view.

    python bench/fixed_cost.py --scenes 2 --rounds 3 --width 96 --height 64 --samples 1
    python bench/fixed_cost.py --scenes 1 --rounds 2 --grid 3        # defaults (480x320), 9 views
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd, env=None):
    """(wall seconds, CPU seconds of the command and all its children)."""
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--samples", type=int)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--config", help="a config file for all three (e.g. the denoiser off)")
    ap.add_argument("--only", default="ABC", help="which commands to run (e.g. AB)")
    ap.add_argument("--ours-env", default="", help="KEY=VALUE,... for command A only")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    ap.add_argument("--json", help="write the raw times here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clevr-remv-fixed-"))
    common = ["--grid", str(args.grid), "--device", args.device]
    for flag in ("width", "height", "samples"):
        if getattr(args, flag) is not None:
            common += [f"--{flag}", str(getattr(args, flag))]
    if args.config:
        common += ["--config", args.config]
    user = json.loads(Path(args.config).read_text()) if args.config else {}

    def variant(name, **render):  # the common arguments with render settings added to the config
        path = tmp / f"{name}.json"
        path.write_text(json.dumps({**user, "render": {**user.get("render", {}), **render}}))
        return [c if c != args.config else str(path) for c in common] + ([] if args.config else ["--config", str(path)])

    ours_env = dict(kv.split("=", 1) for kv in args.ours_env.split(",") if kv)

    def ours(extra):  # clevr-remv generate with these arguments, into the given folder
        return lambda out: ([sys.executable, "-m", "clevr_remv", "generate", "--scenes", str(args.scenes),
                             "--out", str(out), "-q", "--seed", "0", *extra], ours_env)

    cmds = {
        "A": ours(common),
        "B": lambda out: ([sys.executable, str(HERE / "clevr_style_peer.py"), "--mode", "rebuild",
                           "--scenes", str(args.scenes), *common], None),
        "C": lambda out: ([sys.executable, str(HERE / "clevr_style_peer.py"), "--mode", "build-once",
                           "--scenes", str(args.scenes), *common], None),
        "D": ours(variant("cycles-denoiser", denoiser="cycles")),
        "E": ours(variant("accurate-prefilter", denoise_prefilter="accurate")),
    }
    names = {"A": "clevr-remv generate", "B": "peer: rebuild per view", "C": "peer: build once",
             "D": "clevr-remv generate, Cycles denoising", "E": "clevr-remv generate, prefilter accurate"}
    times = {k: [] for k in args.only}
    cpu = {k: [] for k in args.only}
    for r in range(args.rounds + args.warmup):
        for k in args.only:
            out = tmp / f"out-{k}-{r}"
            cmd, env = cmds[k](out)
            t, c = timed(cmd, env)
            shutil.rmtree(out, ignore_errors=True)
            warm = r < args.warmup
            print(f"round {r} {k}: {t:.2f} s wall, {c:.2f} s CPU{' (warm-up)' if warm else ''}",
                  file=sys.stderr, flush=True)
            if not warm:
                times[k].append(t)
                cpu[k].append(c)
    shutil.rmtree(tmp, ignore_errors=True)
    views = args.scenes * args.grid * args.grid
    print(f"{args.scenes} scene(s) x {args.grid}x{args.grid} views, settings: {' '.join(common)}, "
          f"{args.rounds} rounds")
    for label, data in (("wall", times), ("CPU (command and children)", cpu)):
        print(f"\n{label}:\n")
        print("| command | runs (s) | median (s) | per scene (s) | per view (s) |")
        print("|---|---|---|---|---|")
        for k, ts in data.items():
            m = statistics.median(ts)
            print(f"| {names[k]} | {', '.join(f'{x:.2f}' for x in ts)} | {m:.2f} | {m / args.scenes:.2f} | "
                  f"{m / views:.3f} |")
        if "A" in data:
            for k in data:
                if k == "A":
                    continue
                ratios = [b / a for a, b in zip(data["A"], data[k])]
                print(f"| {names[k]} / ours, pair by pair | {', '.join(f'{x:.2f}' for x in ratios)} | "
                      f"**{statistics.median(ratios):.2f}** | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "wall": times, "cpu": cpu}, indent=1))


if __name__ == "__main__":
    main()
