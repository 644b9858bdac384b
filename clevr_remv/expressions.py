"""Referring expressions (docs/scenes.md): functional programs on the scene graph, rendered to
sentences from the templates in ``templates/expressions.json``.

* :func:`execute` runs a program on a scene record (the ground truth of what it refers to);
* :func:`generate` samples about ``per_scene`` expressions for a scene, each referring to
  exactly one object, with at most one relation, balanced over families and targets;
* :func:`valid_views` (from :mod:`clevr_remv.visibility`) says in which views an expression
  may be used (target visible and every predicate true there).

Programs are lists of nodes: ``scene``; ``filter`` with ``attrs`` (a dict of attribute ->
value); ``unique``; ``relate`` with ``relation`` (left/right/front/behind); ``same`` with
``attribute`` (size/color/material/shape).  Object references are 0-based indices into the
scene's ``objects`` (instance id = index + 1).
"""

from __future__ import annotations

import functools
import itertools
import json
import re

import jinja2
import numpy as np

from . import catalogue, layout, lightfield
from .resources import resource_dir
from .seeding import rng as make_rng
from .visibility import valid_views  # noqa: F401  (re-exported: the rule lives in visibility)

ATTRIBUTES = ("size", "color", "material", "shape")
RELATIONS = ("left", "right", "front", "behind")
PATTERNS = [frozenset(c) for r in range(len(ATTRIBUTES) + 1) for c in itertools.combinations(ATTRIBUTES, r)]


class ProgramError(ValueError):
    """A program that does not execute (unknown op, unique of not exactly one object)."""


# -- templates ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def load_templates(path: str | None = None) -> dict:
    p = resource_dir("templates") / "expressions.json" if path is None else path
    with open(p, encoding="utf-8") as fh:
        data = json.load(fh)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    data["synonyms"] = catalogue.merge_synonyms(data.get("synonyms", {}))  # object words: the catalogue
    data["_np"] = env.from_string(data["noun_phrase"])
    for fam in data["families"]:
        fam["_wordings"] = [env.from_string(w) for w in fam["wordings"]]
        ops = [node["op"] for node in fam["program"]]
        fam["_hop"] = "relate" if "relate" in ops else ("same" if "same" in ops else None)
    return data


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
                     if j != a and float((np.asarray(objs[j]["position"][:2]) - pa) @ d) > layout.RELATION_THRESHOLD]
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
        self.unique = [[p for p in PATTERNS if self.match[k][p] == 1 << k] for k in range(n)]
        pos = np.asarray([o["position"][:2] for o in objs])
        self.relate = {}
        for rel in RELATIONS:
            d = np.asarray(scene["directions"][rel][:2])
            for a in range(n):
                proj = (pos - pos[a]) @ d
                self.relate[(a, rel)] = sum(1 << j for j in range(n) if j != a and proj[j] > layout.RELATION_THRESHOLD)
        self.same = {(a, attr): sum(1 << j for j in range(n) if j != a and objs[j][attr] == objs[a][attr])
                     for a in range(n) for attr in ATTRIBUTES}

    def shortest(self, patterns, extra: int = 1):
        """Patterns with the fewest attributes, and those with up to ``extra`` more."""
        if not patterns:
            return []
        m = min(len(p) for p in patterns)
        return [p for p in patterns if len(p) <= m + extra]


