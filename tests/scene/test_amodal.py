"""Amodal masks from the meshes' silhouettes: the fill, the silhouettes and the occlusion."""

import math

import numpy as np
import pytest

from clevr_remv import config
from clevr_remv.scene import amodal, catalogue, layout, lightfield


def _hull(points):
    """A reference convex hull (Andrew's monotone chain), counter-clockwise."""
    p = sorted(set(map(tuple, np.asarray(points, float).tolist())))

    def chain(seq):
        out = []
        for q in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(q)
        return out

    return np.array(chain(p)[:-1] + chain(p[::-1])[:-1])


def _inside(polygon, height, width):
    """Brute force: every pixel centre tested against every edge of a counter-clockwise polygon."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    c = ((b[:, 0] - a[:, 0]) * (ys[..., None] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (xs[..., None] - a[:, 0]))
    return (c >= 0).all(-1)


def test_fill_matches_a_brute_force_point_in_polygon_test():
    gen = np.random.default_rng(0)
    filled = 0
    for trial in range(200):
        pts = gen.normal(size=(int(gen.integers(3, 60)), 2)) * gen.uniform(1, 30) + gen.uniform(-20, 100, 2)
        if trial % 3 == 0:
            pts = np.round(pts) + 0.5  # vertices and horizontal edges exactly on pixel centres
        hull = _hull(pts)
        if len(hull) < 3:
            continue
        got = amodal.fill_convex(hull, 48, 80)
        assert np.array_equal(got, _inside(hull, 48, 80)), trial
        assert np.array_equal(amodal.fill_convex(hull[::-1], 48, 80), got), "either way round"
        filled += got.sum()
    assert filled > 10000, "the polygons cover pixels (and leave the frame: clipped)"


def test_fill_regions_keeps_regions_apart_and_clips_to_the_frame():
    square = np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 5.0], [2.0, 5.0]])
    big = np.array([[-10.0, -10.0], [100.0, -10.0], [100.0, 100.0], [-10.0, 100.0]])
    segs = []
    for r, poly in enumerate((square, big)):
        q = np.roll(poly, -1, axis=0)
        segs.append((poly[:, 0], poly[:, 1], q[:, 0], q[:, 1], np.full(4, r)))
    x0, y0, x1, y1, reg = (np.concatenate(c) for c in zip(*segs))
    m = amodal.fill_regions(x0, y0, x1, y1, reg, 3, 8, 10)
    assert m.shape == (3, 8, 10)
    assert m[0].sum() == 4 * 3 and m[0][2:5, 2:6].all()  # centres 2.5..5.5 by 2.5..4.5
    assert m[1].all() and not m[2].any()
    m2, counts = amodal.fill_regions_counted(x0, y0, x1, y1, reg, 3, 8, 10)
    assert np.array_equal(m2, m) and counts.tolist() == [12, 80, 0]


def _box_mesh():
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return amodal.prepare_mesh(v, faces)


def test_mesh_normals_point_outwards_and_every_edge_has_two_faces():
    m = _box_mesh()
    assert len(m.edges) == 12 and (m.edge_faces[:, 0] != m.edge_faces[:, 1]).all()
    assert (m.offsets > 0).all()
    face_centres = np.array([m.vertices[f].mean(0) for f in
                             ([0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3])])
    assert ((m.normals * face_centres).sum(1) > 0).all(), "outward, whatever the winding"
    assert np.array_equal(np.abs(m.normals).sum(1), np.full(6, 8.0)), "Newell: twice the face area"
    # Seen from far along +x, only the +x face looks at the eye: its 4 edges are the silhouette.
    placed = amodal.place(m, {"shape": "sphere", "radius": 1.0, "yaw": 0.0, "position": [0, 0, 0]})
    sil = placed.silhouette(np.array([50.0, 0.0, 0.0]))
    assert len(sil) == 4 and (placed.world[np.unique(sil)][:, 0] == 1.0).all()


@pytest.mark.parametrize("yaw", [0.0, 0.4, 2.0])
def test_view_masks_equal_the_filled_hull_of_every_projected_vertex(yaw):
    cfg = config.load_config(overrides={"rig.grid": 3, "render.width": 96, "render.height": 64})
    rec = layout.sample_scene(cfg, 3, 0)
    for obj in rec["objects"]:
        obj["yaw"] = yaw
    box = {"cube": _box_mesh()}
    # A sphere-like mesh: a coarse UV sphere (convex), built here.
    ring = [(math.sin(t) * math.cos(p), math.sin(t) * math.sin(p), math.cos(t))
            for t in np.linspace(0.3, math.pi - 0.3, 5) for p in np.linspace(0, 2 * math.pi, 12, endpoint=False)]
    verts = np.array([(0, 0, 1.0), *ring, (0, 0, -1.0)])
    faces = [[0, 1 + (j + 1) % 12, 1 + j] for j in range(12)]
    faces += [[1 + i * 12 + j, 1 + i * 12 + (j + 1) % 12, 13 + i * 12 + (j + 1) % 12, 13 + i * 12 + j]
              for i in range(4) for j in range(12)]
    faces += [[61, 49 + j, 49 + (j + 1) % 12] for j in range(12)]
    meshes = {"cube": box["cube"], "sphere": amodal.prepare_mesh(verts, faces), "cylinder": box["cube"]}
    placed = amodal.place_scene(meshes, rec)
    rig = rec["rig"]
    for u, v in [(1, 1), (0, 0), (2, 1)]:
        got = amodal.view_masks(rig, u, v, placed, 10)
        assert got.shape == (10, 64, 96) and not got[len(placed):].any()
        for k, obj in enumerate(placed):
            xy, _ = lightfield.project(rig, u, v, obj.world)
            assert np.array_equal(got[k], _inside(_hull(xy), 64, 96)), (u, v, k)
        assert got[:len(placed)].sum(axis=(1, 2)).min() > 0
        masks, pixels = amodal.view_amodal(rig, u, v, placed, 10)
        assert np.array_equal(masks, got) and pixels.dtype == np.int32
        assert pixels[:len(placed)].tolist() == got[:len(placed)].sum(axis=(1, 2)).tolist()
        assert (pixels[len(placed):] == -1).all(), "absent slots as in visible_pixels"


def test_place_uses_blenders_transform_scale_yaw_then_move():
    m = _box_mesh()
    obj = {"shape": "cube", "radius": 0.7, "yaw": math.pi / 2, "position": [1.0, 2.0, 0.5]}
    p = amodal.place(m, obj)
    s = catalogue.centre_height("cube", 0.7)
    # the corner (1, -1, 1) turns by 90 degrees about z to (1, 1, 1), then scales and moves
    i = int(np.flatnonzero((m.vertices == [1, -1, 1]).all(1))[0])
    assert np.allclose(p.world[i], [1.0 + s, 2.0 + s, 0.5 + s])


def test_missing_mesh_and_an_object_behind_the_camera_are_errors():
    cfg = config.load_config(overrides={"rig.grid": 3, "render.width": 32, "render.height": 24})
    rec = layout.sample_scene(cfg, 0, 0)
    with pytest.raises(ValueError, match="no mesh for shape"):
        amodal.place_scene({}, rec)
    box = _box_mesh()
    rec["objects"] = [{"shape": "cube", "radius": 0.7, "yaw": 0.0, "position": list(rec["rig"]["centre"])}]
    with pytest.raises(ValueError, match="camera is inside object 1"):
        amodal.view_masks(rec["rig"], 1, 1, amodal.place_scene({"cube": box}, rec), 2)
    # beside the camera, half behind it
    right = lightfield.rotation(rec["rig"])[0]
    rec["objects"][0]["position"] = list(np.asarray(rec["rig"]["centre"]) + 1.5 * right)
    with pytest.raises(ValueError, match="reaches behind the camera"):
        amodal.view_masks(rec["rig"], 1, 1, amodal.place_scene({"cube": box}, rec), 2)


def test_occlusion_from_the_two_counts():
    vis = np.array([10, 0, 5, -1, 12])
    am = np.array([10, 20, 20, 0, 11])
    occ = amodal.occlusion(vis, am)
    assert occ.dtype == np.float32
    assert occ[:3].tolist() == [0.0, 1.0, 0.75] and math.isnan(occ[3])
    assert occ[4] == 0.0, "a few anti-aliased pixels past the amodal mask clip to 0"


def test_occlusion_buckets():
    occ = np.array([0.0, 1e-6, 0.25, 0.2500001, 0.5, 0.51, 1.0, np.nan])
    assert amodal.occlusion_bucket(occ).tolist() == [0, 1, 1, 2, 2, 3, 3, -1]
    assert len(amodal.OCCLUSION_BUCKETS) == 4


def test_occlusion_of_several_targets_sums_their_counts():
    vis = np.array([[10, 0, 5, -1]])
    am = np.array([[10, 20, 20, -1]])
    assert amodal.targets_occlusion(vis, am, [0]).tolist() == [0.0]
    assert amodal.targets_occlusion(vis, am, [1, 2]).tolist() == [pytest.approx(1 - 5 / 40)]
    assert np.isnan(amodal.targets_occlusion(vis, am, [])).all()


def test_a_mesh_that_is_not_convex_is_refused():
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    amodal.prepare_mesh(v, faces)
    dented = v.copy()
    dented[7] *= 0.5  # a corner pushed in: the faces at it are no longer planes of a convex body
    with pytest.raises(ValueError, match="shape box: the mesh is not convex"):
        amodal.prepare_meshes({"box": {"vertices": dented.tolist(), "faces": faces}})
