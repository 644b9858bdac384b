"""Chunks compressed in threads are the bytes HDF5's own filters store (issue 10)."""

import threading
import time

import h5py
import numpy as np
import pytest

from clevr_remv import shards, view_codec


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb[:16] = 87  # flat regions, like a render
    ids = np.zeros((32, 48), np.uint8)
    ids[5:20, 10:30] = 3
    depth = np.full((32, 48), np.inf, np.float32)
    depth[8:] = rng.uniform(5, 15, (24, 48)).astype(np.float32)
    normals = rng.uniform(-1, 1, (32, 48, 3)).astype(np.float16)
    return {"rgb": rgb, "ids": ids, "depth": depth, "normals": normals}


@pytest.mark.parametrize("level", [1, 4, 9])
def test_thread_chunks_are_byte_identical_to_the_filter(tmp_path, level):
    arrays = _arrays(level)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        for name, arr in arrays.items():
            floating = arr.dtype.kind == "f"
            kw = shards.compression_kwargs("gzip", level, floating=floating)
            ds = f.create_dataset(name, (2,) + arr.shape, arr.dtype, chunks=(1,) + arr.shape, **kw)
            assert view_codec.gzip_spec(ds) == (level, floating)
            ds[0] = arr  # through h5py's filter pipeline
            ds.id.write_direct_chunk((1,) + (0,) * arr.ndim, view_codec.gzip_chunk(arr, level, floating))
            assert ds.id.read_direct_chunk((0,) * (arr.ndim + 1))[1] == ds.id.read_direct_chunk((1,) + (0,) * arr.ndim)[1]
            np.testing.assert_array_equal(ds[1], arr)


def test_other_pipelines_are_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        for name in ("lzf", "zstd", "none", "blosc2-lz4"):
            ds = f.create_dataset(name, (4, 4), np.float32, chunks=(2, 2), **shards.compression_kwargs(name, 3, floating=True))
            assert view_codec.gzip_spec(ds) is None


def test_pool_keeps_order_bounds_work_and_raises():
    pool = view_codec.ViewPool(3)
    seen, running, peak = [], [0], [0]
    lock = threading.Lock()

    def job(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01 * (5 - i % 5))
        with lock:
            running[0] -= 1
        return i

    for i in range(20):
        seen += pool.submit(job, i)
        assert len(pool._pending) <= 6
    seen += pool.drain()
    assert seen == list(range(20)) and peak[0] <= 3
    pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        pool.drain()
    pool.close()
    serial = view_codec.ViewPool(1)
    assert serial.submit(job, 7) == [7] and serial.drain() == []
    assert view_codec.default_threads(1, 16) == 8 and view_codec.default_threads(4, 16) == 3
    assert view_codec.default_threads(1, 2) == 1


def test_scene_writer_direct_chunks_equal_filtered_writes(tmp_path, cfg):
    """SceneWriter: a view written as driver-compressed chunks is byte-identical to the same
    view written through h5py; arrays needing a conversion go through h5py."""
    from clevr_remv import outputs

    for depth_dtype in ("float32", "float16"):
        c = {**cfg, "rig": {**cfg["rig"], "grid": 3}, "render": {**cfg["render"], "width": 48, "height": 32},
             "output": {**cfg["output"], "depth_dtype": depth_dtype}}
        a = _arrays(1)
        arrays = {"images": a["rgb"], "instances": a["ids"], "depth": a["depth"], "normals": a["normals"]}
        arrays = {o.name: arrays[o.name] for o in outputs.stored(c)}
        attrs = shards.file_attrs(c, "t", (3, 3))
        plain = shards.SceneWriter(tmp_path / f"plain-{depth_dtype}.h5", c, (3, 3), attrs)
        direct = shards.SceneWriter(tmp_path / f"direct-{depth_dtype}.h5", c, (3, 3), attrs)
        codecs = direct.chunk_codecs()
        assert set(codecs) == set(arrays)
        chunks = view_codec.encode_view_chunks(arrays, codecs)
        assert ("depth" in chunks) == (depth_dtype == "float32")
        plain.write_view(1, 2, arrays)
        direct.write_view(1, 2, arrays, chunks)
        for name in arrays:
            off = (0, 1, 2) + (0,) * (plain.f[name].ndim - 3)
            assert plain.f[name].id.read_direct_chunk(off) == direct.f[name].id.read_direct_chunk(off)
        plain.abort()
        direct.abort()


