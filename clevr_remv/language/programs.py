"""Programs on the scene graph: execution, the relations and their one threshold, each view's own directions."""

from __future__ import annotations

import functools
import json


from ..scene import layout, lightfield

ATTRIBUTES = ("size", "color", "material", "shape")


RELATIONS = ("left", "right", "front", "behind")
# Object j is <rel> of object i when (p_j - p_i) . dir_rel > RELATION_THRESHOLD (docs/scenes.md).
RELATION_THRESHOLD = 0.2


def holds(p_i, p_j, direction) -> bool:
    """Whether the object at ``p_j`` is in ``direction`` of the one at ``p_i`` (ground plane):
    (p_j - p_i) . dir > RELATION_THRESHOLD.  Plain float arithmetic, the one place both the
    candidates and the programs decide it: the same bits on every CPU (no BLAS), so a value at
    the threshold falls on the same side in both."""
    dx, dy = float(p_j[0]) - float(p_i[0]), float(p_j[1]) - float(p_i[1])
    return dx * float(direction[0]) + dy * float(direction[1]) > RELATION_THRESHOLD


class ProgramError(ValueError):
    """A program that does not execute (unknown op, unique of not exactly one object)."""


# What a family's expressions name: one object (the source), several, or none.
TARGET_KINDS = ("one", "several", "none")
HOP_OPS = ("relate", "same")


# -- execution ------------------------------------------------------------------------------
def _matches(obj: dict, attrs: dict) -> bool:
    return all(obj[k] == v for k, v in attrs.items())


def execute(program: list[dict], scene: dict, directions: dict | None = None):
    """Run ``program`` on ``scene``; returns the list of object indices it ends with (a single
    index after a final ``unique``; the list as it is after ``all``).  Raises
    :class:`ProgramError` when a ``unique`` does not see exactly one object, or a relation
    starts from anything but one object."""
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
        elif op == "all":
            if not isinstance(state, list):
                raise ProgramError("all after unique")
        elif op == "relate":
            a = _one(state, op)
            d = dirs[node["relation"]]
            state = [j for j in range(len(objs)) if j != a and holds(objs[a]["position"], objs[j]["position"], d)]
        elif op == "same":
            a = _one(state, op)
            attr = node["attribute"]
            state = [j for j in range(len(objs)) if j != a and objs[j][attr] == objs[a][attr]]
        else:
            raise ProgramError(f"unknown op {op!r}")
    return state


def _one(state, op):
    if not isinstance(state, int):
        raise ProgramError(f"{op} needs one object (a unique before it)")
    return state


def targets_of(program: list[dict], scene: dict, directions: dict | None = None) -> tuple[int, ...]:
    """The objects ``program`` names, as a sorted tuple (empty for none)."""
    got = execute(program, scene, directions)
    return (got,) if isinstance(got, int) else tuple(sorted(got))


def num_relations(program: list[dict]) -> int:
    return sum(1 for node in program if node["op"] in HOP_OPS)


def hop_suffix(hop: int) -> str:
    """Placeholder suffix of hop ``hop`` (0 = the target's own relation): '', '2', '3', ..."""
    return "" if hop == 0 else str(hop + 1)


def chain_of(program: list[dict]) -> tuple[list[str], str]:
    """The shape of a family's program template: (its hops from the target outward, each
    ``relate`` or ``same``; its final op, ``unique`` or ``all``).  A template reads

        scene, filter $anchorN, unique, <hop N>, ..., filter $anchor, unique, <hop 1>, filter $target, unique|all

    where hop i is ``relate`` with ``$relation<i>`` or ``same`` with ``$attribute<i>`` (suffix
    '' for the first hop, then 2, 3, ...).  Raises :class:`ProgramError` on anything else."""
    ops = [node.get("op") for node in program] if isinstance(program, list) else []
    if len(ops) < 3 or (len(ops) - 3) % 3 or ops[0] != "scene":
        raise ProgramError("a program is scene, filter, unique|all with (relate|same, filter, unique) hops between")
    n = (len(ops) - 3) // 3
    hops = []
    for i in range(n + 1):
        pos = 1 + 3 * i
        hop = n - i  # hops outward from the target: the first filter names the outermost anchor
        want = "$target" if hop == 0 else "$anchor" + hop_suffix(hop - 1)
        node = program[pos]
        if ops[pos] != "filter" or node.get("attrs") != want:
            raise ProgramError(f"step {pos + 1} must be filter {want}")
        last = ops[pos + 1]
        if hop > 0 and last != "unique":
            raise ProgramError(f"step {pos + 2} must be unique (an anchor is one object)")
        if hop == 0 and last not in ("unique", "all"):
            raise ProgramError(f"step {pos + 2} must be unique or all")
        if hop > 0:
            node = program[pos + 2]
            slot = {"relate": "relation", "same": "attribute"}.get(ops[pos + 2])
            if slot is None or node.get(slot) != f"${slot}{hop_suffix(hop - 1)}":
                raise ProgramError(f"step {pos + 3} must be relate ${'relation' + hop_suffix(hop - 1)} "
                                   f"or same ${'attribute' + hop_suffix(hop - 1)}")
            hops.append(ops[pos + 2])
    return hops[::-1], ops[-1]


def uses_directions(program) -> bool:
    return any(node["op"] == "relate" for node in program)


@functools.lru_cache(maxsize=1024)
def _view_directions_cached(rig_json: str, u: int, v: int):
    rig = json.loads(rig_json)
    r = lightfield.rotation(rig)  # every view shares the central camera's orientation
    return layout.directions({**rig, "centre": lightfield.view_position(rig, u, v).tolist(),
                              "target": (lightfield.view_position(rig, u, v) + r[2]).tolist()})


def view_directions(rig: dict, u: int, v: int) -> dict:
    return _view_directions_cached(json.dumps(rig, sort_keys=True), u, v)


def anchors_of(program, scene: dict, directions: dict | None = None) -> tuple[int, ...]:
    """The anchors of a program, one per hop from the target outward (what the part before
    each ``relate``/``same`` picks); empty for a zero-hop program or one that does not execute."""
    out = []
    try:
        for k, node in enumerate(program or ()):
            if node.get("op") in HOP_OPS:
                a = execute(program[:k], scene, directions)
                if not isinstance(a, int):
                    return ()
                out.append(a)
    except (ProgramError, KeyError, TypeError, IndexError, AttributeError):
        return ()
    return tuple(out[::-1])
