import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clevr_remv import config
from clevr_remv.language import candidates, programs, selection, templates, validity
from clevr_remv.scene import layout, lightfield

LEFT, BEHIND = [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]


def scene_of(*objs, index=0):
    """A hand-built scene: objs are (shape, color, material, size, x, y); camera looks along +y."""
    rig = lightfield.make_rig([0.0, -10.0, 5.0], grid=3, baseline=0.5, width=48, height=32)
    objects = []
    for k, (shape, color, material, size, x, y) in enumerate(objs):
        objects.append({"id": k + 1, "shape": shape, "color": color, "material": material, "size": size,
                        "radius": layout.SIZES[size], "position": [x, y, 0.35], "yaw": 0.0})
    return {"index": index, "objects": objects, "rig": rig,
            "directions": {"left": LEFT, "right": [1.0, 0, 0], "behind": BEHIND, "front": [0, -1.0, 0]}}


def family(name):
    return next(f for f in templates.load_templates()["families"] if f["name"] == name)


def default_families():
    """The families of the default setting (single targets, one relation at most)."""
    return [f for f, _ in templates.active_families(templates.load_templates())]


def cands(scene, name):
    """A family's first-choice candidates, flattened to their first target/anchor/slot."""
    out = []
    for c in candidates.candidates(candidates.SceneIndex(scene), family(name)):
        c = dict(c, target=c["targets"][0] if c["targets"] else None)
        if c["anchors"]:
            c.update(anchor=c["anchors"][0], anchor_pattern=c["anchor_patterns"][0], slot=c["slots"][0])
        out.append(c)
    return out


def filtered_attributes(program):
    """(attribute, value) of every filter of a program: what its sentence must name."""
    return [(k, v) for node in program if node["op"] == "filter" for k, v in node["attrs"].items()]


def mentions(text, attr, value):
    syn = templates.load_templates()["synonyms"][value]
    return any(re.search(r"\b" + re.escape(s) + r"\b", text.lower()) for s in syn)


# -- execution ----------------------------------------------------------------------------
def test_execute_filters_relates_and_unique():
    s = scene_of(("cube", "red", "rubber", "large", 0, 0), ("sphere", "blue", "metal", "small", -2, 0),
                 ("cube", "blue", "rubber", "small", 2, 0))
    prog = [{"op": "scene"}, {"op": "filter", "attrs": {"shape": "cube"}}]
    assert programs.execute(prog, s) == [0, 2]
    assert programs.execute(prog + [{"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"}], s) == 0
    rel = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
           {"op": "relate", "relation": "left"}]
    assert programs.execute(rel, s) == [1]
    assert programs.execute(rel[:3] + [{"op": "relate", "relation": "right"}], s) == [2]
    same = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
            {"op": "same", "attribute": "material"}]
    assert programs.execute(same, s) == [2], "same_* excludes the anchor itself"


def test_unique_of_none_or_many_is_an_error():
    s = scene_of(("cube", "red", "rubber", "large", 0, 0), ("cube", "red", "rubber", "large", 2, 0))
    with pytest.raises(programs.ProgramError):
        programs.execute([{"op": "scene"}, {"op": "filter", "attrs": {"shape": "cube"}}, {"op": "unique"}], s)
    with pytest.raises(programs.ProgramError):
        programs.execute([{"op": "scene"}, {"op": "filter", "attrs": {"shape": "sphere"}}, {"op": "unique"}], s)
    # Empty result after a relation: nothing is behind the red cube ("behind" is +y here).
    s = scene_of(("cube", "red", "rubber", "large", 0, 0), ("sphere", "blue", "metal", "small", -2, -1))
    behind = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
              {"op": "relate", "relation": "behind"}]
    assert programs.execute(behind, s) == []
    assert programs.execute(behind[:3] + [{"op": "relate", "relation": "left"}], s) == [1]
    with pytest.raises(programs.ProgramError, match="unique over 0"):
        programs.execute(behind + [{"op": "filter", "attrs": {}}, {"op": "unique"}], s)
    # A relation from a set (no unique before it) is an error, not a silent pick.
    with pytest.raises(programs.ProgramError, match="needs one object"):
        programs.execute([{"op": "scene"}, {"op": "relate", "relation": "left"}], s)


