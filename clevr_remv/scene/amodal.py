"""Amodal masks: each object's whole silhouette in a view, as if nothing occluded it.

Every catalogue shape is convex, and a perspective camera maps a convex body in front of it
to a convex region whose boundary is made of the projected *silhouette edges* (the mesh edges
between a face turned towards the camera and one turned away).  Every projected edge lies in
that region, so on each row of pixel centres the region spans exactly from the leftmost to
the rightmost crossing of a silhouette edge.  A pixel belongs to the mask when its centre
(column + 0.5, row + 0.5) lies in the region, boundary included; the mask is clipped to the
frame.

The meshes are Blender's own (the worker reports each shape's vertices and faces once; see
``BlenderWorker.meshes``); the object transform is the one Blender applies (scale by the
centre height, turn by the yaw about z, move to the position).  No render is needed.  The
occlusion of an object in a view is ``1 - visible / amodal`` from the two pixel counts
(:func:`occlusion`).  Element-wise arithmetic only, as in :mod:`lightfield` (no BLAS): the
same arguments give the same masks on every CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import catalogue, lightfield
from .visibility import ABSENT


@dataclass(frozen=True)
class Mesh:
    """A closed convex mesh in its own frame, ready for silhouettes."""

    vertices: np.ndarray    # float64 [n, 3]
    normals: np.ndarray     # float64 [F, 3], outward (not unit)
    offsets: np.ndarray     # float64 [F]: normal . (a point of the face)
    edges: np.ndarray       # int64 [E, 2]: vertex indices
    edge_faces: np.ndarray  # int64 [E, 2]: the two faces of each edge (the same twice on a border)


def prepare_mesh(vertices, faces) -> Mesh:
    """A :class:`Mesh` from vertex coordinates [n, 3] and faces (lists of vertex indices).
    Normals by Newell's method, turned away from the origin (the meshes are centred on it)."""
    verts = np.asarray(vertices, np.float64).reshape(-1, 3)
    normals = np.zeros((len(faces), 3))
    offsets = np.zeros(len(faces))
    owner: dict = {}
    for f, face in enumerate(faces):
        p = verts[list(face)]
        q = np.roll(p, -1, axis=0)
        n = np.array([((p[:, 1] - q[:, 1]) * (p[:, 2] + q[:, 2])).sum(),
                      ((p[:, 2] - q[:, 2]) * (p[:, 0] + q[:, 0])).sum(),
                      ((p[:, 0] - q[:, 0]) * (p[:, 1] + q[:, 1])).sum()])
        c = p.sum(axis=0) / len(p)
        d = n[0] * c[0] + n[1] * c[1] + n[2] * c[2]
        if d < 0:
            n, d = -n, -d
        normals[f], offsets[f] = n, d
        for a, b in zip(face, list(face[1:]) + [face[0]]):
            owner.setdefault((min(a, b), max(a, b)), []).append(f)
    # Convex: every vertex on the inner side of every face's plane (the silhouette rule needs it).
    lengths = np.sqrt((normals * normals).sum(axis=1))
    for f in range(len(faces)):
        n = normals[f]
        out = (verts[:, 0] * n[0] + verts[:, 1] * n[1] + verts[:, 2] * n[2] - offsets[f]) / max(lengths[f], 1e-300)
        if out.max() > 1e-3:  # Blender's bevelled quads are planar to about 3e-4
            raise ValueError(f"the mesh is not convex (a vertex lies {out.max():.3g} outside face {f}); "
                             f"amodal masks need convex shapes")
    edges = np.array(sorted(owner), np.int64).reshape(-1, 2)
    edge_faces = np.array([(owner[e][0], owner[e][-1]) for e in sorted(owner)], np.int64).reshape(-1, 2)
    return Mesh(verts, normals, offsets, edges, edge_faces)


def prepare_meshes(geometry: dict) -> dict[str, Mesh]:
    """{shape: Mesh} from the worker's report ``{shape: {"vertices", "faces"}}``."""
    out = {}
    for name, g in geometry.items():
        try:
            out[name] = prepare_mesh(g["vertices"], g["faces"])
        except ValueError as exc:
            raise ValueError(f"shape {name}: {exc}") from None
    return out


