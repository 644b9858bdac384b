import json
import os

import h5py
import numpy as np
import pytest

from clevr_remv import FORMAT_VERSION, config
from clevr_remv.run import plan
from clevr_remv.scene import layout, lightfield, visibility
from clevr_remv.store import files, schema, shards
from clevr_remv.store.refexps import read_refexps


def _fake_scene(cfg, index, rng):
    """A real scene record with synthetic pixels (the render is tested elsewhere)."""
    rec = layout.sample_scene(cfg, 0, index)
    rows, cols = cfg["rig"]["grid"], cfg["rig"]["grid"]
    h, w = cfg["render"]["height"], cfg["render"]["width"]
    n = len(rec["objects"])
    views = {}
    for u in range(rows):
        for v in range(cols):
            normals = rng.normal(size=(h, w, 3))
            whole = np.zeros((cfg["scene"]["max_objects"], h, w), bool)
            whole[:n] = rng.random((n, h, w)) < 0.3
            views[(u, v)] = {"amodal": whole,"images": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                             "instances": rng.integers(0, n + 1, (h, w)).astype(np.uint8),
                             "depth": rng.uniform(5, 20, (h, w)).astype(np.float32),
                             "normals": (normals / np.linalg.norm(normals, axis=-1, keepdims=True)).astype(np.float16)}
    return rec, views


def _write_scene(path, cfg, grid, attrs, rec, views, refs):
    wr = shards.SceneWriter(path, cfg, grid, attrs)
    table = visibility.Table(grid, cfg["scene"]["max_objects"], len(rec["objects"]))
    whole_px = np.full(table.pixels.shape, -1, np.int32)
    for (u, v), arrays in views.items():
        wr.write_view(u, v, arrays)
        table.add(u, v, arrays["instances"])
        n = len(rec["objects"])
        whole_px[u, v, :n] = arrays["amodal"][:n].sum(axis=(1, 2))
    ks, es = lightfield.all_cameras(rec["rig"])
    wr.finish(rec, ks, es, table.pixels, refs, whole_px)
    return wr, ks


