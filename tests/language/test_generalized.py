"""The generalized setting (several targets, no target) and two-relation chains.

Each sentence is read back by a small parser written here, independent of the templates'
programs: it finds the noun phrases and the relation words in the text, evaluates them on the
scene's positions and attributes, and must land on exactly the stored targets."""

import itertools
import re

import numpy as np
import pytest
from test_expressions import scene_of

from clevr_remv import config
from clevr_remv.language import programs, selection, templates, validity
from clevr_remv.scene import catalogue, layout

TPL = templates.load_templates()
SYN = catalogue.synonyms()
VALUES = catalogue.values_by_attribute()
COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
          "both": 2}
RELATION_WORDS = {"to the left of": "left", "on the left side of": "left", "to the right of": "right",
                  "on the right side of": "right", "in front of": "front", "behind": "behind"}
ATTRIBUTE_WORDS = {"size": "size", "color": "color", "colour": "color", "material": "material", "shape": "shape"}
THRESHOLD = 0.2  # docs/scenes.md: object j is <rel> of i when (p_j - p_i) . dir > 0.2


@pytest.fixture(scope="module")
def corpus():
    cfg = config.load_config()
    out = []
    for i in range(150):
        s = layout.sample_scene(cfg, 23, i)
        out.append((s, selection.select(s, 23, 8, targets="generalized", max_relations=2)))
    return out


# -- the independent reader -----------------------------------------------------------------
def _word_table():
    """word -> (attribute, value) for adjectives; noun word -> shape value (None: thing)."""
    adj, noun = {}, {}
    for attr, values in VALUES.items():
        for v in values:
            for w in SYN[v]:
                if attr == "shape":
                    noun[w] = v
                    noun[w + "s"] = v
                else:
                    adj[w] = (attr, v)
    for w in SYN["thing"]:
        noun[w] = noun[w + "s"] = None
    return adj, noun


ADJ, NOUN = _word_table()


def parse(text):
    """(noun phrases [(attrs, plural)], relations between them, the same-attribute word, the
    count word) of a sentence."""
    low = text.lower().rstrip(".")
    words = re.findall(r"[a-z]+|'s", low)
    phrases, spans, i = [], [], 0
    while i < len(words):
        j, attrs = i, {}
        while j < len(words) and words[j] in ADJ:
            attr, v = ADJ[words[j]]
            attrs[attr] = v
            j += 1
        if j < len(words) and words[j] in NOUN:
            if NOUN[words[j]] is not None:
                attrs["shape"] = NOUN[words[j]]
            phrases.append((attrs, words[j].endswith("s")))
            spans.append((i, j))
            i = j + 1
        else:
            i = j + 1 if j == i else j
    rels = []
    for (_, end), (start, _) in itertools.pairwise(spans):
        between = " ".join(words[end + 1:start])
        rel = next((r for w, r in RELATION_WORDS.items() if w in between), None)
        rels.append(rel if rel else "same")
    attr_word = next((ATTRIBUTE_WORDS[w] for w in words if w in ATTRIBUTE_WORDS), None)
    count = next((COUNTS[w] for w in words if w in COUNTS), None)
    return phrases, rels, attr_word, count


def _fits(obj, attrs):
    return all(obj[a] == v for a, v in attrs.items())


def evaluate(text, scene):
    """The objects a reader picks from the text alone: the last noun phrase must be one object;
    each earlier one, the objects that fit it and stand in the named relation to the next."""
    phrases, rels, attr_word, count = parse(text)
    objs = scene["objects"]
    pos = np.asarray([o["position"][:2] for o in objs])
    attrs, _ = phrases[-1]
    current = [k for k, o in enumerate(objs) if _fits(o, attrs)]
    for (attrs, plural), rel in reversed(list(zip(phrases[:-1], rels))):
        assert len(current) == 1, f"{text!r}: an anchor that is not one object ({current})"
        a = current[0]
        if rel == "same":
            group = [j for j in range(len(objs)) if j != a and objs[j][attr_word] == objs[a][attr_word]]
        else:
            d = np.asarray(scene["directions"][rel][:2])
            group = [j for j in range(len(objs)) if j != a and float((pos[j] - pos[a]) @ d) > THRESHOLD]
        current = [j for j in group if _fits(objs[j], attrs)]
    return tuple(current), phrases[0][1], count


# -- every new family, every expression -----------------------------------------------------
def test_every_family_occurs_and_the_mix_follows_the_shares(corpus):
    kinds = {f["name"]: f["_targets"] for f in TPL["families"]}
    fams = [e["family"] for _, r in corpus for e in r.kept]
    assert set(fams) == set(kinds), "every family of the templates is drawn under generalized + 2 relations"
    share = {k: sum(kinds[f] == k for f in fams) / len(fams) for k in ("one", "several", "none")}
    assert abs(share["several"] - 0.33) < 0.04 and abs(share["none"] - 0.10) < 0.03, share


