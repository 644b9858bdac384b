"""What one scene of a rig costs, estimated before anything is written: the disk a scene file
may take and the memory a run holds per view.  A run that cannot fit is refused up front
(exit 2, with the figures), not after Blender has started and a folder exists.

The figures are upper bounds from the image size and the grid, not measurements:

* disk per scene: every view's stored outputs before compression, ``STORED_BYTES_PER_PIXEL``
  (RGB 3, instance ids 1, depth 4, normals 6, rounded up), as the run folder's own
  free-space check before the first scene;
* memory per view: the float32 channels of a view's EXR and the arrays decoded from it
  (``VIEW_BYTES_PER_PIXEL``), held by the driver for every view in flight (the view threads
  plus two) and by each Blender worker (its render buffers, about the same again, twice);
* memory per scene: the per-view cameras and the visibility table the driver keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..store.files import free_bytes, nearest_existing

STORED_BYTES_PER_PIXEL = 16
VIEW_BYTES_PER_PIXEL = 100      # ~18 float32 EXR channels (72 B) and the decoded outputs
PER_VIEW_STATE_BYTES = 25 * 8   # intrinsics (3x3) and world-to-camera (4x4), float64
MB = 1 << 20


@dataclass(frozen=True)
class Budget:
    views: int
    scene_disk: int        # bytes, one scene file before compression
    view_memory: int       # bytes, one view in flight
    run_memory: int        # bytes, the whole run at once (driver and workers)

    def describe(self) -> str:
        return (f"{self.views} views per scene: up to {self.scene_disk / MB:,.0f} MB of disk per scene, "
                f"about {self.view_memory / MB:,.0f} MB of memory per view and {self.run_memory / MB:,.0f} MB "
                f"in all")


def estimate(cfg: dict, workers: int = 1, view_threads: int = 2) -> Budget:
    grid = cfg["rig"]["grid"]
    views = grid * grid
    pixels = cfg["render"]["width"] * cfg["render"]["height"]
    view = pixels * VIEW_BYTES_PER_PIXEL
    scene_state = views * (PER_VIEW_STATE_BYTES + 8 * cfg["scene"]["max_objects"] + 64)  # + the views' JSON
    run = scene_state * workers + view * (view_threads + 2) * workers + 2 * view * workers
    return Budget(views, views * pixels * STORED_BYTES_PER_PIXEL + (64 << 10), view, run)


def available_memory(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable, in bytes (Linux); None where unknown."""
    try:
        with open(meminfo, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check(cfg: dict, out: Path, workers: int = 1, *, scene_disk: int | None = None, free: int | None = None,
          memory: int | None = None) -> Budget:
    """Refuse (UsageError) a rig whose one scene does not fit the free disk at ``out`` or whose
    views do not fit the available memory.  ``scene_disk``: the run folder's own figure for the
    next scene (on resume: 1.5 x the largest scene file so far); ``free``/``memory``: the figures
    to use instead of the machine's (tests)."""
    b = estimate(cfg, workers)
    if scene_disk is not None:
        b = Budget(b.views, scene_disk, b.view_memory, b.run_memory)
    where = nearest_existing(Path(out).resolve())
    free = free_bytes(where) if free is None else free
    memory = available_memory() if memory is None else memory
    rig = f"a {cfg['rig']['grid']}x{cfg['rig']['grid']} rig at {cfg['render']['width']}x{cfg['render']['height']}"
    if free is not None and b.scene_disk > free:
        raise UsageError(f"{rig} is too large for the disk: one scene takes up to {b.scene_disk / MB:,.0f} MB "
                         f"before compression ({b.views} views), {free / MB:,.0f} MB are free at {where}; "
                         f"use a smaller --grid or image, or another --out")
    if memory is not None and b.run_memory > memory:
        raise UsageError(f"{rig} is too large for this machine's memory: about {b.run_memory / MB:,.0f} MB "
                         f"({b.view_memory / MB:,.0f} MB per view in flight, {workers} worker(s)), "
                         f"{memory / MB:,.0f} MB available; use a smaller --grid or image, or fewer --workers")
    return b
