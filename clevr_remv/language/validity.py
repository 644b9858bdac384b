"""Per-view validity of an expression: its objects visible and its relations true in that view."""

from __future__ import annotations

import numpy as np


def expression_threshold(cfg: dict) -> int:
    """Pixels the target (and anchor) of an expression must show for a view to be valid."""
    return cfg["expressions"]["min_visible_pixels"]


def valid_views(expr: dict, scene: dict, visible: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """bool [U, V]: the target is visible (>= min_pixels) in the view, so is the anchor of a
    relation, and the program still picks the target with that view's own directions."""
    from .programs import ProgramError, _uses_directions, execute, view_directions

    rows, cols = visible.shape[:2]
    ok = visible[:, :, expr["object"]] >= min_pixels
    if expr.get("anchor") is not None:
        ok &= visible[:, :, expr["anchor"]] >= min_pixels
    rig = scene["rig"]
    if not ok.any() or not _uses_directions(expr["program"]):  # loop-invariant: no view to re-check
        return ok
    for u in range(rows):
        for v in range(cols):
            if ok[u, v]:
                dirs = view_directions(rig, u, v)
                try:
                    ok[u, v] = execute(expr["program"], scene, dirs) == expr["object"]
                except ProgramError:
                    ok[u, v] = False
    return ok


def mark_valid_views(cfg: dict, exprs: list[dict], scene: dict, visible: np.ndarray) -> list[dict]:
    """Set ``valid_views`` on each expression of a scene from its visible-pixel table."""
    threshold_px = expression_threshold(cfg)
    for e in exprs:
        e["valid_views"] = valid_views(e, scene, visible, threshold_px)
    return exprs


def hidden_objects(visible, num_objects: int, min_pixels: int = 1) -> np.ndarray:
    """bool [num_objects]: the object shows fewer than ``min_pixels`` in at least one view
    (``visible``: visible-pixel counts [U, V, >= num_objects])."""
    v = np.asarray(visible)[..., :num_objects].reshape(-1, num_objects)
    return (v < min_pixels).any(axis=0)