@dataclass(frozen=True)
class Placed:
    """One object of a scene: its mesh, its world-space vertices and its transform."""

    mesh: Mesh
    world: np.ndarray  # float64 [n, 3]
    position: tuple
    yaw_cos: float
    yaw_sin: float
    scale: float

    def silhouette(self, eye) -> np.ndarray:
        """[S, 2] vertex index pairs: the silhouette edges seen from world point ``eye``."""
        qx, qy, qz = (float(eye[i]) - self.position[i] for i in range(3))
        # The eye in the mesh's frame: undo the move, the turn and the scale.
        lx = (self.yaw_cos * qx + self.yaw_sin * qy) / self.scale
        ly = (self.yaw_cos * qy - self.yaw_sin * qx) / self.scale
        lz = qz / self.scale
        m = self.mesh
        facing = m.normals[:, 0] * lx + m.normals[:, 1] * ly + m.normals[:, 2] * lz > m.offsets
        a, b = facing[m.edge_faces[:, 0]], facing[m.edge_faces[:, 1]]
        border = m.edge_faces[:, 0] == m.edge_faces[:, 1]
        return m.edges[(a != b) | border]


def place(mesh: Mesh, obj: dict) -> Placed:
    """Scene-record object ``obj`` built from its shape's ``mesh``."""
    s = catalogue.centre_height(obj["shape"], obj["radius"])
    c, sn = math.cos(obj["yaw"]), math.sin(obj["yaw"])
    v = mesh.vertices
    x, y, z = v[:, 0] * s, v[:, 1] * s, v[:, 2] * s
    px, py, pz = (float(p) for p in obj["position"])
    world = np.stack([c * x - sn * y + px, sn * x + c * y + py, z + pz], axis=-1)
    return Placed(mesh, world, (px, py, pz), c, sn, s)


def place_scene(meshes: dict, record: dict) -> list[Placed]:
    """Every object of a scene record, in the record's order (``meshes``: {shape: Mesh})."""
    missing = sorted({o["shape"] for o in record["objects"]} - set(meshes))
    if missing:
        raise ValueError(f"no mesh for shape(s) {', '.join(missing)}")
    return [place(meshes[o["shape"]], o) for o in record["objects"]]


def fill_regions(x0, y0, x1, y1, region, regions: int, height: int, width: int) -> np.ndarray:
    """bool [regions, height, width]: see :func:`fill_regions_counted`."""
    return fill_regions_counted(x0, y0, x1, y1, region, regions, height, width)[0]


