"""Memory: a Blender worker's resident memory over many scenes in one process.

Runs `generate` with the worker never restarted (workers.restart_every larger than the run)
and reads the worker's RSS after every scene from logs/scenes.jsonl.

    python bench/memory.py --scenes 50
"""

from __future__ import annotations

import argparse

from _common import cleanup, generate, scene_log


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--grid", type=int, default=3)
    args = ap.parse_args()
    cfg = {"workers": {"restart_every": 100000}, "output": {"shard_size": 10}}
    out, wall = generate(["--scenes", args.scenes, "--samples", args.samples, "--grid", args.grid], cfg)
    rows = scene_log(out)
    pids = {r["worker_pid"] for r in rows}
    assert len(pids) == 1, "one worker process for the whole run"
    rss = [r["worker_rss"] / 1e6 for r in rows]
    warm = rss[min(4, len(rss) - 1)]
    print(f"{len(rows)} scenes in one worker (pid {pids.pop()}), 480x320, {args.grid}x{args.grid} views, "
          f"{args.samples} sample(s), {wall:.0f} s")
    print("RSS MB after scenes 1, 5, 10, 20, 30, 40, 50: " +
          ", ".join(f"{rss[i - 1]:.0f}" for i in (1, 5, 10, 20, 30, 40, 50) if i <= len(rss)))
    print(f"growth from scene 5 to the last: {100 * (rss[-1] - warm) / warm:+.1f}%; "
          f"peak {max(r['worker_peak_rss'] for r in rows) / 1e6:.0f} MB")
    cleanup(out)


if __name__ == "__main__":
    main()
