"""Looking at a generated folder: ``clevr-remv info`` and ``clevr-remv merge``."""

from __future__ import annotations

import json
from pathlib import Path

from . import shards
from .errors import UsageError


def _split_ranges(scenes: int, splits: dict) -> dict[str, tuple[int, int]]:
    from .plan import split_ranges  # the one place that assigns scenes to splits

    return split_ranges(scenes, splits)


def min_scenes_to_fill(splits: dict) -> int:
    """The smallest scene count from which every split with a share > 0 gets a scene (and
    keeps getting one for every larger count)."""
    used = [k for k, v in splits.items() if v > 0]
    total = float(sum(splits.values()))
    # From 2 / (smallest share) scenes on, every split's range is at least one scene long.
    n = int(2 * total / min(splits[k] for k in used)) + 2

    def fills(count):
        ranges = _split_ranges(count, splits)
        return all(ranges[k][1] > ranges[k][0] for k in used)

    while n > 1 and fills(n - 1):
        n -= 1
    return n


def empty_split_warning(scenes: int, splits: dict) -> str | None:
    """One line naming the splits that get no scene from ``--scenes`` (shares of 0 are a
    choice, not named), or None."""
    ranges = _split_ranges(scenes, splits)
    empty = [k for k, (a, b) in ranges.items() if b <= a and splits[k] > 0]
    if not empty:
        return None
    total = float(sum(splits.values()))
    shares = "/".join(f"{100 * v / total:.3g}" for v in splits.values())
    names = " and ".join([", ".join(empty[:-1]), empty[-1]] if len(empty) > 1 else empty)
    return (f"--scenes {scenes} leaves {names} empty ({'/'.join(splits)} {shares} by scene index); "
            f"use at least {min_scenes_to_fill(splits)} scenes to fill every split")


def human_bytes(n: float) -> str:
    """Bytes in a unit that fits: 512 B, 3.4 KB, 12.1 MB, 1.53 GB (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


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


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


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
        if b <= a:
            echo(f"  {name:>6}: no scenes (0 of {m['scenes']})")
            continue
        planned = f"scene {a}" if b - a == 1 else f"scenes {a}-{b - 1} ({b - a})"
        echo(f"  {name:>6}: {planned}; {len(done)} {_plural(len(done), 'shard')} finished "
             f"({scenes} {_plural(scenes, 'scene')}), {sum(e['refexps'] for e in done)} expressions, "
             f"{human_bytes(sum(e['bytes'] for e in done))}")
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
