"""Visibility: counting, the thresholds and the valid views, in one module."""

import numpy as np

from clevr_remv import config
from clevr_remv.language import selection, validity
from clevr_remv.scene import layout, visibility


def test_count_and_table():
    inst = np.array([[0, 1, 1], [2, 2, 2], [0, 0, 3]], np.uint8)
    assert visibility.count(inst, 4).tolist() == [2, 3, 1, 0]
    t = visibility.Table((1, 2), 6, 4)
    t.add(0, 1, inst)
    assert t.pixels[0, 1].tolist() == [2, 3, 1, 0, -1, -1] and (t.pixels[0, 0] == -1).all()


def test_thresholds_scale_and_come_from_the_config():
    cfg = config.load_config(overrides={"render.width": 240, "render.height": 160})
    assert visibility.threshold(cfg) == cfg["scene"]["min_pixels_per_object"] / 4
    # expressions.min_visible_pixels decides the valid views: a target showing 5 px is valid
    # at a threshold of 5 and not at 6.
    scene = layout.sample_scene(config.load_config(overrides={"rig.grid": 3}), 2, 0)
    e = selection.select(scene, 2, 8).kept[0]
    visible = np.full((3, 3, 10), 100, np.int32)
    visible[1, 2, e["object"]] = 5
    for px, valid in ((5, True), (6, False)):
        c = config.load_config(overrides={"expressions.min_visible_pixels": px})
        marked = validity.mark_valid_views(c, [dict(e)], scene, visible)[0]["valid_views"]
        assert marked[1, 2] == valid and marked.sum() == 8 + valid


def test_valid_views_need_target_and_anchor_pixels():
    cfg = config.load_config(overrides={"rig.grid": 3})
    scene = layout.sample_scene(cfg, 2, 0)
    exprs = [e for e in selection.select(scene, 2, 8).kept if e.get("anchor") is not None
             and e["family"] == "same_attribute"]
    assert exprs
    e = exprs[0]
    visible = np.full((3, 3, 10), 100, np.int32)
    visible[0, 0, e["object"]] = 3
    visible[2, 2, e["anchor"]] = 0
    ok = validity.valid_views(e, scene, visible, min_pixels=4)
    assert not ok[0, 0] and not ok[2, 2] and ok.sum() == 7
    marked = validity.mark_valid_views({"expressions": {"min_visible_pixels": 4}}, [dict(e)], scene, visible)
    assert np.array_equal(marked[0]["valid_views"], ok)


def test_unseen_counts_objects_with_zero_pixels_in_some_view():
    px = np.full((3, 3, 5), visibility.ABSENT, np.int32)
    px[:, :, :3] = 40
    px[0, 0, 1] = 0          # object 1 leaves the frame of one corner
    px[2, 2, 2] = 0          # object 2 in another
    assert visibility.unseen(px) == (3, 2)
    px[0, 0, 1] = 1
    assert visibility.unseen(px) == (3, 1)
