"""Wordings: the families of templates/expressions.json rendered to whole sentences."""

from __future__ import annotations

import functools
import json
import re

import jinja2
import numpy as np

from ..resources import resource_dir
from ..scene import catalogue
from .programs import ATTRIBUTES


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
