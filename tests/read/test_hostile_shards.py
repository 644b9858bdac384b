"""Damaged or hostile dataset folders: every reader ends with one line naming the shard, in
bounded time and memory, never an internal error, a RecursionError or a silently empty mask.
The manifest is checked against the shards' own attributes, and a shard replaced after a
dataset was made is noticed by the DataLoader workers that open it."""

import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import GEN_ARGS, run_cli

from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.errors import CorruptShardError, UsageError
from clevr_remv.read import checks
from clevr_remv.store import files, shards

pytestmark = pytest.mark.render

SHARD = "train/train-00000.h5"


def _reseal(root):
    m = files.read_json(root / "manifest.json")
    for e in m["shards"]:
        e["sha256"] = shards.sha256_file(root / e["path"])
        e["bytes"] = (root / e["path"]).stat().st_size
    files.write_json_atomic(root / "manifest.json", m)


def _set(root, name, i, value):
    """Rewrite one element of a dataset of the shard (same dtype), then reseal the checksums:
    a hostile file that matches its manifest."""
    with h5py.File(root / SHARD, "r+") as f:
        dt = f[name].dtype
        data = list(f[name][()]) if dt.kind == "O" else f[name][()]
        data[i] = value
        if h5py.check_vlen_dtype(dt) is not None and h5py.check_string_dtype(dt) is None:  # lists of ids
            ragged = np.empty(len(data), dtype=object)
            ragged[:] = [np.asarray(x, np.int32) for x in data]
            data = ragged
        del f[name]
        f.create_dataset(name, data=data if dt.kind == "O" else np.asarray(data, dt), dtype=dt)
    _reseal(root)


def _many_objects(root):
    with h5py.File(root / SHARD, "r") as f:
        rec = json.loads(f["scenes"][0])
    obj = {k: rec["objects"][0][k] for k in ("size", "color", "material", "shape")}
    return json.dumps({**rec, "objects": [obj] * 5000})


DAMAGE = {
    "program nested 200,000 deep": (lambda r: _set(r, "refexps/program", 0, "[" * 200_000 + "]" * 200_000),
                                    "nested too deeply"),
    "program [1,2,3]": (lambda r: _set(r, "refexps/program", 0, "[1,2,3]"), "not a list of at most"),
    "scene record a list": (lambda r: _set(r, "scenes", 0, "[]"), "scene record 0 is a JSON list"),
    "object 200": (lambda r: _set(r, "refexps/object", 0, 200), "refers to object 200"),
    "object -5": (lambda r: _set(r, "refexps/object", 0, -5), "refers to object -5"),
    "scene 99": (lambda r: _set(r, "refexps/scene", 0, 99), "scene row 99"),
    "targets [0, 99]": (lambda r: _set(r, "refexps/targets", 0, [0, 99]), "expression 0's targets"),
    "object -1 with a target": (lambda r: _set(r, "refexps/object", 0, -1), "refers to object -1"),
    "5,000 objects": (lambda r: _set(r, "scenes", 0, _many_objects(r)), "claims 5,000 objects"),
    "2 MB text": (lambda r: _set(r, "refexps/text", 0, "word " * 400_000), "text is 2,000,000 bytes"),
}

COMMANDS = [["stats", "{r}"], ["preview", "{r}", "--scene", 0, "--out", "{t}/p.png"],
            ["browse", "{r}", "--out", "{t}/site"], ["export", "refcoco", "{r}", "{t}/rc"],
            ["baseline", "{r}", "{t}/b.h5", "--split", "train"]]


@pytest.fixture(params=list(DAMAGE))
def hostile(request, generated, tmp_path):
    root = tmp_path / "hostile"
    shutil.copytree(generated, root)
    damage, needle = DAMAGE[request.param]
    damage(root)
    return root, needle


def test_every_reader_names_the_shard(hostile, tmp_path):
    root, needle = hostile
    for cmd in COMMANDS:
        out = tmp_path / f"out-{cmd[0]}"
        out.mkdir()
        args = [str(a).replace("{r}", str(root)).replace("{t}", str(out)) for a in cmd]
        r = run_cli(*args, timeout=120)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 1, (cmd, r.stderr[-500:])
        assert err[-1].startswith("clevr-remv: error: shard ") and SHARD in err[-1] and needle in err[-1], (cmd, err[-1])
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    r = run_cli("validate", root, timeout=120)
    assert r.returncode == 1 and "VIOLATION structure" in r.stdout and needle in r.stdout, r.stdout + r.stderr
    r = run_cli("info", root, "--verify", timeout=120)
    assert r.returncode == 1 and f"UNREADABLE {SHARD}" in r.stdout and needle in r.stdout, r.stdout
    with pytest.raises(CorruptShardError, match=needle):
        ds = RefexpDataset(root, split="train")
        [ds[i] for i in range(len(ds))]


