"""``clevr-remv evaluate``: score predicted masks against a generated dataset, the source's way.

Prediction formats (one mask per (expression, view); nonzero = the referred object):

* HDF5: a dataset at ``<expression id>/<u>_<v>`` of shape H x W (bool or integer), e.g.
  ``f["12-3/4_4"]`` for the 4th expression (0-based 3) of scene 12 in the central view of a
  9x9 rig.  Expression ids are those of :meth:`clevr_remv.data.Reader.expressions`
  ("<scene>-<k>") and the ``expression`` field of :class:`clevr_remv.data.RefexpDataset` items.
* A folder of PNGs named ``<expression id>_<u>_<v>.png`` (grayscale or RGB; nonzero pixels).

The ground truth of an expression is the union of its targets' masks (empty for a
no-target expression).  Besides the source's figures, the GRES metrics (gIoU, cIoU, N-acc,
T-acc: :func:`clevr_remv.tools.metrics.gres_summary`) overall, per view with their MVR, by
family and by number of relations.

With amodal masks in the dataset (format 1.4 on), the scores are also given by the target's
occlusion in the view (``1 - visible / amodal``, summed over several targets; buckets 0,
(0, 25%], (25%, 50%], > 50%; no-target expressions have none), in the central view, the four
corners and all evaluated views.

Every valid (expression, view) pair of the split and views asked for is scored; a missing
prediction counts as an empty mask (IoU 0) and is counted in ``missing``.  Predictions whose
key matches no expression of the split (another split's, or another key form) are named with
a few examples and the expected form: a warning when some match, :class:`NoMatch` (the command
exits 1) when none does.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from ..errors import UsageError
from ..read.reader import Reader
from ..read.views import resolve_views
from ..scene import amodal, lightfield
from . import metrics

log = logging.getLogger("clevr_remv")

_VIEW_KEY = re.compile(r"(\d+)_(\d+)")
_PNG_NAME = re.compile(r"(?P<expr>.+)_(?P<u>\d+)_(?P<v>\d+)\.png", re.IGNORECASE)
EXAMPLES = 3  # unmatched keys named in a message


class NoMatch(Exception):
    """No prediction matches an expression of the split: the scores would all be zeros."""


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

    def keys(self) -> list[tuple[str, str]]:
        """(key as written, expression id or None when the key has not the expected form) of
        every prediction: '<expression>/<u>_<v>' datasets, or '<expression>_<u>_<v>.png' files."""
        out: list[tuple[str, str | None]] = []
        if self.h5 is not None:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    expr, _, view = name.rpartition("/")
                    ok = expr and "/" not in expr and _VIEW_KEY.fullmatch(view)
                    out.append((name, expr if ok else None))
            self.h5.visititems(visit)
        else:
            for p in sorted(self.path.iterdir()):
                m = _PNG_NAME.fullmatch(p.name)
                if p.is_file() and not p.name.startswith("."):
                    out.append((p.name, m["expr"] if m else None))
        return out

    def form(self, example: str, u: int, v: int) -> str:
        if self.h5 is not None:
            return f"'<scene>-<k>/<u>_<v>' datasets, e.g. '{example}/{u}_{v}'"
        return f"'<scene>-<k>_<u>_<v>.png' files, e.g. '{example}_{u}_{v}.png'"

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
    unmatched = _unmatched(reader, preds, exprs, split, sel)
    per_view = {(u, v): ([], []) for (u, v) in sel}
    by_occ = _OcclusionScores(reader, grid)
    samples = []  # (u, v, intersection, union, prediction empty, no target, family, relations)
    missing = 0
    for e in exprs:
        for (u, v) in sel:
            if not e["valid_views"][u, v]:
                continue
            gt = reader.targets_mask(e["scene"], e["targets"], u, v)
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
            by_occ.add(e, u, v, i, un)
            samples.append((u, v, i, un, not pred.any(), not e["targets"], e["family"], e["num_relations"]))
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
        "unmatched_predictions": unmatched,
        "overall": metrics.summary(all_i, all_u),
        "centre": view_stats.get(f"{centre[0]}_{centre[1]}"),
        "corners": {k: {"oIoU": _num(o), "mIoU": _num(m)} for k, (o, m) in corner_rows.items()},
        "corner_oIoU_mean": _num(np.mean(corner_o)) if corner_o else None,
        "corner_oIoU_sd": _num(np.std(corner_o, ddof=1)) if len(corner_o) > 1 else None,
        "MVR_corners_oIoU": _mvr(o_grid, corners),
        "MVR_all_oIoU": _mvr(o_grid),
        "MVR_corners_mIoU": _mvr(m_grid, corners),
        "MVR_corners_note": _mvr_note(o_grid, corners),
        "MVR_all_note": _mvr_note(o_grid),
        "per_view_oIoU": [[_num(x) for x in row] for row in o_grid],
        "per_view_mIoU": [[_num(x) for x in row] for row in m_grid],
        "per_view": view_stats,
        "by_occlusion": by_occ.result(),
        "gres": _gres(samples, grid, corners),
    }
    reader.close()
    return result


class _OcclusionScores:
    """Intersections and unions by the target's occlusion bucket, in the centre, the corners and
    all evaluated views (datasets with amodal masks only)."""

    PLACES = ("centre", "corners", "all_views")

    def __init__(self, reader: Reader, grid):
        self.reader = reader
        self.on = reader.has_amodal()
        self.centre = (grid[0] // 2, grid[1] // 2)
        self.corners = set(lightfield.corner_views(grid))
        self.scene, self.vis, self.amodal_px = None, None, None
        self.scores = {p: {b: ([], []) for b in amodal.OCCLUSION_BUCKETS} for p in self.PLACES}

    def add(self, e: dict, u: int, v: int, i: int, un: int) -> None:
        if not self.on:
            return
        if self.scene != e["scene"]:
            self.scene = e["scene"]
            self.amodal_px = self.reader.amodal_pixels(e["scene"])
            self.vis = self.reader.visible_pixels(e["scene"])
        b = int(amodal.occlusion_bucket(amodal.targets_occlusion(self.vis[u, v], self.amodal_px[u, v], e["targets"])))
        if b < 0:
            return
        name = amodal.OCCLUSION_BUCKETS[b]
        places = ["all_views"] + (["centre"] if (u, v) == self.centre else []) + \
            (["corners"] if (u, v) in self.corners else [])
        for p in places:
            self.scores[p][name][0].append(i)
            self.scores[p][name][1].append(un)

    def result(self) -> dict | None:
        if not self.on:
            return None
        out: dict = {"buckets": list(amodal.OCCLUSION_BUCKETS)}
        for p, by in self.scores.items():
            out[p] = {}
            for b, (i, un) in by.items():
                s = metrics.summary(i, un) if i else None
                out[p][b] = {"pairs": len(i), "mIoU": _num(s["mIoU"]) if s else None,
                             "oIoU": _num(s["oIoU"]) if s else None}
        return out


def _gres(samples: list[tuple], grid, corners) -> dict:
    """GRES metrics overall, per view (gIoU, with its MVR), by family and by relations."""
    def summary(rows):
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in
                metrics.gres_summary([r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                                     [r[5] for r in rows]).items()}

    g_grid = np.full(grid, np.nan)
    for (u, v) in {(r[0], r[1]) for r in samples}:
        g_grid[u, v] = summary([r for r in samples if (r[0], r[1]) == (u, v)])["gIoU"]
    by = {}
    for key, col in (("by_family", 6), ("by_relations", 7)):
        groups: dict = {}
        for r in samples:
            groups.setdefault(str(r[col]), []).append(r)
        by[key] = {k: summary(rows) for k, rows in sorted(groups.items())}
    return {"overall": summary(samples), "per_view_gIoU": [[_num(x) for x in row] for row in g_grid],
            "MVR_corners_gIoU": _mvr(g_grid, corners), "MVR_all_gIoU": _mvr(g_grid),
            "MVR_corners_gIoU_note": _mvr_note(g_grid, corners), **by}


def _unmatched(reader: Reader, preds: Predictions, exprs: list[dict], split: str, sel) -> int:
    """How many predictions match no expression of ``split``; warns naming a few, raises
    :class:`NoMatch` when there are predictions and none matches (or there are none)."""
    ids = {e["id"] for e in exprs}
    keys = preds.keys()
    bad = [k for k, expr in keys if expr not in ids]
    e = exprs[0]
    u, v = next(((u, v) for (u, v) in sel if e["valid_views"][u, v]), sel[0])
    if keys and len(bad) < len(keys):
        if bad:
            log.warning("evaluate: %d of %d predictions match no expression of split '%s' and are "
                        "ignored (e.g. %s); expected %s", len(bad), len(keys), split,
                        ", ".join(repr(k) for k in bad[:EXAMPLES]), preds.form(e["id"], u, v))
        return len(bad)
    where = ""
    others = {}
    for x in reader.expressions():
        others.setdefault(x["id"], x["split"])
    hits = sorted({others[expr] for _, expr in keys if expr in others})
    if hits:
        where = f" (they match split {', '.join(repr(h) for h in hits)}: give --split {hits[0]})"
    what = (f"none of the {len(keys)} predictions in '{preds.path}' matches an expression of split "
            f"'{split}'{where}; e.g. {', '.join(repr(k) for k, _ in keys[:EXAMPLES])}"
            if keys else f"'{preds.path}' holds no prediction")
    raise NoMatch(f"{what}; expected {preds.form(e['id'], u, v)}")


def _num(x):
    x = float(x)
    return None if math.isnan(x) else x + 0.0  # + 0.0: no "-0.0"


def _mvr_note(grid: np.ndarray, views=None) -> str | None:
    """Why the MVR over ``views`` (default: all) is not a number, or None when it is."""
    rows, cols = grid.shape
    centre = (rows // 2, cols // 2)
    c = grid[centre]
    if not np.isfinite(c):
        return "central view not evaluated"
    if c <= 0:
        return "central IoU is 0"
    others = [(u, v) for (u, v) in (views if views is not None else np.ndindex(rows, cols))
              if (u, v) != centre and np.isfinite(grid[u, v])]
    if not others:
        return "no corner views evaluated" if views is not None else "no view besides the centre evaluated"
    return None


def _mvr(grid: np.ndarray, views=None):
    return None if _mvr_note(grid, views) else _num(metrics.multi_view_robustness(grid, views))


def _fmt(x, width=6):
    """A fraction as a percentage with 2 decimals; n/a for a view that was not evaluated."""
    return f"{'n/a' if x is None else f'{100 * x:.2f}':>{width}}"


def tables(res: dict) -> str:
    """The source's tables, every figure in percent."""
    lines = []
    ks = [f"P@{k}" for k in metrics.THRESHOLDS]
    lines.append(f"CLEVR-REMV evaluation: split {res['split']}, {res['pairs']} (expression, view) pairs"
                 + (f", {res['missing']} without prediction (scored as empty)" if res["missing"] else ""))
    lines.append("")
    lines.append("Central view (all figures in %)")
    lines.append("  " + "  ".join(f"{k:>6}" for k in ks) + "    mIoU    oIoU")
    c = res["centre"]
    if c:
        lines.append("  " + "  ".join(_fmt(c[k]) for k in ks) + f"  {_fmt(c['mIoU'])}  {_fmt(c['oIoU'])}")
    else:
        lines.append("  (central view not evaluated)")
    lines.append("")
    lines.append("Four corner views, overall IoU (all figures in %)")
    names = list(res["corners"])
    lines.append("  " + "  ".join(f"{n:>7}" for n in names) + "   Average      SD")
    lines.append("  " + "  ".join(_fmt(res["corners"][n]["oIoU"], 7) for n in names)
                 + f"    {_fmt(res['corner_oIoU_mean'])}  {_fmt(res['corner_oIoU_sd'])}")
    lines.append("")
    lines.append("MVR (corners, oIoU): " + _fmt_mvr(res["MVR_corners_oIoU"], res.get("MVR_corners_note")))
    lines.append("MVR (all evaluated views, oIoU): " + _fmt_mvr(res["MVR_all_oIoU"], res.get("MVR_all_note")))
    lines.append(MVR_SENTENCE)
    if any(x is not None and x < 0 for x in (res["MVR_corners_oIoU"], res["MVR_all_oIoU"])):
        lines.append(MVR_NEGATIVE)
    occ = res.get("by_occlusion")
    if occ:
        lines.append("")
        lines.append("By target occlusion (1 - visible/amodal), mIoU / oIoU (all figures in %; pairs)")
        lines.append("  " + f"{'':<10}" + "".join(f"{b:>24}" for b in occ["buckets"]))
        for label, key in (("centre", "centre"), ("corners", "corners"), ("all views", "all_views")):
            cells = []
            for b in occ["buckets"]:
                c = occ[key][b]
                cells.append(f"{_fmt(c['mIoU'])} / {_fmt(c['oIoU'])} ({c['pairs']})" if c["pairs"] else "-")
            lines.append("  " + f"{label:<10}" + "".join(f"{x:>24}" for x in cells))
    g = res.get("gres")
    if g:
        lines.append("")
        lines.append("GRES metrics (gIoU: a no-target pair scores 1 for an empty prediction; all figures in %)")
        lines.append(f"  {'':<28} {'pairs':>6}  {'gIoU':>6}  {'cIoU':>6}  {'N-acc':>6}  {'T-acc':>6}")
        rows = [("overall", g["overall"])] + [(f"family {k}", x) for k, x in g["by_family"].items()] \
            + [(f"relations {k}", x) for k, x in g["by_relations"].items()]
        for name, x in rows:
            lines.append(f"  {name:<28} {x['samples']:>6}  {_fmt(x['gIoU'])}  {_fmt(x['cIoU'])}  "
                         f"{_fmt(x['N-acc'])}  {_fmt(x['T-acc'])}")
        lines.append("MVR (corners, gIoU): " + _fmt_mvr(g["MVR_corners_gIoU"], g.get("MVR_corners_gIoU_note")))
    return "\n".join(lines)