@pytest.mark.parametrize("compression", ["gzip", "lzf", "zstd", "blosc2-zstd", "none"])
def test_scene_files_assemble_into_a_shard_exactly(tmp_path, compression):
    cfg = config.load_config(overrides={"rig.grid": 3, "render.width": 40, "render.height": 24,
                                        "output.compression": compression})
    grid = (3, 3)
    rng = np.random.default_rng(1)
    attrs = schema.file_attrs(cfg, "abc", grid)
    paths, truth = [], []
    for index in (5, 6):
        rec, views = _fake_scene(cfg, index, rng)
        path = tmp_path / f"scene-{index}.h5"
        refs = [{"scene": 0, "object": 1, "text": "the big thing.", "family": "zero_hop", "num_relations": 0,
                 "program": [{"op": "scene"}], "valid_views": np.ones(grid, bool)},
                {"scene": 0, "object": -1, "text": "the red things.", "family": "no_target_zero_hop",
                 "num_relations": 0, "program": [{"op": "scene"}], "valid_views": np.ones(grid, bool),
                 "targets": [], "anchors": []},
                {"scene": 0, "object": 0, "text": "the two cubes left of it.", "family": "x",
                 "num_relations": 2, "program": [{"op": "scene"}], "valid_views": np.ones(grid, bool),
                 "targets": [0, 2], "anchors": [1, 3], "anchor": 1}]
        wr, ks = _write_scene(path, cfg, grid, attrs, rec, views, refs)
        assert not path.exists(), "no final name before commit"
        assert wr.tmp.exists() and wr.tmp.name.endswith(".tmp"), "written under its temporary name"
        wr.commit()
        assert path.exists() and not wr.tmp.exists()
        assert not list(tmp_path.glob("*.tmp")), "no temporary file left"
        paths.append(path)
        truth.append((rec, views, ks))
    final = tmp_path / "train" / "train-00000.h5"
    final.parent.mkdir()
    info = shards.assemble_shard(paths, final, cfg, grid, attrs)
    assert info["sha256"] == shards.sha256_file(final)
    assert info["bytes"] == final.stat().st_size and info["refexps"] == 6
    assert sorted(p.name for p in final.parent.iterdir()) == ["train-00000.h5"]
    if compression in ("zstd", "blosc2-zstd"):
        import hdf5plugin  # noqa: F401
    with h5py.File(final, "r") as f:
        assert f["images"].shape == (2, 3, 3, 24, 40, 3) and f["images"].chunks == (1, 1, 1, 24, 40, 3)
        assert f["instances"].dtype == np.uint8 and f["depth"].chunks == (1, 1, 1, 24, 40)
        assert f.attrs["config_digest"] == "abc" and f.attrs["format_version"] == FORMAT_VERSION
        back = read_refexps(f)
        assert [(e["targets"], e["anchors"], e["object"], e["anchor"]) for e in back[:3]] == \
            [([1], [], 1, None), ([], [], -1, None), ([0, 2], [1, 3], 0, 1)]
        assert f["refexps/targets"].dtype == h5py.vlen_dtype(np.int32)
        assert f["normals"].shape == (2, 3, 3, 24, 40, 3) and f["normals"].dtype == np.float16
        for i, (rec, views, ks) in enumerate(truth):
            for (u, v), arrays in views.items():
                for name, arr in arrays.items():
                    got = schema.read_output(f, name, (i, u, v))  # decoded: amodal is bit-packed
                    assert np.array_equal(got, arr.astype(got.dtype)), name
                assert f["amodal"].dtype == np.uint8 and f["amodal"].shape[-1] == 5, "40 pixels in 5 bytes"
                k = len(rec["objects"])
                assert np.array_equal(f["amodal_pixels"][i, u, v, :k], arrays["amodal"][:k].sum(axis=(1, 2)))
                assert (f["amodal_pixels"][i, u, v, k:] == -1).all()
                stored = f["depth"][i, u, v].astype(np.float64)  # float16 by default: bounded error
                assert f["depth"].dtype == np.float16
                assert np.abs(stored / arrays["depth"] - 1).max() <= 2.0 ** -11
                ids = arrays["instances"]
                n = len(rec["objects"])
                assert np.array_equal(f["visible_pixels"][i, u, v, :n], np.bincount(ids.ravel(), minlength=n + 1)[1:])
                assert (f["visible_pixels"][i, u, v, n:] == -1).all()
            assert json.loads(f["scenes"][i])["index"] == rec["index"]
            assert np.allclose(f["cameras/intrinsics"][i], ks)
        assert list(f["refexps/scene"][()]) == [0, 0, 0, 1, 1, 1], "expression rows point at rows of the shard"
        assert f["refexps/valid_views"].shape == (6, 3, 3)


def test_assembly_is_byte_deterministic(tmp_path):
    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 16})
    attrs = schema.file_attrs(cfg, "d", (1, 1))
    rng = np.random.default_rng(0)
    rec, views = _fake_scene(cfg, 0, rng)
    digests = []
    for k in range(2):
        p = tmp_path / f"s{k}.h5"
        wr, _ = _write_scene(p, cfg, (1, 1), attrs, rec, views, [])
        wr.commit()
        digests.append(shards.assemble_shard([p], tmp_path / f"out{k}.h5", cfg, (1, 1), attrs)["sha256"])
    assert digests[0] == digests[1]


def test_abort_leaves_nothing(tmp_path):
    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 16})
    wr = shards.SceneWriter(tmp_path / "s.h5", cfg, (1, 1), {})
    wr.abort()
    assert list(tmp_path.iterdir()) == []


