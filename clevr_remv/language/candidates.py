"""Candidate descriptions of a scene for one family: chains of N hops, naming one object,
several or none.

A candidate is a dict:

* ``targets``: the objects it names, a sorted tuple (empty for a no-target family);
* ``target_desc``: the attributes its target filter names (``{attribute: value}``, in
  ATTRIBUTES order) and ``target_pattern``, their names;
* ``anchors``, ``anchor_descs``, ``anchor_patterns``, ``slots``: one per hop, from the target
  outward (``anchors[0]`` is the target's own anchor; a slot is a relation or an attribute);
* ``cost``: how many attributes it names beyond the shortest description of the same thing.

Everything is bitmasks over the scene's objects; every emitted program is re-executed by
:func:`~clevr_remv.language.selection.select`."""

from __future__ import annotations

import itertools


from ..scene import catalogue
from .programs import ATTRIBUTES, RELATIONS, holds

PATTERNS = [frozenset(c) for r in range(len(ATTRIBUTES) + 1) for c in itertools.combinations(ATTRIBUTES, r)]
# A two-or-more-hop family's reserve (over-specified descriptions) stops at this many extra
# attributes: the number of chains grows with the product of the hops' choices.
CHAIN_RESERVE_MAX_COST = 1


class SceneIndex:
    def __init__(self, scene: dict):
        self.scene = scene
        objs = scene["objects"]
        self.n = n = len(objs)
        self.all = (1 << n) - 1
        # match[k][pattern]: objects equal to object k on every attribute of the pattern
        self.match = [{p: sum(1 << j for j in range(n) if all(objs[j][a] == objs[k][a] for a in p))
                       for p in PATTERNS} for k in range(n)]
        self.unique = [[p for p in PATTERNS if p and self.match[k][p] == 1 << k] for k in range(n)]
        pos = [o["position"] for o in objs]
        self.relate = {}
        for rel in RELATIONS:
            d = scene["directions"][rel]
            for a in range(n):
                self.relate[(a, rel)] = sum(1 << j for j in range(n) if j != a and holds(pos[a], pos[j], d))
        self.same = {(a, attr): sum(1 << j for j in range(n) if j != a and objs[j][attr] == objs[a][attr])
                     for a in range(n) for attr in ATTRIBUTES}
        self.has = {}  # (attribute, value) -> objects with that value
        for j, o in enumerate(objs):
            for a in ATTRIBUTES:
                self.has[(a, o[a])] = self.has.get((a, o[a]), 0) | 1 << j
        self.memo = {}

    def desc(self, k: int, pattern) -> dict:
        obj = self.scene["objects"][k]
        return {a: obj[a] for a in ATTRIBUTES if a in pattern}

    def group(self, kind: str, a: int, slot: str) -> int:
        return self.relate[(a, slot)] if kind == "relate" else self.same[(a, slot)]

    def fits(self, attrs: dict) -> int:
        """The objects that have every attribute value of ``attrs`` (a mask)."""
        m = self.all
        for a, v in attrs.items():
            m &= self.has.get((a, v), 0)
        return m


def _bits(mask: int) -> tuple[int, ...]:
    return tuple(j for j in range(mask.bit_length()) if mask >> j & 1)


def _entry(targets, desc, pattern, cost, anchors=(), descs=(), patterns=(), slots=()) -> dict:
    return {"targets": tuple(targets), "target_desc": desc, "target_pattern": pattern, "cost": cost,
            "anchors": tuple(anchors), "anchor_descs": tuple(descs), "anchor_patterns": tuple(patterns),
            "slots": tuple(slots)}


def _unique_descriptions(idx: SceneIndex, max_cost):
    """Every object's unique zero-hop descriptions (cost: attributes beyond its shortest)."""
    out = []
    for k in range(idx.n):
        if not idx.unique[k]:
            continue
        m = min(len(p) for p in idx.unique[k])
        for p in idx.unique[k]:
            if max_cost is None or len(p) - m <= max_cost:
                out.append(_entry((k,), idx.desc(k, p), p, len(p) - m))
    return out


def _subjects(idx: SceneIndex, hops: list[str], max_cost):
    """Unique descriptions of single objects as the subject of a chain of ``hops`` (from the
    subject outward).  At each hop the subject is unique within its anchor's group, and its own
    description alone is not (the relation narrows something); a same-attribute hop never
    names the shared attribute on either side."""
    if not hops:
        return _unique_descriptions(idx, max_cost)
    kind, rest = hops[0], hops[1:]
    by_anchor: dict[int, list[dict]] = {}
    for d in _subjects(idx, rest, max_cost):
        by_anchor.setdefault(d["targets"][0], []).append(d)
    slots = RELATIONS if kind == "relate" else ATTRIBUTES
    out = []
    for a in sorted(by_anchor):
        for slot in slots:
            group = idx.group(kind, a, slot)
            if not group:
                continue
            anchors = [d for d in by_anchor[a] if kind != "same" or slot not in d["target_pattern"]]
            for k in range(idx.n):
                if not group >> k & 1:
                    continue
                ok = [p for p in PATTERNS
                      if (kind != "same" or slot not in p)
                      and idx.match[k][p] & group == 1 << k and idx.match[k][p] != 1 << k]
                if not ok:
                    continue
                mt = min(len(p) for p in ok)
                for tp in ok:
                    for d in anchors:
                        cost = len(tp) - mt + d["cost"]
                        if (max_cost is not None and cost > max_cost) or k in d["anchors"]:
                            continue
                        out.append(_entry((k,), idx.desc(k, tp), tp, cost, (a,) + d["anchors"],
                                          (d["target_desc"],) + d["anchor_descs"],
                                          (d["target_pattern"],) + d["anchor_patterns"], (slot,) + d["slots"]))
    return out


