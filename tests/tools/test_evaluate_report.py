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
    assert f"MVR (corners, oIoU; lower is more robust): {100 * res['MVR_corners_oIoU']:.4f}%" in r.stdout
    assert Image.open(report / "iou_heatmap.png").size == (700, 600)

    report = tmp_path / "centre"
    r = run_cli("evaluate", generated, "--predictions", pred, "--split", "train", "--views", "center",
                "--report", report)
    assert r.returncode == 0, r.stderr
    assert "MVR (corners, oIoU; lower is more robust): n/a (no corner views evaluated)" in r.stdout
    assert "MVR (all evaluated views, oIoU): n/a (no view besides the centre evaluated)" in r.stdout
    assert "-0.0000" not in r.stdout
    res = json.loads((report / "evaluation.json").read_text())
    assert res["MVR_corners_oIoU"] is None and res["MVR_corners_note"] == "no corner views evaluated"
    corner_row = r.stdout.splitlines()[r.stdout.splitlines().index(
        "Four corner views, overall IoU (all figures in %)") + 2].split()
    assert corner_row == ["n/a"] * 6
    assert Image.open(report / "iou_heatmap.png").size == (700, 600)
    assert np.isfinite(res["per_view_oIoU"][1][1])
