"""Reading a generated dataset in training code (numpy only; torch optional).

* :class:`Reader`: random access to scenes, views, objects and expressions of an output
  folder, through its manifest.
* :class:`RefexpDataset`: a map-style dataset of (image, mask, sentence) samples for
  referring-segmentation training; only valid (expression, view) pairs are items.

Both open HDF5 files lazily, per process, and pickle without file handles, so they work with
``torch.utils.data.DataLoader(num_workers > 0)``.  Nothing here imports torch.

    from clevr_remv.data import RefexpDataset
    train = RefexpDataset("data", split="train", views="center")
    test_corners = RefexpDataset("data", split="test", views="corners")
    sample = train[0]   # {'image': HxWx3 uint8, 'mask': HxW bool, 'text': str, ...}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np

from . import lightfield, outputs as outputs_mod
from .dataset_info import load_manifest


def _maybe_plugins(compression: str) -> None:
    from .shards import needs_plugin

    if needs_plugin(compression):
        import hdf5plugin  # noqa: F401  (registers Blosc2/Zstd with HDF5)


class _LazyFiles:
    """Per-process cache of open read-only HDF5 files; dropped when pickled."""

    def __init__(self):
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    def get(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share handles
            self._files, self._pid = {}, os.getpid()
        key = str(path)
        f = self._files.get(key)
        if f is None:
            f = self._files[key] = h5py.File(path, "r")
        return f

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        self._files = {}

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()


class Reader:
    """Random access to a generated folder (``clevr-remv generate --out ROOT``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        self.grid = tuple(self.manifest["grid"])
        self.width, self.height = self.manifest["resolution"]
        _maybe_plugins(self.manifest["config"]["output"]["compression"])
        self.shards = list(self.manifest["shards"])
        self._where: dict[int, tuple[int, int]] = {}
        for si, e in enumerate(self.shards):
            a, b = e["scene_range"]
            for row, index in enumerate(range(a, b)):
                self._where[index] = (si, row)
        self._files = _LazyFiles()

    # -- scenes and views -----------------------------------------------------------------
    @property
    def scene_indices(self) -> list[int]:
        return sorted(self._where)

    def split_of(self, index: int) -> str:
        return self.shards[self._where[index][0]]["split"]

    def scenes_in(self, split: str) -> list[int]:
        return [i for i in self.scene_indices if self.split_of(i) == split]

    def _locate(self, index: int) -> tuple[h5py.File, int]:
        try:
            si, row = self._where[index]
        except KeyError:
            raise KeyError(f"scene {index} is not in a finished shard of {self.root}") from None
        return self._files.get(self.root / self.shards[si]["path"]), row

    def scene(self, index: int) -> dict:
        f, row = self._locate(index)
        return json.loads(f["scenes"][row])

    def view(self, index: int, u: int, v: int) -> dict:
        """Every stored per-view output the shard holds (``image``, ``instances``, ``depth``,
        ``normals`` from format 1.1; see clevr_remv/outputs.py), the cameras and the
        visible pixel counts."""
        f, row = self._locate(index)
        out = {o.key: f[o.name][row, u, v] for o in outputs_mod.stored() if o.name in f}
        out.update({
            "intrinsics": f["cameras/intrinsics"][row, u, v],
            "world_to_camera": f["cameras/world_to_camera"][row, u, v],
            "visible_pixels": f["visible_pixels"][row, u, v],
        })
        return out

    def output(self, name: str, index: int, u: int, v: int) -> np.ndarray:
        """One stored per-view output (by dataset name, e.g. ``normals``) of a view."""
        f, row = self._locate(index)
        if name not in f:
            raise KeyError(f"{name!r} is not stored in this dataset (format "
                           f"{self.manifest.get('format_version')})")
        return f[outputs_mod.get(name).name][row, u, v]

    def image(self, index: int, u: int, v: int) -> np.ndarray:
        f, row = self._locate(index)
        return f["images"][row, u, v]

    def instances(self, index: int, u: int, v: int) -> np.ndarray:
        f, row = self._locate(index)
        return f["instances"][row, u, v]

    def object_mask(self, index: int, obj: int, u: int, v: int) -> np.ndarray:
        """bool HxW: the pixels of object ``obj`` (0-based) in view (u, v)."""
        return self.instances(index, u, v) == obj + 1

    # -- expressions ------------------------------------------------------------------------
    def expressions(self, split: str | None = None) -> list[dict]:
        """Every expression (of a split), with the global scene index and shard location.
        ``id`` is "<scene>-<k>": the k-th expression (0-based) of that scene."""
        out = []
        for si, e in enumerate(self.shards):
            if split is not None and e["split"] != split:
                continue
            f = self._files.get(self.root / e["path"])
            g = f["refexps"]
            scene_rows = g["scene"][()]
            objects = g["object"][()]
            texts = g["text"].asstr()[()]
            families = g["family"].asstr()[()]
            nrel = g["num_relations"][()]
            valid = g["valid_views"][()]
            within: dict[int, int] = {}
            for r in range(len(scene_rows)):
                scene = e["scene_range"][0] + int(scene_rows[r])
                k = within[scene] = within.get(scene, -1) + 1
                out.append({"id": f"{scene}-{k}", "shard": si, "row": r,
                            "scene": e["scene_range"][0] + int(scene_rows[r]), "scene_row": int(scene_rows[r]),
                            "object": int(objects[r]), "text": texts[r], "family": families[r],
                            "num_relations": int(nrel[r]), "valid_views": valid[r], "split": e["split"]})
        return out

    def close(self) -> None:
        self._files.close()


def resolve_views(views, grid) -> list[tuple[int, int]]:
    """"center", "corners", "all", or an iterable of (u, v)."""
    rows, cols = grid
    if isinstance(views, str):
        if views in ("center", "centre"):
            return [(rows // 2, cols // 2)]
        if views == "corners":
            return lightfield.corner_views(grid)
        if views == "all":
            return [(u, v) for u in range(rows) for v in range(cols)]
        raise ValueError(f"views must be 'center', 'corners', 'all' or a list of (u, v), got {views!r}")
    out = [(int(u), int(v)) for u, v in views]
    for u, v in out:
        if not (0 <= u < rows and 0 <= v < cols):
            raise ValueError(f"view ({u}, {v}) is outside the {rows}x{cols} grid")
    return out


class RefexpDataset:
    """Map-style dataset of valid (expression, view) pairs.

    Items are dicts: ``image`` (uint8 HxWx3), ``mask`` (bool HxW: the target's instance
    pixels), ``text``, ``scene`` (global scene index), ``object`` (0-based), ``view`` (u, v),
    ``expression`` (id "scene-row"), ``family``; plus, on request, further stored per-view
    outputs by dataset name (``outputs=("normals", "depth")``: the items get ``normals``
    float16 HxWx3, ``depth`` float HxW).  ``transform(sample) -> sample`` is applied last
    (e.g. to make tensors or resize).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 views: str | Iterable[Sequence[int]] = "center", transform: Callable | None = None,
                 outputs: Sequence[str] = ()):
        self.reader = Reader(root)
        self.outputs = tuple(outputs_mod.get(name).name for name in outputs)
        if self.outputs and self.reader.shards:
            f = self.reader._files.get(self.reader.root / self.reader.shards[0]["path"])
            missing = [name for name in self.outputs if name not in f]
            if missing:
                raise ValueError(f"{', '.join(missing)} not stored in {root} (format "
                                 f"{self.reader.manifest.get('format_version')}); regenerate it to have them")
        self.split = split
        self.views = resolve_views(views, self.reader.grid)
        self.transform = transform
        exprs = self.reader.expressions(split)
        if not exprs and split not in {e["split"] for e in self.reader.shards}:
            have = sorted({e["split"] for e in self.reader.shards})
            raise ValueError(f"split {split!r} has no finished shard in {root} (have: {', '.join(have)})")
        items = []
        for k, e in enumerate(exprs):
            for (u, v) in self.views:
                if e["valid_views"][u, v]:
                    items.append((k, u, v))
        self._exprs = [{key: e[key] for key in ("id", "shard", "scene", "scene_row", "object", "text", "family")}
                       for e in exprs]
        self._items = np.asarray(items, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        k, u, v = (int(x) for x in self._items[i])
        e = self._exprs[k]
        f = self.reader._files.get(self.reader.root / self.reader.shards[e["shard"]]["path"])
        row = e["scene_row"]
        sample = {
            "image": f["images"][row, u, v],
            "mask": f["instances"][row, u, v] == e["object"] + 1,
            "text": e["text"],
            "scene": e["scene"],
            "object": e["object"],
            "view": (u, v),
            "expression": e["id"],
            "family": e["family"],
        }
        for name in self.outputs:
            sample[name] = f[name][row, u, v]
        return self.transform(sample) if self.transform is not None else sample

    def pairs(self) -> list[tuple[str, int, int]]:
        """(expression id, u, v) of every item, in order."""
        return [(self._exprs[k]["id"], int(u), int(v)) for k, u, v in self._items]
