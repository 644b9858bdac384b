"""Per-view validity of an expression: its objects visible and its relations true in that view."""

from __future__ import annotations

import numpy as np


def expression_targets(expr: dict) -> tuple[int, ...]:
    """The objects an expression names (``targets``; older records: ``object``, -1 for none)."""
    if expr.get("targets") is not None:
        return tuple(int(t) for t in expr["targets"])
    return () if expr.get("object", -1) is None or expr.get("object", -1) < 0 else (int(expr["object"]),)


def expression_anchors(expr: dict) -> tuple[int, ...]:
    """The anchors of an expression, one per hop from the target outward."""
    if expr.get("anchors") is not None:
        return tuple(int(a) for a in expr["anchors"])
    return () if expr.get("anchor") is None else (int(expr["anchor"]),)


def valid_views(expr: dict, scene: dict, visible: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """bool [U, V]: every target is visible (>= min_pixels) in the view, so is every anchor,
    and the program still picks exactly the targets with that view's own directions.  A
    no-target expression needs no object visible: it is valid wherever its program still
    picks nothing (every view of a parallel rig)."""
    from .programs import ProgramError, targets_of, uses_directions, view_directions

    rows, cols = visible.shape[:2]
    targets = expression_targets(expr)
    ok = np.ones((rows, cols), dtype=bool)
    if targets:
        for j in targets + expression_anchors(expr):
            ok &= visible[:, :, j] >= min_pixels
    rig = scene["rig"]
    if not ok.any() or not uses_directions(expr["program"]):  # loop-invariant: no view to re-check
        return ok
    for u in range(rows):
        for v in range(cols):
            if ok[u, v]:
                dirs = view_directions(rig, u, v)
                try:
                    ok[u, v] = targets_of(expr["program"], scene, dirs) == targets
                except ProgramError:
                    ok[u, v] = False
    return ok


def mark_valid_views(cfg: dict, exprs: list[dict], scene: dict, visible: np.ndarray) -> list[dict]:
    """Set ``valid_views`` on each expression of a scene from its visible-pixel table (a view
    is valid where the targets and anchors show ``expressions.min_visible_pixels``)."""
    threshold_px = cfg["expressions"]["min_visible_pixels"]
    for e in exprs:
        e["valid_views"] = valid_views(e, scene, visible, threshold_px)
    return exprs


def hidden_objects(visible, num_objects: int, min_pixels: int = 1) -> np.ndarray:
    """bool [num_objects]: the object shows fewer than ``min_pixels`` in at least one view
    (``visible``: visible-pixel counts [U, V, >= num_objects])."""
    v = np.asarray(visible)[..., :num_objects].reshape(-1, num_objects)
    return (v < min_pixels).any(axis=0)
