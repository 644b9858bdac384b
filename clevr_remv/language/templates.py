"""Wordings: the families of templates/expressions.json rendered to whole sentences."""

from __future__ import annotations

import functools
import json
import re

import jinja2
import numpy as np

from ..resources import resource_dir
from ..scene import catalogue
from .programs import ATTRIBUTES, TARGET_KINDS, ProgramError, chain_of, hop_suffix

# expressions.targets: the source's single-object expressions, or the GRES setting (several
# objects, or none, too).
TARGET_SETTINGS = ("single", "generalized")
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


class TemplateError(ValueError):
    """A templates file that cannot be used (a program of the wrong shape, a wording that does
    not render); the message names the family and what to fix."""


# -- templates ------------------------------------------------------------------------------
def _check_family(fam: dict, env) -> None:
    name = fam.get("name", "?")
    try:
        hops, last = chain_of(fam.get("program"))
    except ProgramError as e:
        raise TemplateError(f"templates: family {name}: {e}") from None
    kind = fam.get("targets", "one")
    if kind not in TARGET_KINDS:
        raise TemplateError(f"templates: family {name}: targets must be one of {', '.join(TARGET_KINDS)}")
    if (last == "unique") != (kind == "one"):
        raise TemplateError(f"templates: family {name}: a {kind}-target program ends with "
                            f"{'unique' if kind == 'one' else 'all'}, not {last}")
    if not (isinstance(fam.get("weight"), (int, float)) and fam["weight"] > 0) or not fam.get("wordings"):
        raise TemplateError(f"templates: family {name}: needs a weight > 0 and at least one wording")
    fam["_hops"], fam["_targets"] = hops, kind
    # A wording is a string or {"text": ..., "weight": ...} (weight 1 by default); a
    # several-target wording may say for how many targets it reads ("min_count", "max_count").
    items = [w if isinstance(w, dict) else {"text": w} for w in fam["wordings"]]
    fam["_wordings"] = [env.from_string(w["text"]) for w in items]
    fam["_weights"] = [float(w.get("weight", 1.0)) for w in items]
    fam["_counts"] = [(int(w.get("min_count", 0)), int(w.get("max_count", 1 << 30))) for w in items]
    ctx = {"target": "t", "count": "two"}
    for i, kind_i in enumerate(hops):
        sfx = hop_suffix(i)
        ctx["anchor" + sfx] = "a"
        ctx.update({"relation" + sfx: "r"} if kind_i == "relate" else {"attribute" + sfx: "c", "same_as" + sfx: "s"})
    for w, tpl in zip(items, fam["_wordings"]):
        try:
            tpl.render(**ctx)
        except jinja2.TemplateError as e:
            raise TemplateError(f"templates: family {name}: wording {w['text']!r}: {e}") from None


@functools.lru_cache(maxsize=4)
def load_templates(path: str | None = None) -> dict:
    p = resource_dir("templates") / "expressions.json" if path is None else path
    with open(p, encoding="utf-8") as fh:
        data = json.load(fh)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    data["synonyms"] = catalogue.merge_synonyms(data.get("synonyms", {}))  # object words: the catalogue
    data["_np"] = env.from_string(data["noun_phrase"])
    for fam in data["families"]:
        _check_family(fam, env)
    return data


def active_families(tpl: dict, targets: str = "single", max_relations: int = 1,
                    multi_share: float = 0.33, none_share: float = 0.1) -> list[tuple[dict, float]]:
    """The families a run draws from, each with its weight.  ``single`` (the source): the
    one-target families up to ``max_relations`` hops, by their own weights.  ``generalized``:
    also the several- and no-target families; the weights are rescaled so that several-target
    expressions make ``multi_share`` and no-target ones ``none_share`` of the quotas (within
    a kind, by their own weights)."""
    if targets not in TARGET_SETTINGS:
        raise ValueError(f"targets must be one of {', '.join(TARGET_SETTINGS)}, not {targets!r}")
    fams = [f for f in tpl["families"] if len(f["_hops"]) <= max_relations
            and (targets == "generalized" or f["_targets"] == "one")]
    if targets == "single":
        return [(f, f["weight"]) for f in fams]
    share = {"one": 1.0 - multi_share - none_share, "several": multi_share, "none": none_share}
    total = {k: sum(f["weight"] for f in fams if f["_targets"] == k) for k in share}
    return [(f, f["weight"] / total[f["_targets"]] * share[f["_targets"]]) for f in fams]