def fill_regions_counted(x0, y0, x1, y1, region, regions: int, height: int,
                         width: int) -> tuple[np.ndarray, np.ndarray]:
    """(bool [regions, height, width], int64 [regions] pixel counts): for each region r, the pixels whose centre lies in the
    convex region bounded by the segments (x0, y0)-(x1, y1) with ``region == r`` (pixel
    coordinates; each segment lies in its region, and the region's boundary is made of them).
    Boundary included.

    On each row of pixel centres a convex region spans from its leftmost to its rightmost
    segment crossing; only the (segment, row) pairs that cross are computed."""
    x0, y0, x1, y1 = (np.asarray(a, np.float64).ravel() for a in (x0, y0, x1, y1))
    region = np.asarray(region, np.int64).ravel()
    masks = np.zeros((regions, height, width), bool)
    counts = np.zeros(regions, np.int64)
    # A horizontal segment on a row of centres contributes both its ends: add it reversed.
    flat = y0 == y1
    if flat.any():
        x0, y0, x1, y1, region = (np.concatenate([a, b[flat]]) for a, b in
                                  ((x0, x1), (y0, y1), (x1, x0), (y1, y0), (region, region)))
    lo_y, hi_y = np.minimum(y0, y1), np.maximum(y0, y1)
    r0 = np.maximum(np.ceil(lo_y - 0.5), 0.0).astype(np.int64)
    r1 = np.minimum(np.floor(hi_y - 0.5), height - 1.0).astype(np.int64)
    rows = np.maximum(r1 - r0 + 1, 0)
    total = int(rows.sum())
    if total == 0:
        return masks, counts
    seg = np.repeat(np.arange(len(rows)), rows)
    first = np.cumsum(rows) - rows
    row = r0[seg] + (np.arange(total) - first[seg])
    dy = y1 - y0
    t = np.divide(row + 0.5 - y0[seg], dy[seg], out=np.zeros(total), where=dy[seg] != 0)
    x = x0[seg] + t * (x1[seg] - x0[seg])
    key = region[seg] * height + row
    lo = np.full(regions * height, np.inf)
    hi = np.full(regions * height, -np.inf)
    np.minimum.at(lo, key, x)
    np.maximum.at(hi, key, x)
    hit = np.flatnonzero(lo <= hi)
    j0 = np.ceil(lo[hit] - 0.5)[:, None]
    j1 = np.floor(hi[hit] - 0.5)[:, None]
    centres = np.arange(width, dtype=np.float64)
    masks.reshape(regions * height, width)[hit] = (centres >= j0) & (centres <= j1)
    n = np.maximum(np.minimum(j1[:, 0], width - 1.0) - np.maximum(j0[:, 0], 0.0) + 1.0, 0.0)
    counts += np.bincount(hit // height, weights=n, minlength=regions).astype(np.int64)
    return masks, counts


def fill_convex(polygon, height: int, width: int) -> np.ndarray:
    """bool [height, width]: the pixels whose centre lies in the convex ``polygon`` [m, 2]
    (its vertices in order, either way round; boundary included)."""
    p = np.asarray(polygon, np.float64).reshape(-1, 2)
    q = np.roll(p, -1, axis=0)
    return fill_regions(p[:, 0], p[:, 1], q[:, 0], q[:, 1], np.zeros(len(p)), 1, height, width)[0]


def view_masks(rig: dict, u: int, v: int, placed: list[Placed], max_objects: int) -> np.ndarray:
    """bool [max_objects, H, W]: the amodal mask of each object (:func:`place_scene`) in view
    (u, v); slots past the scene's objects are empty."""
    return view_amodal(rig, u, v, placed, max_objects)[0]


def view_amodal(rig: dict, u: int, v: int, placed: list[Placed],
                max_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`view_masks`, int32 [max_objects] their pixel counts; ``ABSENT`` past the
    scene's objects, as ``visible_pixels``)."""
    h, w = rig["height"], rig["width"]
    pixels = np.full(max_objects, ABSENT, np.int32)
    pixels[:len(placed)] = 0
    if not placed:
        return np.zeros((max_objects, h, w), bool), pixels
    eye = lightfield.view_position(rig, u, v)
    ends, pairs, owner, start = [], [], [], 0
    for k, obj in enumerate(placed):
        sil = obj.silhouette(eye)
        if not len(sil):  # every face turned away: the camera is inside the object
            raise ValueError(f"view ({u}, {v}): the camera is inside object {k + 1}; amodal masks "
                             f"need every object in front of the camera")
        used = np.unique(sil)
        ends.append(obj.world[used])
        pairs.append(np.searchsorted(used, sil) + start)
        owner.append(np.full(len(sil), k))
        start += len(used)
    xy, z = lightfield.project(rig, u, v, np.concatenate(ends))
    if not (z > 0).all():
        raise ValueError(f"view ({u}, {v}): an object reaches behind the camera; amodal masks "
                         f"need every object in front of it")
    pairs = np.concatenate(pairs)
    a, b = xy[pairs[:, 0]], xy[pairs[:, 1]]
    masks, counts = fill_regions_counted(a[:, 0], a[:, 1], b[:, 0], b[:, 1], np.concatenate(owner),
                                         max_objects, h, w)
    pixels[:len(placed)] = counts[:len(placed)]
    return masks, pixels


def occlusion(visible, amodal) -> np.ndarray:
    """float32 ``1 - visible / amodal`` per (object, view), clipped to [0, 1] (anti-aliasing
    at the boundary may show a few visible pixels outside the amodal mask); NaN where the
    object has no amodal pixel (out of frame, or no such object)."""
    vis = np.asarray(visible, np.float64)
    am = np.asarray(amodal, np.float64)
    out = np.full(np.broadcast(vis, am).shape, np.nan)
    np.divide(vis, am, out=out, where=am > 0)
    return np.clip(1.0 - out, 0.0, 1.0).astype(np.float32)


# Occlusion buckets of the tools (stats, evaluate): exactly 0, (0, 25%], (25%, 50%], > 50%.
OCCLUSION_BUCKETS = ("0", "(0, 25%]", "(25%, 50%]", "> 50%")


def occlusion_bucket(occ) -> np.ndarray:
    """int64 index into :data:`OCCLUSION_BUCKETS` of each occlusion; -1 where it is NaN."""
    occ = np.asarray(occ, np.float64)
    out = np.select([occ <= 0.0, occ <= 0.25, occ <= 0.5, occ > 0.5], [0, 1, 2, 3], -1)
    return out.astype(np.int64)


def targets_occlusion(visible: np.ndarray, amodal_px: np.ndarray, targets) -> np.ndarray:
    """float32 [...]: the occlusion of a set of objects (an expression's targets) from the
    counts ``visible`` and ``amodal_px`` [..., K]: their hidden pixels over their amodal pixels,
    ``1 - sum(visible) / sum(amodal)``; NaN for no target (or none in frame)."""
    idx = np.asarray(list(targets), np.int64)
    if idx.size == 0:
        return np.full(np.shape(visible)[:-1], np.nan, np.float32)
    vis = np.maximum(np.take(visible, idx, axis=-1), 0).sum(axis=-1)
    am = np.maximum(np.take(amodal_px, idx, axis=-1), 0).sum(axis=-1)
    return occlusion(vis, am)
