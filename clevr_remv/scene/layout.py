"""Scene layout (docs/scenes.md): CLEVR's placement rules as pure Python.

``sample_scene(cfg, seed, index, attempt)`` returns the scene record: a JSON-serialisable dict
holding everything needed to re-render the scene.  Camera and light jitter are drawn once per
scene; objects are drawn per ``attempt`` (the driver asks for a new attempt when the central
view's visible-pixel check fails).  Re-sampling is bounded and recorded in ``layout``.
"""

from __future__ import annotations

import math

from ..errors import LayoutError
from . import catalogue, lightfield
from .seeding import rng, scene_seed

# The object catalogue (clevr_remv/catalogue.json); the order is the order of the draws.
SHAPES = catalogue.shapes()
MATERIALS = catalogue.materials()
SIZES = catalogue.sizes()
COLORS = catalogue.colors()


def directions(rig: dict) -> dict:
    """Unit ground-plane vectors for left/right/front/behind from the central camera."""
    r = lightfield.rotation(rig)
    forward = r[2].copy()
    forward[2] = 0.0
    # element-wise (no BLAS; see lightfield): the directions are stored with every scene
    behind = lightfield._unit(forward)
    left = -r[0].copy()
    left[2] = 0.0
    left = lightfield._unit(left)
    return {
        "left": left.tolist(),
        "right": (-left).tolist(),
        "behind": behind.tolist(),
        "front": (-behind).tolist(),
    }


def _jitter(gen, centre, amount):
    return [float(c + gen.uniform(-amount, amount)) for c in centre]


def _place_objects(cfg, gen, count, dirs, draws: dict | None = None) -> tuple[list[dict], int]:
    """Positions and radii of ``count`` objects; returns (objects, restarts used).  ``draws``,
    if given, counts every size drawn (discarded restarts included) by name."""
    sc = cfg["scene"]
    extent = sc["extent"]
    lx, ly = (float(c) for c in dirs["left"][:2])
    bx, by = (float(c) for c in dirs["behind"][:2])
    size_names = list(SIZES)
    for restart in range(sc["max_layout_restarts"]):
        placed: list[tuple[float, float, float]] = []
        objects: list[dict] = []
        failed = False
        for _ in range(count):
            # As CLEVR: the size is drawn once per object, before its placement tries (drawing it
            # again on every try under-draws large objects, which fail more often).  A restart
            # of the whole layout draws every size again.
            size_name = size_names[gen.integers(len(size_names))]
            r = SIZES[size_name]
            if draws is not None:
                draws[size_name] = draws.get(size_name, 0) + 1
            for _try in range(sc["max_tries_per_object"]):
                x, y = gen.uniform(-extent, extent, size=2)
                ok = True
                for (xo, yo, ro) in placed:
                    dx, dy = x - xo, y - yo
                    if math.hypot(dx, dy) - r - ro < sc["min_dist"]:
                        ok = False
                        break
                    if abs(dx * lx + dy * ly) < sc["margin"] or abs(dx * bx + dy * by) < sc["margin"]:
                        ok = False
                        break
                if ok:
                    placed.append((float(x), float(y), r))
                    objects.append({"size": size_name, "radius": r, "x": float(x), "y": float(y)})
                    break
            else:
                failed = True
                break
        if not failed:
            return objects, restart
    raise LayoutError(
        f"could not place {count} objects in [-{extent}, {extent}]^2 with min_dist={sc['min_dist']} and "
        f"margin={sc['margin']} after {sc['max_layout_restarts']} restarts; lower scene.max_objects, "
        f"min_dist or margin, or raise scene.extent")


def check_feasible(cfg: dict, seed: int = 0) -> int:
    """Place the largest object count once with the configured rules, seen from the default
    camera; raises :class:`LayoutError` (with advice) when the rules cannot be met.  Returns
    the restarts it took."""
    sc, rc = cfg["scene"], cfg["render"]
    grid = cfg["rig"]["grid"]
    rig = lightfield.make_rig(sc["camera_position"], grid=(grid, grid), baseline=cfg["rig"]["baseline"],
                              width=rc["width"], height=rc["height"])
    _, restarts = _place_objects(cfg, rng(seed, 0, "feasibility"), sc["max_objects"], directions(rig))
    return restarts


def sample_scene(cfg: dict, seed: int, index: int, attempt: int = 0) -> dict:
    """The scene record for (seed, index, attempt): a pure function of its arguments."""
    sc = cfg["scene"]
    rc = cfg["render"]
    g_scene = rng(seed, index, "scene")
    count = int(g_scene.integers(sc["min_objects"], sc["max_objects"] + 1))

    g_cam = rng(seed, index, "camera")
    cam_centre = _jitter(g_cam, sc["camera_position"], sc["camera_jitter"])
    rig = lightfield.make_rig(
        cam_centre, grid=cfg["rig"]["grid"], baseline=cfg["rig"]["baseline"],
        width=rc["width"], height=rc["height"], lens_mm=sc["lens_mm"],
        sensor_width_mm=sc["sensor_width_mm"], focus_distance=cfg["rig"]["focus_distance"])
    rig["jitter"] = [c - b for c, b in zip(cam_centre, sc["camera_position"])]

    g_light = rng(seed, index, "lights")
    lights = []
    for light in sc["lights"]:
        pos = _jitter(g_light, light["position"], sc["light_jitter"])
        lights.append({"name": light["name"], "position": pos, "target": [0.0, 0.0, 0.0],
                       "size": float(light["size"]), "energy": float(light["energy"]),
                       "jitter": [p - b for p, b in zip(pos, light["position"])]})

    dirs = directions(rig)
    g_obj = rng(seed, index, "objects", attempt)
    size_draws = {name: 0 for name in SIZES}
    placed, restarts = _place_objects(cfg, g_obj, count, dirs, size_draws)
    objects = []
    color_names = list(COLORS)
    for k, p in enumerate(placed):
        shape = SHAPES[g_obj.integers(len(SHAPES))]
        color = color_names[g_obj.integers(len(color_names))]
        material = MATERIALS[g_obj.integers(len(MATERIALS))]
        yaw = float(g_obj.uniform(0.0, 2.0 * math.pi))
        r = p["radius"]
        objects.append({
            "id": k + 1,
            "shape": shape,
            "color": color,
            "rgb": list(COLORS[color]),
            "material": material,
            "size": p["size"],
            "radius": r,
            "position": [p["x"], p["y"], catalogue.centre_height(shape, r)],
            "yaw": yaw,
        })

    return {
        "index": int(index),
        "seed": scene_seed(seed, index),
        "global_seed": int(seed),
        "objects": objects,
        "directions": dirs,
        "lights": lights,
        "rig": rig,
        "ground": {"rgb": list(catalogue.load()["ground"]["rgb"]), "material": catalogue.load()["ground"]["material"]},
        "layout": {"attempt": int(attempt), "restarts": int(restarts), "size_draws": size_draws},
    }
