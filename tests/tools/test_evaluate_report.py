"""evaluate: one unit (percent) in both tables, MVR n/a when it cannot be computed, and a
readable heat map on a fixed scale."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from clevr_remv.tools.evaluate import (
    HEATMAP_DPI,
    HEATMAP_SIZE_IN,
    draw_heatmap,
    heatmap,
)


def test_heatmap_has_a_fixed_scale_axes_and_a_colour_bar(tmp_path):
    grid = [[0.457, 0.472, 0.46], [0.465, None, 0.47], [0.46, 0.458, 0.471]]
    fig = draw_heatmap(grid, "oIoU per view (%), split test")
    ax, bar = fig.axes
    assert ax.images[0].get_clim() == (0.0, 100.0)  # not stretched to min/max
    assert ax.get_xlabel().startswith("v") and ax.get_ylabel().startswith("u")
    assert "0-100" in bar.get_ylabel()
    assert ax.get_title() == "oIoU per view (%), split test"
    texts = [t.get_text() for t in ax.texts]
    assert "45.7" in texts and "47.2" in texts and "n/a" in texts
    path = tmp_path / "h.png"
    heatmap([[0.5] * 9 for _ in range(9)], path)
    assert Image.open(path).size == (int(HEATMAP_SIZE_IN[0] * HEATMAP_DPI), int(HEATMAP_SIZE_IN[1] * HEATMAP_DPI))
    assert Image.open(path).size[0] >= 600


@pytest.mark.render
def test_tables_in_percent_and_mvr_na_for_the_centre_only(generated, tmp_path):
    pred = tmp_path / "pred.h5"
    assert run_cli("baseline", generated, pred, "--split", "train").returncode == 0
    report = tmp_path / "all"
    r = run_cli("evaluate", generated, "--predictions", pred, "--split", "train", "--report", report)
    assert r.returncode == 0, r.stderr
    res = json.loads((report / "evaluation.json").read_text())
    assert "Central view (all figures in %)" in r.stdout
    assert "Four corner views, overall IoU (all figures in %)" in r.stdout
    lines = r.stdout.splitlines()
    corner_row = lines[lines.index("Four corner views, overall IoU (all figures in %)") + 2].split()
    expected = [res["corners"][k]["oIoU"] for k in ("I_11", "I_13", "I_31", "I_33")]
    expected += [res["corner_oIoU_mean"], res["corner_oIoU_sd"]]
    assert corner_row == [f"{100 * x:.2f}" for x in expected]
    assert f"MVR (corners, oIoU): {100 * res['MVR_corners_oIoU']:.4f}%" in r.stdout
    assert Image.open(report / "iou_heatmap.png").size == (700, 600)

    report = tmp_path / "centre"
    r = run_cli("evaluate", generated, "--predictions", pred, "--split", "train", "--views", "center",
                "--report", report)
    assert r.returncode == 0, r.stderr
    assert "MVR (corners, oIoU): n/a (no corner views evaluated)" in r.stdout
    assert "MVR (all evaluated views, oIoU): n/a (no view besides the centre evaluated)" in r.stdout
    assert "-0.0000" not in r.stdout
    res = json.loads((report / "evaluation.json").read_text())
    assert res["MVR_corners_oIoU"] is None and res["MVR_corners_note"] == "no corner views evaluated"
    corner_row = r.stdout.splitlines()[r.stdout.splitlines().index(
        "Four corner views, overall IoU (all figures in %)") + 2].split()
    assert corner_row == ["n/a"] * 6
    assert Image.open(report / "iou_heatmap.png").size == (700, 600)
    assert np.isfinite(res["per_view_oIoU"][1][1])


def test_mvr_sentence_says_what_a_negative_value_means():
    from clevr_remv.tools.evaluate import MVR_NEGATIVE, MVR_SENTENCE, tables

    base = {"split": "test", "pairs": 9, "missing": 0, "centre": None,
            "corners": {"I_11": {"oIoU": 0.5}}, "corner_oIoU_mean": 0.5, "corner_oIoU_sd": None,
            "MVR_all_oIoU": None, "MVR_all_note": "central IoU is 0"}
    text = tables({**base, "MVR_corners_oIoU": 0.01})
    assert MVR_SENTENCE in text and MVR_NEGATIVE not in text
    text = tables({**base, "MVR_corners_oIoU": -0.01})
    assert "MVR (corners, oIoU): -1.0000%" in text
    assert MVR_NEGATIVE in text and "above the centre" in MVR_NEGATIVE


@pytest.fixture
def val_predictions(generated, tmp_path):
    pred = tmp_path / "val.h5"
    assert run_cli("baseline", generated, pred, "--split", "val").returncode == 0
    return pred


@pytest.mark.render
def test_predictions_of_another_split_exit_1_naming_them(generated, val_predictions, tmp_path):
    r = run_cli("evaluate", generated, "--predictions", val_predictions, "--split", "test",
                "--report", tmp_path / "rep")
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "match split 'val'" in err and "--split val" in err
    assert "'4-0/" in err and "expected '<scene>-<k>/<u>_<v>'" in err and "'5-0/" in err
    assert r.stdout == "" and not (tmp_path / "rep").exists()


@pytest.mark.render
def test_keys_in_another_form_exit_1_or_warn(generated, val_predictions, tmp_path):
    import h5py

    other = tmp_path / "other.h5"
    mixed = tmp_path / "mixed.h5"
    with h5py.File(val_predictions, "r") as src, h5py.File(other, "w") as o, h5py.File(mixed, "w") as m:
        for expr in src:
            for view in src[expr]:
                u, v = view.split("_")
                o[f"scene{expr}/{u}_{v}"] = src[expr][view][()]
                m[f"{expr}/{view}"] = src[expr][view][()]
        m["4-0/11"] = src["4-0"]["1_1"][()]  # no separator between u and v
    r = run_cli("evaluate", generated, "--predictions", other, "--split", "val", "--report", tmp_path / "r1")
    assert r.returncode == 1 and "'scene4-0/" in r.stderr and "expected" in r.stderr, r.stderr
    r = run_cli("evaluate", generated, "--predictions", mixed, "--split", "val", "--report", tmp_path / "r2")
    assert r.returncode == 0, r.stderr
    assert "1 of 73 predictions match no expression of split 'val'" in r.stderr and "'4-0/11'" in r.stderr
    assert json.loads((tmp_path / "r2" / "evaluation.json").read_text())["unmatched_predictions"] == 1


@pytest.mark.render
def test_an_empty_png_folder_exits_1(generated, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "5-0_1-1.png").write_bytes(b"")
    r = run_cli("evaluate", generated, "--predictions", folder, "--split", "test", "--report", tmp_path / "r")
    assert r.returncode == 1 and "'5-0_1-1.png'" in r.stderr and "'5-0_" in r.stderr, r.stderr
