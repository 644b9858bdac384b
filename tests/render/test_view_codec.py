"""Chunks compressed in threads are the bytes HDF5's own filters store (docs/benchmarks.md, driver cost per view)."""

import threading
import time

import h5py
import numpy as np
import pytest

from clevr_remv.render import codecs as view_codec
from clevr_remv.run import viewpool
from clevr_remv.store import schema, shards


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb[:16] = 87  # flat regions, like a render
    ids = np.zeros((32, 48), np.uint8)
    ids[5:20, 10:30] = 3
    depth = np.full((32, 48), np.inf, np.float32)
    depth[8:] = rng.uniform(5, 15, (24, 48)).astype(np.float32)
    normals = (np.round(rng.uniform(-1, 1, (32, 48, 3)) * 1024) / 1024).astype(np.float16)  # the stored grid
    return {"rgb": rgb, "ids": ids, "depth": depth, "normals": normals}


@pytest.mark.parametrize("level", [1, 4, 9])
def test_thread_chunks_are_byte_identical_to_the_filter(tmp_path, level):
    arrays = _arrays(level)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        for name, arr in arrays.items():
            floating = arr.dtype.kind == "f"
            kw = schema.compression_kwargs("gzip", level, floating=floating)
            ds = f.create_dataset(name, (2,) + arr.shape, arr.dtype, chunks=(1,) + arr.shape, **kw)
            assert view_codec.gzip_spec(ds) == (level, floating)
            ds[0] = arr  # through h5py's filter pipeline
            ds.id.write_direct_chunk((1,) + (0,) * arr.ndim, view_codec.gzip_chunk(arr, level, floating))
            assert ds.id.read_direct_chunk((0,) * (arr.ndim + 1))[1] == ds.id.read_direct_chunk((1,) + (0,) * arr.ndim)[1]
            np.testing.assert_array_equal(ds[1], arr)


def test_other_pipelines_are_left_to_h5py(tmp_path):
    with h5py.File(tmp_path / "b.h5", "w") as f:
        for name in ("lzf", "zstd", "none", "blosc2-lz4"):
            ds = f.create_dataset(name, (4, 4), np.float32, chunks=(2, 2), **schema.compression_kwargs(name, 3, floating=True))
            assert view_codec.gzip_spec(ds) is None


def test_pool_keeps_order_bounds_work_and_raises():
    pool = viewpool.ViewPool(3)
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
    serial = viewpool.ViewPool(1)
    assert serial.submit(job, 7) == [7] and serial.drain() == []
    assert viewpool.default_threads(1, 16) == 8 and viewpool.default_threads(4, 16) == 3
    assert viewpool.default_threads(1, 2) == 1


def test_scene_writer_direct_chunks_equal_filtered_writes(tmp_path, cfg):
    """SceneWriter: a view written as driver-compressed chunks is byte-identical to the same
    view written through h5py, float32 depth into a float16 dataset included (the codec casts
    it first, as h5py would)."""
    from clevr_remv.render import outputs

    for depth_dtype, profile in (("float32", "standard"), ("float16", "standard"), ("float16", "compact")):
        c = {**cfg, "rig": {**cfg["rig"], "grid": 3}, "render": {**cfg["render"], "width": 48, "height": 32},
             "output": {**cfg["output"], "depth_dtype": depth_dtype, "profile": profile}}
        a = _arrays(1)
        arrays = {"images": a["rgb"], "instances": a["ids"], "depth": a["depth"], "normals": a["normals"],
                  "amodal": np.random.default_rng(2).random((c["scene"]["max_objects"], 32, 48)) < 0.2}
        arrays = {o.name: arrays[o.name] for o in outputs.stored(c)}
        attrs = schema.file_attrs(c, "t", (3, 3))
        plain = shards.SceneWriter(tmp_path / f"plain-{depth_dtype}-{profile}.h5", c, (3, 3), attrs)
        direct = shards.SceneWriter(tmp_path / f"direct-{depth_dtype}-{profile}.h5", c, (3, 3), attrs)
        codecs = direct.chunk_codecs()
        assert set(codecs) == set(arrays)
        chunks = view_codec.encode_view_chunks(arrays, codecs)
        assert set(chunks) == set(arrays), "every output is encoded in the pool's threads"
        assert isinstance(chunks["images"], bytes) == (profile == "standard")
        plain.write_view(1, 2, arrays)
        direct.write_view(1, 2, arrays, chunks)
        for name in arrays:
            if not direct.codecs[name].raw_chunks:  # a WebP file in the heap: same file, same values
                assert np.array_equal(plain.f[name][0, 1, 2], direct.f[name][0, 1, 2])
                got = schema.read_output(direct.f, name, (0, 1, 2))
                assert np.array_equal(got, arrays[name].astype(got.dtype))
                continue
            off = (0, 1, 2) + (0,) * (plain.f[name].ndim - 3)
            assert plain.f[name].id.read_direct_chunk(off) == direct.f[name].id.read_direct_chunk(off)
        plain.abort()
        direct.abort()


@pytest.mark.render
def test_threaded_view_work_writes_the_same_shards(tmp_path, tiny_config_file):
    """The whole pipeline with the per-view work in 3 threads and inline: identical shards (two
    processes, so normals within one 2^-10 step; tests/conftest.py assert_same_shard)."""
    import json

    from conftest import assert_same_run, run_cli

    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}"
        r = run_cli("generate", "--scenes", 2, "--shard-size", 2, "--out", out, "--config", tiny_config_file,
                    "--seed", 5, env={"CLEVR_REMV_VIEW_THREADS": threads})
        assert r.returncode == 0, r.stderr
        assert len(json.loads((out / "manifest.json").read_text())["shards"]) == 2
        rows = [json.loads(x) for x in (out / "logs" / "scenes.jsonl").read_text().splitlines()]
        assert all(row["view_work_s"] > 0 for row in rows)
    assert_same_run(tmp_path / "t1", tmp_path / "t3")