def _group_targets(idx: SceneIndex, group: int, kind: str, slot, several: bool, exclude: int = 0):
    """(targets mask, desc, pattern, cost) of the descriptions that name several objects of
    ``group`` (every object of the group that fits them, at least two), or none of it (they fit
    something elsewhere in the scene).  ``exclude``: the chain's anchors, which are never
    targets, and which a no-target description must not be the only fit of ("the sphere
    behind the sphere")."""
    key = ("group", group, kind, slot, several, exclude)
    if key in idx.memo:
        return idx.memo[key]
    found = {}
    objs = idx.scene["objects"]
    for k in range(idx.n):
        inside = bool(group >> k & 1)
        if inside != several:
            continue
        for pi, p in enumerate(PATTERNS):
            if not p and (not several or group == idx.all) or (kind == "same" and slot in p):
                continue
            m = idx.match[k][p]
            got = m & group
            if (got & exclude) if several else not (m & ~exclude):
                continue
            if several and (got.bit_count() < 2 or (group != idx.all and m == got)):
                continue
            if not several and got:
                continue
            values = tuple(objs[k][a] for a in ATTRIBUTES if a in p)
            if (pi, values) not in found:
                found[(pi, values)] = (got, k, p)
    best: dict[int, int] = {}
    for got, _, p in found.values():
        best[got] = min(best.get(got, len(p)), len(p))
    out = [(got, idx.desc(k, p), p, len(p) - best[got]) for _, (got, k, p) in sorted(found.items())]
    idx.memo[key] = out
    return out


def _missing(idx: SceneIndex):
    """Zero-hop descriptions that fit no object but would if any one attribute were dropped
    ("the green cylinder" where there are green things and cylinders, but no green cylinder)."""
    values = catalogue.values_by_attribute()
    out = []
    for p in PATTERNS:
        if not p:
            continue
        names = [a for a in ATTRIBUTES if a in p]
        for combo in itertools.product(*(values[a] for a in names)):
            desc = dict(zip(names, combo))
            if not idx.fits(desc) and all(idx.fits({a: v for a, v in desc.items() if a != drop})
                                          for drop in names):
                out.append((0, desc, p, len(p) - 1))
    return out


def candidates(idx: SceneIndex, family: dict, reserve: bool = False) -> list[dict]:
    """The family's candidate descriptions.

    ``reserve=False`` gives the first choice: the shortest descriptions (zero-hop: also those
    with one attribute more, for variety).  ``reserve=True`` gives every other description
    (over-specified ones): drawn only when a scene runs out of the first kind."""
    hops, kind = family["_hops"], family["_targets"]
    slack = 1 if not hops else 0
    if kind == "one":
        if not reserve:
            return [c for c in _subjects(idx, hops, slack) if c["cost"] <= slack]
        cap = CHAIN_RESERVE_MAX_COST if len(hops) > 1 else None
        return [c for c in _subjects(idx, hops, cap) if c["cost"] > slack]
    keep = (lambda cost: cost <= slack) if not reserve else (lambda cost: cost > slack)
    several = kind == "several"
    if not hops:
        found = _group_targets(idx, idx.all, None, None, True) if several else _missing(idx)
        return [_entry(_bits(got), desc, p, cost) for got, desc, p, cost in found if keep(cost)]
    out = []
    cap = 0 if not reserve else CHAIN_RESERVE_MAX_COST
    for d in _subjects(idx, hops[1:], cap):
        a = d["targets"][0]
        for slot in RELATIONS if hops[0] == "relate" else ATTRIBUTES:
            if hops[0] == "same" and slot in d["target_pattern"]:
                continue
            group = idx.group(hops[0], a, slot)
            if several and not group:
                continue
            exclude = sum(1 << j for j in (a,) + d["anchors"])
            for got, desc, p, cost in _group_targets(idx, group, hops[0], slot, several, exclude):
                if keep(cost + d["cost"]):
                    out.append(_entry(_bits(got), desc, p, cost + d["cost"], (a,) + d["anchors"],
                                      (d["target_desc"],) + d["anchor_descs"],
                                      (d["target_pattern"],) + d["anchor_patterns"], (slot,) + d["slots"]))
    return out
