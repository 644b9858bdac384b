"""What the dataset tools share: opening a dataset for a tool, locating a scene, colours, output paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..read.reader import Reader
from ..store.files import writable_folder

# Instance colours for overlays: id 0 (background) is never drawn.
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
                    [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40]], np.uint8)


def palette(ids: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] colour of each instance id (ids past the palette wrap, skipping 0)."""
    ids = np.asarray(ids, np.int64)
    k = np.where(ids == 0, 0, (ids - 1) % (len(PALETTE) - 1) + 1)
    return PALETTE[k]


def open_dataset(root: Path) -> Reader:
    """A :class:`Reader` of ``root``, or a one-line :class:`UsageError` saying what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"'{root}' is not a folder; give a folder made by 'clevr-remv generate'")
    reader = Reader(root)  # raises UsageError without a manifest
    if not reader.shards:
        raise UsageError(f"'{root}' has no finished shard yet; run 'clevr-remv generate' into it first")
    return reader


def shard_path(reader: Reader, entry: dict) -> Path:
    return reader.root / entry["path"]


def scene_location(reader: Reader, index: int) -> tuple[dict, int]:
    """(manifest shard entry, row) of a global scene index, or a one-line UsageError."""
    if not reader.has_scene(index):
        have = reader.scene_indices
        span = f"{have[0]}-{have[-1]}" if have else "none"
        raise UsageError(f"scene {index} is not in a finished shard of '{reader.root}' (scenes: {span})")
    si, row = reader.location(index)
    return reader.shards[si], row


def min_visible_pixels(reader: Reader) -> int:
    return int(reader.manifest.get("config", {}).get("expressions", {}).get("min_visible_pixels", 1))


def check_output_file(path: Path, suffixes: tuple[str, ...]) -> Path:
    """An output file path a tool may write: not a folder, known suffix, in a folder that exists
    and can be written or can be created (the writer creates it)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"'{path}' is a folder; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"'{path}' must end in {' or '.join(suffixes)}")
    writable_folder(path.parent, f"folder of '{path}'")
    return path


def progress_bar(total: int, desc: str, unit: str = "it"):
    """A tqdm bar with rate and ETA on a terminal; silent off one (logs, pipes, tests)."""
    from tqdm import tqdm

    from ..progress import bar_usable

    return tqdm(total=total, desc=desc, unit=unit, disable=not bar_usable(), dynamic_ncols=True)
