"""export hf (loaded by the real `datasets` and `mlcroissant`) and export lightfield (the 4D
Light Field Benchmark layout, checked against the benchmark's own formulas)."""

import configparser
import io
import json
import math

import numpy as np
import pytest
from conftest import listing, run_cli
from PIL import Image

from clevr_remv.data import Reader
from clevr_remv.scene import lightfield
from clevr_remv.tools import export_hf, export_lightfield

pytestmark = pytest.mark.render  # the session's real generated dataset


def _expected_rows(reader, split):
    rows = reader.grid[0] * reader.grid[1]
    return [(e, u, v) for e in reader.expressions(split) for u in range(reader.grid[0])
            for v in range(reader.grid[1]) if e["valid_views"][u, v] and rows]


def test_export_hf_loads_with_datasets_and_mlcroissant(generated, tmp_path, monkeypatch):
    import datasets
    import mlcroissant as mlc

    out = tmp_path / "hf"
    r = run_cli("export", "hf", generated, "--out", out)
    assert r.returncode == 0, r.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"
    reader = Reader(generated)
    splits = list(dict.fromkeys(e["split"] for e in reader.shards))
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-4.0") and "configs:" in card and "@phdthesis" in card
    for split in splits:
        assert f"- split: {split}\n    path: data/{split}-*.parquet" in card
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(ds) == sorted(splits)
    for split in splits:
        want = _expected_rows(reader, split)
        got = ds[split]
        assert len(got) == len(want) > 0
        assert got.features["image"].__class__.__name__ == "Image"
        for k in (0, len(want) // 2, len(want) - 1):
            row, (e, u, v) = got[k], want[k]
            assert (row["expression"], row["u"], row["v"], row["scene"]) == (e["id"], u, v, e["scene"])
            assert row["text"] == e["text"] and row["family"] == e["family"] and row["targets"] == [e["object"]]
            assert np.array_equal(np.asarray(row["image"]), reader.image(e["scene"], u, v))
            assert np.array_equal(np.asarray(row["mask"]) > 0, reader.object_mask(e["scene"], e["object"], u, v))
    croissant = mlc.Dataset(str(out / "croissant.json"))
    records = list(croissant.records("rows"))
    assert len(records) == sum(len(ds[s]) for s in splits)
    by_key = {(rec["rows/split"].decode(), rec["rows/expression"].decode(), rec["rows/u"], rec["rows/v"]): rec
              for rec in records}
    for split in splits:
        for k, row in enumerate(ds[split].select_columns(["expression", "u", "v", "text", "targets"])):
            rec = by_key[(split, row["expression"], row["u"], row["v"])]
            assert rec["rows/text"].decode() == row["text"] and list(rec["rows/targets"]) == row["targets"]
            if k == 0:
                assert np.array_equal(np.asarray(rec["rows/image"]), np.asarray(ds[split][0]["image"]))
                assert np.array_equal(np.asarray(rec["rows/mask"]), np.asarray(ds[split][0]["mask"]))


def test_exports_refuse_bad_input_with_one_line(generated, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [(["export", "hf", generated, "--out", full], "not empty"),
             (["export", "lightfield", generated, "--out", full], "not empty"),
             (["export", "hf", generated, "--out", tmp_path / "a", "--split", "nope"], "unknown split"),
             (["export", "lightfield", generated, "--out", tmp_path / "b", "--split", "nope"], "unknown split"),
             (["export", "lightfield", tmp_path / "full", "--out", tmp_path / "c"], "manifest")]
    for args, words in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"], "nothing half-written"


def test_a_failing_export_leaves_no_folder(generated, tmp_path, monkeypatch):
    calls = []

    def fail_later(arr):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return b"png"

    monkeypatch.setattr(export_lightfield, "_png", fail_later)
    with pytest.raises(OSError):
        export_lightfield.export_lightfield(generated, tmp_path / "lf")
    monkeypatch.setattr(export_hf, "_png", fail_later)
    calls.clear()
    with pytest.raises(OSError):
        export_hf.export_hf(generated, tmp_path / "hf")
    assert listing(tmp_path) == [], "neither the final nor a temporary folder is left"


BENCHMARK_KEYS = {
    "intrinsics": ["image_resolution_x_px", "image_resolution_y_px", "focal_length_mm", "sensor_size_mm", "fstop"],
    "extrinsics": ["num_cams_x", "num_cams_y", "baseline_mm", "focus_distance_m", "center_cam_x_m",
                   "center_cam_y_m", "center_cam_z_m", "center_cam_rx_rad", "center_cam_ry_rad", "center_cam_rz_rad"],
    "meta": ["disp_min", "disp_max", "frustum_disp_min", "frustum_disp_max", "depth_map_scale", "scene",
             "category", "date", "version", "authors", "contact"],
}


def _benchmark_depth2disp(p, depth_m):
    """The benchmark's conversion (lightfield-analysis evaluation toolkit, BaseScene.depth2disp)."""
    w, h = int(p["intrinsics"]["image_resolution_x_px"]), int(p["intrinsics"]["image_resolution_y_px"])
    f = float(p["extrinsics"]["baseline_mm"]) / 1000.0 * float(p["intrinsics"]["focal_length_mm"]) * max(w, h)
    fd = float(p["extrinsics"]["focus_distance_m"])
    return (f * fd / depth_m - f) / fd / float(p["intrinsics"]["sensor_size_mm"])


def test_export_lightfield_is_the_benchmark_layout(generated, tmp_path):
    out = tmp_path / "lf"
    r = run_cli("export", "lightfield", generated, "--out", out, "--all-disparities")
    assert r.returncode == 0, r.stderr
    reader = Reader(generated)
    rows, cols = reader.grid
    for index in reader.scene_indices:
        folder = out / reader.split_of(index) / f"{index:07d}"
        names = sorted(p.name for p in folder.iterdir())
        n = rows * cols
        assert names == sorted([f"input_Cam{k:03d}.png" for k in range(n)]
                               + [f"gt_disp_lowres_Cam{k:03d}.pfm" for k in range(n)]
                               + ["parameters.cfg", "gt_depth_lowres.pfm", "gt_disp_lowres.pfm"])
        for u in range(rows):
            for v in range(cols):
                png = np.asarray(Image.open(io.BytesIO((folder / f"input_Cam{u * cols + v:03d}.png").read_bytes())))
                assert np.array_equal(png, reader.image(index, u, v)), "row-major, lossless"
        p = configparser.ConfigParser()
        p.read(folder / "parameters.cfg")
        for section, keys in BENCHMARK_KEYS.items():
            assert sorted(p[section]) == sorted(keys), section
        scene = reader.scene(index)
        rig = scene["rig"]
        cu, cv = rows // 2, cols // 2
        depth = export_lightfield.read_pfm(folder / "gt_depth_lowres.pfm")
        assert np.array_equal(depth, reader.output("depth", index, cu, cv).astype(np.float32))
        raw = (folder / "gt_depth_lowres.pfm").read_bytes()
        assert raw.startswith(b"Pf\n") and b"\n-1.0\n" in raw[:40]
        # bottom row first: the file's first row of values is the image's last row
        body = np.frombuffer(raw[raw.index(b"-1.0\n") + 5:], "<f4").reshape(depth.shape)
        assert np.array_equal(body[0], depth[-1])
        disp = export_lightfield.read_pfm(folder / "gt_disp_lowres.pfm")
        surface = np.isfinite(depth)
        want = _benchmark_depth2disp(p, depth[surface].astype(np.float64))
        assert np.allclose(disp[surface], want, rtol=1e-5, atol=1e-5), "the benchmark's own depth2disp"
        assert math.isclose(float(p["meta"]["disp_max"]), float(disp[surface].max()), rel_tol=1e-6)
        assert np.array_equal(export_lightfield.read_pfm(folder / f"gt_disp_lowres_Cam{cu * cols + cv:03d}.pfm"), disp)
        # Sign: an object nearer than the focus plane (d > 0) moves left in views to the right.
        for obj in scene["objects"]:
            (x0, y0), z = lightfield.project(rig, cu, cv, obj["position"])
            d = float(_benchmark_depth2disp(p, z))
            (x1, y1), _ = lightfield.project(rig, cu + 1, cv + 1, obj["position"])
            assert math.isclose(x1, x0 - d, abs_tol=1e-6) and math.isclose(y1, y0 - d, abs_tol=1e-6)
        # The centre camera's pose: position and Blender XYZ Euler angles.
        cam = lightfield.blender_camera(rig, cu, cv)
        assert np.allclose([float(p["extrinsics"][f"center_cam_{a}_m"]) for a in "xyz"], cam["location"])
        rx, ry, rz = (float(p["extrinsics"][f"center_cam_r{a}_rad"]) for a in "xyz")

        def rot(axis, a):
            c, s = math.cos(a), math.sin(a)
            m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
                 "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
            return np.array(m)

        assert np.allclose(rot("z", rz) @ rot("y", ry) @ rot("x", rx), cam["rotation_matrix"], atol=1e-9)
        assert int(p["extrinsics"]["num_cams_x"]) == cols and float(p["extrinsics"]["baseline_mm"]) == rig["baseline"] * 1000
    assert json.loads((generated / "manifest.json").read_text())["scenes"] == len(reader.scene_indices)
