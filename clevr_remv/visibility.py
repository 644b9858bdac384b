"""Visibility: how many pixels of each object a view shows, the threshold, the valid views.

One module for the rules, used by the layout's pixel check (central view of a cheap render),
the ``visible_pixels`` the shards store and the expressions' valid views (docs/scenes.md).
The storage only receives the table; the language step reads it from here, not from storage.
"""

from __future__ import annotations

import numpy as np

ABSENT = -1  # visible_pixels of an object slot the scene does not use


def threshold(cfg: dict) -> float:
    """The visible-pixel threshold, scaled from 480x320 to the configured resolution."""
    area = cfg["render"]["width"] * cfg["render"]["height"]
    return cfg["scene"]["min_pixels_per_object"] * area / (480 * 320)


def expression_threshold(cfg: dict) -> int:
    """Pixels the target (and anchor) of an expression must show for a view to be valid."""
    return cfg["expressions"]["min_visible_pixels"]


def count(instances: np.ndarray, num_objects: int) -> np.ndarray:
    """int64 [num_objects]: pixels of object k (instance id k + 1) in one view."""
    return np.bincount(np.asarray(instances).ravel(), minlength=num_objects + 1)[1:num_objects + 1]


class Table:
    """``visible_pixels`` of one scene, [U, V, max_objects] int32, filled view by view."""

    def __init__(self, grid, max_objects: int, num_objects: int):
        self.num_objects = num_objects
        self.pixels = np.full((grid[0], grid[1], max_objects), ABSENT, np.int32)

    def add(self, u: int, v: int, instances: np.ndarray) -> np.ndarray:
        counts = count(instances, self.num_objects)
        self.pixels[u, v, :self.num_objects] = counts
        return counts


def valid_views(expr: dict, scene: dict, visible: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """bool [U, V]: the target is visible (>= min_pixels) in the view, so is the anchor of a
    relation, and the program still picks the target with that view's own directions."""
    from .expressions import ProgramError, _uses_directions, execute, view_directions

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
