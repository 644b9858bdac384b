"""The object catalogue: one data file, validated, read by layout, expressions, the baseline
and the COCO export (and by Blender: see test_render_e2e)."""

import copy
import json
import math

import pytest

from clevr_remv import config
from clevr_remv.language import selection, templates
from clevr_remv.scene import catalogue, layout
from clevr_remv.tools import baseline
from clevr_remv.tools.export import CATEGORIES


def test_the_shipped_catalogue_is_valid_and_drives_the_layout():
    data = catalogue.load()
    assert layout.SHAPES == tuple(data["shapes"]) and layout.SIZES == catalogue.sizes()
    # CLEVR's ground rule: a cube's centre is r / sqrt(2) above the ground, the others' r.
    assert catalogue.centre_height("cube", 0.7) == pytest.approx(0.7 / math.sqrt(2))
    assert catalogue.centre_height("sphere", 0.7) == 0.7 and catalogue.centre_height("cylinder", 0.35) == 0.35


def _broken(mutate):
    data = copy.deepcopy(catalogue.load())
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["shapes"]["cube"].update(ground="radius*2"), "ground must be one of"),
    (lambda d: d["shapes"]["sphere"].update(synonyms=[]), "shapes.sphere needs a non-empty list of synonyms"),
    (lambda d: d["colors"]["red"].pop("synonyms"), "colors.red needs"),
    (lambda d: d["shapes"]["cylinder"].update(coco_id=1), "its own positive integer coco_id"),
    (lambda d: d["colors"]["red"].update(rgb=[300, 0, 0]), "three integers 0-255"),
    (lambda d: d["sizes"]["small"].update(radius=0), "positive number"),
    (lambda d: d["ground"].update(material="glass"), "ground.material"),
    (lambda d: d["colors"].update(cube={"rgb": [1, 2, 3], "synonyms": ["x"]}), "used twice"),
])
def test_a_broken_catalogue_is_refused_with_the_reason(mutate, message):
    with pytest.raises(catalogue.CatalogueError, match=message):
        catalogue.validate(_broken(mutate))


def test_a_new_shape_needs_only_a_catalogue_entry_on_the_driver(tmp_path, monkeypatch):
    data = _broken(lambda d: d["shapes"].update(cone={"coco_id": 7, "ground": "radius", "synonyms": ["cone"]}))
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(catalogue, "PATH", path)
    catalogue.load.cache_clear()
    try:
        assert "cone" in catalogue.shapes()
        assert {"id": 7, "name": "cone", "supercategory": "shape"} in catalogue.coco_categories()
        assert catalogue.merge_synonyms({})["cone"] == ["cone"]
    finally:
        catalogue.load.cache_clear()


def test_coco_ids_are_the_catalogues_not_positions():
    assert {c["name"]: c["id"] for c in CATEGORIES} == {n: s["coco_id"] for n, s in catalogue.load()["shapes"].items()}


def test_templates_take_object_words_from_the_catalogue():
    syn = templates.load_templates()["synonyms"]
    assert syn["sphere"] == ["sphere", "ball"] and syn["left"][0] == "to the left of"
    with pytest.raises(catalogue.CatalogueError, match="redefine catalogue words for cube"):
        catalogue.merge_synonyms({"cube": ["box"]})


@pytest.mark.parametrize("text, expected", [
    ("The small sphere on the left side of the large red cube", {"size": "small", "shape": "sphere"}),
    ("The small sphere on the right side of the large red cube.", {"size": "small", "shape": "sphere"}),
    ("Find the tiny metal ball to the left of the big block.", {"size": "small", "material": "metal", "shape": "sphere"}),
    ("The large thing with the same color as the red cube.", {"size": "large"}),
    ("The cyan thing sharing the small cube's material.", {"color": "cyan"}),
    ("Segment the brown rubber cylinder in this scene.", {"color": "brown", "material": "rubber", "shape": "cylinder"}),
])
def test_baseline_reads_the_targets_own_description(text, expected):
    assert baseline.sentence_attributes(text) == expected


@pytest.mark.parametrize("setting", [{}, {"targets": "generalized", "max_relations": 2}])
def test_baseline_reads_every_generated_sentence_as_its_program_does(setting):
    """For every wording the templates produce (the default setting, and the generalized one
    with two-relation chains), the attributes the baseline reads are the target filter of the
    program (a relation word it missed would add the anchor's; a plural it missed would lose
    the shape)."""
    cfg = config.load_config()
    checked = 0
    for index in range(40):
        scene = layout.sample_scene(cfg, 5, index)
        for e in selection.select(scene, 5, 8, **setting).kept:
            filters = [n["attrs"] for n in e["program"] if n["op"] == "filter"]
            assert baseline.sentence_attributes(e["text"]) == filters[-1], e["text"]
            checked += 1
    assert checked > 200
