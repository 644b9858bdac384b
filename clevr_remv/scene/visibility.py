"""What a view shows of each object: visible-pixel counts and the layout's threshold."""

from __future__ import annotations

import numpy as np

ABSENT = -1  # visible_pixels of an object slot the scene does not use


def threshold(cfg: dict) -> float:
    """The visible-pixel threshold, scaled from 480x320 to the configured resolution."""
    area = cfg["render"]["width"] * cfg["render"]["height"]
    return cfg["scene"]["min_pixels_per_object"] * area / (480 * 320)


def count(instances: np.ndarray, num_objects: int) -> np.ndarray:
    """int64 [num_objects]: pixels of object k (instance id k + 1) in one view."""
    return np.bincount(np.asarray(instances).ravel(), minlength=num_objects + 1)[1:num_objects + 1]


def unseen(pixels: np.ndarray) -> tuple[int, int]:
    """(objects, objects with 0 visible pixels in at least one view) of one scene's
    ``visible_pixels`` [U, V, max_objects]; unused slots (:data:`ABSENT`) are not objects.
    An object unseen in a view is out of its frame or wholly behind others there; a wide
    ``rig.baseline`` pushes objects out of the corner views' frames."""
    px = np.asarray(pixels).reshape(-1, np.asarray(pixels).shape[-1])
    used = (px != ABSENT).all(axis=0)
    return int(used.sum()), int(((px == 0).any(axis=0) & used).sum())


class Table:
    """``visible_pixels`` of one scene, [U, V, max_objects] int32, filled view by view."""

    def __init__(self, grid, max_objects: int, num_objects: int):
        self.num_objects = num_objects
        self.pixels = np.full((grid[0], grid[1], max_objects), ABSENT, np.int32)

    def add(self, u: int, v: int, instances: np.ndarray) -> np.ndarray:
        counts = count(instances, self.num_objects)
        self.pixels[u, v, :self.num_objects] = counts
        return counts
