"""Programs on the scene graph: execution, the relations and their one threshold, each view's own directions."""

from __future__ import annotations

import functools
import json

import numpy as np

from ..scene import layout, lightfield

ATTRIBUTES = ("size", "color", "material", "shape")


RELATIONS = ("left", "right", "front", "behind")
# Object j is <rel> of object i when (p_j - p_i) . dir_rel > RELATION_THRESHOLD (docs/scenes.md).
RELATION_THRESHOLD = 0.2


class ProgramError(ValueError):
    """A program that does not execute (unknown op, unique of not exactly one object)."""


# -- execution ------------------------------------------------------------------------------
def _matches(obj: dict, attrs: dict) -> bool:
    return all(obj[k] == v for k, v in attrs.items())


def execute(program: list[dict], scene: dict, directions: dict | None = None):
    """Run ``program`` on ``scene``; returns the list of object indices it ends with (a single
    index after a final ``unique``).  Raises :class:`ProgramError` when a ``unique`` does not
    see exactly one object."""
    objs = scene["objects"]
    dirs = directions or scene["directions"]
    state: list[int] | int | None = None
    for node in program:
        op = node["op"]
        if op == "scene":
            state = list(range(len(objs)))
        elif op == "filter":
            state = [i for i in state if _matches(objs[i], node["attrs"])]
        elif op == "unique":
            if not isinstance(state, list) or len(state) != 1:
                raise ProgramError(f"unique over {0 if not isinstance(state, list) else len(state)} objects")
            state = state[0]
        elif op == "relate":
            a = state
            d = np.asarray(dirs[node["relation"]][:2])
            pa = np.asarray(objs[a]["position"][:2])
            state = [j for j in range(len(objs))
                     if j != a and float((np.asarray(objs[j]["position"][:2]) - pa) @ d) > RELATION_THRESHOLD]
        elif op == "same":
            a = state
            attr = node["attribute"]
            state = [j for j in range(len(objs)) if j != a and objs[j][attr] == objs[a][attr]]
        else:
            raise ProgramError(f"unknown op {op!r}")
    return state


def num_relations(program: list[dict]) -> int:
    return sum(1 for node in program if node["op"] in ("relate", "same"))


def filtered_attributes(program: list[dict]) -> list[tuple[str, str]]:
    return [(k, v) for node in program if node["op"] == "filter" for k, v in node["attrs"].items()]


def _uses_directions(program) -> bool:
    return any(node["op"] == "relate" for node in program)


@functools.lru_cache(maxsize=1024)
def _view_directions_cached(rig_json: str, u: int, v: int):
    rig = json.loads(rig_json)
    r = lightfield.rotation(rig)  # every view shares the central camera's orientation
    return layout.directions({**rig, "centre": lightfield.view_position(rig, u, v).tolist(),
                              "target": (lightfield.view_position(rig, u, v) + r[2]).tolist()})


def view_directions(rig: dict, u: int, v: int) -> dict:
    return _view_directions_cached(json.dumps(rig, sort_keys=True), u, v)


def anchor_of(program, scene: dict):
    """The anchor object of a one-relation program (what the part before ``relate``/``same``
    picks), or None for a zero-hop program or one that does not execute."""
    if not program:
        return None
    for k, node in enumerate(program):
        if node.get("op") in ("relate", "same"):
            try:
                a = execute(program[:k], scene)
            except (ProgramError, KeyError, TypeError, IndexError):
                return None
            return a if isinstance(a, int) else None
    return None