def _open_files_under(folder):
    fds = "/proc/self/fd"
    out = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith(str(folder)):
            out.append(target)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_a_writer_that_fails_to_set_up_leaves_nothing(tmp_path):
    """Attributes HDF5 cannot store fail in the constructor: the temporary file is closed
    and removed, not left open on disk."""
    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 16})
    with pytest.raises(TypeError):
        shards.SceneWriter(tmp_path / "s.h5", cfg, (1, 1), {"unstorable": object()})
    assert list(tmp_path.iterdir()) == []
    assert _open_files_under(tmp_path) == []


def test_manifest_written_atomically(tmp_path, monkeypatch):
    p = tmp_path / "manifest.json"
    files.write_json_atomic(p, {"a": 1})
    files.write_json_atomic(p, {"a": 2})
    assert files.read_json(p) == {"a": 2}
    assert [x.name for x in tmp_path.iterdir()] == ["manifest.json"]

    # A crash half-way through writing (here: the disk fills after a few bytes) leaves the
    # previous manifest whole: a writer into the final name would leave it truncated.
    real_dump = json.dump

    def dump_then_fail(obj, fh, **kw):
        fh.write(json.dumps(obj, **kw)[:5])
        fh.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.json, "dump", dump_then_fail)
    with pytest.raises(OSError):
        files.write_json_atomic(p, {"a": 3, "long": "x" * 1000})
    monkeypatch.setattr(files.json, "dump", real_dump)
    assert files.read_json(p) == {"a": 2}
    assert [x.name for x in tmp_path.iterdir()] == ["manifest.json"], "the temporary file is removed"


def test_scene_file_appears_only_on_commit(tmp_path):
    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 16})
    rec, views = _fake_scene(cfg, 0, np.random.default_rng(0))
    path = tmp_path / "scene.h5"
    wr, _ = _write_scene(path, cfg, (1, 1), schema.file_attrs(cfg, "d", (1, 1)), rec, views, [])
    assert not path.exists(), "nothing under the final name before commit"
    wr.commit()
    assert path.exists() and [x.name for x in tmp_path.iterdir()] == ["scene.h5"]
    with h5py.File(path, "r") as f:  # complete and readable under its final name
        assert np.array_equal(f["images"][0, 0, 0], views[(0, 0)]["images"])


def test_split_and_shard_plan():
    ranges = plan.split_ranges(10000, {"train": 0.7, "val": 0.15, "test": 0.15})
    assert ranges == {"train": (0, 7000), "val": (7000, 8500), "test": (8500, 10000)}
    plans = plan.plan_shards(100, {"train": 0.7, "val": 0.15, "test": 0.15}, 16)
    covered = [i for p in plans for i in p.scenes]
    assert covered == list(range(100)), "every scene in exactly one shard, in order"
    assert all(p.end - p.first <= 16 for p in plans)
    assert {p.split for p in plans} == {"train", "val", "test"}
    assert plans[0].name == "train/train-00000.h5"
    assert [p.name for p in plans if p.split == "val"] == ["val/val-00000.h5"]


def test_parts_cover_all_shards_once():
    plans = plan.plan_shards(1000, {"train": 0.7, "val": 0.15, "test": 0.15}, 16)
    seen = []
    sizes = []
    for k in range(1, 5):
        mine = plan.select_part(plans, plan.parse_part(f"{k}/4"))
        seen += [p.name for p in mine]
        sizes.append(len(mine))
    assert sorted(seen) == sorted(p.name for p in plans), "every shard in exactly one part"
    assert max(sizes) - min(sizes) <= 1, "parts share the shards evenly"
    assert plan.select_part(plans, None) == plans


