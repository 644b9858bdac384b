"""Light-field rig geometry: the whole U x V camera array in a few formulas.

Conventions (docs/scenes.md, the light-field rig; docs/format.md):

* View (u, v): u is the row from the top, v the column from the left; the central view is
  (U // 2, V // 2).
* All cameras share the central camera's orientation.  Camera frame is OpenCV's: x right,
  y down, z forward.  ``R`` (world to camera) has the rows [right, down, forward].
* View (u, v) sits at ``centre + (v - V//2) * b * right + (u - U//2) * b * down``: the top row
  is the highest, the left column the leftmost.
* Convergence by sensor shift only: the plane at planar depth ``F`` (``focus_distance``) has
  zero disparity.  The principal point of a view offset by (ox, oy) (scene units along
  right/down) is ``(W/2 + f*ox/F, H/2 + f*oy/F)``; pixel (row i, col j) has its centre at
  (j + 0.5, i + 0.5).
* Disparity ``d(Z) = f * b * (1/Z - 1/F)`` pixels: a point at planar depth Z seen at x in the
  central view is at ``x - (v - V//2) * d`` in column v and ``y - (u - U//2) * d`` in row u.

This module imports numpy only: the Blender-side worker imports it too (it turns a view
into Blender's lens and shift), so the rig is defined in exactly one place.
"""

from __future__ import annotations

import numpy as np

WORLD_UP = np.array([0.0, 0.0, 1.0])


# Element-wise arithmetic only in this module (no np.linalg, no matmul): BLAS kernels differ
# between CPUs (OpenBLAS picks AVX2 or AVX-512 code at run time) in the last bit, and the
# cameras are stored, so the same arguments must give the same bytes on every machine.