def test_a_shard_replaced_after_the_dataset_was_made(generated, tmp_cfg_copy):
    from torch.utils.data import DataLoader

    root = tmp_cfg_copy
    ds = RefexpDataset(root, split="train")
    r = run_cli("generate", "--out", root, "--config", root.parent / "tiny.json", *GEN_ARGS[:-1], 1, "--overwrite")
    assert r.returncode == 0, r.stderr
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    with pytest.raises(CorruptShardError, match="was replaced after this dataset or reader was made") as info:
        for _ in loader:
            pass
    # torch re-raises it with the worker's traceback; the error's own message is its last line
    line = str(info.value).strip().splitlines()[-1]
    assert line.startswith("clevr_remv.errors.CorruptShardError: shard ") and "/train/train-0000" in line
    fresh = RefexpDataset(root, split="train")  # made again: reads the new run
    assert len(fresh) > 0 and fresh[0]["image"].shape == (64, 96, 3)


@pytest.fixture
def tmp_cfg_copy(generated, tmp_path, tiny_cfg):
    root = tmp_path / "run"
    shutil.copytree(generated, root)
    shutil.copyfile(tiny_cfg, tmp_path / "tiny.json")
    return root


def _edit_manifest(root, edit):
    m = files.read_json(root / "manifest.json")
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_swapped_scene_ranges_are_caught_on_open(tmp_cfg_copy):
    root = tmp_cfg_copy

    def swap(m):
        a, b = m["shards"][0], m["shards"][1]
        a["scene_range"], b["scene_range"] = b["scene_range"], a["scene_range"]
    _edit_manifest(root, swap)
    with pytest.raises(CorruptShardError, match="row 0 holds scene 2, the manifest's range says 0"):
        Reader(root).scene(0)
    r = run_cli("info", root, "--verify")
    assert r.returncode == 1 and r.stdout.count("MISMATCH train/train-0000") == 2
    assert "remove" in r.stdout and "manifest.json" in r.stdout
    (root / "manifest.json").unlink()  # what the message says: generate rebuilds it
    r = run_cli("generate", "--out", root, "--config", root.parent / "tiny.json", *GEN_ARGS)
    assert r.returncode == 0, r.stderr
    assert Reader(root).scene(0)["index"] == 0 and run_cli("info", root, "--verify").returncode == 0


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["shards"][0].update(scene_range=[0, 10 ** 12]), "outside 0-6"),
    (lambda m: m["shards"][0].pop("num_scenes"), "num_scenes is null, not 2"),
    (lambda m: m["shards"][0].update(scene_range=[0.5, 2]), "not two integers"),
    (lambda m: m["shards"][1].update(scene_range=[1, 3]), "both claim scene 1"),
    (lambda m: m.update(scenes=10 ** 12), "'scenes' is 1000000000000"),
    (lambda m: m.update(grid=[3, 10 ** 9]), "'grid' [3, 1000000000] is outside"),
])
def test_manifest_entries_are_bounded(tmp_cfg_copy, edit, needle):
    root = tmp_cfg_copy
    _edit_manifest(root, edit)
    for cmd in (["validate", root], ["stats", root], ["info", root, "--verify"]):
        r = run_cli(*cmd, timeout=60)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, (cmd, r.stderr)
    with pytest.raises(ValueError, match="not a clevr-remv manifest"):
        RefexpDataset(root)
    with pytest.raises(UsageError):
        Reader(root)


def test_generate_refuses_a_file_where_a_split_folder_goes(tmp_cfg_copy):
    root = tmp_cfg_copy
    shutil.rmtree(root / "val")
    (root / "val").write_text("not a folder")
    before = (root / "manifest.json").read_bytes()
    r = run_cli("generate", "--out", root, "--config", root.parent / "tiny.json", *GEN_ARGS)
    assert r.returncode == 2 and f"'{root / 'val'}' is not a folder" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and (root / "manifest.json").read_bytes() == before


def test_check_bounds_by_hand():
    with pytest.raises(ValueError, match="nested too deeply"):
        checks.parse_program("[" * 5000 + "]" * 5000, 0)
    assert checks.parse_program(json.dumps([{"op": "scene"}]), 0) == [{"op": "scene"}]
    with pytest.raises(ValueError, match="claims 7 objects"):
        checks.parse_record(json.dumps({"objects": [{"size": "s", "color": "c", "material": "m", "shape": "x"}] * 7}), 0, 6)
    with pytest.raises(ValueError, match="bytes, over"):
        checks.parse_record(b" " * (checks.MAX_RECORD_BYTES + 1), 0)