def test_expressions_of_a_shard_from_before_targets_read_as_one_target(tmp_path):
    # A 1.1 shard has refexps/object and refexps/anchor only: targets = [object], anchors =
    # [anchor] (none where -1).
    from clevr_remv.store.refexps import anchors, write_refexps
    refs = [{"scene": 0, "object": 2, "text": "a.", "family": "zero_hop", "num_relations": 0, "program": [],
             "valid_views": np.ones((3, 3), bool)},
            {"scene": 0, "object": 0, "text": "b.", "family": "spatial_relation", "num_relations": 1,
             "program": [], "valid_views": np.ones((3, 3), bool), "anchor": 1}]
    with h5py.File(tmp_path / "old.h5", "w") as f:
        write_refexps(f, refs, (3, 3))
        del f["refexps/targets"], f["refexps/anchors"]
    with h5py.File(tmp_path / "old.h5", "r") as f:
        back = read_refexps(f)
    assert [(e["targets"], e["anchors"]) for e in back] == [([2], []), ([0], [1])]
    # Without the anchor column either (format 1.0), the anchors come from the program.
    s = {"objects": [{"shape": "cube", "color": "red", "material": "rubber", "size": "large",
                      "position": [0, 0, 0]},
                     {"shape": "sphere", "color": "blue", "material": "metal", "size": "small",
                      "position": [-2, 0, 0]}],
         "directions": {"left": [-1, 0, 0], "right": [1, 0, 0], "front": [0, -1, 0], "behind": [0, 1, 0]}}
    prog = [{"op": "scene"}, {"op": "filter", "attrs": {"color": "red"}}, {"op": "unique"},
            {"op": "relate", "relation": "left"}, {"op": "filter", "attrs": {}}, {"op": "unique"}]
    assert anchors({"object": 1, "program": prog}, s) == [0]


def test_same_shard_allows_normals_one_storage_step_apart_and_nothing_else(tmp_path):
    """The comparison the render tests use for shards of two processes (tests/conftest.py):
    normals may differ by one 2^-10 step, nothing else may."""
    import shutil

    from conftest import NORMAL_STEP, assert_same_shard

    cfg = config.load_config(overrides={"rig.grid": 1, "render.width": 16, "render.height": 16})
    attrs = schema.file_attrs(cfg, "d", (1, 1))
    rec, views = _fake_scene(cfg, 0, np.random.default_rng(0))
    views[(0, 0)]["normals"][3, 4] = (0.5, 0.0, -0.75)
    p = tmp_path / "s.h5"
    refs = [{"scene": 0, "object": 0, "text": "the two cubes left of it.", "family": "x", "num_relations": 2,
             "program": [{"op": "scene"}], "valid_views": np.ones((1, 1), bool), "targets": [0, 2],
             "anchors": [1], "anchor": 1}]
    wr, _ = _write_scene(p, cfg, (1, 1), attrs, rec, views, refs)
    wr.commit()
    ref = tmp_path / "ref.h5"
    shards.assemble_shard([p], ref, cfg, (1, 1), attrs)

    def changed(name, index, delta):
        out = tmp_path / f"{name.replace('/', '-')}-{delta}.h5"
        shutil.copyfile(ref, out)
        with h5py.File(out, "r+") as f:
            f[name][index] = f[name][index] + delta
        assert shards.sha256_file(out) != shards.sha256_file(ref)
        return out

    assert_same_shard(ref, ref)
    assert_same_shard(changed("normals", (0, 0, 0, 3, 4, 0), NORMAL_STEP), ref)
    assert_same_shard(ref, changed("normals", (0, 0, 0, 3, 4, 2), -NORMAL_STEP))
    with h5py.File(ref, "r") as f:
        assert f["refexps/targets"].dtype.kind == "O", "variable-length columns are compared too"
    for name, index, delta in (("normals", (0, 0, 0, 3, 4, 0), 2 * NORMAL_STEP), ("depth", (0, 0, 0, 3, 4), 1.0),
                               ("images", (0, 0, 0, 3, 4, 1), 1), ("refexps/targets", 0, np.int32(1))):
        with pytest.raises(AssertionError):
            assert_same_shard(changed(name, index, delta), ref)
