import json
import math

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from clevr_remv import metrics
from clevr_remv.data import Reader
from clevr_remv.scene import lightfield


def test_iou_and_summary_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True                       # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, :3] = True                     # 6 pixels, 4 shared
    assert metrics.iou(pred, gt) == pytest.approx(4 / 6)
    assert metrics.iou(gt, gt) == 1.0
    assert metrics.iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert metrics.iou(np.zeros_like(gt), gt) == 0.0
    # Two samples: (I, U) = (4, 6) and (1, 4): mIoU = (2/3 + 1/4)/2, oIoU = 5/10.
    s = metrics.summary([4, 1], [6, 4])
    assert s["mIoU"] == pytest.approx((2 / 3 + 0.25) / 2)
    assert s["oIoU"] == pytest.approx(0.5)
    assert s["P@0.5"] == 0.5 and s["P@0.6"] == 0.5 and s["P@0.7"] == 0.0
    assert metrics.precision_at([0.5, 0.49])[0.5] == 0.5, "P@K counts IoU >= K"
    with pytest.raises(ValueError):
        metrics.iou(np.zeros((2, 2)), np.zeros((3, 3)))


def test_mvr_perfect_is_zero():
    assert metrics.multi_view_robustness(np.ones((9, 9))) == 0.0
    assert metrics.multi_view_robustness(np.full((9, 9), 0.7)) == 0.0


def test_mvr_by_hand_on_the_four_corners():
    grid = np.full((9, 9), np.nan)
    grid[4, 4] = 0.8
    grid[0, 0], grid[0, 8], grid[8, 0], grid[8, 8] = 0.4, 0.6, 0.8, 0.72
    # Q = 0.5, 0.75, 1.0, 0.9; distance 8 from the centre for each corner.
    expected = -(0.5 * math.log(0.5) + 0.75 * math.log(0.75) + 0.0 + 0.9 * math.log(0.9)) / 8
    assert expected == pytest.approx(0.0821449, abs=1e-7)
    corners = lightfield.corner_views((9, 9))
    assert corners == [(0, 0), (0, 8), (8, 0), (8, 8)], "the source's I_11, I_19, I_91, I_99"
    assert metrics.multi_view_robustness(grid, corners) == pytest.approx(expected)
    assert metrics.multi_view_robustness(grid) == pytest.approx(expected), "NaN views are left out"
    # A neighbour at Manhattan distance 1 weighs eight times more than a corner.
    grid[4, 5] = 0.4
    assert metrics.multi_view_robustness(grid) == pytest.approx(expected - 0.5 * math.log(0.5))
    assert metrics.multi_view_robustness(grid, corners) == pytest.approx(expected), "subset honoured"


def test_mvr_edge_cases():
    grid = np.full((3, 3), 0.5)
    grid[1, 1] = 0.0
    assert math.isnan(metrics.multi_view_robustness(grid)), "zero central IoU: undefined"
    grid[1, 1] = np.nan
    assert math.isnan(metrics.multi_view_robustness(grid))
    grid = np.full((3, 3), 0.5)
    grid[0, 0] = 0.0
    assert metrics.multi_view_robustness(grid) == 0.0, "Q = 0 contributes 0 (the limit of Q log Q)"
    grid = np.full((3, 3), 0.5)
    grid[0, 1] = 1.0  # better than the centre: Q = 2, Q log Q > 0 lowers MVR
    assert metrics.multi_view_robustness(grid) == pytest.approx(-2 * math.log(2))
    with pytest.raises(ValueError):
        metrics.multi_view_robustness(np.ones(9))


@pytest.mark.render
def test_evaluate_end_to_end_with_the_baseline(generated, tmp_path):
    pred = tmp_path / "pred.h5"
    r = run_cli("baseline", generated, pred, "--split", "train")
    assert r.returncode == 0, r.stderr
    report = tmp_path / "report"
    r = run_cli("evaluate", generated, "--predictions", pred, "--split", "train", "--report", report)
    assert r.returncode == 0, r.stderr
    for heading in ("Central view", "P@0.5", "mIoU", "oIoU", "I_11", "I_13", "I_31", "I_33", "Average", "SD", "MVR"):
        assert heading in r.stdout
    res = json.loads((report / "evaluation.json").read_text())
    assert res["missing"] == 0 and res["pairs"] > 0
    # The expected score, from the programs (not the sentences): the oracle predicts every
    # object with the target's own attributes, so a misread sentence changes this number.
    reader = Reader(generated)
    ious = []
    for e in reader.expressions("train"):
        rec = reader.scene(e["scene"])
        target_attrs = [n["attrs"] for n in json.loads(_program(generated, e))
                        if n["op"] == "filter"][-1]
        ids = [k + 1 for k, o in enumerate(rec["objects"]) if all(o[a] == v for a, v in target_attrs.items())]
        for u in range(3):
            for v in range(3):
                if e["valid_views"][u, v]:
                    inst = reader.instances(e["scene"], u, v)
                    ious.append(metrics.iou(np.isin(inst, ids), inst == e["object"] + 1))
    assert res["pairs"] == len(ious)
    assert res["overall"]["mIoU"] == pytest.approx(float(np.mean(ious)), abs=1e-9)
    assert np.isfinite(np.array(res["per_view_oIoU"], float)).all()
    img = Image.open(report / "iou_heatmap.png")
    assert img.size[0] > 100 and img.size[1] > 100


def _program(root, e):
    import h5py

    reader = Reader(root)
    with h5py.File(root / reader.shards[e["shard"]]["path"], "r") as f:
        return f["refexps/program"][e["row"]]


@pytest.mark.render
def test_evaluate_perfect_png_predictions(generated, tmp_path):
    reader = Reader(generated)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for e in reader.expressions("train"):
        for u in range(3):
            for v in range(3):
                if e["valid_views"][u, v]:
                    m = reader.object_mask(e["scene"], e["object"], u, v)
                    Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{e['id']}_{u}_{v}.png")
    from clevr_remv.tools.evaluate import evaluate

    res = evaluate(generated, folder, "train", "all")
    assert res["overall"]["mIoU"] == 1.0 and res["overall"]["oIoU"] == 1.0
    assert res["overall"]["P@0.9"] == 1.0
    assert res["MVR_corners_oIoU"] == 0.0 and res["MVR_all_oIoU"] == 0.0
    # Remove one prediction: it scores as empty and is counted.
    next(folder.iterdir()).unlink()
    res = evaluate(generated, folder, "train", "all")
    assert res["missing"] == 1 and res["overall"]["mIoU"] < 1.0


@pytest.mark.render
def test_evaluate_bad_predictions(generated, tmp_path):
    r = run_cli("evaluate", generated, "--predictions", tmp_path / "nope.h5")
    assert r.returncode == 2 and "do not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    r = run_cli("evaluate", generated, "--predictions", junk)
    assert r.returncode == 2 and "not an HDF5 file" in r.stderr
