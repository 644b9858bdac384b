"""The expressions of a shard: one writer and one reader of the refexps/* datasets, and their counts."""

from __future__ import annotations

import json

import h5py
import numpy as np

from .schema import REFEXP_COLUMNS, STR, VLEN_INT32


def write_refexps(f: h5py.File, refexps: list[dict], grid) -> None:
    """The ``refexps/*`` datasets (:data:`clevr_remv.store.schema.REFEXP_COLUMNS`) for a list of
    expression records (may be empty)."""
    rows, cols = grid
    g = f.create_group("refexps", track_order=False)
    r = len(refexps)
    values = {
        "scene": [e["scene"] for e in refexps], "object": [e["object"] for e in refexps],
        "text": [e["text"] for e in refexps], "family": [e["family"] for e in refexps],
        "num_relations": [e["num_relations"] for e in refexps],
        "program": [json.dumps(e["program"], sort_keys=True) for e in refexps],
        "valid_views": [e["valid_views"] for e in refexps],
        # the target's own anchor (-1 for none): the first of ``anchors``
        "anchor": [(-1 if e.get("anchor") is None else e["anchor"]) for e in refexps],
        # 1.3: every object named (empty for none), every anchor (one per relation, from the
        # target outward)
        "targets": [e.get("targets", _legacy(e, "targets")) for e in refexps],
        "anchors": [e.get("anchors", _legacy(e, "anchors")) for e in refexps],
    }
    for name, dtype, per_view in REFEXP_COLUMNS:
        if dtype is STR:
            data = np.array(values[name], dtype=object).reshape(r)
        elif dtype is VLEN_INT32:
            data = np.empty(r, dtype=object)
            for i, ids in enumerate(values[name]):
                data[i] = np.asarray(ids, dtype=np.int32)
        else:
            data = np.array(values[name], dtype).reshape((r, rows, cols) if per_view else (r,))
        g.create_dataset(name, data=data, dtype=dtype, track_times=False)


def read_refexps(f: h5py.File) -> list[dict]:
    """The one reader of a shard's expressions: one dict per ``refexps/*`` row with every column
    the shard holds, under its own name; strings decoded, ``program`` parsed (None when it does
    not parse), ``valid_views`` bool [U, V], ``anchor`` None for none (absent in shards without the
    column: see :func:`anchor`), ``scene`` the row of the scene within the shard, ``row`` the expression's row."""
    cols = _columns(f)
    out = []
    for i in range(len(cols.get("scene", ()))):
        rec = {name: col[i] for name, col in cols.items()}
        rec["scene"] = int(rec["scene"])
        rec["object"] = int(rec["object"])
        rec["text"] = str(rec.get("text", ""))
        rec["family"] = str(rec.get("family", ""))
        rec["num_relations"] = int(rec.get("num_relations", 0))
        try:
            rec["program"] = json.loads(rec["program"]) if "program" in rec else None
        except (TypeError, json.JSONDecodeError):
            rec["program"] = None
        rec["valid_views"] = np.asarray(rec["valid_views"], bool)
        if "anchor" in rec:
            rec["anchor"] = None if int(rec["anchor"]) < 0 else int(rec["anchor"])
        # Before 1.3: targets = [object]; anchors = [anchor] where the column exists (else
        # see :func:`anchors`).
        rec["targets"] = [int(x) for x in rec["targets"]] if "targets" in cols else _legacy(rec, "targets")
        if "anchors" in cols:
            rec["anchors"] = [int(x) for x in rec["anchors"]]
        elif "anchor" in rec:
            rec["anchors"] = _legacy(rec, "anchors")
        rec["row"] = i
        out.append(rec)
    return out


def _legacy(e: dict, name: str) -> list[int]:
    """``targets``/``anchors`` of a record from before 1.3 (``object``, ``anchor``; -1 / None
    for none)."""
    one = e.get("object" if name == "targets" else "anchor")
    return [] if one is None or int(one) < 0 else [int(one)]


def anchors(expression: dict, scene: dict) -> list[int]:
    """The anchors of an expression, one per relation from the target outward: the stored ones;
    for shards without the anchor columns, what its program picks before each relation."""
    if "anchors" in expression:
        return list(expression["anchors"])
    from ..language.programs import anchors_of

    return list(anchors_of(expression.get("program"), scene))


def anchor(expression: dict, scene: dict):
    """The target's own anchor (the first of :func:`anchors`), or None."""
    got = anchors(expression, scene)
    return got[0] if got else None


def expression_stats(refexps: list[dict], scenes: list[dict] = (), visible_pixels=None) -> dict:
    """Counts a manifest entry carries, so dataset statistics survive resumed runs.

    With ``visible_pixels`` (the shard's [scenes, U, V, max_objects]): ``objects`` and
    ``objects_unseen``, the objects with 0 visible pixels in some view
    (:func:`clevr_remv.scene.visibility.unseen`).

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
    out = {"expressions": len(refexps), "words": sum(word_count(e["text"]) for e in refexps),
           "families": families, "view_pairs": pairs, "view_pairs_not_valid": pairs - valid,
           "expressions_dropped_hidden": sum(rec.get("expressions", {}).get("dropped_hidden", 0) for rec in scenes),
           "scenes_short": short}
    if visible_pixels is not None:
        from ..scene.visibility import unseen

        counts = [unseen(px) for px in visible_pixels]
        out["objects"] = sum(n for n, _ in counts)
        out["objects_unseen"] = sum(k for _, k in counts)
    return out


def _columns(f: h5py.File) -> dict[str, np.ndarray]:
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
