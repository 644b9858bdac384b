"""``clevr-remv evaluate``: score predicted masks against a generated dataset, the source's way.

Prediction formats (one mask per (expression, view); nonzero = the referred object):

* HDF5: a dataset at ``<expression id>/<u>_<v>`` of shape H x W (bool or integer), e.g.
  ``f["12-3/4_4"]`` for the 4th expression (0-based 3) of scene 12 in the central view of a
  9x9 rig.  Expression ids are those of :meth:`clevr_remv.data.Reader.expressions`
  ("<scene>-<k>") and the ``expression`` field of :class:`clevr_remv.data.RefexpDataset` items.
* A folder of PNGs named ``<expression id>_<u>_<v>.png`` (grayscale or RGB; nonzero pixels).

Every valid (expression, view) pair of the split and views asked for is scored; a missing
prediction counts as an empty mask (IoU 0) and is counted in ``missing``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

from . import lightfield, metrics
from .data import Reader, resolve_views
from .errors import UsageError


class Predictions:
    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UsageError(f"predictions '{path}' do not exist; give an HDF5 file or a folder of PNGs")
        self.h5 = None
        if self.path.is_file():
            try:
                self.h5 = h5py.File(self.path, "r")
            except OSError:
                raise UsageError(f"predictions '{path}' is not an HDF5 file; see 'clevr-remv evaluate --help'") from None

    def get(self, expression: str, u: int, v: int) -> np.ndarray | None:
        if self.h5 is not None:
            key = f"{expression}/{u}_{v}"
            return self.h5[key][()] != 0 if key in self.h5 else None
        p = self.path / f"{expression}_{u}_{v}.png"
        if not p.exists():
            return None
        arr = np.asarray(Image.open(p))
        return (arr.max(axis=-1) if arr.ndim == 3 else arr) != 0

    def close(self):
        if self.h5 is not None:
            self.h5.close()


def evaluate(root, predictions, split: str = "test", views="all") -> dict:
    reader = Reader(root)
    grid = reader.grid
    sel = resolve_views(views, grid)
    preds = Predictions(predictions)
    exprs = reader.expressions(split)
    if not exprs:
        have = sorted({e["split"] for e in reader.shards})
        raise UsageError(f"split '{split}' has no expressions in '{root}' (splits: {', '.join(have)})")
    per_view = {(u, v): ([], []) for (u, v) in sel}
    missing = 0
    for e in exprs:
        for (u, v) in sel:
            if not e["valid_views"][u, v]:
                continue
            gt = reader.object_mask(e["scene"], e["object"], u, v)
            pred = preds.get(e["id"], u, v)
            if pred is None:
                missing += 1
                pred = np.zeros_like(gt)
            elif pred.shape != gt.shape:
                raise UsageError(f"prediction {e['id']} view ({u}, {v}) is {pred.shape[1]}x{pred.shape[0]}, "
                                 f"the image is {gt.shape[1]}x{gt.shape[0]}; predict at the image's resolution")
            i, un = metrics.intersection_union(pred, gt)
            per_view[(u, v)][0].append(i)
            per_view[(u, v)][1].append(un)
    preds.close()
    o_grid = np.full(grid, np.nan)
    m_grid = np.full(grid, np.nan)
    view_stats = {}
    for (u, v), (i, un) in per_view.items():
        if not i:
            continue
        s = metrics.summary(i, un)
        view_stats[f"{u}_{v}"] = s
        o_grid[u, v] = s["oIoU"]
        m_grid[u, v] = s["mIoU"]
    centre = (grid[0] // 2, grid[1] // 2)
    corners = lightfield.corner_views(grid)
    corner_rows = {f"I_{u + 1}{v + 1}": (o_grid[u, v], m_grid[u, v]) for (u, v) in corners}
    corner_o = [x for x, _ in corner_rows.values() if np.isfinite(x)]
    all_i = [x for (i, _) in per_view.values() for x in i]
    all_u = [x for (_, un) in per_view.values() for x in un]
    result = {
        "split": split,
        "views": [list(x) for x in sel],
        "grid": list(grid),
        "pairs": len(all_i),
        "missing": missing,
        "overall": metrics.summary(all_i, all_u),
        "centre": view_stats.get(f"{centre[0]}_{centre[1]}"),
        "corners": {k: {"oIoU": _num(o), "mIoU": _num(m)} for k, (o, m) in corner_rows.items()},
        "corner_oIoU_mean": _num(np.mean(corner_o)) if corner_o else None,
        "corner_oIoU_sd": _num(np.std(corner_o, ddof=1)) if len(corner_o) > 1 else None,
        "MVR_corners_oIoU": _num(metrics.multi_view_robustness(o_grid, corners)),
        "MVR_all_oIoU": _num(metrics.multi_view_robustness(o_grid)),
        "MVR_corners_mIoU": _num(metrics.multi_view_robustness(m_grid, corners)),
        "per_view_oIoU": [[_num(x) for x in row] for row in o_grid],
        "per_view_mIoU": [[_num(x) for x in row] for row in m_grid],
        "per_view": view_stats,
    }
    reader.close()
    return result


def _num(x):
    x = float(x)
    return None if math.isnan(x) else x


def _fmt(x, pct=False):
    if x is None:
        return "   n/a"
    return f"{100 * x:6.2f}" if pct else f"{x:.4f}"


def tables(res: dict) -> str:
    lines = []
    ks = [f"P@{k}" for k in metrics.THRESHOLDS]
    lines.append(f"CLEVR-REMV evaluation: split {res['split']}, {res['pairs']} (expression, view) pairs"
                 + (f", {res['missing']} without prediction (scored as empty)" if res["missing"] else ""))
    lines.append("")
    lines.append("Central view (P@K and IoU in %)")
    lines.append("  " + "  ".join(f"{k:>6}" for k in ks) + "    mIoU    oIoU")
    c = res["centre"]
    if c:
        lines.append("  " + "  ".join(_fmt(c[k], True) for k in ks) + f"  {_fmt(c['mIoU'], True)}  {_fmt(c['oIoU'], True)}")
    else:
        lines.append("  (central view not evaluated)")
    lines.append("")
    lines.append("Four corner views, overall IoU")
    names = list(res["corners"])
    lines.append("  " + "  ".join(f"{n:>7}" for n in names) + "   Average       SD")
    lines.append("  " + "  ".join(f"{_fmt(res['corners'][n]['oIoU']):>7}" for n in names)
                 + f"    {_fmt(res['corner_oIoU_mean'])}   {_fmt(res['corner_oIoU_sd'])}")
    lines.append("")
    mvr = res["MVR_corners_oIoU"]
    lines.append(f"MVR (corners, oIoU; lower is more robust): {'n/a' if mvr is None else f'{100 * mvr:.4f}%'}")
    if res["MVR_all_oIoU"] is not None:
        lines.append(f"MVR (all evaluated views, oIoU): {100 * res['MVR_all_oIoU']:.4f}%")
    return "\n".join(lines)


def _viridis(t: float) -> tuple[int, int, int]:
    # A few anchor colours of matplotlib's viridis, linearly interpolated.
    stops = [(0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
             (1.0, (253, 231, 37))]
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:]):
        if t <= t1:
            a = (t - t0) / (t1 - t0)
            return tuple(int(round(c0[i] + a * (c1[i] - c0[i]))) for i in range(3))
    return stops[-1][1]


def heatmap(grid_values, path: Path, title: str = "per-view oIoU", cell: int = 56) -> None:
    values = np.asarray([[np.nan if x is None else x for x in row] for row in grid_values], float)
    rows, cols = values.shape
    top = 22
    img = Image.new("RGB", (cols * cell + 1, rows * cell + top + 1), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), title, fill=(0, 0, 0))
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    for u in range(rows):
        for v in range(cols):
            x0, y0 = v * cell, top + u * cell
            val = values[u, v]
            color = (200, 200, 200) if not np.isfinite(val) else _viridis((val - lo) / span)
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=color, outline=(255, 255, 255))
            label = "n/a" if not np.isfinite(val) else f"{val:.3f}"
            ink = (255, 255, 255) if np.isfinite(val) and (val - lo) / span < 0.6 else (0, 0, 0)
            draw.text((x0 + 6, y0 + cell // 2 - 6), label, fill=ink)
    img.save(path)


def write_report(res: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "evaluation.json"
    js.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    png = out_dir / "iou_heatmap.png"
    heatmap(res["per_view_oIoU"], png, f"oIoU per view, split {res['split']}")
    return js, png
