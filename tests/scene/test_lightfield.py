import numpy as np
import pytest

from clevr_remv.scene import lightfield


@pytest.fixture
def rig():
    return lightfield.make_rig([7.48, -6.51, 5.34], grid=9, baseline=0.25, width=480, height=320)


def test_focus_plane_projects_to_same_pixel_in_every_view(rig):
    r = lightfield.rotation(rig)
    centre = np.asarray(rig["centre"])
    big_f = rig["focus_distance"]
    rng = np.random.default_rng(0)
    # Points on the plane at planar depth F, spread over the central image.
    xy = rng.uniform([0, 0], [480, 320], size=(50, 2))
    pts = lightfield.back_project(rig, 4, 4, xy, np.full(50, big_f))
    assert np.allclose((pts - centre) @ r[2], big_f)
    for u in range(9):
        for v in range(9):
            proj, depth = lightfield.project(rig, u, v, pts)
            assert np.allclose(proj, xy, atol=1e-6), (u, v)
            assert np.allclose(depth, big_f)


def test_disparity_formula_matches_projection(rig):
    pts = np.array([[0.5, -1.0, 0.3], [-2.5, 2.0, 0.7], [2.9, 2.9, 0.35], [-2.9, -2.9, 0.0]])
    cu, cv = lightfield.central_view(rig)
    xy_c, z = lightfield.project(rig, cu, cv, pts)
    d = lightfield.disparity(rig, z)
    for u in range(9):
        for v in range(9):
            xy, zz = lightfield.project(rig, u, v, pts)
            assert np.allclose(zz, z), "all views share the orientation: planar depth is the same"
            assert np.allclose(xy[:, 0], xy_c[:, 0] - (v - cv) * d, atol=1e-9)
            assert np.allclose(xy[:, 1], xy_c[:, 1] - (u - cu) * d, atol=1e-9)
    assert (d[z < rig["focus_distance"]] > 0).all()


def test_view_layout_and_conventions(rig):
    r = lightfield.rotation(rig)
    assert np.allclose(r @ r.T, np.eye(3))
    assert np.isclose(np.linalg.det(r), 1.0)
    assert r[1][2] < 0, "image y points down: world up has a negative y component"
    p_top_left = lightfield.view_position(rig, 0, 0)
    p_bottom_right = lightfield.view_position(rig, 8, 8)
    assert p_top_left[2] > p_bottom_right[2], "row 0 is the top row"
    assert (p_bottom_right - p_top_left) @ r[0] > 0, "column 8 is to the right"
    assert np.isclose(np.linalg.norm(lightfield.view_position(rig, 4, 5) - lightfield.view_position(rig, 4, 4)), 0.25)
    ks, es = lightfield.all_cameras(rig)
    assert ks.shape == (9, 9, 3, 3) and es.shape == (9, 9, 4, 4)
    assert np.allclose(ks[4, 4], [[525, 0, 240], [0, 525, 160], [0, 0, 1]])
    # The origin is on the central optical axis: it projects to the image centre.
    xy, _ = lightfield.project(rig, 4, 4, np.zeros(3))
    assert np.allclose(xy, [240, 160])


def _blender_pixels(cam: dict, width: int, height: int, points: np.ndarray) -> np.ndarray:
    """Blender's own camera model, independent of the intrinsics matrix: world -> camera local
    (the inverse of matrix_world; Blender looks down local -Z, +Y up), then the perspective
    divide with focal length lens / sensor_width in units of the image width (sensor fit
    horizontal); the shift moves the frame (so the image content the other way) in those
    units; rows grow downwards."""
    m = np.asarray(cam["rotation_matrix"])
    local = (points - np.asarray(cam["location"])) @ m  # m is orthonormal: inverse = transpose
    f = cam["lens_mm"] / cam["sensor_width_mm"]
    nx = f * local[:, 0] / -local[:, 2] - cam["shift_x"]
    ny = f * local[:, 1] / -local[:, 2] - cam["shift_y"]
    return np.stack([width / 2.0 + nx * width, height / 2.0 - ny * width], -1)


def test_blender_camera_projects_like_the_stored_cameras(rig):
    """What Blender renders (its camera model with our location, rotation, lens and shift)
    lands on the pixels the stored intrinsics and extrinsics predict, in every view."""
    pts = np.random.default_rng(0).uniform(-3, 3, (50, 3)) * [1, 1, 0.3]
    for u, v in [(0, 0), (0, 8), (8, 0), (4, 4), (2, 7)]:
        cam = lightfield.blender_camera(rig, u, v)
        ours, depth = lightfield.project(rig, u, v, pts)
        assert (depth > 0).all()
        assert np.allclose(_blender_pixels(cam, 480, 320, pts), ours, atol=1e-6)
        m = np.asarray(cam["rotation_matrix"])
        assert np.allclose(-m[:, 2], lightfield.rotation(rig)[2]), "Blender looks down its -Z"
    # The off-centre views differ from the central one by their shift (same orientation).
    assert lightfield.blender_camera(rig, 0, 0)["shift_x"] != lightfield.blender_camera(rig, 4, 4)["shift_x"]


def test_grid_must_be_odd():
    with pytest.raises(ValueError):
        lightfield.make_rig([1, 1, 1], grid=4, baseline=0.1, width=10, height=10)
    one = lightfield.make_rig([5, -5, 5], grid=1, baseline=0.3, width=32, height=32)
    assert lightfield.central_view(one) == (0, 0)


def test_corners_and_manhattan():
    assert lightfield.corner_views((9, 9)) == [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert lightfield.manhattan_from_centre((9, 9), 0, 0) == 8
    assert lightfield.manhattan_from_centre((9, 9), 4, 4) == 0