# -- families and the cases that must be rejected -----------------------------------------------
def test_zero_hop_uses_shortest_unique_descriptions():
    s = scene_of(("cube", "red", "rubber", "large", 0, 0), ("cube", "blue", "rubber", "large", 2, 0),
                 ("sphere", "red", "rubber", "large", -2, 0))
    got = {(c["target"], tuple(sorted(c["target_pattern"]))) for c in cands(s, "zero_hop")}
    assert (0, ("color", "shape")) in got
    assert (1, ("color",)) in got and (2, ("shape",)) in got
    for k, pattern in got:
        attrs = {a: s["objects"][k][a] for a in pattern}
        assert programs.execute([{"op": "scene"}, {"op": "filter", "attrs": attrs}, {"op": "unique"}], s) == k
    assert (0, ("color",)) not in got and (0, ("shape",)) not in got, "ambiguous descriptions are rejected"


def test_ambiguous_target_gets_no_expression():
    twin = ("sphere", "green", "metal", "small", 0, 0)
    s = scene_of(twin, twin[:4] + (2, 1), ("cube", "red", "rubber", "large", -2, -1))
    for name in ("zero_hop", "same_attribute"):
        assert all(c["target"] == 2 for c in cands(s, name)), name
    for e in selection.select(s, 0, 8).kept:
        assert programs.execute(e["program"], s) == e["object"]


def test_ambiguous_anchor_is_never_used():
    # Two identical red spheres: "the cube left of the red sphere" would be ambiguous.
    s = scene_of(("sphere", "red", "rubber", "large", 0, 0), ("sphere", "red", "rubber", "large", 0, 2),
                 ("cube", "blue", "rubber", "large", -2, 0), ("cube", "blue", "rubber", "large", 2, 2))
    for c in cands(s, "spatial_relation") + cands(s, "same_attribute"):
        assert c["anchor"] not in (0, 1)


def test_relation_that_narrows_nothing_is_rejected():
    # Only one cube: "the cube left of the sphere" says no more than "the cube".
    s = scene_of(("sphere", "red", "rubber", "large", 0, 0), ("cube", "blue", "rubber", "large", -2, 0),
                 ("cylinder", "blue", "rubber", "large", 2, 0))
    for c in cands(s, "spatial_relation"):
        pattern = c["target_pattern"]
        alone = candidates.SceneIndex(s).match[c["target"]][pattern]
        assert alone != 1 << c["target"], "the target's own description must not already be unique"
    # The thing to the left of the sphere is the cube; it is only named via a description
    # that is ambiguous on its own ("thing" / "blue thing").
    texts = [c for c in cands(s, "spatial_relation") if c["anchor"] == 0 and c["slot"] == "left"]
    assert texts and all(c["target"] == 1 for c in texts)
    assert all("shape" not in c["target_pattern"] for c in texts)


def test_spatial_and_same_attribute_families():
    s = scene_of(("sphere", "red", "metal", "large", 0, 0), ("cube", "blue", "metal", "small", -2, 0),
                 ("cube", "green", "rubber", "small", 2, 0), ("cylinder", "gray", "rubber", "large", 0, 2))
    sp = cands(s, "spatial_relation")
    assert any(c["target"] == 1 and c["anchor"] == 0 and c["slot"] == "left" for c in sp)
    same = cands(s, "same_attribute")
    # The cube with the same material as the sphere is the blue one.
    assert any(c["target"] == 1 and c["anchor"] == 0 and c["slot"] == "material" for c in same)
    for c in same:
        assert c["slot"] not in c["target_pattern"] and c["slot"] not in c["anchor_pattern"]


def test_sentences_and_determinism():
    cfg = config.load_config()
    s = layout.sample_scene(cfg, 5, 17)
    a, b = selection.select(s, 5, 8).kept, selection.select(s, 5, 8).kept
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
    assert a != selection.select(layout.sample_scene(cfg, 5, 18), 5, 8).kept
    for e in a:
        assert e["text"][0].isupper() and e["text"].endswith(".")
        assert templates.word_count(e["text"]) >= 4


def test_valid_views_need_target_anchor_and_predicates():
    s = scene_of(("sphere", "red", "metal", "large", 0, 0), ("cube", "blue", "metal", "small", -2, 0),
                 ("cube", "green", "rubber", "small", 2, 0))
    prog = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
            {"op": "relate", "relation": "left"}, {"op": "filter", "attrs": {"shape": "cube"}}, {"op": "unique"}]
    e = {"object": 1, "anchor": 0, "program": prog}
    vis = np.full((3, 3, 3), 50)
    vis[0, 0, 1] = 0          # target hidden in the top-left view
    vis[2, 2, 0] = 0          # anchor hidden in the bottom-right view
    ok = validity.valid_views(e, s, vis, 1)
    assert not ok[0, 0] and not ok[2, 2]
    assert ok.sum() == 7
    vis[1, 1, 1] = 3
    assert not validity.valid_views(e, s, vis, 5)[1, 1], "the threshold is configurable"


