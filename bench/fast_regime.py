"""Fast-renderer regime: clevr-remv against a CLEVR-style loop, whole commands, side by side.

Tiny images, 1 sample, no denoising, the full 9x9 rig.  The two commands run alternately
(A B A B ...) so that drift of a shared machine hits both alike; reported: per-run wall times,
their medians, and the ratio B/A pair by pair.

    python bench/fast_regime.py --scenes 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "fast.json"
    cfg.write_text(json.dumps({"render": {"denoise": False}}))
    common = ["--width", str(args.width), "--height", str(args.height), "--samples", "1"]
    ours, peer = [], []
    for k in range(args.rounds + 1):  # the first round warms caches and is not counted
        out = tmp / f"out{k}"
        a = timed([sys.executable, "-m", "clevr_remv", "generate", "--scenes", str(args.scenes), "--out", str(out),
                   "--config", str(cfg), "-q", *common])
        b = timed([sys.executable, str(HERE / "clevr_style_peer.py"), "--scenes", str(args.scenes),
                   "--config", str(cfg), *common])  # the peer also without denoising
        shutil.rmtree(out, ignore_errors=True)
        if k:
            ours.append(a)
            peer.append(b)
    shutil.rmtree(tmp, ignore_errors=True)
    ratios = [b / a for a, b in zip(ours, peer)]
    print(f"{args.scenes} scenes x 81 views at {args.width}x{args.height}, 1 sample, {args.rounds} rounds")
    print(f"clevr-remv generate : {', '.join(f'{x:.2f}' for x in ours)} s (median {statistics.median(ours):.2f})")
    print(f"CLEVR-style peer    : {', '.join(f'{x:.2f}' for x in peer)} s (median {statistics.median(peer):.2f})")
    print(f"peer / ours per pair: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    print(f"per scene: ours {statistics.median(ours) / args.scenes:.2f} s, peer {statistics.median(peer) / args.scenes:.2f} s")


if __name__ == "__main__":
    main()
