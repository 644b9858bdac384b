"""manifest.json: its checks, reading, totals and the merge of farm parts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import check_split_name
from ..errors import BadManifestError, NotADatasetError, UsageError
from . import files, manifest


def dataset_stats(entries: list[dict]) -> dict:
    """Totals over finished shards: scenes, views, bytes, expressions, the expressions dropped
    (target or anchor hidden in some view) and the (expression, view) pairs not valid."""
    counts = ("expressions", "words", "view_pairs", "view_pairs_not_valid", "expressions_dropped_hidden")
    out = {"shards": len(entries), "scenes": sum(e["num_scenes"] for e in entries),
           "views": sum(e["views"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
           **{k: 0 for k in counts}, "families": {}, "scenes_short": {}}
    for e in entries:
        st = e.get("expression_stats", {})
        for k in counts:
            out[k] += st.get(k, 0)
        for key in ("families", "scenes_short"):
            for name, n in st.get(key, {}).items():
                out[key][name] = out[key].get(name, 0) + n
    out["expressions_per_scene"] = out["expressions"] / out["scenes"] if out["scenes"] else 0.0
    out["mean_words"] = out["words"] / out["expressions"] if out["expressions"] else 0.0
    out["view_pairs_not_valid_share"] = out["view_pairs_not_valid"] / out["view_pairs"] if out["view_pairs"] else 0.0
    chosen = out["expressions"] + out["expressions_dropped_hidden"]
    out["expressions_dropped_hidden_share"] = out["expressions_dropped_hidden"] / chosen if chosen else 0.0
    return out


# What to run when a manifest is damaged: generate finds the shards by their own attributes.
REBUILD_HINT = ("re-run the same 'clevr-remv generate' command into this folder: it rebuilds the "
                "manifest from the shards (each carries its settings digest) and renders only what is missing")


_SHARD_PATH = re.compile(r"(?P<split>[^/]+)/(?P=split)-\d{5,}\.h5")


def manifest_problem(m) -> str | None:
    """None when ``m`` has the manifest's shape and only safe names, else what is wrong."""
    if not isinstance(m, dict):
        return "it does not hold a JSON object"
    for key in ("config_digest", "scenes", "seed", "grid", "resolution", "splits", "shards", "config"):
        if key not in m:
            return f"it lacks '{key}'"
    if not isinstance(m["splits"], dict) or not isinstance(m["shards"], list):
        return "'splits' or 'shards' has the wrong type"
    for name in m["splits"]:
        problem = check_split_name(name)
        if problem:
            return f"split name {json.dumps(name)} {problem}"
    for e in m["shards"]:
        if not isinstance(e, dict) or not {"path", "split", "scene_range", "sha256", "bytes"} <= set(e):
            return "a shard entry lacks path, split, scene_range, sha256 or bytes"
        match = _SHARD_PATH.fullmatch(str(e["path"]))
        if not match or match["split"] != e["split"] or e["split"] not in m["splits"]:
            return f"shard path {json.dumps(e['path'])} is not <split>/<split>-NNNNN.h5 of a known split"
    return None


def read_manifest(path: Path) -> dict:
    """A manifest (or a part's), checked; UsageError naming what to run when it is damaged."""
    try:
        m = files.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadManifestError(f"'{path}' is not valid JSON ({exc}); {REBUILD_HINT}") from None
    except OSError as exc:
        raise BadManifestError(f"cannot read '{path}' ({exc.strerror or exc}); {REBUILD_HINT}") from None
    problem = manifest_problem(m)
    if problem:
        raise BadManifestError(f"'{path}' is not a clevr-remv manifest: {problem}; {REBUILD_HINT}")
    return m


def load_manifest(out: Path) -> dict:
    path = Path(out) / "manifest.json"
    if not path.exists():
        parts = sorted(Path(out).glob("manifest.part-*.json"))
        hint = " (farm parts found: run 'clevr-remv merge' first)" if parts else ""
        raise NotADatasetError(f"'{out}' has no manifest.json{hint}; give a folder made by 'clevr-remv generate'")
    return read_manifest(path)


def merge_parts(out: Path) -> dict:
    out = Path(out)
    parts = sorted(out.glob("manifest.part-*-of-*.json"))
    if not parts:
        raise UsageError(f"'{out}' holds no manifest.part-K-of-M.json; run 'generate --part K/M' first")
    loaded = [read_manifest(p) for p in parts]
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
                 "stats": manifest.dataset_stats(entries),
                 "complete": all(m["complete"] for m in loaded) and len(loaded) == expected})
    files.write_json_atomic(out / "manifest.json", base)
    return base
