"""The generalized setting end to end on a real render: stored targets and anchors, the
dataset's union masks, validate, evaluate's GRES metrics, stats' mix, and the gRefCOCO export
read by a loader written to the G_REFER API's documented behaviour."""

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import run_cli
from pycocotools import mask as mask_utils

from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.language import programs

pytestmark = pytest.mark.render


def test_shards_store_every_target_and_anchor(generated_gres):
    r = Reader(generated_gres)
    exprs = r.expressions()
    kinds = {"none": 0, "several": 0, "two_hops": 0}
    for e in exprs:
        rec = r.scene(e["scene"])
        prog = None
        assert e["object"] == (e["targets"][0] if e["targets"] else -1)
        with h5py.File(generated_gres / r.shards[e["shard"]]["path"], "r") as f:
            prog = json.loads(f["refexps/program"].asstr()[e["row"]])
            assert f["refexps/targets"].dtype == h5py.vlen_dtype(np.int32)
        assert programs.targets_of(prog, rec) == tuple(e["targets"])
        assert programs.anchors_of(prog, rec) == tuple(e["anchors"])
        kinds["none"] += not e["targets"]
        kinds["several"] += len(e["targets"]) > 1
        kinds["two_hops"] += e["num_relations"] == 2
    assert all(kinds.values()), kinds
    assert tuple(int(x) for x in r.manifest["format_version"].split(".")) >= (1, 3), "targets from 1.3 on"


def test_dataset_masks_are_the_union_of_the_targets(generated_gres):
    ds = RefexpDataset(generated_gres, split="train", views="all")
    r = ds.reader
    seen_empty = seen_multi = 0
    for i in range(len(ds)):
        s = ds[i]
        targets = [int(t) for t in s["targets"] if t >= 0]
        inst = r.instances(s["scene"], *s["view"])
        assert np.array_equal(s["mask"], np.isin(inst, np.asarray(targets) + 1))
        seen_empty += not targets and not s["mask"].any()
        seen_multi += len(targets) > 1
    assert seen_empty and seen_multi
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["targets"].shape[0] == 4 and batch["mask"].shape[0] == 4


def test_validate_accepts_it_and_catches_a_wrong_target_set(generated_gres, tmp_path):
    r = run_cli("validate", generated_gres)
    assert r.returncode == 0, r.stdout + r.stderr
    # A copy whose first several-target expression lost one target.
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(generated_gres, bad)
    reader = Reader(bad)
    e = next(x for x in reader.expressions() if len(x["targets"]) > 1)
    path = bad / reader.shards[e["shard"]]["path"]
    reader.close()
    with h5py.File(path, "r+") as f:
        f["refexps/targets"][e["row"]] = np.asarray(e["targets"][:1], np.int32)
    r = run_cli("validate", bad)
    assert r.returncode != 0 and "the stored targets are object" in r.stdout + r.stderr


