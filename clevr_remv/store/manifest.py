"""manifest.json: its checks, reading, totals and the merge of farm parts."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from ..config import check_split_name
from ..errors import BadManifestError, DiskFullError, NotADatasetError, UsageError
from . import files, manifest


def dataset_stats(entries: list[dict]) -> dict:
    """Totals over finished shards: scenes, views, bytes, expressions, the expressions dropped
    (target or anchor hidden in some view) and the (expression, view) pairs not valid."""
    counts = ("expressions", "words", "view_pairs", "view_pairs_not_valid", "expressions_dropped_hidden",
              "objects", "objects_unseen")
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
    # Objects with 0 pixels in some view (out of frame, or wholly hidden there); shards made
    # before this count was kept carry no "objects" and are left out of the share.
    out["objects_unseen_share"] = out["objects_unseen"] / out["objects"] if out["objects"] else 0.0
    return out


# Storage settings whose defaults changed with format 1.2, with their value before it (for a
# manifest whose config lacks them).
STORAGE_BEFORE_1_2 = {"depth_dtype": "float32", "compression_level": 4, "profile": "standard", "codecs": {}}


def follow_existing_run(out: Path, cfg: dict, seed: int, scenes: int) -> tuple[dict, str]:
    """(configuration, format version) for a run into ``out``.  A folder holding a run of an
    older format keeps that run's storage: where this command leaves a storage setting at its
    default (``output.depth_dtype``, ``compression_level``, ``profile``, ``codecs``), the folder's
    value is taken, and
    when that (with the folder's format version) gives the folder's settings digest, the run
    resumes writing that format.  Otherwise ``cfg`` and this version (the folder's own checks
    then refuse other settings)."""
    import copy

    from .. import FORMAT_VERSION, config

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".")) if re.fullmatch(r"\d+(\.\d+)*", v) else (999,)

    defaults = config.default_config()["output"]
    for path in sorted(Path(out).glob("manifest*.json")) if Path(out).is_dir() else []:
        try:
            m = files.read_json(path)
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or not isinstance(m.get("config_digest"), str):
            continue
        version = str(m.get("format_version") or "")
        if m["config_digest"] == config.digest(cfg, seed, scenes) or key(version) >= key(FORMAT_VERSION):
            continue
        old = (m.get("config") or {}).get("output") or {}
        trial = copy.deepcopy(cfg)
        for name, before in STORAGE_BEFORE_1_2.items():
            if trial["output"].get(name) == defaults.get(name):
                trial["output"][name] = copy.deepcopy(old.get(name, before))
        if config.digest(trial, seed, scenes, version) == m["config_digest"]:
            return config.validate(trial), version
    return cfg, FORMAT_VERSION


# What to run when a manifest is damaged: generate finds the shards by their own attributes.
REBUILD_HINT = ("re-run the same 'clevr-remv generate' command into this folder: it rebuilds the "
                "manifest from the shards (each carries its settings digest) and renders only what is missing")


_SHARD_PATH = re.compile(r"(?P<split>[^/]+)/(?P=split)-\d{5,}\.h5")


# Bounds on what a manifest may claim (a folder is untrusted input): far above any real run,
# low enough that nothing sized from them runs out of memory.
MAX_SCENES = 2_000_000          # as generate's --scenes
MAX_GRID = 1001                 # views per side
MAX_SIDE = 1 << 15              # pixels per image side


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _pair_problem(name: str, value, low: int, high: int) -> str | None:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(x) for x in value)):
        return f"'{name}' is {json.dumps(value)[:60]}, not two integers"
    if not all(low <= x <= high for x in value):
        return f"'{name}' {value} is outside {low}-{high}"
    return None


def manifest_problem(m) -> str | None:
    """None when ``m`` has the manifest's shape, only safe names and numbers within bounds
    (scene ranges of whole numbers inside the run, none overlapping, each as long as its
    ``num_scenes``, at most ``output.shard_size``), else what is wrong."""
    if not isinstance(m, dict):
        return "it does not hold a JSON object"
    for key in ("config_digest", "scenes", "seed", "grid", "resolution", "splits", "shards", "config"):
        if key not in m:
            return f"it lacks '{key}'"
    if not isinstance(m["splits"], dict) or not isinstance(m["shards"], list):
        return "'splits' or 'shards' has the wrong type"
    if not _is_int(m["scenes"]) or not 0 <= m["scenes"] <= MAX_SCENES:
        return f"'scenes' is {json.dumps(m['scenes'])[:60]}, not a whole number from 0 to {MAX_SCENES:,}"
    problem = (_pair_problem("grid", m["grid"], 1, MAX_GRID)
               or _pair_problem("resolution", m["resolution"], 1, MAX_SIDE))
    if problem:
        return problem
    shard_size = (m["config"].get("output", {}).get("shard_size") if isinstance(m["config"], dict) else None)
    for name in m["splits"]:
        problem = check_split_name(name)
        if problem:
            return f"split name {json.dumps(name)} {problem}"
    taken: list[tuple[int, int, str]] = []
    for e in m["shards"]:
        if not isinstance(e, dict) or not {"path", "split", "scene_range", "sha256", "bytes"} <= set(e):
            return "a shard entry lacks path, split, scene_range, sha256 or bytes"
        match = _SHARD_PATH.fullmatch(str(e["path"]))
        if not match or match["split"] != e["split"] or e["split"] not in m["splits"]:
            return f"shard path {json.dumps(e['path'])} is not <split>/<split>-NNNNN.h5 of a known split"
        where = f"shard {e['path']}"
        problem = _pair_problem(f"{where} scene_range", e["scene_range"], 0, m["scenes"])
        if problem:
            return problem
        a, b = e["scene_range"]
        if a >= b:
            return f"{where} scene_range {e['scene_range']} is empty"
        if not _is_int(e.get("num_scenes")) or e["num_scenes"] != b - a:
            return f"{where} num_scenes is {json.dumps(e.get('num_scenes'))}, not {b - a} (its scene range)"
        if _is_int(shard_size) and b - a > shard_size:
            return f"{where} holds {b - a} scenes, more than output.shard_size ({shard_size})"
        if not _is_int(e["bytes"]) or e["bytes"] < 0:
            return f"{where} bytes is {json.dumps(e['bytes'])[:60]}, not a whole number"
        taken.append((a, b, e["path"]))
    taken.sort()
    for (_, b0, p0), (a1, _, p1) in itertools.pairwise(taken):
        if a1 < b0:
            return f"shards {p0} and {p1} both claim scene {a1}"
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
    try:
        files.write_json_atomic(out / "manifest.json", base)
    except OSError as exc:
        if files.is_disk_full(exc):
            raise DiskFullError(files.disk_full_message(out / "manifest.json")) from None
        raise UsageError(f"cannot write '{out / 'manifest.json'}' ({exc.strerror or exc}); nothing was "
                         f"changed: fix that (room, permissions), then run 'clevr-remv merge' again") from None
    return base
