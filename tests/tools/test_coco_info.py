"""Exports carry COCO's ``info`` record, so pycocotools' COCO(...).info() works."""

import json

import pytest
from pycocotools.coco import COCO

from clevr_remv.data import Reader
from clevr_remv.tools.export import export_coco, export_refcoco

pytestmark = pytest.mark.render


def test_coco_files_have_info_that_pycocotools_prints(generated, tmp_path, capsys):
    out = tmp_path / "coco"
    export_coco(generated, out, views="corners")
    manifest = Reader(generated).manifest
    for split in ("train", "val", "test"):
        path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        capsys.readouterr()
        coco.info()  # KeyError('info') without the key
        printed = capsys.readouterr().out
        assert f"description: CLEVR-REMV split {split}, views [[0, 0], [0, 2], [2, 0], [2, 2]] of a 3x3 rig" in printed
        info = json.loads(path.read_text())["info"]
        assert info["version"] == manifest["generator"]["version"]
        assert info["date_created"] == manifest["created"] and info["year"] == int(manifest["created"][:4])
        assert info["config_digest"] == manifest["config_digest"]
        # Results load against it too (loadRes copies info).
        anns = coco.loadAnns(coco.getAnnIds()[:2])
        res = coco.loadRes([{"image_id": a["image_id"], "category_id": a["category_id"],
                             "segmentation": a["segmentation"], "score": 1.0} for a in anns])
        assert res.dataset["info"] == info


def test_refcoco_instances_load_in_pycocotools(generated, tmp_path, capsys):
    out = tmp_path / "refcoco"
    export_refcoco(generated, out, views="center")
    coco = COCO(str(out / "refcoco" / "instances.json"))
    capsys.readouterr()
    coco.info()
    assert "description: CLEVR-REMV" in capsys.readouterr().out