def test_programs_pick_exactly_the_stored_set_and_the_text_names_it(corpus):
    seen = {}
    for s, r in corpus:
        for e in r.kept:
            kind = next(f["_targets"] for f in TPL["families"] if f["name"] == e["family"])
            assert programs.targets_of(e["program"], s) == tuple(e["targets"]), e["text"]
            assert e["object"] == (e["targets"][0] if e["targets"] else -1)
            assert e["num_relations"] == len(e["anchors"]) == programs.num_relations(e["program"])
            picked, plural, count = evaluate(e["text"], s)
            assert picked == tuple(e["targets"]), (e["text"], picked, e["targets"])
            if kind == "several":
                assert len(e["targets"]) >= 2 and plural, e["text"]
                assert count in (None, len(e["targets"])), e["text"]
            else:
                assert not plural and count is None, e["text"]
            seen[kind] = seen.get(kind, 0) + 1
    assert min(seen.values()) > 50, seen


def test_no_target_expressions_match_nothing_in_any_view(corpus):
    n = 0
    for s, r in corpus:
        for e in r.kept:
            if e["targets"]:
                continue
            n += 1
            attrs = [node for node in e["program"] if node["op"] == "filter"][-1]["attrs"]
            assert attrs, "a no-target expression names something"
            assert any(_fits(o, {a: v for a, v in attrs.items() if a != drop})
                       for o in s["objects"] for drop in attrs), "worded like a near miss"
            vis = np.zeros((3, 3, len(s["objects"])), np.int64)  # nothing visible at all
            assert validity.valid_views(e, s, vis).all(), "valid in every view"
            for u, v in ((0, 0), (2, 2)):
                dirs = programs.view_directions(s["rig"], u, v)
                assert programs.targets_of(e["program"], s, dirs) == ()
    assert n > 50


def test_two_hop_anchors_are_unique_at_each_hop(corpus):
    n = 0
    for s, r in corpus:
        for e in r.kept:
            if e["num_relations"] != 2:
                continue
            n += 1
            prog = e["program"]
            uniques = [k for k, node in enumerate(prog) if node["op"] == "unique"]
            picked = [programs.execute(prog[:k + 1], s) for k in uniques]
            assert all(isinstance(p, int) for p in picked)
            # Each anchor's own filter (without the relation before it) is ambiguous for the
            # middle anchor: the first relation narrows it.
            assert tuple(picked[:2][::-1]) == tuple(e["anchors"]) == programs.anchors_of(prog, s)
            assert len(set(e["anchors"]) | set(e["targets"])) == 3, "target and anchors are three objects"
            middle = prog[4]["attrs"]
            assert sum(_fits(o, middle) for o in s["objects"]) > 1, e["text"]
    assert n > 50


def test_the_default_setting_draws_none_of_the_new_families(corpus):
    for s, _ in corpus[:60]:
        for e in selection.select(s, 23, 8).kept:
            assert e["family"] in ("zero_hop", "spatial_relation", "same_attribute")
            assert len(e["targets"]) == 1 and e["num_relations"] <= 1


# -- validity and the drop rule ---------------------------------------------------------------
def test_a_multi_target_expression_needs_every_target_visible():
    s = scene_of(("cube", "red", "rubber", "large", 0, 0), ("cube", "red", "metal", "small", -2, 1),
                 ("sphere", "blue", "metal", "small", 2, -1), ("cylinder", "green", "rubber", "large", 1, 2))
    vis = np.full((3, 3, 4), 40)
    vis[1, 0, 1] = 0  # one of the two red cubes hidden in one view
    multi = [e for e in selection.select(s, 2, 40, targets="generalized").kept if e["targets"] == [0, 1]]
    assert multi, "the two red cubes are named together"
    for e in multi:
        ok = validity.valid_views(e, s, vis)
        assert not ok[1, 0] and ok.sum() == 8
    # With the visibility known, such expressions come last and the drop rule removes them.
    d = selection.select(s, 2, 8, visible=vis, targets="generalized")
    assert all(1 not in e["targets"] + e["anchors"] for e in d.kept), "the drop rule"
    assert all(1 in e["targets"] + e["anchors"] for e in d.dropped)
    assert any(not e["targets"] for e in d.kept), "no-target expressions are never hidden"


def test_the_shares_are_configurable():
    cfg = config.load_config(overrides={"expressions.targets": "generalized", "expressions.no_target_share": 0.5,
                                        "expressions.multi_target_share": 0.0})
    weights = {f["name"]: w for f, w in templates.active_families(TPL, **selection.settings(cfg))}
    assert abs(sum(w for n, w in weights.items() if n.startswith("no_target")) - 0.5) < 1e-9
    assert sum(w for n, w in weights.items() if n.startswith("multi")) == 0
    with pytest.raises(Exception, match="add up to more than 1"):
        config.load_config(overrides={"expressions.multi_target_share": 0.7, "expressions.no_target_share": 0.4})
    with pytest.raises(Exception, match="expressions.max_relations"):
        config.load_config(overrides={"expressions.max_relations": 3})