# -- rendering ------------------------------------------------------------------------------
def _pick(gen, options):
    return options[int(gen.integers(len(options)))]


def _pick_wording(gen, family: dict, count: int = 1):
    """One of the family's wordings that reads for ``count`` targets, drawn by its weight."""
    fits = [lo <= count <= hi for lo, hi in family["_counts"]]
    if all(fits):
        w = np.asarray(family["_weights"])
        return family["_wordings"][int(gen.choice(len(w), p=w / w.sum()))]
    idx = [i for i, ok in enumerate(fits) if ok]
    w = np.asarray([family["_weights"][i] for i in idx])
    return family["_wordings"][idx[int(gen.choice(len(w), p=w / w.sum()))]]


def plural(tpl: dict, word: str) -> str:
    """The plural of a noun (the templates' ``plurals`` first, else English's -s/-es)."""
    if word in tpl.get("plurals", {}):
        return tpl["plurals"][word]
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


class Words:
    """The words of one sentence: an attribute value gets one synonym per sentence, so a
    sentence never names the same value twice with two different words ("the small thing
    sharing the small cube's colour", not "the tiny thing ... the small cube's ...")."""

    def __init__(self, tpl: dict, gen):
        self.tpl, self.gen, self.chosen = tpl, gen, {}

    def word(self, value: str) -> str:
        if value not in self.chosen:
            self.chosen[value] = _pick(self.gen, self.tpl["synonyms"][value])
        return self.chosen[value]

    def noun_phrase(self, desc: dict, plural_noun: bool = False) -> str:
        """Size, then a surface adjective (shiny/matte), then colour, then a material word
        (metal/rubber/metallic, next to the noun), then the shape or thing/object (plural for
        several objects).  ``desc``: the attribute values to name."""
        parts = {"size": "", "surface": "", "color": "", "material": "", "shape": ""}
        for a in ATTRIBUTES:
            if a in desc:
                w = self.word(desc[a])
                parts[self.tpl["material_position"].get(w, "material") if a == "material" else a] = w
        if "shape" not in desc:
            parts["shape"] = _pick(self.gen, self.tpl["synonyms"]["thing"])
        if plural_noun:
            parts["shape"] = plural(self.tpl, parts["shape"])
        return " ".join(self.tpl["_np"].render(**parts).split())


def render_text(tpl: dict, family: dict, cand: dict, gen) -> str:
    """The sentence for a candidate (see :mod:`.candidates`): the target's noun phrase, then
    each hop's anchor and relation or attribute words, then a wording drawn by weight."""
    words = Words(tpl, gen)
    n = len(cand["targets"])
    ctx = {"target": words.noun_phrase(cand["target_desc"], family["_targets"] == "several")}
    for i, (desc, slot) in enumerate(zip(cand["anchor_descs"], cand["slots"])):
        sfx = hop_suffix(i)
        ctx["anchor" + sfx] = words.noun_phrase(desc)
        if family["_hops"][i] == "relate":
            ctx["relation" + sfx] = _pick(gen, tpl["synonyms"][slot])
        else:
            ctx["attribute" + sfx] = tpl["attribute_words"][slot]
            ctx["same_as" + sfx] = _pick(gen, tpl["same_as"][slot])
    if family["_targets"] == "several":
        ctx["count"] = COUNT_WORDS.get(n, str(n))
    text = _pick_wording(gen, family, n).render(**ctx)
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z0-9']+", text))
