"""Referring expressions (docs/scenes.md): functional programs on the scene graph, rendered to
sentences from the templates in ``templates/expressions.json``.

* :func:`execute` runs a program on a scene record (the ground truth of what it refers to);
* :func:`select` samples up to ``per_scene`` expressions for a scene, each referring to
  exactly one object, with at most one relation, balanced over families (by weight) and
  targets; given the per-view visible-pixel counts it describes objects visible in every view
  first and applies the drop rule (``expressions.when_hidden``); :func:`generate` returns what
  it keeps;
* :func:`valid_views` (from :mod:`clevr_remv.visibility`) says in which views an expression
  may be used (target visible and every predicate true there).

Programs are lists of nodes: ``scene``; ``filter`` with ``attrs`` (a dict of attribute ->
value); ``unique``; ``relate`` with ``relation`` (left/right/front/behind); ``same`` with
``attribute`` (size/color/material/shape).  Object references are 0-based indices into the
scene's ``objects`` (instance id = index + 1).
"""

from __future__ import annotations

import dataclasses
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
        # A wording is a string or {"text": ..., "weight": ...} (weight 1 by default).
        items = [w if isinstance(w, dict) else {"text": w} for w in fam["wordings"]]
        fam["_wordings"] = [env.from_string(w["text"]) for w in items]
        fam["_weights"] = [float(w.get("weight", 1.0)) for w in items]
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
        self.unique = [[p for p in PATTERNS if p and self.match[k][p] == 1 << k] for k in range(n)]
        pos = np.asarray([o["position"][:2] for o in objs])
        self.relate = {}
        for rel in RELATIONS:
            d = np.asarray(scene["directions"][rel][:2])
            for a in range(n):
                proj = (pos - pos[a]) @ d
                self.relate[(a, rel)] = sum(1 << j for j in range(n) if j != a and proj[j] > layout.RELATION_THRESHOLD)
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


# -- rendering ------------------------------------------------------------------------------
def _pick(gen, options):
    return options[int(gen.integers(len(options)))]


def _pick_wording(gen, family: dict):
    """One of the family's wordings, drawn by its weight."""
    w = np.asarray(family["_weights"])
    return family["_wordings"][int(gen.choice(len(w), p=w / w.sum()))]


class _Words:
    """The words of one sentence: an attribute value gets one synonym per sentence, so a
    sentence never names the same value twice with two different words ("the small thing
    sharing the small cube's colour", not "the tiny thing ... the small cube's ...")."""

    def __init__(self, tpl: dict, gen):
        self.tpl, self.gen, self.chosen = tpl, gen, {}

    def word(self, value: str) -> str:
        if value not in self.chosen:
            self.chosen[value] = _pick(self.gen, self.tpl["synonyms"][value])
        return self.chosen[value]

    def noun_phrase(self, obj: dict, pattern) -> str:
        """Size, then a surface adjective (shiny/matte), then colour, then a material word
        (metal/rubber/metallic, next to the noun), then the shape or thing/object."""
        parts = {"size": "", "surface": "", "color": "", "material": "", "shape": ""}
        for a in ATTRIBUTES:
            if a in pattern:
                w = self.word(obj[a])
                parts[self.tpl["material_position"].get(w, "material") if a == "material" else a] = w
        if "shape" not in pattern:
            parts["shape"] = _pick(self.gen, self.tpl["synonyms"]["thing"])
        return " ".join(self.tpl["_np"].render(**parts).split())


def noun_phrase(tpl: dict, obj: dict, pattern, gen) -> str:
    return _Words(tpl, gen).noun_phrase(obj, pattern)


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
    words = _Words(tpl, gen)
    ctx = {"target": words.noun_phrase(objs[cand["target"]], cand["target_pattern"])}
    if "anchor" in cand:
        ctx["anchor"] = words.noun_phrase(objs[cand["anchor"]], cand["anchor_pattern"])
        if family["_hop"] == "relate":
            ctx["relation"] = _pick(gen, tpl["synonyms"][cand["slot"]])
        else:
            ctx["attribute"] = tpl["attribute_words"][cand["slot"]]
            ctx["same_as"] = _pick(gen, tpl["same_as"][cand["slot"]])
    text = _pick_wording(gen, family).render(**ctx)
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))


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


def hidden_objects(visible, num_objects: int, min_pixels: int = 1) -> np.ndarray:
    """bool [num_objects]: the object shows fewer than ``min_pixels`` in at least one view
    (``visible``: visible-pixel counts [U, V, >= num_objects])."""
    v = np.asarray(visible)[..., :num_objects].reshape(-1, num_objects)
    return (v < min_pixels).any(axis=0)


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
