import json
import math

import numpy as np
import pytest

from clevr_remv import config
from clevr_remv.errors import LayoutError
from clevr_remv.language import programs
from clevr_remv.scene import catalogue, layout


def _pairs(objects):
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            yield objects[i], objects[j]


@pytest.mark.parametrize("seed", [0, 7])
def test_layout_rules_hold_over_many_scenes(cfg, seed):
    counts = []
    for index in range(400):
        s = layout.sample_scene(cfg, seed, index)
        objs = s["objects"]
        counts.append(len(objs))
        assert 3 <= len(objs) <= 10
        left = np.asarray(s["directions"]["left"][:2])
        behind = np.asarray(s["directions"]["behind"][:2])
        for o in objs:
            x, y, z = o["position"]
            assert -3 <= x <= 3 and -3 <= y <= 3
            r = layout.SIZES[o["size"]]
            assert o["radius"] == r
            # The shape's ground rule from the catalogue (its value: test_catalogue.py).
            assert math.isclose(z, catalogue.centre_height(o["shape"], r))
            assert 0 <= o["yaw"] < 2 * math.pi
            assert o["shape"] in layout.SHAPES and o["material"] in layout.MATERIALS
            assert tuple(o["rgb"]) == layout.COLORS[o["color"]]
        for a, b in _pairs(objs):
            d = np.subtract(a["position"][:2], b["position"][:2])
            assert np.hypot(*d) - a["radius"] - b["radius"] >= 0.25 - 1e-12
            assert abs(d @ left) >= 0.4 - 1e-12
            assert abs(d @ behind) >= 0.4 - 1e-12
    # Count is uniform over 3..10: every value appears, none dominates.
    hist = np.bincount(counts, minlength=11)[3:]
    assert (hist > 20).all() and hist.max() < 90


def test_layout_is_a_pure_function_of_seed_index_attempt(cfg):
    a = layout.sample_scene(cfg, 3, 42)
    b = layout.sample_scene(cfg, 3, 42)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["objects"] != layout.sample_scene(cfg, 4, 42)["objects"]
    assert a["objects"] != layout.sample_scene(cfg, 3, 43)["objects"]
    c = layout.sample_scene(cfg, 3, 42, attempt=1)
    assert c["objects"] != a["objects"], "a re-sample draws new objects"
    assert c["rig"] == a["rig"] and c["lights"] == a["lights"], "camera and lights are per scene"


def test_record_has_everything_to_rerender(cfg):
    s = layout.sample_scene(cfg, 1, 5)
    json.dumps(s)  # plain JSON
    for key in ("index", "seed", "objects", "directions", "lights", "rig", "layout"):
        assert key in s
    assert s["index"] == 5 and isinstance(s["seed"], int)
    assert max(abs(j) for j in s["rig"]["jitter"]) <= 0.5
    assert len(s["lights"]) == 3
    for light, base in zip(s["lights"], cfg["scene"]["lights"]):
        assert max(abs(p - q) for p, q in zip(light["position"], base["position"])) <= 1.0
    for name in ("left", "right", "front", "behind"):
        assert math.isclose(np.linalg.norm(s["directions"][name]), 1.0)
        assert s["directions"][name][2] == 0.0
    assert np.allclose(s["directions"]["left"], -np.asarray(s["directions"]["right"]))
    assert abs(np.dot(s["directions"]["left"], s["directions"]["behind"])) < 1e-9


def test_behind_points_away_from_camera(cfg):
    s = layout.sample_scene(cfg, 0, 0)
    cam = np.asarray(s["rig"]["centre"][:2])
    assert np.dot(np.asarray(s["directions"]["behind"][:2]), -cam) > 0
    # With the camera in the (+x, -y) quadrant looking at the origin, left is towards -x/-y.
    left = np.asarray(s["directions"]["left"][:2])
    assert np.cross(np.append(s["directions"]["behind"][:2], 0), np.append(left, 0))[2] > 0


def test_relation_threshold(cfg):
    """The relation the programs execute (the one production uses): 0.2 along the direction."""
    s = layout.sample_scene(cfg, 0, 0)
    s["objects"] = s["objects"][:2]
    s["objects"][0]["position"] = [0.0, 0.0, 0.35]
    left = np.asarray(s["directions"]["left"])

    s["objects"][0]["color"], s["objects"][1]["color"] = "red", "blue"

    def related(rel):
        program = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
                   {"op": "relate", "relation": rel}]
        return programs.execute(program, s)

    s["objects"][1]["position"] = list(0.3 * left[:2]) + [0.35]
    assert related("left") == [1]
    assert related("right") == []
    s["objects"][1]["position"] = list(0.21 * left[:2]) + [0.35]
    assert related("left") == [1], "just above 0.2 counts"
    s["objects"][1]["position"] = list(0.19 * left[:2]) + [0.35]
    assert related("left") == [], "0.2 is the threshold"


def test_impossible_layout_is_reported_not_recursed(cfg):
    cfg = config.load_config(overrides={"scene.min_objects": 40, "scene.max_objects": 40,
                                        "scene.max_layout_restarts": 5})
    with pytest.raises(LayoutError, match="could not place 40 objects"):
        layout.sample_scene(cfg, 0, 0)


def test_restarts_are_recorded(cfg):
    restarts = [layout.sample_scene(cfg, 0, i)["layout"]["restarts"] for i in range(200)]
    assert max(restarts) > 0, "dense scenes need restarts; they are recorded"
    assert max(restarts) < cfg["scene"]["max_layout_restarts"]