@pytest.mark.render
def test_threaded_view_work_writes_the_same_shards(tmp_path, tiny_config_file):
    """The whole pipeline with the per-view work in 3 threads and inline: identical shard bytes."""
    import json

    from conftest import run_cli

    digests = []
    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}"
        r = run_cli("generate", "--scenes", 2, "--shard-size", 2, "--out", out, "--config", tiny_config_file,
                    "--seed", 5, env={"CLEVR_REMV_VIEW_THREADS": threads})
        assert r.returncode == 0, r.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        digests.append([s["sha256"] for s in manifest["shards"]])
        rows = [json.loads(x) for x in (out / "logs" / "scenes.jsonl").read_text().splitlines()]
        assert all(row["view_work_s"] > 0 for row in rows)
    assert digests[0] == digests[1] and len(digests[0]) == 2


def test_pixel_rays_bit_identical_to_the_pixel_grid_formula():
    """outputs.pixel_rays (broadcast) equals _apply(inv(K), [x + 0.5, y + 0.5, 1]) bit for bit."""
    from clevr_remv import outputs

    rng = np.random.default_rng(3)
    for _ in range(5):
        f = rng.uniform(300, 900)
        k = np.array([[f, 0, rng.uniform(100, 380)], [0, f, rng.uniform(80, 240)], [0, 0, 1]])
        ys, xs = np.mgrid[0:64, 0:96]
        pix = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
        ref = outputs._apply(np.linalg.inv(k), pix)
        assert outputs.pixel_rays(k, 64, 96).tobytes() == ref.tobytes()


def _camera_normals_reference(world, intrinsics, world_to_camera):
    """outputs.camera_normals in its vector form (format 1.1 as first written)."""
    from clevr_remv import outputs

    world = np.asarray(world, np.float64)
    rot = np.asarray(world_to_camera, np.float64)[:3, :3]
    n = outputs._apply(rot, world)
    length = np.sqrt(n[..., 0:1] ** 2 + n[..., 1:2] ** 2 + n[..., 2:3] ** 2)
    hit = length[..., 0] > 1e-6
    n = np.where(hit[..., None], n / np.maximum(length, 1e-12), 0.0)
    ys, xs = np.mgrid[0:n.shape[0], 0:n.shape[1]]
    pix = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
    rays = outputs._apply(np.linalg.inv(np.asarray(intrinsics, np.float64)), pix)
    facing_away = n[..., 0] * rays[..., 0] + n[..., 1] * rays[..., 1] + n[..., 2] * rays[..., 2] > 0
    n[facing_away] *= -1.0
    return n


def test_camera_normals_bit_identical_to_the_vector_form():
    from clevr_remv import outputs

    rng = np.random.default_rng(7)
    for trial in range(6):
        world = rng.normal(size=(48, 64, 3)).astype(np.float32)
        world[:10] = 0.0                                  # no hit
        world[10:12] = 1e-8                               # below the hit threshold
        world[12, :5] = [0.0, 0.0, -1.0]                  # exact axes, both signs
        world[13, :5] = [0.0, 0.0, 1.0]
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        e = np.eye(4)
        e[:3, :3] = q
        e[:3, 3] = rng.normal(size=3)
        f = rng.uniform(200, 900)
        k = np.array([[f, 0, rng.uniform(10, 60)], [0, f, rng.uniform(10, 40)], [0, 0, 1]])
        got = outputs.camera_normals(world, k, e)
        ref = _camera_normals_reference(world, k, e)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert got.tobytes() == ref.tobytes(), trial
        view = {"intrinsics": k, "world_to_camera": e}
        assert outputs.get("normals").decode(world, view).tobytes() == \
            (np.round(ref / outputs.NORMAL_STEP) * outputs.NORMAL_STEP + 0.0).astype(np.float16).tobytes()
