"""Looking at a generated folder: ``clevr-remv info`` and ``clevr-remv merge``."""

from __future__ import annotations

import json
from pathlib import Path

from . import shards
from .errors import UsageError


def load_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    if not path.exists():
        parts = sorted(Path(out).glob("manifest.part-*.json"))
        hint = " (farm parts found: run 'clevr-remv merge' first)" if parts else ""
        raise UsageError(f"'{out}' has no manifest.json{hint}; give a folder made by 'clevr-remv generate'")
    try:
        return shards.read_json(path)
    except json.JSONDecodeError as exc:
        raise UsageError(f"'{path}' is not valid JSON ({exc}); re-run generate to rewrite it") from None


def describe(out: Path, verify: bool, echo) -> bool:
    m = load_manifest(out)
    echo(f"CLEVR-REMV run in {out}")
    echo(f"  generator {m['generator']['version']}, format {m['format_version']}, digest {m['config_digest']}")
    echo(f"  {m['scenes']} scenes, seed {m['seed']}, grid {m['grid'][0]}x{m['grid'][1]}, "
         f"{m['resolution'][0]}x{m['resolution'][1]}, {'complete' if m['complete'] else 'INCOMPLETE'}")
    for name, split in m["splits"].items():
        done = [e for e in m["shards"] if e["split"] == name]
        scenes = sum(e["num_scenes"] for e in done)
        a, b = split["scene_range"]
        echo(f"  {name:>6}: scenes {a}-{b - 1} ({b - a}), {len(done)} shards finished ({scenes} scenes), "
             f"{sum(e['refexps'] for e in done)} expressions, {sum(e['bytes'] for e in done) / 1e9:.2f} GB")
    ok = True
    if verify:
        for e in m["shards"]:
            path = Path(out) / e["path"]
            if not path.exists():
                echo(f"  MISSING {e['path']}")
                ok = False
            elif shards.sha256_file(path) != e["sha256"]:
                echo(f"  CHECKSUM MISMATCH {e['path']}")
                ok = False
        echo("  checksums: " + ("all match" if ok else "problems found"))
    return ok


def merge_parts(out: Path) -> dict:
    out = Path(out)
    parts = sorted(out.glob("manifest.part-*-of-*.json"))
    if not parts:
        raise UsageError(f"'{out}' holds no manifest.part-K-of-M.json; run 'generate --part K/M' first")
    loaded = [shards.read_json(p) for p in parts]
    digests = {m["config_digest"] for m in loaded}
    if len(digests) != 1:
        raise UsageError(f"parts in '{out}' come from runs with different settings ({', '.join(sorted(digests))})")
    counts = {m["part"][1] for m in loaded}
    if len(counts) != 1:
        raise UsageError(f"parts in '{out}' disagree on the number of parts ({sorted(counts)})")
    base = dict(loaded[0])
    entries = sorted((e for m in loaded for e in m["shards"]), key=lambda e: (e["scene_range"][0]))
    planned = sum(m["shards_planned"] for m in loaded)
    base.pop("last_run", None)
    expected = counts.pop()
    base.update({"shards": entries, "part": None, "parts_merged": len(loaded),
                 "parts_expected": expected, "shards_planned": planned,
                 "stats": shards.dataset_stats(entries),
                 "complete": all(m["complete"] for m in loaded) and len(loaded) == expected})
    shards.write_json_atomic(out / "manifest.json", base)
    return base
