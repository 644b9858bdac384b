import json
import os.path as osp
import pickle

import h5py
import numpy as np
import pytest
from conftest import run_cli
from pycocotools import mask as mask_utils

from clevr_remv.data import Reader, RefexpDataset, resolve_views
from clevr_remv.store import files
from clevr_remv.tools.export import export_coco, export_refcoco

pytestmark = pytest.mark.render


def _valid_pairs(root, split, views):
    n = 0
    for e in files.read_json(root / "manifest.json")["shards"]:
        if e["split"] != split:
            continue
        with h5py.File(root / e["path"], "r") as f:
            valid = f["refexps/valid_views"][()]
            n += sum(int(valid[:, u, v].sum()) for u, v in views)
    return n


def test_reader_random_access(generated):
    r = Reader(generated)
    assert r.scene_indices == list(range(6))
    assert r.scenes_in("train") == [0, 1, 2, 3] and r.split_of(5) == "test"
    rec = r.scene(4)
    assert rec["index"] == 4
    view = r.view(4, 0, 2)
    assert view["image"].shape == (64, 96, 3) and view["instances"].shape == (64, 96)
    obj = int(np.argmax(view["visible_pixels"]))
    assert r.object_mask(4, obj, 0, 2).sum() == view["visible_pixels"][obj]
    with pytest.raises(KeyError):
        r.scene(99)
    exprs = r.expressions("val")
    assert exprs and all(e["scene"] == 4 for e in exprs)


def test_views_resolve():
    assert resolve_views("center", (9, 9)) == [(4, 4)]
    assert resolve_views("corners", (9, 9)) == [(0, 0), (0, 8), (8, 0), (8, 8)]
    assert len(resolve_views("all", (3, 3))) == 9
    assert resolve_views([(1, 2)], (3, 3)) == [(1, 2)]
    with pytest.raises(ValueError):
        resolve_views([(3, 0)], (3, 3))
    with pytest.raises(ValueError):
        resolve_views("middle", (3, 3))


@pytest.mark.parametrize("views", ["center", "corners", "all"])
def test_dataset_items_are_exactly_the_valid_pairs(generated, views):
    ds = RefexpDataset(generated, split="train", views=views)
    sel = resolve_views(views, (3, 3))
    assert len(ds) == _valid_pairs(generated, "train", sel) > 0
    reader = Reader(generated)
    for i in range(0, len(ds), max(1, len(ds) // 15)):
        s = ds[i]
        assert s["image"].dtype == np.uint8 and s["image"].shape == (64, 96, 3)
        assert s["mask"].dtype == bool and s["mask"].any()
        assert np.array_equal(s["mask"], reader.instances(s["scene"], *s["view"]) == s["object"] + 1)
        assert tuple(s["view"]) in sel and isinstance(s["text"], str)


def test_dataloader_with_two_workers(generated):
    torch = pytest.importorskip("torch")  # installed by the test extra; optional for users
    from torch.utils.data import DataLoader

    def to_tensors(s):
        return {"image": torch.from_numpy(s["image"]).permute(2, 0, 1), "mask": torch.from_numpy(s["mask"]),
                "text": s["text"], "scene": s["scene"], "object": s["object"],
                "u": s["view"][0], "v": s["view"][1]}

    ds = RefexpDataset(generated, split="train", views="all", transform=to_tensors)
    ds[0]  # opens files in the parent first: workers must not inherit the handles
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False, persistent_workers=False)
    seen = 0
    reader = Reader(generated)
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 64, 96) and batch["image"].dtype == torch.uint8
        for j in range(len(batch["text"])):
            m = batch["mask"][j].numpy()
            assert m.any()
            truth = reader.instances(int(batch["scene"][j]), int(batch["u"][j]), int(batch["v"][j])) == int(batch["object"][j]) + 1
            assert np.array_equal(m, truth)
        seen += len(batch["text"])
    assert seen == len(ds) == _valid_pairs(generated, "train", resolve_views("all", (3, 3)))