def _candidates(idx: _SceneIndex, family: dict) -> list[dict]:
    out = []
    hop = family["_hop"]
    if hop is None:
        for k in range(idx.n):
            for p in idx.shortest([p for p in idx.unique[k] if p]):
                out.append({"target": k, "target_pattern": p})
        return out
    for a in range(idx.n):
        anchors = idx.shortest([p for p in idx.unique[a] if p], extra=0)
        slots = RELATIONS if hop == "relate" else ATTRIBUTES
        for slot in slots:
            group = idx.relate[(a, slot)] if hop == "relate" else idx.same[(a, slot)]
            if not group:
                continue
            for k in range(idx.n):
                if not group >> k & 1:
                    continue
                # The target's own description must not be unique on its own (the relation
                # must narrow something), but must be unique within the related group.
                ok = [p for p in PATTERNS
                      if (hop != "same" or slot not in p)
                      and idx.match[k][p] & group == 1 << k and idx.match[k][p] != 1 << k]
                for tp in idx.shortest(ok, extra=0):
                    for ap in anchors:
                        if hop == "same" and slot in ap:
                            continue
                        out.append({"target": k, "target_pattern": tp, "anchor": a, "anchor_pattern": ap,
                                    "slot": slot})
    return out


# -- rendering ------------------------------------------------------------------------------
def _pick(gen, options):
    return options[int(gen.integers(len(options)))]


def noun_phrase(tpl: dict, obj: dict, pattern, gen) -> str:
    syn = tpl["synonyms"]
    parts = {a: (_pick(gen, syn[obj[a]]) if a in pattern else "") for a in ATTRIBUTES}
    if "shape" not in pattern:
        parts["shape"] = _pick(gen, syn["thing"])
    return " ".join(tpl["_np"].render(**parts).split())


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


def render_text(tpl: dict, family: dict, cand: dict, scene: dict, gen) -> str:
    objs = scene["objects"]
    ctx = {"target": noun_phrase(tpl, objs[cand["target"]], cand["target_pattern"], gen)}
    if "anchor" in cand:
        ctx["anchor"] = noun_phrase(tpl, objs[cand["anchor"]], cand["anchor_pattern"], gen)
        if family["_hop"] == "relate":
            ctx["relation"] = _pick(gen, tpl["synonyms"][cand["slot"]])
        else:
            ctx["attribute"] = tpl["attribute_words"][cand["slot"]]
    text = _pick(gen, family["_wordings"]).render(**ctx)
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))


# -- sampling -----------------------------------------------------------------------------------
def generate(scene: dict, seed: int, per_scene: int = 8, templates: dict | None = None) -> list[dict]:
    """About ``per_scene`` expressions for ``scene``: balanced over families (by weight) and
    over targets (least-used first), distinct texts, deterministic per (seed, scene index)."""
    tpl = templates or load_templates()
    gen = make_rng(seed, scene["index"], "expressions")
    idx = _SceneIndex(scene)
    fams = tpl["families"]
    pools = {f["name"]: _candidates(idx, f) for f in fams}
    used_family = {f["name"]: 0 for f in fams}
    used_target = [0] * idx.n
    texts: set[str] = set()
    out: list[dict] = []
    seen_cands: set = set()
    while len(out) < per_scene:
        live = [f for f in fams if pools[f["name"]]]
        if not live:
            break
        # The family furthest below its share, ties broken at random.
        deficit = [used_family[f["name"]] / f["weight"] + gen.uniform(0, 1e-6) for f in live]
        family = live[int(np.argmin(deficit))]
        pool = pools[family["name"]]
        least = min(used_target[c["target"]] for c in pool)
        choices = [i for i, c in enumerate(pool) if used_target[c["target"]] == least]
        cand = pool.pop(choices[int(gen.integers(len(choices)))])
        key = (family["name"], cand["target"], cand.get("anchor"), cand.get("slot"))
        if key in seen_cands:
            continue
        program = _program(family, cand, scene)
        if execute(program, scene) != cand["target"]:  # defence in depth: never emit a wrong program
            continue
        text = render_text(tpl, family, cand, scene, gen)
        if text in texts:
            continue
        seen_cands.add(key)
        texts.add(text)
        used_family[family["name"]] += 1
        used_target[cand["target"]] += 1
        out.append({"object": cand["target"], "text": text, "family": family["name"],
                    "num_relations": num_relations(program), "program": program,
                    "anchor": cand.get("anchor")})
    return out


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
