"""Farm scale: how long `clevr-remv merge` takes, how much memory it needs and how large
manifest.json gets, for runs of many parts (10,000 and 1,000,000 scenes).

Rendering a million scenes to measure this is not an option, so the part manifests are made
from a REAL part manifest (a tiny `generate --part 1/2` run): its shard entry is copied for
every planned shard with that shard's own path, scene range, a fresh SHA-256 and the byte size
of a default-settings shard (20.1 MB per scene, docs/benchmarks.md "Storage").  Then the real
`clevr-remv merge` runs on them, in a child process, under /usr/bin/time -v.

    python -m clevr_remv generate --scenes 2 --shard-size 1 --width 48 --height 32 --grid 3 \\
        --samples 1 --part 1/2 --out /tmp/tpl
    python bench/farm_merge.py /tmp/tpl/manifest.part-001-of-002.json \\
        --run 10000:16:625 --run 1000000:16:1000 --run 1000000:16:62500
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clevr_remv import config
from clevr_remv.farm import parts
from clevr_remv.run.plan import plan_shards

BYTES_PER_SCENE = 81 * 248.3e3  # default settings, gzip 4 (docs/benchmarks.md)


def make_parts(template: dict, folder: Path, scenes: int, shard_size: int, tasks: int) -> float:
    cfg = copy.deepcopy(template["config"])
    cfg["output"]["shard_size"] = shard_size
    digest = config.digest(cfg, template["seed"], scenes)
    plans = plan_shards(scenes, cfg["output"]["splits"], shard_size)
    proto = template["shards"][0]
    views = proto["views"] // proto["num_scenes"]
    t0 = time.perf_counter()
    for i in range(tasks):
        entries = []
        for s in parts.shards_of_task(i, tasks, len(plans)):
            p = plans[s]
            e = dict(proto, path=p.name, split=p.split, number=p.number, scene_range=[p.first, p.end],
                     num_scenes=p.end - p.first, views=(p.end - p.first) * views,
                     sha256=os.urandom(32).hex(), bytes=int(BYTES_PER_SCENE * (p.end - p.first)))
            entries.append(e)
        m = dict(template, scenes=scenes, config_digest=digest, config=cfg, part=[i + 1, tasks],
                 shards_planned=len(entries), shards=entries, complete=True)
        (folder / parts.part_manifest_name(i + 1, tasks)).write_text(json.dumps(m, indent=1))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("template", type=Path, help="a real manifest.part-K-of-M.json")
    ap.add_argument("--run", action="append", required=True, metavar="SCENES:SHARD_SIZE:TASKS")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the parts [default: a temp folder]")
    args = ap.parse_args()
    template = json.loads(args.template.read_text())
    print("| scenes | shard size | shards | tasks (parts) | part manifests MB | merge wall s | merge peak RSS MB "
          "| manifest.json MB |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.run:
        scenes, shard_size, tasks = (int(x) for x in spec.split(":"))
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            folder = Path(tmp)
            make_parts(template, folder, scenes, shard_size, tasks)
            parts_mb = sum(p.stat().st_size for p in folder.glob("manifest.part-*")) / 1e6
            r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "clevr_remv", "merge", str(folder)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"merge failed: {r.stderr[-2000:]}")
            wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
            secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
            rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1e3
            shards = len(json.loads((folder / "manifest.json").read_text())["shards"])
            size = (folder / "manifest.json").stat().st_size / 1e6
            print(f"| {scenes:,} | {shard_size} | {shards:,} | {tasks:,} | {parts_mb:.1f} | {secs:.1f} | {rss:.0f} "
                  f"| {size:.1f} |", flush=True)


if __name__ == "__main__":
    main()