MVR_SENTENCE = ("MVR is 0 when every view scores as the centre and grows as views score below it "
                "(lower is more robust).")
MVR_NEGATIVE = ("A negative MVR: those views score above the centre on balance (the centre is not "
                "the best view); it then measures how much better they do, not robustness.")


def _fmt_mvr(x, note) -> str:
    return f"n/a ({note})" if x is None else f"{100 * x:.4f}%"


HEATMAP_SIZE_IN = (7.0, 6.0)  # inches at HEATMAP_DPI: 700 x 600 pixels
HEATMAP_DPI = 100


def draw_heatmap(grid_values, title: str):
    """A matplotlib figure of per-view IoU in percent on a fixed 0-100 scale (so 45.7 and
    47.2 look alike), u (row) and v (column) axes as in the rig, a colour bar, the value in
    each cell and "n/a" (grey) for views not evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    values = np.asarray([[np.nan if x is None else 100 * x for x in row] for row in grid_values], float)
    rows, cols = values.shape
    fig = Figure(figsize=HEATMAP_SIZE_IN, dpi=HEATMAP_DPI, layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=(0.8, 0.8, 0.8))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=100.0)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("v (column, from the left)")
    ax.set_ylabel("u (row, from the top)")
    ax.set_title(title)
    size = max(6.0, min(12.0, 80.0 / max(rows, cols)))
    for u in range(rows):
        for v in range(cols):
            val = values[u, v]
            text = "n/a" if not np.isfinite(val) else f"{val:.1f}"
            ink = "black" if not np.isfinite(val) or val >= 60 else "white"
            ax.text(v, u, text, ha="center", va="center", color=ink, fontsize=size)
    fig.colorbar(im, ax=ax, label="oIoU (%), fixed scale 0-100")
    return fig


def heatmap(grid_values, path: Path, title: str = "oIoU per view (%)") -> None:
    draw_heatmap(grid_values, title).savefig(path, dpi=HEATMAP_DPI)


def write_report(res: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "evaluation.json"
    js.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    png = out_dir / "iou_heatmap.png"
    heatmap(res["per_view_oIoU"], png, f"oIoU per view (%), split {res['split']}, {res['pairs']} pairs")
    return js, png
