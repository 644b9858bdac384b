"""RefexpDataset: the valid (expression, view) pairs of a split as training samples."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Sequence

import numpy as np

from ..render import outputs as outputs_mod
from .reader import Reader
from .views import resolve_views


# Per-item extras of the target (not per-view outputs of the registry): amodal masks, from 1.4.
TARGET_ITEMS = ("amodal_mask", "occlusion")


class RefexpDataset:
    """Map-style dataset of valid (expression, view) pairs.

    ``verify=True`` checks the SHA-256 of the split's shards once, when the dataset is made
    (see :class:`Reader`).

    ``views``: "center", "corners", "all", views as 'u,v;u,v' (as the command line's
    --views), or a list of (u, v).  A folder without a manifest raises FileNotFoundError; a
    damaged manifest, unknown views or split raise ValueError.

    Items are dicts: ``image`` (uint8 HxWx3), ``mask`` (bool HxW: the union of the targets'
    instance pixels; all False for a no-target expression), ``text``, ``scene`` (global scene
    index), ``object`` (0-based; the first target, -1 for none), ``targets`` (int64 array of
    the targets' ids padded with -1 to a fixed length, the scene's object slots, so a
    DataLoader's default collate stacks it), ``view`` (int64
    array [u, v]: a DataLoader's default collate makes it a tensor of shape [batch, 2]),
    ``expression`` (id "scene-row"), ``family``; plus, on request, further stored per-view
    outputs by dataset name (``outputs=("normals", "depth")``: the items get ``normals``
    float16 HxWx3, ``depth`` float HxW), and the targets' ``amodal_mask`` (bool HxW: the union of
    their whole silhouettes, as if nothing hid them) and ``occlusion`` (float: ``1 - visible /
    amodal`` pixels, summed over the targets; NaN for none) from datasets with amodal masks (format 1.4 on; ``outputs=("amodal_mask", "occlusion")``).
    ``transform(sample) -> sample`` is applied last (e.g. to make tensors or resize).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 views: str | Iterable[Sequence[int]] = "center", transform: Callable | None = None,
                 outputs: Sequence[str] = (), verify: bool = False):
        self.reader = Reader(root)
        if verify:  # once here, not in every DataLoader worker
            self.reader.verify(split)
        self.target_items = tuple(name for name in outputs if name in TARGET_ITEMS)
        self.outputs = tuple(outputs_mod.get(name).name for name in outputs if name not in TARGET_ITEMS)
        if self.target_items and self.reader.shards and not self.reader.has_amodal():
            raise ValueError(f"{', '.join(self.target_items)} not stored in {root} (format "
                             f"{self.reader.manifest.get('format_version')}; amodal masks are stored from "
                             f"format 1.4 on); regenerate it to have them")
        if self.outputs and self.reader.shards:
            have = self.reader.stored_outputs()
            missing = [name for name in self.outputs if name not in have]
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
        self._exprs = [{key: e[key] for key in ("id", "shard", "scene", "scene_row", "object", "text", "family",
                                                "targets")} for e in exprs]
        self._slots = max([len(e["targets"]) for e in exprs] + [self.reader.max_objects()])
        self._items = np.asarray(items, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        k, u, v = (int(x) for x in self._items[i])
        e = self._exprs[k]
        extra = ("amodal",) if "amodal_mask" in self.target_items else ()
        arrays = self.reader.outputs(e["scene"], u, v, dict.fromkeys(("images", "instances", *self.outputs, *extra)))
        sample = {
            "image": arrays["images"],
            "mask": np.isin(arrays["instances"], np.asarray(e["targets"], np.int64) + 1),
            "text": e["text"],
            "scene": e["scene"],
            "object": e["object"],
            "targets": np.asarray(e["targets"] + [-1] * (self._slots - len(e["targets"])), np.int64),
            "view": np.array((u, v), np.int64),
            "expression": e["id"],
            "family": e["family"],
        }
        sample.update({name: arrays[name] for name in self.outputs})
        if "amodal_mask" in self.target_items:  # the union of the targets' (all False for none)
            sample["amodal_mask"] = arrays["amodal"][np.asarray(e["targets"], np.int64)].any(axis=0)
        if "occlusion" in self.target_items:
            from ..scene.amodal import targets_occlusion

            sample["occlusion"] = float(targets_occlusion(self.reader.visible_pixels(e["scene"])[u, v],
                                                          self.reader.amodal_pixels(e["scene"])[u, v], e["targets"]))
        return self.transform(sample) if self.transform is not None else sample

    def pairs(self) -> list[tuple[str, int, int]]:
        """(expression id, u, v) of every item, in order."""
        return [(self._exprs[k]["id"], int(u), int(v)) for k, u, v in self._items]
