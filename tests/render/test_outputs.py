"""The registry of per-view outputs, and the normals it adds (format 1.1)."""

import h5py
import numpy as np
import pytest

import clevr_remv
from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.render import outputs
from clevr_remv.scene import lightfield


def _rig():
    return lightfield.make_rig([0.0, -10.0, 6.0], grid=(3, 3), baseline=1.0, width=64, height=48)


def test_registry_names_passes_and_datasets():
    names = [o.name for o in outputs.stored()]
    assert names[:4] == ["images", "instances", "depth", "normals"]
    assert outputs.render_passes(outputs.stored()) == ["use_pass_normal", "use_pass_object_index", "use_pass_z"]
    # the driver's denoiser adds Cycles' denoising-data passes (rendered, not stored)
    assert outputs.render_passes(outputs.REGISTRY) == ["cycles.denoising_store_passes", "use_pass_normal",
                                                       "use_pass_object_index", "use_pass_z"]
    n = outputs.get("normals")
    spec = n.dataset_spec({"output": {}}, 2, (3, 3), 48, 64)
    assert spec["shape"] == (2, 3, 3, 48, 64, 3) and spec["chunks"] == (1, 1, 1, 48, 64, 3)
    assert spec["dtype"] == np.float16 and spec["fillvalue"] == 0.0 and n.floating
    depth = outputs.get("depth").dataset_spec({"output": {"depth_dtype": "float16"}}, 1, (3, 3), 48, 64)
    assert depth["dtype"] == np.float16, "output.depth_dtype sets the stored dtype"
    with pytest.raises(KeyError, match="no per-view output"):
        outputs.get("albedo")


def test_a_rendered_but_unstored_output_is_not_written(monkeypatch, tmp_path):
    from clevr_remv import config
    from clevr_remv.store import schema, shards

    extra = outputs.Output("albedo", "use_pass_diffuse_color", (("DiffCol",),), lambda px, view: px, "float16",
                           (3,), stored=False)
    monkeypatch.setattr(outputs, "REGISTRY", outputs.REGISTRY + (extra,))
    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 8})
    assert extra in outputs.rendered(cfg) and extra not in outputs.stored(cfg)
    assert "use_pass_diffuse_color" in outputs.render_passes(outputs.rendered(cfg))
    assert "albedo" not in schema.shard_layout(cfg, 1, (1, 1))
    # A view that carries the rendered output is written without it.
    arrays = {"images": np.zeros((8, 16, 3), np.uint8), "instances": np.zeros((8, 16), np.uint8),
              "depth": np.ones((8, 16), np.float32), "normals": np.zeros((8, 16, 3), np.float16),
              "albedo": np.full((8, 16, 3), 0.5, np.float16),
              "amodal": np.zeros((cfg["scene"]["max_objects"], 8, 16), bool)}
    writer = shards.SceneWriter(tmp_path / "s.h5", cfg, (1, 1), {})
    writer.write_view(0, 0, arrays)
    writer.commit()
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert "albedo" not in f and {"images", "instances", "depth", "normals"} <= set(f)
        assert (f["depth"][0, 0, 0] == 1).all()


def test_camera_normals_of_the_ground_face_the_camera():
    rig = _rig()
    ks, es = lightfield.all_cameras(rig)
    k, e = ks[0, 2], es[0, 2]
    world = np.zeros((48, 64, 3))
    world[10:, :] = (0.0, 0.0, 1.0)       # ground, world +z up
    world[20:30, 20:30] = (0.0, 0.0, -1.0)  # the same plane seen with its normal flipped
    n = outputs.camera_normals(world, k, e)
    expected = e[:3, :3] @ np.array([0.0, 0.0, 1.0])
    rays = outputs.pixel_rays(k, 48, 64)
    assert (n[:10] == 0).all(), "0 where nothing is hit"
    assert np.allclose(n[10:], expected), "R @ up, and it already faces a camera above the ground"
    assert ((n[10:] * rays[10:]).sum(-1) < 0).all()
    assert np.allclose(np.linalg.norm(n[10:], axis=-1), 1.0)
    # A camera below the plane sees the other side: flipped towards it.
    below = e.copy()
    below[:3, :3] = e[:3, :3] @ np.diag([1.0, -1.0, -1.0])
    nb = outputs.camera_normals(world, k, below)
    assert ((nb[10:] * rays[10:]).sum(-1) < 0).all()


@pytest.mark.render
def test_rendered_normals_in_the_camera_frame(generated):
    r = Reader(generated)
    assert r.manifest["format_version"] == clevr_remv.FORMAT_VERSION
    checked = 0
    for index in r.scene_indices[:2]:
        for u, v in [(0, 0), (1, 1), (2, 1)]:
            view = r.view(index, u, v)
            n = view["normals"].astype(np.float64)
            assert n.dtype == np.float64 and view["normals"].dtype == np.float16
            assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=2e-3), "unit length where hit (the ground fills the view)"
            rays = outputs.pixel_rays(view["intrinsics"], *n.shape[:2])
            assert ((n * rays).sum(-1) <= 1e-3).all(), "facing the camera"
            # Ground pixels away from object edges (there a pixel's samples mix both normals;
            # Cycles' 1.5 px pixel filter reaches 2 px from an edge).
            inst = np.pad(view["instances"], 2, mode="edge")
            ground = np.ones(n.shape[:2], bool)
            for dy in range(5):
                for dx in range(5):
                    ground &= inst[dy:dy + n.shape[0], dx:dx + n.shape[1]] == 0
            up = view["world_to_camera"][:3, :3] @ np.array([0.0, 0.0, 1.0])
            assert np.allclose(n[ground], up, atol=2e-3), "the ground's normal is R @ (0, 0, 1)"
            objects = view["instances"] > 0
            assert objects.any() and not np.allclose(n[objects], up, atol=0.05), "objects have their own normals"
            checked += 1
    assert checked == 6
    with h5py.File(generated / r.shards[0]["path"], "r") as f:
        assert f["normals"].chunks[:3] == (1, 1, 1) and f["normals"].compression is not None


@pytest.mark.render
def test_refexp_dataset_gives_normals_on_request(generated):
    plain = RefexpDataset(generated, split="train")
    assert "normals" not in plain[0]
    ds = RefexpDataset(generated, split="train", outputs=("normals", "depth"))
    item = ds[0]
    assert item["normals"].shape == item["image"].shape and item["normals"].dtype == np.float16
    u, v = item["view"]
    assert np.array_equal(item["normals"], ds.reader.view(item["scene"], u, v)["normals"])
    assert np.array_equal(item["depth"], ds.reader.output("depth", item["scene"], u, v))
    with pytest.raises(KeyError):
        RefexpDataset(generated, split="train", outputs=("albedo",))