def _norm(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / _norm(v)


def _rotate(r, p):
    """``r @ p`` for a 3x3 ``r`` and points ``p`` [..., 3], element-wise (no BLAS)."""
    p = np.asarray(p, dtype=np.float64)
    return np.stack([r[i, 0] * p[..., 0] + r[i, 1] * p[..., 1] + r[i, 2] * p[..., 2] for i in range(3)], axis=-1)


def look_at_rotation(position, target=(0.0, 0.0, 0.0)) -> np.ndarray:
    """World-to-camera rotation (rows right, down, forward) of a camera at ``position``
    aimed at ``target`` with the world's z axis up."""
    forward = _unit(np.asarray(target, float) - np.asarray(position, float))
    right = _unit(np.cross(forward, WORLD_UP))
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def make_rig(centre, *, grid, baseline, width, height, lens_mm=35.0, sensor_width_mm=32.0,
             focus_distance=None, target=(0.0, 0.0, 0.0)) -> dict:
    """The rig as a plain JSON-serialisable record (stored with every scene)."""
    centre = [float(c) for c in centre]
    if isinstance(grid, int):
        grid = (grid, grid)
    rows, cols = int(grid[0]), int(grid[1])
    if rows < 1 or cols < 1 or rows % 2 == 0 or cols % 2 == 0:
        raise ValueError(f"grid sizes must be odd and positive, got {rows}x{cols}")
    if focus_distance is None:
        focus_distance = _norm(np.asarray(target, float) - np.asarray(centre))
    return {
        "grid": [rows, cols],
        "baseline": float(baseline),
        "focus_distance": float(focus_distance),
        "width": int(width),
        "height": int(height),
        "lens_mm": float(lens_mm),
        "sensor_width_mm": float(sensor_width_mm),
        "centre": centre,
        "target": [float(t) for t in target],
    }


def focal_px(rig) -> float:
    """Focal length in pixels (sensor fitted to the image width)."""
    return rig["lens_mm"] / rig["sensor_width_mm"] * rig["width"]


def rotation(rig) -> np.ndarray:
    return look_at_rotation(rig["centre"], rig["target"])


def central_view(rig) -> tuple[int, int]:
    return rig["grid"][0] // 2, rig["grid"][1] // 2


def view_offset(rig, u, v) -> tuple[float, float]:
    """Offset of view (u, v) from the central camera along (right, down), scene units."""
    cu, cv = central_view(rig)
    b = rig["baseline"]
    return (v - cv) * b, (u - cu) * b


def view_position(rig, u, v) -> np.ndarray:
    ox, oy = view_offset(rig, u, v)
    r = rotation(rig)
    return np.asarray(rig["centre"], float) + ox * r[0] + oy * r[1]


def intrinsics(rig, u, v) -> np.ndarray:
    f = focal_px(rig)
    ox, oy = view_offset(rig, u, v)
    big_f = rig["focus_distance"]
    return np.array([
        [f, 0.0, rig["width"] / 2.0 + f * ox / big_f],
        [0.0, f, rig["height"] / 2.0 + f * oy / big_f],
        [0.0, 0.0, 1.0],
    ])


def world_to_camera(rig, u, v) -> np.ndarray:
    r = rotation(rig)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = -_rotate(r, view_position(rig, u, v))
    return m


def all_cameras(rig) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics [U, V, 3, 3] and world-to-camera [U, V, 4, 4] of every view."""
    rows, cols = rig["grid"]
    ks = np.empty((rows, cols, 3, 3))
    es = np.empty((rows, cols, 4, 4))
    for u in range(rows):
        for v in range(cols):
            ks[u, v] = intrinsics(rig, u, v)
            es[u, v] = world_to_camera(rig, u, v)
    return ks, es


def project(rig, u, v, points) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [..., 3] into view (u, v): pixel coordinates [..., 2] (x, y),
    continuous, pixel centres at half-integers) and planar depth [...]."""
    pts = np.asarray(points, float)
    e = world_to_camera(rig, u, v)
    cam = _rotate(e[:3, :3], pts) + e[:3, 3]
    k = intrinsics(rig, u, v)
    z = cam[..., 2]
    x = k[0, 0] * cam[..., 0] / z + k[0, 2]
    y = k[1, 1] * cam[..., 1] / z + k[1, 2]
    return np.stack([x, y], axis=-1), z


def back_project(rig, u, v, xy, depth) -> np.ndarray:
    """World points [..., 3] of pixel coordinates ``xy`` [..., 2] at planar ``depth``."""
    xy = np.asarray(xy, float)
    depth = np.asarray(depth, float)
    k = intrinsics(rig, u, v)
    cx = (xy[..., 0] - k[0, 2]) / k[0, 0] * depth
    cy = (xy[..., 1] - k[1, 2]) / k[1, 1] * depth
    cam = np.stack([cx, cy, depth], axis=-1)
    e = world_to_camera(rig, u, v)
    return _rotate(e[:3, :3].T, cam - e[:3, 3])


def disparity(rig, depth):
    """Disparity between neighbouring views, in pixels, of a point at planar ``depth``."""
    return focal_px(rig) * rig["baseline"] * (1.0 / np.asarray(depth, float)
                                              - 1.0 / rig["focus_distance"])


def blender_camera(rig, u, v) -> dict:
    """View (u, v) expressed in Blender's camera model (sensor fit horizontal).

    Blender's shift is in units of the image width for a horizontal sensor fit; a positive
    ``shift_x`` moves the frame right (the principal point left), a positive ``shift_y``
    moves it up (the principal point down in image rows).
    """
    k = intrinsics(rig, u, v)
    w, h = rig["width"], rig["height"]
    r = rotation(rig)
    # Blender's camera looks down its local -Z with +Y up: columns right, up, backward.
    matrix = np.stack([r[0], -r[1], -r[2]], axis=1)
    return {
        "location": view_position(rig, u, v).tolist(),
        "rotation_matrix": matrix.tolist(),
        "lens_mm": rig["lens_mm"],
        "sensor_width_mm": rig["sensor_width_mm"],
        "shift_x": (w / 2.0 - k[0, 2]) / w,
        "shift_y": (k[1, 2] - h / 2.0) / w,
    }


def manhattan_from_centre(rig_or_grid, u, v) -> int:
    grid = rig_or_grid["grid"] if isinstance(rig_or_grid, dict) else rig_or_grid
    return abs(u - grid[0] // 2) + abs(v - grid[1] // 2)


def corner_views(grid) -> list[tuple[int, int]]:
    """The four corners, in the source's order I_11, I_19, I_91, I_99."""
    rows, cols = grid
    return [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)]

