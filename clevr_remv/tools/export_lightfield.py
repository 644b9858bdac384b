"""``clevr-remv export lightfield DIR --out OUT``: every scene in the layout of the 4D Light Field
Benchmark (Honauer et al. 2016), which its ``lightfield-analysis`` tools read.

    OUT/<split>/<global scene index, 7 digits>/
        input_Cam000.png ... input_CamNNN.png   view (u, v) is camera u * V + v (row-major, from
                                                the top left), lossless PNG of the shard's pixels
        parameters.cfg                          [intrinsics] [extrinsics] [meta], every key
        gt_depth_lowres.pfm                     centre view: planar depth, metres (1 scene unit)
        gt_disp_lowres.pfm                      centre view: disparity, pixels
        gt_disp_lowres_CamNNN.pfm               every view's disparity (--all-disparities)

Disparity is the benchmark's ``depth2disp``: d = f_px * b * (1/Z - 1/F), with f_px the focal
length in pixels, b the baseline and F the focus distance of ``parameters.cfg`` in the same
folder (``f_px = focal_length_mm * max(W, H) / sensor_size_mm``).  Positive d: nearer than the
focus plane; such a point of the centre view's pixel (x, y) appears in view (u, v) at
(x - d (v - v_c), y - d (u - u_c)).  PFM files are float32, little-endian, bottom row first.
Background pixels (no surface) have depth +inf.
"""

from __future__ import annotations

import configparser
import io
import math
from pathlib import Path

import numpy as np

from .. import __version__
from ..read.reader import check_splits
from ..scene import lightfield
from ..store.files import AtomicFolder
from .common import open_dataset, progress_bar


def write_pfm(path: Path, data: np.ndarray) -> None:
    """A greyscale PFM: float32 little-endian (scale -1), rows bottom first."""
    data = np.asarray(data, "<f4")
    h, w = data.shape
    with open(path, "wb") as fh:
        fh.write(f"Pf\n{w} {h}\n-1.0\n".encode("ascii"))
        fh.write(np.ascontiguousarray(np.flipud(data)).tobytes())


def read_pfm(path: Path) -> np.ndarray:
    """A greyscale PFM as float32 H x W, top row first (for checks)."""
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"Pf":
            raise ValueError(f"{path} is not a greyscale PFM")
        w, h = (int(x) for x in fh.readline().split())
        scale = float(fh.readline())
        data = np.frombuffer(fh.read(), "<f4" if scale < 0 else ">f4").reshape(h, w)
    return np.flipud(data).astype(np.float32)


def blender_euler_xyz(world_to_camera: np.ndarray) -> tuple[float, float, float]:
    """The centre camera's rotation as Blender's XYZ Euler angles (what the benchmark's Blender
    add-on writes): Blender's camera looks down its local -Z with +Y up."""
    r_cv = np.asarray(world_to_camera, float)[:3, :3].T            # camera-to-world, OpenCV axes
    m = r_cv @ np.diag([1.0, -1.0, -1.0])                          # Blender camera axes
    ry = math.asin(max(-1.0, min(1.0, -m[2, 0])))
    rx = math.atan2(m[2, 1], m[2, 2])
    rz = math.atan2(m[1, 0], m[0, 0])
    return rx + 0.0, ry + 0.0, rz + 0.0  # no -0.0


def parameters(rig: dict, scene_index: int, split: str, disp: np.ndarray, frustum: np.ndarray,
               manifest: dict) -> configparser.ConfigParser:
    w, h = rig["width"], rig["height"]
    f_px = lightfield.focal_px(rig)
    centre = lightfield.central_view(rig)
    e = lightfield.world_to_camera(rig, *centre)
    pos = lightfield.view_position(rig, *centre)
    rx, ry, rz = blender_euler_xyz(e)
    finite = disp[np.isfinite(disp)]
    ffin = frustum[np.isfinite(frustum)]
    cfg = configparser.ConfigParser()
    cfg["intrinsics"] = {
        "image_resolution_x_px": str(w), "image_resolution_y_px": str(h),
        "focal_length_mm": repr(float(rig["lens_mm"])),
        # so that the benchmark's f_px = focal_length_mm * max(W, H) / sensor_size_mm is ours
        "sensor_size_mm": repr(float(rig["lens_mm"]) * max(w, h) / f_px),
        "fstop": "100.0",  # a pinhole render: everything in focus
    }
    cfg["extrinsics"] = {
        "num_cams_x": str(rig["grid"][1]), "num_cams_y": str(rig["grid"][0]),
        "baseline_mm": repr(float(rig["baseline"]) * 1000.0),
        "focus_distance_m": repr(float(rig["focus_distance"])),
        "center_cam_x_m": repr(float(pos[0])), "center_cam_y_m": repr(float(pos[1])),
        "center_cam_z_m": repr(float(pos[2])),
        "center_cam_rx_rad": repr(rx), "center_cam_ry_rad": repr(ry), "center_cam_rz_rad": repr(rz),
    }
    cfg["meta"] = {
        "disp_min": repr(float(finite.min())) if finite.size else "0.0",
        "disp_max": repr(float(finite.max())) if finite.size else "0.0",
        "frustum_disp_min": repr(float(ffin.min())) if ffin.size else "0.0",
        "frustum_disp_max": repr(float(ffin.max())) if ffin.size else "0.0",
        "depth_map_scale": "1.0",  # only the low-resolution ground truth
        "scene": f"{scene_index:07d}", "category": split,
        "date": str(manifest.get("created", ""))[:10],
        "version": f"clevr-remv {__version__}, format {manifest.get('format_version')}",
        "authors": "clevr-remv generator", "contact": "see the dataset's README",
    }
    return cfg


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def export_scene(reader, index: int, split: str, folder: Path, all_disparities: bool = False) -> None:
    folder.mkdir(parents=True)
    views = reader.scene_views(index, ("images", "depth"))
    rig = views["scene"]["rig"]
    rows, cols = rig["grid"]
    cu, cv = lightfield.central_view(rig)
    depth = np.asarray(views["depth"], np.float32)
    disp = lightfield.disparity(rig, depth).astype(np.float32)  # +inf depth -> -f b / F (finite)
    for u in range(rows):
        for v in range(cols):
            k = u * cols + v
            (folder / f"input_Cam{k:03d}.png").write_bytes(_png(views["images"][u, v]))
            if all_disparities:
                write_pfm(folder / f"gt_disp_lowres_Cam{k:03d}.pfm", disp[u, v])
    write_pfm(folder / "gt_depth_lowres.pfm", depth[cu, cv])
    write_pfm(folder / "gt_disp_lowres.pfm", disp[cu, cv])
    surface = np.isfinite(depth)
    cfg = parameters(rig, index, split, np.where(surface[cu, cv], disp[cu, cv], np.nan),
                     np.where(surface, disp, np.nan), reader.manifest)
    with open(folder / "parameters.cfg", "w", encoding="utf-8") as fh:
        cfg.write(fh)


def export_lightfield(root, out, splits=None, all_disparities: bool = False) -> int:
    reader = open_dataset(Path(root))
    try:
        wanted = check_splits(reader, splits)
        scenes = [(i, reader.split_of(i)) for i in reader.scene_indices
                  if wanted is None or reader.split_of(i) in wanted]
        with AtomicFolder(Path(out), "export folder") as tmp, progress_bar(len(scenes), "export lightfield",
                                                                          "scenes") as bar:
            for index, split in scenes:
                export_scene(reader, index, split, tmp / split / f"{index:07d}", all_disparities)
                bar.update(1)
    finally:
        reader.close()
    return len(scenes)