def test_view_directions_equal_central_directions_for_parallel_rig():
    cfg = config.load_config()
    s = layout.sample_scene(cfg, 0, 0)
    for u, v in [(0, 0), (8, 8), (4, 2)]:
        d = programs.view_directions(s["rig"], u, v)
        for k in ("left", "behind"):
            assert np.allclose(d[k], s["directions"][k])


# -- properties over many random layouts ------------------------------------------------------------
def test_properties_over_thousands_of_layouts():
    cfg = config.load_config()
    words, per_scene, families = [], [], {}
    for index in range(1000):
        s = layout.sample_scene(cfg, 99, index)
        exprs = selection.select(s, 99, 8).kept
        per_scene.append(len(exprs))
        assert len({e["text"] for e in exprs}) == len(exprs)
        for e in exprs:
            assert programs.execute(e["program"], s) == e["object"]
            assert e["num_relations"] == programs.num_relations(e["program"]) <= 1
            for attr, value in filtered_attributes(e["program"]):
                assert mentions(e["text"], attr, value), (e["text"], attr, value)
            words.append(templates.word_count(e["text"]))
            families[e["family"]] = families.get(e["family"], 0) + 1
    assert 7.85 <= np.mean(words) <= 8.15, "the source averages 8.0 words"
    assert np.mean(per_scene) >= 7.98, "8 per scene wherever the scene allows"
    assert set(families) == {"zero_hop", "spatial_relation", "same_attribute"}
    total = sum(families.values())
    for fam in default_families():
        assert abs(families[fam["name"]] / total - fam["weight"]) < 0.03, fam["name"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(layout.SHAPES), st.sampled_from(["red", "blue"]),
                          st.sampled_from(layout.MATERIALS), st.sampled_from(list(layout.SIZES)),
                          st.floats(-3, 3), st.floats(-3, 3)), min_size=1, max_size=10))
def test_crowded_duplicate_heavy_scenes_never_emit_ambiguity(objs):
    s = scene_of(*objs)
    for e in selection.select(s, 1, 12).kept:
        assert programs.execute(e["program"], s) == e["object"]
        assert e["num_relations"] <= 1


# -- bad programs are errors, never skipped ---------------------------------------------------
def test_a_program_that_misses_its_target_is_an_error():
    # A family edited after loading so its program no longer follows the candidate's relation:
    # select must refuse, not skip the expression quietly.
    s = scene_of(("sphere", "red", "metal", "large", 0, 0), ("cube", "blue", "metal", "small", -2, 0),
                 ("cube", "green", "rubber", "small", 2, 0), ("cylinder", "gray", "rubber", "large", 0, 2))
    tpl = dict(templates.load_templates())
    program = list(family("spatial_relation")["program"])
    program[3] = {"op": "relate", "relation": "front"}  # every candidate says its own relation
    broken = dict(family("spatial_relation"), program=program)
    tpl["families"] = [broken]
    tpl_ok = dict(tpl, families=[family("spatial_relation")])
    assert selection.select(s, 0, 4, tpl_ok).kept, "the unedited family has expressions here"
    with pytest.raises(selection.SelectionError, match="spatial_relation: .*(picks|does not execute)"):
        selection.select(s, 0, 4, tpl)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p[:1] + [{"op": "filter", "attrs": "$target"}, {"op": "count"}], "unique or all"),
    (lambda p: p[:2], "a program is scene"),
    (lambda p: p[:3] + [{"op": "relate", "relation": "$relation"}, {"op": "filter", "attrs": "$anchor"},
                        {"op": "unique"}], "filter \\$target"),
    (lambda p: p[:3] + [{"op": "relate", "relation": "left"}] + p[4:], "relate \\$relation"),
    (lambda p: p[:5] + [{"op": "all"}], "ends with unique"),
])
def test_a_templates_file_with_a_bad_program_does_not_load(tmp_path, edit, message):
    from clevr_remv.resources import resource_dir
    data = json.loads((resource_dir("templates") / "expressions.json").read_text())
    fam = next(f for f in data["families"] if f["name"] == "spatial_relation")
    fam["program"] = edit(fam["program"])
    path = tmp_path / "expressions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(templates.TemplateError, match="family spatial_relation: .*" + message):
        templates.load_templates(str(path))


def test_a_wording_with_an_unknown_slot_does_not_load(tmp_path):
    from clevr_remv.resources import resource_dir
    data = json.loads((resource_dir("templates") / "expressions.json").read_text())
    data["families"][0]["wordings"].append("Find the {{ target }} next to the {{ anchor }}.")
    path = tmp_path / "expressions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(templates.TemplateError, match="zero_hop: wording .*anchor"):
        templates.load_templates(str(path))
