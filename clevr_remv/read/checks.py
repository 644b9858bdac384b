"""What a shard's records must be before any tool uses them: a dataset folder is untrusted
input, so a damaged or hostile shard becomes one :class:`CorruptShardError` naming it, in
bounded time and memory, instead of an internal error, a hang or a silently empty mask.

Bounds, each far above what ``generate`` writes:

* a scene record is a JSON object of at most :data:`MAX_RECORD_BYTES`, whose ``objects`` is a
  list of at most as many objects as the shard has slots (``visible_pixels``' last axis, the
  run's ``scene.max_objects``, at most :data:`MAX_OBJECTS`), each an object with string
  attributes;
* an expression's ``scene`` is a row of the shard, its ``object`` and ``anchor`` an object of
  that scene or -1 (none), its ``targets`` and ``anchors`` (format 1.3) objects of that scene;
* a program is a JSON list of at most :data:`MAX_PROGRAM_NODES` objects, each with a string
  ``op`` (JSON nested deeper than Python's parser allows is refused, not a RecursionError);
* an expression's text has at most :data:`MAX_TEXT_CHARS` characters, and a scene at most
  :data:`MAX_EXPRESSIONS_PER_SCENE` expressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import CorruptShardError

MAX_RECORD_BYTES = 1 << 20   # a 10-object record is about 4 KB
MAX_TEXT_CHARS = 10_000      # the longest template wording is under 200 characters
MAX_PROGRAM_NODES = 64       # a one-relation program has under 10 nodes
MAX_EXPRESSIONS_PER_SCENE = 1000  # expressions.per_scene is 8
MAX_OBJECTS = 254            # scene.max_objects' bound: instance ids are uint8
ATTRIBUTES = ("size", "color", "material", "shape")

_REPAIR = "check with 'clevr-remv info --verify {root}'; re-running the same 'clevr-remv generate' re-renders it"


def _loads(raw, what: str):
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{what} is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON ({str(exc).splitlines()[0][:80]})") from None


def parse_record(raw, row: int, slots: int | None = None) -> dict:
    """Scene record ``row`` (bytes or str from ``scenes``), parsed and checked; ValueError
    saying what is wrong."""
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(f"scene record {row} is {len(raw):,} bytes, over the {MAX_RECORD_BYTES:,} a record may take")
    rec = _loads(raw, f"scene record {row}")
    if not isinstance(rec, dict):
        raise ValueError(f"scene record {row} is a JSON {type(rec).__name__}, not an object")
    objects = rec.get("objects")
    if not isinstance(objects, list):
        raise ValueError(f"scene record {row} has no list of objects")
    if slots is not None and len(objects) > slots:
        raise ValueError(f"scene record {row} claims {len(objects):,} objects, the shard has room for {slots}")
    for k, o in enumerate(objects):
        if not isinstance(o, dict) or not all(isinstance(o.get(a), str) for a in ATTRIBUTES):
            raise ValueError(f"scene record {row} object {k} lacks its {', '.join(ATTRIBUTES)}")
    return rec


def parse_program(raw, i: int) -> list:
    """Program of expression ``i`` parsed and checked; ValueError saying what is wrong."""
    prog = _loads(raw, f"expression {i}'s program")
    if (not isinstance(prog, list) or len(prog) > MAX_PROGRAM_NODES
            or not all(isinstance(n, dict) and isinstance(n.get("op"), str) for n in prog)):
        raise ValueError(f"expression {i}'s program is not a list of at most {MAX_PROGRAM_NODES} "
                         f"operations ({_text(raw)[:40]!r})")
    return prog


def shard_problem(f: h5py.File) -> str | None:
    """None when the shard's scene records and expression columns are within the bounds above,
    else what is wrong (reads the records and expression columns, not the images)."""
    try:
        scenes = f["scenes"]
        n = scenes.shape[0]
        slots = min(f["visible_pixels"].shape[-1], MAX_OBJECTS) if "visible_pixels" in f else MAX_OBJECTS
        # One record, text or program at a time: a hostile one is refused without the others
        # in memory (HDF5 reads a variable-length string whole).
        counts = [len(parse_record(scenes[row], row, slots)["objects"]) for row in range(n)]
        if "refexps" not in f:
            return None
        g = f["refexps"]
        if g["scene"].shape[0] > n * MAX_EXPRESSIONS_PER_SCENE:
            return f"{g['scene'].shape[0]:,} expressions for {n} scenes"
        rows = np.asarray(g["scene"][()]).astype(np.int64, copy=False).ravel()
        objects = np.asarray(g["object"][()]).astype(np.int64, copy=False).ravel()
        if len(objects) != len(rows):
            return f"refexps/object has {len(objects)} entries, refexps/scene {len(rows)}"
        anchor = np.asarray(g["anchor"][()]).astype(np.int64, copy=False).ravel() if "anchor" in g else None
        if anchor is not None and len(anchor) != len(rows):
            return f"refexps/anchor has {len(anchor)} entries, refexps/scene {len(rows)}"
        # Format 1.3: every target and anchor (variable-length); object -1 is a no-target one.
        lists = {name: g[name][()] for name in ("targets", "anchors") if name in g}
        for name, col in lists.items():
            if len(col) != len(rows):
                return f"refexps/{name} has {len(col)} entries, refexps/scene {len(rows)}"
        for i, (row, obj) in enumerate(zip(rows.tolist(), objects.tolist())):
            if not 0 <= row < n:
                return f"expression {i} is of scene row {row}; the shard has rows 0-{n - 1}"
            no_target = "targets" in lists and len(lists["targets"][i]) == 0
            if not (0 <= obj < counts[row] or (obj == -1 and no_target)):
                return f"expression {i} refers to object {obj}; its scene has objects 0-{counts[row] - 1}"
            if anchor is not None and not -1 <= anchor[i] < counts[row]:  # -1: no anchor
                return f"expression {i} refers to anchor {anchor[i]}; its scene has objects 0-{counts[row] - 1}"
            for name, col in lists.items():
                ids = np.asarray(col[i]).astype(np.int64, copy=False).ravel()
                if len(ids) > MAX_OBJECTS or ((ids < 0) | (ids >= counts[row])).any():
                    return (f"expression {i}'s {name} {ids[:MAX_OBJECTS].tolist()} are not among its scene's "
                            f"objects 0-{counts[row] - 1}")
        for name, limit, unit in (("text", MAX_TEXT_CHARS * 4, "text"), ("program", MAX_RECORD_BYTES, "program")):
            if name not in g:
                continue
            ds = g[name]
            for i in range(ds.shape[0]):
                raw = ds[i]
                if len(raw) > limit:
                    return f"expression {i}'s {unit} is {len(raw):,} bytes, over the {limit:,} it may take"
                if name == "program":
                    parse_program(raw, i)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def check_shard(f: h5py.File, path: Path, root: Path) -> None:
    """Raise one :class:`CorruptShardError` naming ``path`` when :func:`shard_problem` finds
    something."""
    problem = shard_problem(f)
    if problem:
        raise CorruptShardError(f"shard '{path}' is damaged ({problem}); " + _REPAIR.format(root=root))


def _text(raw) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
