"""Choosing a scene's expressions: candidate descriptions, family quotas, the drop rule."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..scene.seeding import rng as make_rng
from .candidates import SceneIndex, candidates
from .programs import ProgramError, hop_suffix, num_relations, targets_of
from .templates import active_families, load_templates, render_text
from .validity import hidden_objects


def _program(family: dict, cand: dict) -> list[dict]:
    """The family's program with the candidate's descriptions and slots filled in."""
    fills = {"$target": cand["target_desc"]}
    for i, (desc, slot) in enumerate(zip(cand["anchor_descs"], cand["slots"])):
        sfx = hop_suffix(i)
        fills.update({"$anchor" + sfx: desc, "$relation" + sfx: slot, "$attribute" + sfx: slot})
    return [{k: fills.get(v, v) if isinstance(v, str) else v for k, v in node.items()}
            for node in family["program"]]


class SelectionError(RuntimeError):
    """The language step built a program that does not pick what its candidate names (a bug in
    :mod:`.candidates` or a family edited after loading)."""


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


def settings(cfg: dict) -> dict:
    """The keyword arguments of :func:`select` that the config's ``expressions`` section sets
    beside ``per_scene`` and the visibility rule (which families, their mix)."""
    ec = cfg["expressions"]
    return {"targets": ec["targets"], "max_relations": ec["max_relations"],
            "multi_share": ec["multi_target_share"], "none_share": ec["no_target_share"]}


def family_quotas(weights, per_scene: int, gen) -> list[int]:
    """Expressions per family for one scene: ``per_scene`` split by weight with systematic
    rounding (a random offset), so each family gets floor or ceil of its share and exactly its
    share on average over scenes."""
    w = np.asarray(weights, dtype=float)
    cum = np.floor(np.concatenate([[0.0], np.cumsum(w / w.sum() * per_scene)]) + gen.uniform())
    return np.diff(cum).astype(int).tolist()


def select(scene: dict, seed: int, per_scene: int = 8, templates: dict | None = None, *,
           visible=None, min_pixels: int = 1, when_hidden: str = "drop_expression",
           targets: str = "single", max_relations: int = 1, multi_share: float = 0.33,
           none_share: float = 0.1) -> SceneExpressions:
    """Up to ``per_scene`` expressions for ``scene``, deterministic per (seed, scene index).

    Families (:func:`~.templates.active_families` for ``targets`` and ``max_relations``)
    follow their weights (:func:`family_quotas`) where the scene allows; targets are spread
    (least-used first); texts and programs are distinct.  With ``visible`` (per-view
    visible-pixel counts), descriptions whose targets and anchors show in every view come
    first; over-specified descriptions (the reserve) before any with a hidden object.  A chosen
    expression with a hidden target or anchor is dropped under ``when_hidden="drop_expression"``
    (the source's rule) and kept under ``"mark_views"``; a no-target expression is never
    hidden.  Raises :class:`SelectionError` if a program does not pick exactly its targets."""
    if when_hidden not in WHEN_HIDDEN:
        raise ValueError(f"when_hidden must be one of {', '.join(WHEN_HIDDEN)}, not {when_hidden!r}")
    tpl = templates or load_templates()
    gen = make_rng(seed, scene["index"], "expressions")
    idx = SceneIndex(scene)
    weighted = active_families(tpl, targets, max_relations, multi_share, none_share)
    fams = [f for f, _ in weighted]
    names = [f["name"] for f in fams]
    hidden = (hidden_objects(visible, idx.n, min_pixels) if visible is not None and idx.n
              else np.zeros(idx.n, dtype=bool))

    def is_hidden(c):
        return bool(c["targets"]) and any(hidden[j] for j in c["targets"] + c["anchors"])

    # Stages, first non-empty wins: 0 first choice, visible; 1 reserve, visible;
    # 2 first choice, hidden; 3 reserve, hidden.
    pools = [{n: [] for n in names} for _ in range(4)]

    def add(cands, name, reserve):
        for c in cands:
            pools[(2 if is_hidden(c) else 0) + reserve][name].append(c)

    for f in fams:
        add(candidates(idx, f), f["name"], 0)
    reserve_built = False
    quota = dict(zip(names, family_quotas([w for _, w in weighted], per_scene, gen)))
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
                add(candidates(idx, f, reserve=True), f["name"], 1)
            reserve_built = True
        stage = next((s for s in range(4) if any(pools[s].values())), None)
        if stage is None:
            ran_out = True
            break
        live = [f for f in fams if pools[stage][f["name"]]]
        # The family furthest below its quota, ties broken at random.
        family = max(live, key=lambda f: quota[f["name"]] - used_family[f["name"]] + gen.uniform(0, 1e-6))
        pool = pools[stage][family["name"]]
        rank = [(max((used_target[j] for j in c["targets"]), default=0), c["cost"] if stage % 2 else 0)
                for c in pool]
        best = min(rank)
        choices = [i for i, r in enumerate(rank) if r == best]
        cand = pool.pop(choices[int(gen.integers(len(choices)))])
        key = (family["name"], cand["targets"], cand["anchors"], cand["slots"],
               () if cand["targets"] else tuple(cand["target_desc"].items()))
        if stage % 2 == 0 and key in keys:
            pools[stage + 1][family["name"]].append(cand)  # a second description of the same thing
            continue
        program = _program(family, cand)
        pkey = json.dumps(program, sort_keys=True)
        if pkey in programs:
            continue
        try:
            picked = targets_of(program, scene)
        except ProgramError as e:
            raise SelectionError(f"family {family['name']}: {pkey} does not execute ({e})") from None
        if picked != cand["targets"]:
            raise SelectionError(f"family {family['name']}: {pkey} picks {picked}, not {cand['targets']}")
        text = render_text(tpl, family, cand, gen)
        if text in texts:
            continue
        keys.add(key)
        programs.add(pkey)
        texts.add(text)
        used_family[family["name"]] += 1
        for j in cand["targets"]:
            used_target[j] += 1
        first = cand["targets"][0] if cand["targets"] else -1
        expr = {"object": first, "text": text, "family": family["name"],
                "num_relations": num_relations(program), "program": program,
                "anchor": cand["anchors"][0] if cand["anchors"] else None,
                "targets": list(cand["targets"]), "anchors": list(cand["anchors"])}
        if is_hidden(cand) and when_hidden == "drop_expression":
            dropped.append(expr)
        else:
            kept.append(expr)
    shortfall = None
    if len(kept) < per_scene:
        shortfall = "too_few_descriptions" if ran_out else "hidden"
    return SceneExpressions(kept, dropped, shortfall)