def test_unknown_split_is_explained(generated):
    with pytest.raises(ValueError, match="have"):
        RefexpDataset(generated, split="holdout")


def _refer_like(root, dataset="refcoco", split_by="unc"):
    """What lichengunc/refer's REFER.__init__/createIndex/getMask do, step for step."""
    data_dir = osp.join(root, dataset)
    image_dir = osp.join(root, "images/mscoco/images/train2014")
    refs = pickle.load(open(osp.join(data_dir, f"refs({split_by}).p"), "rb"))
    instances = json.load(open(osp.join(data_dir, "instances.json")))
    anns = {a["id"]: a for a in instances["annotations"]}
    imgs = {i["id"]: i for i in instances["images"]}
    cats = {c["id"]: c["name"] for c in instances["categories"]}
    out = []
    for ref in refs:
        ann = anns[ref["ann_id"]]
        image = imgs[ref["image_id"]]
        assert ref["category_id"] in cats
        seg = ann["segmentation"]
        if type(seg[0]) == list:  # noqa: E721 - as refer.py tests it
            rle = mask_utils.frPyObjects(seg, image["height"], image["width"])
        else:
            rle = seg
        m = np.sum(mask_utils.decode(rle), axis=2).astype(np.uint8)
        assert sum(mask_utils.area(rle)) == ann["area"]
        assert osp.exists(osp.join(image_dir, image["file_name"]))
        for sent in ref["sentences"]:
            assert sent["tokens"] and sent["sent"] and sent["raw"] and "sent_id" in sent
        out.append((ref, image, m))
    return out


def test_refcoco_export_round_trip(generated, tmp_path):
    out = tmp_path / "refcoco_export"
    counts = export_refcoco(generated, out, views="corners")
    loaded = _refer_like(out)
    assert len(loaded) == counts["refs"] > 0
    reader = Reader(generated)
    sentences = 0
    for ref, image, m in loaded:
        u, v = ref["view"]
        truth = reader.object_mask(ref["scene"], ref["object"], u, v)
        assert np.array_equal(m.astype(bool), truth), "RLE decodes to the exact target mask"
        assert image["view"] == [u, v] and (u, v) in [(0, 0), (0, 2), (2, 0), (2, 2)]
        sentences += len(ref["sentences"])
    splits = {ref["split"] for ref, _, _ in loaded}
    assert splits <= {"train", "val", "test"} and "train" in splits
    # Every valid (expression, corner view) pair is one sentence.
    pairs = sum(_valid_pairs(generated, s, resolve_views("corners", (3, 3))) for s in ("train", "val", "test"))
    assert sentences == counts["sentences"] == pairs


def test_coco_export_round_trip(generated, tmp_path):
    out = tmp_path / "coco_export"
    counts = export_coco(generated, out, views="center")
    reader = Reader(generated)
    from pycocotools.coco import COCO

    seen = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        for img_id, img in coco.imgs.items():
            u, v = img["view"]
            inst = reader.instances(img["scene"], u, v)
            for ann in coco.imgToAnns[img_id]:
                assert np.array_equal(coco.annToMask(ann).astype(bool), inst == ann["object"] + 1)
                seen += 1
            visible = {int(k) - 1 for k in np.unique(inst) if k}
            assert visible == {a["object"] for a in coco.imgToAnns[img_id]}
    assert seen == counts["annotations"] > 0


def test_export_cli_refuses_nonempty_and_bad_views(generated, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    r = run_cli("export", "refcoco", generated, busy)
    assert r.returncode == 2 and "not empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("export", "coco", generated, tmp_path / "c", "--views", "9,9")
    assert r.returncode == 2 and "outside" in r.stderr
    r = run_cli("export", "refcoco", generated, tmp_path / "ok", "--views", "1,1;0,0")
    assert r.returncode == 0, r.stderr
