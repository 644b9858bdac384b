"""Segmentation metrics and the source's multi-view robustness (MVR) metric.

Definitions (the thesis, section 7.3.1, equations 7.1 to 7.4):

* IoU of one sample: |P & G| / |P | G|; both masks empty counts as 1.0 (nothing to find,
  nothing predicted).
* P@K: share of samples with IoU >= K (K = 0.5, 0.6, 0.7, 0.8, 0.9), as LAVT/CRIS count it.
* mIoU: mean of per-sample IoU.  oIoU: total intersection / total union over all samples.
* Q(u, v) = IoU(u, v) / IoU(centre), with IoU per view overall or mean (the caller's choice).
* MVR = - sum over views (u, v) != centre of  Q log Q / (|u - uc| + |v - vc|),  natural log,
  Q log Q = 0 at Q = 0 (its limit).  Lower is more robust; 0 when every view matches the
  centre.  The source reports MVR over the four corner views, in percent.

Edge cases: a zero (or missing) central IoU makes Q undefined: MVR is NaN.  Views whose IoU
is NaN (not evaluated) are left out of the sum; so are views outside ``views``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    i, u = intersection_union(pred, gt)
    return 1.0 if u == 0 else i / u


def precision_at(ious: Sequence[float], thresholds: Iterable[float] = THRESHOLDS) -> dict[float, float]:
    ious = np.asarray(ious, float)
    if ious.size == 0:
        return {k: float("nan") for k in thresholds}
    return {k: float(np.mean(ious >= k)) for k in thresholds}


def mean_iou(ious: Sequence[float]) -> float:
    ious = np.asarray(ious, float)
    return float(ious.mean()) if ious.size else float("nan")


def overall_iou(intersections: Sequence[int], unions: Sequence[int]) -> float:
    total_u = float(np.sum(unions))
    return float(np.sum(intersections)) / total_u if total_u > 0 else float("nan")


def summary(intersections: Sequence[int], unions: Sequence[int]) -> dict:
    """P@K, mIoU, oIoU and the count of a set of samples."""
    inter = np.asarray(intersections, float)
    union = np.asarray(unions, float)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    out = {"samples": int(ious.size), "mIoU": mean_iou(ious), "oIoU": overall_iou(inter, union)}
    out.update({f"P@{k}": v for k, v in precision_at(ious).items()})
    return out


def gres_summary(intersections: Sequence[int], unions: Sequence[int], pred_empty: Sequence[bool],
                 no_target: Sequence[bool]) -> dict:
    """The GRES metrics (gRefCOCO, CVPR 2023) of a set of samples.

    * gIoU: mean per-sample IoU, where a no-target sample scores 1 for an empty prediction and
      0 otherwise (as :func:`iou` does: both masks empty is 1);
    * cIoU: total intersection / total union (no-target samples add their predicted area to
      the union);
    * N-acc: share of no-target samples predicted empty; T-acc: share of samples with a target
      predicted non-empty (NaN where there is no such sample)."""
    inter = np.asarray(intersections, float)
    union = np.asarray(unions, float)
    empty = np.asarray(pred_empty, bool)
    none = np.asarray(no_target, bool)
    ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"samples": int(ious.size), "no_target_samples": int(none.sum()), "gIoU": mean_iou(ious),
            "cIoU": overall_iou(inter, union),
            "N-acc": float(empty[none].mean()) if none.any() else float("nan"),
            "T-acc": float((~empty[~none]).mean()) if (~none).any() else float("nan")}


def multi_view_robustness(iou_grid, views: Iterable[Sequence[int]] | None = None,
                          centre: Sequence[int] | None = None) -> float:
    """MVR of a U x V array of per-view IoU (equations 7.1 to 7.4).

    ``views``: the views to sum over (default: every view with a finite IoU); the source used
    the four corners, :func:`clevr_remv.scene.lightfield.corner_views`.  ``centre`` defaults to
    (U // 2, V // 2).  Returns NaN when the central IoU is zero or missing.
    """
    grid = np.asarray(iou_grid, float)
    if grid.ndim != 2:
        raise ValueError("iou_grid must be a U x V array")
    rows, cols = grid.shape
    cu, cv = centre if centre is not None else (rows // 2, cols // 2)
    c = grid[cu, cv]
    if not np.isfinite(c) or c <= 0:
        return float("nan")
    if views is None:
        views = [(u, v) for u in range(rows) for v in range(cols)]
    total = 0.0
    for u, v in views:
        if (u, v) == (cu, cv):
            continue
        x = grid[u, v]
        if not np.isfinite(x):
            continue
        q = x / c
        qlogq = 0.0 if q == 0 else q * math.log(q)
        total += qlogq / (abs(u - cu) + abs(v - cv))
    return -total
