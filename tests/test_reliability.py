"""Issue 12 (reliability) with real renders: damaged shards and manifests, outputs that cannot
be written, and (phase B) concurrent writers, full disks, hung workers, paths outside --out."""

import json
import shutil

import h5py
import pytest

from clevr_remv import shards
from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.errors import CorruptShardError
from conftest import TINY, listing, run_cli

pytestmark = pytest.mark.render

SMALL = ["--scenes", 6, "--shard-size", 2, "--width", 48, "--height", 32]


@pytest.fixture(scope="module")
def small_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_cfg):
    """6 scenes: train 0-3 (2 shards), val 4, test 5; 48x32, 3x3 views."""
    out = tmp_path_factory.mktemp("small") / "run"
    r = run_cli("generate", "--out", out, "--config", small_cfg, *SMALL)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run_copy(small_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_run, dst)
    return dst


def _one_line(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return lines[0]


def _patch(path, offset, data: bytes):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _flip_scene_json(path):
    """Put a byte that is not UTF-8 into the stored JSON record of the shard's first scene."""
    with h5py.File(path, "r") as f:
        text = f["scenes"][0]
    blob = path.read_bytes()
    at = blob.index(text)
    _patch(path, at + len(text) // 2, b"\xff")


def _break_image_chunk(path, row=0):
    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info_by_coord((row, 0, 0, 0, 0, 0))
    _patch(path, info.byte_offset + info.size // 2, b"\x00\xff\x13\x37" * 4)


def _flip_refexp_object(path):
    with h5py.File(path, "r") as f:
        offset = f["refexps/object"].id.get_offset()
        first = int(f["refexps/object"][0])
    _patch(path, offset, (first + 1).to_bytes(4, "little"))


# -- item 4 (reader side): a damaged shard is refused, naming it -----------------------------
def test_reader_names_a_shard_with_damaged_scene_json(run_copy):
    shard = run_copy / "train" / "train-00000.h5"
    _flip_scene_json(shard)
    r = Reader(run_copy)
    with pytest.raises(CorruptShardError, match="train-00000.h5"):
        r.scene(0)
    assert r.scene(2)["index"] == 2  # other shards still read


def test_reader_names_a_shard_with_a_damaged_chunk(run_copy):
    shard = run_copy / "val" / "val-00000.h5"
    _break_image_chunk(shard)
    r = Reader(run_copy)
    with pytest.raises(CorruptShardError, match="val-00000.h5"):
        r.image(4, 0, 0)
    ds = RefexpDataset(run_copy, split="val", views="all")
    with pytest.raises(CorruptShardError, match="val-00000.h5"):
        for i in range(len(ds)):
            ds[i]


def test_verify_on_open_catches_a_flip_the_reader_cannot_see(run_copy):
    shard = run_copy / "train" / "train-00000.h5"
    _flip_refexp_object(shard)
    RefexpDataset(run_copy, split="train")  # without verify: silently wrong masks
    with pytest.raises(CorruptShardError, match="train-00000.h5.*SHA-256"):
        RefexpDataset(run_copy, split="train", verify=True)
    with pytest.raises(CorruptShardError, match="train-00000.h5"):
        Reader(run_copy, verify=True)
    RefexpDataset(run_copy, split="val", verify=True)  # only the split's shards are checked
    r = run_cli("info", run_copy, "--verify")
    assert r.returncode == 1 and "CHECKSUM MISMATCH train/train-00000.h5" in r.stdout


def test_info_verify_reads_contents_not_only_checksums(run_copy):
    """A shard damaged before its checksum was taken (two writers at once) has a matching
    SHA-256: --verify must still find it."""
    shard = run_copy / "test" / "test-00000.h5"
    _break_image_chunk(shard)
    m = shards.read_json(run_copy / "manifest.json")
    for e in m["shards"]:
        if e["path"] == "test/test-00000.h5":
            e["sha256"] = shards.sha256_file(shard)
    shards.write_json_atomic(run_copy / "manifest.json", m)
    r = run_cli("info", run_copy, "--verify")
    assert r.returncode == 1, r.stdout
    assert "UNREADABLE test/test-00000.h5" in r.stdout
    r = run_cli("export", "coco", run_copy, run_copy.parent / "exp", "--split", "test", "--views", "all")
    line = _one_line(r, 1)
    assert "test-00000.h5" in line and "damaged" in line


# -- item 5: a damaged manifest says what to run --------------------------------------------
@pytest.mark.parametrize("text", ["{not json", "[]", '{"shards": 3}'])
def test_damaged_manifest_names_the_fix(run_copy, text):
    (run_copy / "manifest.json").write_text(text)
    line = _one_line(run_cli("info", run_copy), 2)
    assert "manifest.json" in line and "re-run the same 'clevr-remv generate'" in line


def test_manifest_with_paths_outside_is_refused(run_copy):
    m = shards.read_json(run_copy / "manifest.json")
    m["shards"][0]["path"] = "../../etc/passwd"
    shards.write_json_atomic(run_copy / "manifest.json", m)
    line = _one_line(run_cli("info", run_copy), 2)
    assert "shard path" in line


# -- item 8: export / baseline / evaluate outputs and arguments --------------------------------
def test_export_and_baseline_refuse_unknown_splits(small_run, tmp_path):
    for cmd in (["export", "coco", small_run, tmp_path / "c", "--split", "tst"],
                ["export", "refcoco", small_run, tmp_path / "r", "--split", "tst"],
                ["baseline", small_run, tmp_path / "p.h5", "--split", "tst"]):
        line = _one_line(run_cli(*cmd), 2)
        assert "unknown split 'tst'" in line
    assert listing(tmp_path) == []


def test_export_refuses_repeated_views(small_run, tmp_path):
    line = _one_line(run_cli("export", "refcoco", small_run, tmp_path / "r", "--views", "0,0;0,0"), 2)
    assert "twice" in line
    assert listing(tmp_path) == []


def test_outputs_that_cannot_be_written_are_refused_before_the_work(small_run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["export", "coco", small_run, a_file], "is a file"),
        (["export", "refcoco", small_run, a_file / "sub"], "is a file"),
        (["export", "coco", small_run, "/proc/clevr-remv-export"], "cannot write"),
        (["baseline", small_run, a_file / "p.h5"], "is a file"),
        (["baseline", small_run, "/proc/p.h5"], "cannot write"),
        (["baseline", small_run, a_file], "exists"),
    ]
    for args, mention in cases:
        line = _one_line(run_cli(*args), 2)
        assert mention in line, (args, line)
    pred = tmp_path / "pred.h5"
    assert run_cli("baseline", small_run, pred).returncode == 0
    for report, mention in ((a_file, "is a file"), (a_file / "rep", "is a file"), ("/proc/rep", "cannot write")):
        r = run_cli("evaluate", small_run, "--predictions", pred, "--report", report)
        line = _one_line(r, 2)
        assert mention in line and r.stdout == "", (report, r.stdout)  # no tables before the error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "pred.h5"]
