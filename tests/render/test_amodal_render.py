"""Amodal masks against real Blender renders: an object that nothing hides has the amodal mask
of its visible (instance) mask, up to its boundary; a hidden one's amodal mask contains it."""

import copy

import numpy as np
import pytest

from clevr_remv import config
from clevr_remv.render import blender, outputs
from clevr_remv.scene import amodal, catalogue, layout

VIEWS = [(1, 1), (0, 0), (2, 2)]  # the centre and two opposite corners of a 3x3 rig


def _obj(i, shape, size, xy, yaw):
    r = catalogue.sizes()[size]
    return {"id": i, "shape": shape, "color": "red", "rgb": [173, 35, 35], "material": "rubber", "size": size,
            "radius": r, "position": [float(xy[0]), float(xy[1]), catalogue.centre_height(shape, r)],
            "yaw": yaw}


def _grow(mask):
    """3x3 dilation (numpy only)."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([p[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _band(mask):
    """The pixels within one pixel of the mask's boundary."""
    return _grow(mask) & ~(~_grow(~mask))


@pytest.fixture(scope="module")
def rendered():
    cfg = config.load_config(None, {"render.width": 128, "render.height": 96, "render.samples": 4,
                                    "render.adaptive_threshold": 0.0, "render.denoise": False,
                                    "rig.grid": 3, "rig.baseline": 1.0})
    base = layout.sample_scene(cfg, 0, 0)
    centre = np.asarray(base["rig"]["centre"][:2])
    ahead = -centre / np.sqrt((centre * centre).sum())  # from the camera towards the origin
    side = np.array([-ahead[1], ahead[0]])
    scenes = {
        "apart": [_obj(1, "sphere", "large", (-2.0, 1.5), 0.0), _obj(2, "cube", "large", (1.5, -1.5), 0.7),
                  _obj(3, "cylinder", "large", (2.0, 2.0), 0.3), _obj(4, "cube", "small", (-1.0, -2.5), 0.2)],
        # a large cube in front of a small sphere and a small cylinder
        "hidden": [_obj(1, "cube", "large", -0.6 * ahead, 0.1), _obj(2, "sphere", "small", 0.9 * ahead, 0.0),
                   _obj(3, "cylinder", "small", 1.1 * ahead + 0.45 * side, 0.0)],
    }
    w = blender.BlenderWorker()
    w.hello()
    out = {}
    try:
        w.configure({**cfg["render"], "device": "cpu", "passes": outputs.render_passes(outputs.stored(cfg))})
        meshes = amodal.prepare_meshes(w.meshes())
        for name, objects in scenes.items():
            rec = copy.deepcopy(base)
            rec["objects"] = objects
            placed = amodal.place_scene(meshes, rec)
            for ev in w.render(rec, VIEWS, tag=name):
                inst = w.read_view(ev, ["instances"])["instances"]
                out[name, ev.u, ev.v] = (inst, amodal.view_masks(rec["rig"], ev.u, ev.v, placed, 6))
    finally:
        w.close()
    return out, {k: len(v) for k, v in scenes.items()}


@pytest.mark.render
@pytest.mark.parametrize("view", VIEWS)
def test_an_object_nothing_hides_has_its_visible_mask_up_to_the_boundary(rendered, view):
    out, counts = rendered
    inst, am = out[("apart", *view)]
    assert not am[counts["apart"]:].any(), "no pixels for slots without an object"
    for k in range(counts["apart"]):
        visible = inst == k + 1
        assert am[k].sum() > 40, "a real silhouette"
        differ = visible ^ am[k]
        assert not (differ & ~_band(am[k])).any(), (view, k, "differs away from the boundary")
        assert differ.sum() <= 0.1 * am[k].sum(), (view, k, int(differ.sum()))


@pytest.mark.render
@pytest.mark.parametrize("view", VIEWS)
def test_a_hidden_object_amodal_mask_contains_its_visible_mask(rendered, view):
    out, _ = rendered
    inst, am = out[("hidden", *view)]
    front = inst == 1
    assert not ((front ^ am[0]) & ~_band(am[0])).any(), "the cube in front is whole"
    for k in (1, 2):
        visible = inst == k + 1
        assert not (visible & ~_grow(am[k])).any(), (view, k, "visible outside the amodal mask")
        occ = amodal.occlusion(visible.sum(), am[k].sum())
        assert 0.15 < occ < 1.0, (view, k, float(occ))
        assert (am[k] & ~visible & front).sum() > 5, "the cube hides part of it"
        assert not (am[k] & (inst == 0) & ~_band(am[k])).any(), \
            "what the amodal mask adds is where other objects are, not the background"
