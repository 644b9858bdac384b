"""Amodal masks in a real dataset and in the tools: the stored output, the reader, stats,
evaluate by occlusion, export coco --amodal, preview, browse, validate; old shards without them.

The render-marked tests read the session's real tiny dataset (conftest ``generated``: 6 scenes,
3x3 views at 96x64); validate's tests corrupt copies of it with h5py."""

import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import run_cli

from clevr_remv.errors import UsageError
from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.scene import amodal
from clevr_remv.store import files, shards
from clevr_remv.tools.browse import overlay_strips
from clevr_remv.tools.preview import AMODAL, dashed_outline, draw_amodal

pytestmark = pytest.mark.render


def _grow(mask):
    p = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([p[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _reseal(root):
    path = root / "manifest.json"
    m = files.read_json(path)
    for e in m["shards"]:
        e["sha256"] = shards.sha256_file(root / e["path"])
        e["bytes"] = (root / e["path"]).stat().st_size
    files.write_json_atomic(path, m)


@pytest.fixture
def copy(generated, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(generated, dst)
    return dst


@pytest.fixture
def old(copy):
    """The dataset as an older format would have written it: no amodal datasets."""
    m = files.read_json(copy / "manifest.json")
    for e in m["shards"]:
        with h5py.File(copy / e["path"], "r+") as f:
            del f["amodal"], f["amodal_pixels"]
            f.attrs["format_version"] = "1.3"
            codecs = json.loads(f.attrs["codecs"])
            codecs.pop("amodal")
            f.attrs["codecs"] = json.dumps(codecs)
    m["format_version"] = "1.3"
    files.write_json_atomic(copy / "manifest.json", m)
    _reseal(copy)
    return copy


# -- the stored output -------------------------------------------------------------------------
def test_stored_amodal_masks_hold_the_contract(generated):
    r = Reader(generated)
    assert r.has_amodal()
    k_max = r.manifest["config"]["scene"]["max_objects"]
    rows, cols = r.grid
    hidden = 0
    for index in r.scene_indices:
        n = len(r.scene(index)["objects"])
        px = r.amodal_pixels(index)
        assert px.shape == (rows, cols, k_max) and px.dtype == np.int32
        assert (px[:, :, n:] == -1).all() and (px[:, :, :n] >= 0).all()
        occ = r.occlusion(index)
        assert occ.shape == px.shape and np.isnan(occ[:, :, n:]).all()
        for u in range(rows):
            for v in range(cols):
                whole = r.output("amodal", index, u, v)
                assert whole.shape == (k_max, r.height, r.width) and whole.dtype == bool
                assert whole.sum(axis=(1, 2)).tolist() == np.maximum(px[u, v], 0).tolist()
                inst = r.instances(index, u, v)
                for k in range(n):
                    visible = inst == k + 1
                    assert not (visible & ~_grow(whole[k])).any(), (index, u, v, k)
                    assert np.array_equal(r.amodal_mask(index, k, u, v), whole[k])
                hidden += int((occ[u, v, :n] > 0.25).sum())
    assert hidden > 0, "some object is partly hidden somewhere: the masks are not just the visible ones"
    r.close()


def test_refexp_dataset_items_carry_the_targets_amodal_mask_and_occlusion(generated):
    ds = RefexpDataset(generated, "train", views="all", outputs=("amodal_mask", "occlusion"))
    plain = RefexpDataset(generated, "train", views="all")
    assert len(ds) == len(plain) > 0
    seen = []
    for i in range(0, len(ds), 7):
        item = ds[i]
        assert item["amodal_mask"].dtype == bool and item["amodal_mask"].shape == item["mask"].shape
        assert not (item["mask"] & ~_grow(item["amodal_mask"])).any()
        whole, vis = item["amodal_mask"].sum(), item["mask"].sum()
        assert item["occlusion"] == pytest.approx(max(0.0, 1 - vis / whole), abs=1e-6)
        seen.append(item["occlusion"])
    assert isinstance(seen[0], float) and max(seen) > 0


def test_old_shards_read_and_asking_them_for_amodal_is_one_line(old, tmp_path):
    r = Reader(old)
    assert not r.has_amodal()
    index = r.scene_indices[0]
    assert r.view(index, 1, 1)["image"].shape == (r.height, r.width, 3)
    with pytest.raises(UsageError, match="no amodal masks .*format 1.3.*generate it again"):
        r.occlusion(index)
    with pytest.raises(ValueError, match="amodal_mask not stored"):
        RefexpDataset(old, "train", outputs=("amodal_mask",))
    assert len(RefexpDataset(old, "train")) > 0
    res = run_cli("export", "coco", old, tmp_path / "c", "--amodal")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "no amodal masks" in res.stderr
    assert not (tmp_path / "c").exists()
    stats = run_cli("stats", old, "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["all"]["target_occlusion"] is None
    val = run_cli("validate", old)
    assert val.returncode == 0, val.stdout + val.stderr


# -- the tools ---------------------------------------------------------------------------------
def test_stats_shows_target_occlusion_centre_and_corners(generated):
    res = run_cli("stats", generated, "--json")
    assert res.returncode == 0, res.stderr
    occ = json.loads(res.stdout)["all"]["target_occlusion"]
    r = Reader(generated)
    truth = {b: 0 for b in amodal.OCCLUSION_BUCKETS}
    for e in r.expressions():
        o = r.occlusion(e["scene"])[:, :, e["object"]]
        b = amodal.occlusion_bucket(o)
        for u, v in zip(*np.nonzero(e["valid_views"] & (b >= 0))):
            truth[amodal.OCCLUSION_BUCKETS[b[u, v]]] += 1
    n = sum(truth.values())
    assert occ["all_views"]["pairs"] == n > 0
    for b in amodal.OCCLUSION_BUCKETS:
        assert occ["all_views"][b] == pytest.approx(truth[b] / n)
    assert 0 < occ["corners"]["pairs"] <= 4 * len(r.expressions())
    assert set(occ["mean_by_distance_from_centre"]) == {"0", "1", "2"}
    table = run_cli("stats", generated).stdout
    assert "target occlusion" in table and "> 50%" in table and "corners" in table


def _write_predictions(r, path, mask_of):
    with h5py.File(path, "w") as f:
        for e in r.expressions("test"):
            for u, v in zip(*np.nonzero(e["valid_views"])):
                f[f"{e['id']}/{u}_{v}"] = mask_of(e, int(u), int(v))


def test_evaluate_by_occlusion_bucket(generated, tmp_path):
    """Predicting the amodal mask scores IoU = visible / amodal: 1 in bucket 0, 0.75 to 1 in
    (0, 25%], 0.5 to 0.75 in (25%, 50%], below 0.5 above."""
    r = Reader(generated)
    pred = tmp_path / "amodal.h5"
    _write_predictions(r, pred, lambda e, u, v: r.amodal_mask(e["scene"], e["object"], u, v))
    res = run_cli("evaluate", generated, "--predictions", pred, "--split", "test", "--report", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "rep" / "evaluation.json").read_text())
    occ = out["by_occlusion"]
    assert occ["buckets"] == list(amodal.OCCLUSION_BUCKETS)
    bounds = {"0": (1.0, 1.0), "(0, 25%]": (0.75, 1.0), "(25%, 50%]": (0.5, 0.75), "> 50%": (0.0, 0.5)}
    total = 0
    for b, (lo, hi) in bounds.items():
        cell = occ["all_views"][b]
        total += cell["pairs"]
        if cell["pairs"]:
            assert lo - 1e-9 <= cell["mIoU"] <= hi + 1e-9, (b, cell)
    assert total == out["pairs"]
    assert sum(c["pairs"] for c in occ["centre"].values()) == out["centre"]["samples"]
    assert "By target occlusion" in res.stdout


def test_export_coco_amodal_loads_in_pycocotools(generated, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    res = run_cli("export", "coco", generated, tmp_path / "c", "--views", "all", "--amodal")
    assert res.returncode == 0, res.stderr
    r = Reader(generated)
    seen = hidden = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(tmp_path / "c" / "annotations" / f"instances_{split}.json"))
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            u, v = img["view"]
            whole = mask_utils.decode(ann["amodal_segmentation"]).astype(bool)
            assert np.array_equal(whole, r.amodal_mask(img["scene"], ann["object"], u, v))
            visible = coco.annToMask(ann).astype(bool)
            assert not (visible & ~_grow(whole)).any()
            assert ann["amodal_area"] == whole.sum()
            assert ann["occlude_rate"] == pytest.approx(max(0.0, 1 - visible.sum() / whole.sum()), abs=1e-5)
            hidden += int(not visible.any())
            seen += 1
    assert seen > 0
    plain = json.loads(next((tmp_path / "c" / "annotations").glob("*.json")).read_text())
    assert plain["annotations"] and "occlude_rate" in plain["annotations"][0]


def test_preview_and_browse_draw_the_amodal_outline_dashed(generated, tmp_path):
    m = np.zeros((12, 12), bool)
    m[2:10, 3:9] = True
    d = dashed_outline(m)
    ring = m & ~np.pad(m, 1)[2:, 1:-1] | m & ~np.pad(m, 1)[:-2, 1:-1] | m & ~np.pad(m, 1)[1:-1, 2:] \
        | m & ~np.pad(m, 1)[1:-1, :-2]
    assert d.any() and (d <= ring).all() and d.sum() < ring.sum(), "dashes: part of the outline"
    pic = draw_amodal(np.zeros((24, 24, 3), np.uint8), m)
    assert (pic == AMODAL).all(-1).sum() > 0
    strips = overlay_strips(np.where(m, 1, 0).astype(np.uint8), 1, wholes=m[None] | np.roll(m, 2, 0)[None])
    assert (strips[12:, :, :3] == AMODAL).all(-1).any()
    res = run_cli("preview", generated, "--scene", 0, "--out", tmp_path / "p.png")
    assert res.returncode == 0, res.stderr
    from PIL import Image
    px = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert (px == AMODAL).all(-1).sum() > 20, "the dashed outlines are drawn"


# -- validate ----------------------------------------------------------------------------------
SHARD = "train/train-00001.h5"  # scenes 2 and 3


def _validate(root):
    r = run_cli("validate", root)
    return r, [x for x in r.stdout.splitlines() if x.startswith("VIOLATION")]


def _rewrite(f, index, fn):
    """Decode one view's amodal masks, change them with ``fn`` and store them again."""
    from clevr_remv.store import schema

    codec = schema.file_codecs(f)["amodal"]
    whole = codec.decode(f["amodal"][index])
    fn(whole)
    f["amodal"][index] = codec.encode(whole)


def _corrupt_count(f):
    f["amodal_pixels"][0, 1, 1, 0] += 3
    return "amodal_pixels", "scene 2, view (1,1): object 0: amodal_pixels"


def _corrupt_absent(f):
    n = len(json.loads(f["scenes"][1])["objects"])
    _rewrite(f, (1, 0, 0), lambda w: w[n].__setitem__((slice(2, 5), slice(2, 5)), True))
    return "amodal_absent", f"scene 3, view (0,0): object {n}"


def _corrupt_subset(f):
    def cut(w):
        w[0] = False
    _rewrite(f, (0, 2, 2), cut)
    f["amodal_pixels"][0, 2, 2, 0] = 0
    return "amodal_visible", "scene 2, view (2,2): object 0"


@pytest.mark.parametrize("corrupt", [_corrupt_count, _corrupt_absent, _corrupt_subset],
                         ids=lambda c: c.__name__[9:])
def test_validate_catches_amodal_corruptions(copy, corrupt):
    with h5py.File(copy / SHARD, "r+") as f:
        kind, place = corrupt(f)
    _reseal(copy)
    r, lines = _validate(copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert any(f"VIOLATION {kind}: shard {SHARD}" in x and place in x for x in lines), lines


def test_export_hf_amodal_columns_load_in_datasets(generated, tmp_path):
    import datasets

    res = run_cli("export", "hf", generated, "--out", tmp_path / "hf", "--split", "val", "--amodal")
    assert res.returncode == 0, res.stderr
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="val")
    assert {"amodal_mask", "occlusion"} <= set(ds.column_names)
    r = Reader(generated)
    for row in ds.select(range(min(5, len(ds)))):
        whole = np.asarray(row["amodal_mask"]) > 0
        want = r.amodal_mask(row["scene"], row["targets"][0], row["u"], row["v"])
        assert np.array_equal(whole, want)
        visible = np.asarray(row["mask"]) > 0
        assert row["occlusion"] == pytest.approx(1 - visible.sum() / whole.sum(), abs=1e-5)