def test_evaluate_gres_metrics_of_an_oracle_and_of_empty_masks(generated_gres, tmp_path):
    reader = Reader(generated_gres)
    exprs = reader.expressions("train")
    oracle, empty = tmp_path / "oracle.h5", tmp_path / "empty.h5"
    n_none = n_all = 0
    with h5py.File(oracle, "w") as fo, h5py.File(empty, "w") as fe:
        for e in exprs:
            for u, v in zip(*np.nonzero(e["valid_views"])):
                m = reader.targets_mask(e["scene"], e["targets"], u, v)
                fo[f"{e['id']}/{u}_{v}"] = m
                fe[f"{e['id']}/{u}_{v}"] = np.zeros_like(m)
                n_all += 1
                n_none += not e["targets"]
    out = {}
    for name, path in (("oracle", oracle), ("empty", empty)):
        r = run_cli("evaluate", generated_gres, "--predictions", path, "--split", "train", "--report", tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert "GRES metrics" in r.stdout and "family no_target" in r.stdout
        out[name] = json.loads((tmp_path / name / "evaluation.json").read_text())["gres"]
    o, z = out["oracle"]["overall"], out["empty"]["overall"]
    assert o["gIoU"] == 1.0 and o["cIoU"] == 1.0 and o["N-acc"] == 1.0 and o["T-acc"] == 1.0
    assert o["samples"] == n_all and o["no_target_samples"] == n_none > 0
    assert z["N-acc"] == 1.0 and z["T-acc"] == 0.0
    assert abs(z["gIoU"] - n_none / n_all) < 1e-9, "an empty prediction scores 1 only where nothing is named"
    fams = out["oracle"]["by_family"]
    assert any(k.startswith("no_target") for k in fams) and any(k.startswith("multi") for k in fams)
    assert set(out["oracle"]["by_relations"]) <= {"0", "1", "2"} and "2" in out["oracle"]["by_relations"]
    assert out["oracle"]["MVR_corners_gIoU"] == 0.0


def test_stats_report_the_mix_relations_and_words_by_family(generated_gres):
    r = run_cli("stats", generated_gres, "--json")
    assert r.returncode == 0, r.stderr
    fig = json.loads(r.stdout)["all"]
    reader = Reader(generated_gres)
    exprs = reader.expressions()
    assert fig["target_mix"] == {"single": sum(len(e["targets"]) == 1 for e in exprs),
                                 "multi": sum(len(e["targets"]) > 1 for e in exprs),
                                 "none": sum(not e["targets"] for e in exprs)}
    assert sum(fig["relations"].values()) == len(exprs) and "2" in fig["relations"]
    assert set(fig["words_by_family"]) == {e["family"] for e in exprs}
    r = run_cli("stats", generated_gres)
    assert "targets: single" in r.stdout and "words by family" in r.stdout


# -- gRefCOCO ---------------------------------------------------------------------------------
class GRefLoader:
    """What G_REFER does with the files, as its documentation and API describe it: refs from
    grefs(unc).json, anns/images/categories from instances.json, Anns[-1] = None, ann_id and
    category_id as lists; getMaskByRef(ref, merge=True) sums the decoded masks of the ref's
    annotations (segmentation: a list of RLEs, decoded to H x W x N and summed over N) and
    returns an all-zero mask with empty=True for ann_id [-1]."""

    def __init__(self, root, dataset="grefcoco", split_by="unc"):
        self.refs = json.loads((root / dataset / f"grefs({split_by}).json").read_text())
        inst = json.loads((root / dataset / "instances.json").read_text())
        self.anns = {-1: None, **{a["id"]: a for a in inst["annotations"]}}
        self.imgs = {i["id"]: i for i in inst["images"]}
        self.cats = {c["id"]: c["name"] for c in inst["categories"]}
        self.image_dir = root / "images" / "train2014"

    def get_mask(self, ann):
        m = mask_utils.decode(ann["segmentation"])
        return np.sum(m, axis=2).astype(np.uint8)

    def get_mask_by_ref(self, ref):
        if ref["ann_id"] == [-1]:
            img = self.imgs[ref["image_id"]]
            return {"mask": np.zeros((img["height"], img["width"]), np.uint8), "empty": True}
        merged = sum(self.get_mask(self.anns[a]) for a in ref["ann_id"])
        merged[merged > 1] = 1
        return {"mask": merged, "empty": False}


def test_export_grefcoco_masks_are_the_union_of_the_targets_in_every_view(generated_gres, tmp_path):
    out = tmp_path / "g"
    r = run_cli("export", "grefcoco", generated_gres, out, "--views", "all")
    assert r.returncode == 0, r.stderr
    g = GRefLoader(out)
    reader = Reader(generated_gres)
    checked = {"none": 0, "multi": 0}
    by_id = {e["id"]: e for e in reader.expressions()}
    for ref in g.refs:
        img = g.imgs[ref["image_id"]]
        assert (g.image_dir / img["file_name"]).is_file()
        u, v = img["view"]
        assert isinstance(ref["ann_id"], list) and isinstance(ref["category_id"], list)
        got = g.get_mask_by_ref(ref)
        for sent in ref["sentences"]:
            e = by_id[sent["expression"]]
            assert sent["raw"] == e["text"] and sent["tokens"] and sent["sent"] == " ".join(sent["tokens"])
            assert e["scene"] == img["scene"] and e["valid_views"][u, v]
            truth = reader.targets_mask(e["scene"], e["targets"], u, v)
            assert np.array_equal(got["mask"].astype(bool), truth)
            assert ref["no_target"] == (not e["targets"]) == got["empty"]
        if ref["no_target"]:
            assert ref["ann_id"] == [-1] and ref["category_id"] == [-1]
            checked["none"] += 1
        elif len(ref["ann_id"]) > 1:
            assert [g.cats[c] for c in ref["category_id"]] == \
                [reader.scene(img["scene"])["objects"][g.anns[a]["object"]]["shape"] for a in ref["ann_id"]]
            checked["multi"] += 1
    assert all(checked.values()), checked
    # Every valid (expression, view) pair became one sentence.
    assert sum(len(ref["sentences"]) for ref in g.refs) == sum(int(e["valid_views"].sum()) for e in by_id.values())


def test_refcoco_export_leaves_out_and_counts_the_generalized_expressions(generated_gres, tmp_path):
    r = run_cli("export", "refcoco", generated_gres, tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert "left out" in r.stderr and "export grefcoco" in r.stderr


def test_baseline_runs_on_every_family(generated_gres, tmp_path):
    pred = tmp_path / "b.h5"
    r = run_cli("baseline", generated_gres, pred, "--split", "train")
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", generated_gres, "--predictions", pred, "--split", "train", "--report", tmp_path / "e")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "e" / "evaluation.json").read_text())["gres"]
    assert res["overall"]["samples"] == sum(int(e["valid_views"].sum()) for e in Reader(generated_gres).expressions("train"))
    # Zero-hop no-target sentences name a description nothing fits: the baseline predicts empty.
    zero = res["by_family"].get("no_target_zero_hop")
    assert zero is None or zero["N-acc"] == 1.0


def test_preview_outlines_the_amodal_union_of_the_targets(generated_gres):
    """Several targets: the union of their amodal masks; no target: nothing (not slot -1)."""
    from clevr_remv.data import Reader
    from clevr_remv.tools.preview import _view_for, load_scene

    r = Reader(generated_gres)
    kinds = set()
    for index in r.scene_indices[:4]:
        data = load_scene(generated_gres, index)
        for e, outline in zip(data["expressions"], data["amodal_targets"]):
            u, v = _view_for(e["valid_views"], data["grid"])
            want = np.zeros(outline.shape, bool)
            for k in e["targets"]:
                want |= r.amodal_mask(index, k, u, v)
            assert np.array_equal(outline, want), (index, e["text"])
            kinds.add(min(len(e["targets"]), 2))
    assert kinds == {0, 1, 2}, "the scenes hold no-target, one-target and several-target expressions"
