"""Choosing a scene's expressions: candidate descriptions, family quotas, the drop rule."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np

from ..scene.seeding import rng as make_rng
from .programs import ATTRIBUTES, RELATION_THRESHOLD, RELATIONS, execute, num_relations
from .templates import load_templates, render_text
from .validity import (
    hidden_objects,
)

PATTERNS = [frozenset(c) for r in range(len(ATTRIBUTES) + 1) for c in itertools.combinations(ATTRIBUTES, r)]


# -- candidate enumeration (bitmasks; every emitted program is re-executed) ---------------------
class _SceneIndex:
    def __init__(self, scene: dict):
        self.scene = scene
        objs = scene["objects"]
        self.n = n = len(objs)
        self.all = (1 << n) - 1
        # match[k][pattern]: objects equal to object k on every attribute of the pattern
        self.match = [{p: sum(1 << j for j in range(n) if all(objs[j][a] == objs[k][a] for a in p))
                       for p in PATTERNS} for k in range(n)]
        self.unique = [[p for p in PATTERNS if p and self.match[k][p] == 1 << k] for k in range(n)]
        pos = np.asarray([o["position"][:2] for o in objs])
        self.relate = {}
        for rel in RELATIONS:
            d = np.asarray(scene["directions"][rel][:2])
            for a in range(n):
                proj = (pos - pos[a]) @ d
                self.relate[(a, rel)] = sum(1 << j for j in range(n) if j != a and proj[j] > RELATION_THRESHOLD)
        self.same = {(a, attr): sum(1 << j for j in range(n) if j != a and objs[j][attr] == objs[a][attr])
                     for a in range(n) for attr in ATTRIBUTES}


def _candidates(idx: _SceneIndex, family: dict, reserve: bool = False) -> list[dict]:
    """The family's candidate descriptions, each with ``cost``: how many attributes it names
    beyond the shortest unique description.

    ``reserve=False`` gives the first choice: the shortest descriptions (zero-hop: also those
    with one attribute more, for variety).  ``reserve=True`` gives every other unique
    description (over-specified ones): drawn only when a scene runs out of the first kind."""
    out = []
    hop = family["_hop"]
    if hop is None:
        for k in range(idx.n):
            if not idx.unique[k]:
                continue
            m = min(len(p) for p in idx.unique[k])
            for p in idx.unique[k]:
                if (len(p) - m > 1) == reserve:
                    out.append({"target": k, "target_pattern": p, "cost": len(p) - m})
        return out
    slots = RELATIONS if hop == "relate" else ATTRIBUTES
    for a in range(idx.n):
        if not idx.unique[a]:
            continue
        ma = min(len(p) for p in idx.unique[a])
        for slot in slots:
            group = idx.relate[(a, slot)] if hop == "relate" else idx.same[(a, slot)]
            if not group:
                continue
            # A same-attribute expression never names the shared attribute itself.
            anchors = [p for p in idx.unique[a] if hop != "same" or slot not in p]
            if not reserve:
                anchors = [p for p in anchors if len(p) == ma]
            for k in range(idx.n):
                if not group >> k & 1:
                    continue
                # The target's own description must not be unique on its own (the relation
                # must narrow something), but must be unique within the related group.
                ok = [p for p in PATTERNS
                      if (hop != "same" or slot not in p)
                      and idx.match[k][p] & group == 1 << k and idx.match[k][p] != 1 << k]
                if not ok:
                    continue
                mt = min(len(p) for p in ok)
                for tp in ok if reserve else [p for p in ok if len(p) == mt]:
                    for ap in anchors:
                        cost = len(tp) - mt + len(ap) - ma
                        if (cost > 0) == reserve:
                            out.append({"target": k, "target_pattern": tp, "anchor": a, "anchor_pattern": ap,
                                        "slot": slot, "cost": cost})
    return out


def _program(family: dict, cand: dict, scene: dict) -> list[dict]:
    objs = scene["objects"]

    def fill(value):
        if value == "$target":
            return {a: objs[cand["target"]][a] for a in ATTRIBUTES if a in cand["target_pattern"]}
        if value == "$anchor":
            return {a: objs[cand["anchor"]][a] for a in ATTRIBUTES if a in cand["anchor_pattern"]}
        if value in ("$relation", "$attribute"):
            return cand["slot"]
        return value

    return [{k: fill(v) for k, v in node.items()} for node in family["program"]]


# -- sampling -----------------------------------------------------------------------------------
# What happens to an expression whose target or anchor shows fewer than ``min_pixels`` in some
# view: the source's rule drops it; "mark_views" keeps it and ``valid_views`` marks those views.
WHEN_HIDDEN = ("drop_expression", "mark_views")


SHORTFALL_REASONS = ("too_few_descriptions", "hidden")


@dataclasses.dataclass
class SceneExpressions:
    """What :func:`select` made of one scene."""

    kept: list[dict]
    # Chosen, then dropped by the source's rule (target or anchor hidden in some view).
    dropped: list[dict]
    # Why fewer than ``per_scene`` were kept: None; "too_few_descriptions" (the scene has fewer
    # unique descriptions than that, hidden or not); "hidden" (the rest were dropped).
    shortfall: str | None


def family_quotas(weights, per_scene: int, gen) -> list[int]:
    """Expressions per family for one scene: ``per_scene`` split by weight with systematic
    rounding (a random offset), so each family gets floor or ceil of its share and exactly its
    share on average over scenes."""
    w = np.asarray(weights, dtype=float)
    cum = np.floor(np.concatenate([[0.0], np.cumsum(w / w.sum() * per_scene)]) + gen.uniform())
    return np.diff(cum).astype(int).tolist()


def select(scene: dict, seed: int, per_scene: int = 8, templates: dict | None = None, *,
           visible=None, min_pixels: int = 1, when_hidden: str = "drop_expression") -> SceneExpressions:
    """Up to ``per_scene`` expressions for ``scene``, deterministic per (seed, scene index).

    Families follow their weights (:func:`family_quotas`) where the scene allows; targets are
    spread (least-used first); texts and programs are distinct.  With ``visible`` (per-view
    visible-pixel counts), descriptions whose target and anchor show in every view come first;
    over-specified descriptions (the reserve) before any with a hidden object.  A chosen
    expression with a hidden target or anchor is dropped under ``when_hidden="drop_expression"``
    (the source's rule) and kept under ``"mark_views"``."""
    if when_hidden not in WHEN_HIDDEN:
        raise ValueError(f"when_hidden must be one of {', '.join(WHEN_HIDDEN)}, not {when_hidden!r}")
    tpl = templates or load_templates()
    gen = make_rng(seed, scene["index"], "expressions")
    idx = _SceneIndex(scene)
    fams = tpl["families"]
    names = [f["name"] for f in fams]
    hidden = (hidden_objects(visible, idx.n, min_pixels) if visible is not None and idx.n
              else np.zeros(idx.n, dtype=bool))

    def is_hidden(c):
        return bool(hidden[c["target"]] or ("anchor" in c and hidden[c["anchor"]]))

    # Stages, first non-empty wins: 0 first choice, visible; 1 reserve, visible;
    # 2 first choice, hidden; 3 reserve, hidden.
    pools = [{n: [] for n in names} for _ in range(4)]

    def add(cands, name, reserve):
        for c in cands:
            pools[(2 if is_hidden(c) else 0) + reserve][name].append(c)

    for f in fams:
        add(_candidates(idx, f), f["name"], 0)
    reserve_built = False
    quota = dict(zip(names, family_quotas([f["weight"] for f in fams], per_scene, gen)))
    used_family = {n: 0 for n in names}
    used_target = [0] * idx.n
    texts: set[str] = set()
    programs: set[str] = set()
    keys: set = set()
    kept: list[dict] = []
    dropped: list[dict] = []
    ran_out = False
    while len(kept) + len(dropped) < per_scene:
        if not reserve_built and not any(pools[0].values()):
            for f in fams:
                add(_candidates(idx, f, reserve=True), f["name"], 1)
            reserve_built = True
        stage = next((s for s in range(4) if any(pools[s].values())), None)
        if stage is None:
            ran_out = True
            break
        live = [f for f in fams if pools[stage][f["name"]]]
        # The family furthest below its quota, ties broken at random.
        family = max(live, key=lambda f: quota[f["name"]] - used_family[f["name"]] + gen.uniform(0, 1e-6))
        pool = pools[stage][family["name"]]
        rank = [(used_target[c["target"]], c["cost"] if stage % 2 else 0) for c in pool]
        best = min(rank)
        choices = [i for i, r in enumerate(rank) if r == best]
        cand = pool.pop(choices[int(gen.integers(len(choices)))])
        key = (family["name"], cand["target"], cand.get("anchor"), cand.get("slot"))
        if stage % 2 == 0 and key in keys:
            pools[stage + 1][family["name"]].append(cand)  # a second description of the same thing
            continue
        program = _program(family, cand, scene)
        pkey = json.dumps(program, sort_keys=True)
        if pkey in programs:
            continue
        if execute(program, scene) != cand["target"]:  # defence in depth: never emit a wrong program
            continue
        text = render_text(tpl, family, cand, scene, gen)
        if text in texts:
            continue
        keys.add(key)
        programs.add(pkey)
        texts.add(text)
        used_family[family["name"]] += 1
        used_target[cand["target"]] += 1
        expr = {"object": cand["target"], "text": text, "family": family["name"],
                "num_relations": num_relations(program), "program": program, "anchor": cand.get("anchor")}
        if is_hidden(cand) and when_hidden == "drop_expression":
            dropped.append(expr)
        else:
            kept.append(expr)
    shortfall = None
    if len(kept) < per_scene:
        shortfall = "too_few_descriptions" if ran_out else "hidden"
    return SceneExpressions(kept, dropped, shortfall)


def generate(scene: dict, seed: int, per_scene: int = 8, templates: dict | None = None, *,
             visible=None, min_pixels: int = 1, when_hidden: str = "drop_expression") -> list[dict]:
    """The expressions :func:`select` keeps for ``scene`` (see there)."""
    return select(scene, seed, per_scene, templates, visible=visible, min_pixels=min_pixels,
                  when_hidden=when_hidden).kept
