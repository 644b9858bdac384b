"""The expressions of a shard: one writer and one reader of the refexps/* datasets, and their counts."""

from __future__ import annotations

import json

import h5py
import numpy as np

from .schema import STR


def write_refexps(f: h5py.File, refexps: list[dict], grid) -> None:
    """The ``refexps/*`` datasets for a list of expression records (may be empty)."""
    rows, cols = grid
    g = f.create_group("refexps", track_order=False)
    r = len(refexps)
    common = {"track_times": False}
    g.create_dataset("scene", data=np.array([e["scene"] for e in refexps], np.int32).reshape(r), **common)
    g.create_dataset("object", data=np.array([e["object"] for e in refexps], np.int32).reshape(r), **common)
    g.create_dataset("text", data=np.array([e["text"] for e in refexps], dtype=object).reshape(r), dtype=STR, **common)
    g.create_dataset("family", data=np.array([e["family"] for e in refexps], dtype=object).reshape(r), dtype=STR, **common)
    g.create_dataset("num_relations", data=np.array([e["num_relations"] for e in refexps], np.uint8).reshape(r), **common)
    g.create_dataset("program", data=np.array([json.dumps(e["program"], sort_keys=True) for e in refexps],
                                              dtype=object).reshape(r), dtype=STR, **common)
    valid = np.array([e["valid_views"] for e in refexps], dtype=bool).reshape(r, rows, cols)
    g.create_dataset("valid_views", data=valid, **common)
    # Extension: the anchor object of a one-relation expression (-1 for none); since 1.3 the
    # target's own anchor (the first of ``anchors``).
    anchors = [(-1 if e.get("anchor") is None else e["anchor"]) for e in refexps]
    g.create_dataset("anchor", data=np.array(anchors, np.int32).reshape(r), **common)
    # 1.3: every referent (empty for a no-target expression) and every anchor (one per hop,
    # from the target outward), variable-length int32.
    for name in ("targets", "anchors"):
        col = np.empty(r, dtype=object)
        for i, e in enumerate(refexps):
            col[i] = np.asarray(e.get(name, _legacy(e, name)), dtype=np.int32)
        g.create_dataset(name, data=col, dtype=VLEN_INT32, **common)


VLEN_INT32 = h5py.vlen_dtype(np.int32)


def _legacy(e: dict, name: str) -> list[int]:
    """``targets``/``anchors`` of a record from before 1.3 (``object``, ``anchor``; -1 / None
    for none)."""
    one = e.get("object" if name == "targets" else "anchor")
    return [] if one is None or int(one) < 0 else [int(one)]


def id_lists(g, name: str) -> list[list[int]]:
    """``refexps/targets`` or ``refexps/anchors`` of a refexps group as lists of ints; a shard
    from before 1.3 derives them from ``object`` and ``anchor``."""
    if name in g:
        return [[int(x) for x in row] for row in g[name][()]]
    legacy = "object" if name == "targets" else "anchor"
    if legacy not in g:
        return [[] for _ in range(g["scene"].shape[0])]
    return [[] if int(x) < 0 else [int(x)] for x in g[legacy][()]]


def read_refexps(f: h5py.File) -> list[dict]:
    g = f["refexps"]
    targets, anchors = id_lists(g, "targets"), id_lists(g, "anchors")
    out = []
    for i in range(g["scene"].shape[0]):
        out.append({
            "scene": int(g["scene"][i]),
            "object": int(g["object"][i]),
            "text": g["text"][i].decode("utf-8") if isinstance(g["text"][i], bytes) else g["text"][i],
            "family": g["family"][i].decode("utf-8") if isinstance(g["family"][i], bytes) else g["family"][i],
            "num_relations": int(g["num_relations"][i]),
            "program": json.loads(g["program"][i]),
            "valid_views": g["valid_views"][i],
            "anchor": (None if "anchor" not in g or int(g["anchor"][i]) < 0 else int(g["anchor"][i])),
            "targets": targets[i],
            "anchors": anchors[i],
        })
    return out


def expression_stats(refexps: list[dict], scenes: list[dict] = ()) -> dict:
    """Counts a manifest entry carries, so dataset statistics survive resumed runs.

    ``view_pairs_not_valid``: (expression, view) pairs that are kept but not valid in that view.
    From the scene records (``record["expressions"]``): ``expressions_dropped_hidden``, the
    expressions the drop rule removed (target or anchor hidden in some view), and
    ``scenes_short``, scenes with fewer than ``per_scene`` expressions by reason."""
    from ..language.templates import word_count

    families: dict[str, int] = {}
    for e in refexps:
        families[e["family"]] = families.get(e["family"], 0) + 1
    pairs = sum(int(np.asarray(e["valid_views"]).size) for e in refexps)
    valid = sum(int(np.asarray(e["valid_views"]).sum()) for e in refexps)
    short: dict[str, int] = {}
    for rec in scenes:
        reason = rec.get("expressions", {}).get("shortfall")
        if reason:
            short[reason] = short.get(reason, 0) + 1
    return {"expressions": len(refexps), "words": sum(word_count(e["text"]) for e in refexps),
            "families": families, "view_pairs": pairs, "view_pairs_not_valid": pairs - valid,
            "expressions_dropped_hidden": sum(rec.get("expressions", {}).get("dropped_hidden", 0) for rec in scenes),
            "scenes_short": short}


def refexp_records(f: h5py.File) -> list[dict]:
    """One dict per expression with the fields every tool uses (``program`` parsed), plus any
    other per-expression field the shard holds, under its own name."""
    cols = read_refexp_columns(f)
    n = len(cols.get("scene", ()))
    out = []
    for i in range(n):
        rec = {name: col[i] for name, col in cols.items()}
        rec["scene"] = int(rec["scene"])
        rec["object"] = int(rec["object"])
        rec["num_relations"] = int(rec.get("num_relations", 0))
        try:
            rec["program"] = json.loads(rec["program"]) if "program" in rec else None
        except (TypeError, json.JSONDecodeError):
            rec["program"] = None
        rec["valid_views"] = np.asarray(rec["valid_views"], bool)
        for name in ("targets", "anchors"):
            rec[name] = [int(x) for x in rec[name]] if name in cols else _legacy(rec, name)
        rec["row"] = i
        out.append(rec)
    return out


def read_refexp_columns(f: h5py.File) -> dict[str, np.ndarray]:
    """Every ``refexps/*`` dataset by name; strings decoded to ``str``."""
    out = {}
    if "refexps" not in f:
        return out
    for name, ds in f["refexps"].items():
        if not isinstance(ds, h5py.Dataset):
            continue
        if h5py.check_string_dtype(ds.dtype) is not None:
            out[name] = np.asarray(ds.asstr()[()], dtype=object)
        else:
            out[name] = ds[()]
    return out
