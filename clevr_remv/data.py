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

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np

from . import lightfield, outputs as outputs_mod
from .dataset_info import load_manifest
from .errors import CorruptShardError, UsageError

# What to do about a shard that fails: the same command that made it re-renders it.
_REPAIR = "check with 'clevr-remv info --verify {root}'; re-running the same 'clevr-remv generate' re-renders it"


@contextlib.contextmanager
def shard_errors(path: Path, root: Path, what: str = "read"):
    """Turn what a damaged shard raises (HDF5 filter failures, truncated files, bytes that are
    not UTF-8 or not JSON) into one :class:`CorruptShardError` naming the shard."""
    try:
        yield
    except CorruptShardError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise CorruptShardError(f"shard '{path}' is damaged (cannot {what}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                                + _REPAIR.format(root=root)) from exc


def check_splits(reader: Reader, splits) -> list[str] | None:
    """Split names the run knows (exit 2 for others, as in evaluate), or None for all."""
    if not splits:
        return None
    known = list(reader.manifest.get("splits", {}))
    unknown = [s for s in splits if s not in known]
    if unknown:
        raise UsageError(f"unknown split {', '.join(repr(s) for s in unknown)} in '{reader.root}' "
                         f"(splits: {', '.join(known)})")
    return list(dict.fromkeys(splits))


def verify_shard(path: Path, entry: dict, root: Path) -> None:
    """Raise :class:`CorruptShardError` unless ``path`` exists and has the manifest's SHA-256."""
    from .shards import sha256_file

    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise CorruptShardError(f"shard '{path}' cannot be read ({exc.strerror or exc}); "
                                + _REPAIR.format(root=root)) from None
    if digest != entry.get("sha256"):
        raise CorruptShardError(f"shard '{path}' does not match its SHA-256 in the manifest; "
                                + _REPAIR.format(root=root))


def check_shard_readable(path: Path) -> str | None:
    """Read every chunk of every dataset and parse every JSON string: None when all of it reads,
    else what failed.  Catches what a checksum cannot: a file that was damaged before its
    checksum was taken."""
    import h5py as _h5py

    problems: list[str] = []
    try:
        with _h5py.File(path, "r") as f:
            def visit(name, obj):
                if problems or not isinstance(obj, _h5py.Dataset):
                    return
                try:
                    if obj.chunks and obj.ndim >= 3:
                        for idx in np.ndindex(*obj.shape[:3]):
                            obj[idx]
                    else:
                        data = obj[()]
                        if name in ("scenes", "refexps/program"):
                            for x in np.atleast_1d(data):
                                json.loads(x)
                        elif obj.dtype.kind == "O":
                            for x in np.atleast_1d(data):
                                x.decode("utf-8") if isinstance(x, bytes) else x
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    problems.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            f.visititems(visit)
    except OSError as exc:
        return f"cannot open: {str(exc).splitlines()[0]}"
    return problems[0] if problems else None


def _maybe_plugins(compression: str) -> None:
    from .shards import needs_plugin

    if needs_plugin(compression):
        import hdf5plugin  # noqa: F401  (registers Blosc2/Zstd with HDF5)


class _LazyFiles:
    """Per-process cache of open read-only HDF5 files; dropped when pickled."""

    def __init__(self, root: Path | None = None):
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()
        self._root = root

    def get(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share handles
            self._files, self._pid = {}, os.getpid()
        key = str(path)
        f = self._files.get(key)
        if f is None:
            with shard_errors(path, self._root or Path(path).parent.parent, "open it"):
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
        return {"root": self._root}

    def __setstate__(self, state):
        self.__init__(state.get("root"))


class Reader:
    """Random access to a generated folder (``clevr-remv generate --out ROOT``).

    ``verify=True`` checks every shard's SHA-256 against the manifest up front (once, in
    this process) and raises :class:`~clevr_remv.errors.CorruptShardError` naming the first
    shard that differs; see docs/reliability.md for its cost.  Without it, a damaged shard
    still raises that error (naming the shard) on first use instead of h5py's or json's own.
    """

    def __init__(self, root: str | os.PathLike, verify: bool = False):
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
        self._files = _LazyFiles(self.root)
        if verify:
            self.verify()

    def verify(self, split: str | None = None) -> int:
        """Check the SHA-256 of every shard (of ``split``) against the manifest; returns how
        many were checked.  Raises :class:`CorruptShardError` naming a shard that differs."""
        n = 0
        for e in self.shards:
            if split is None or e["split"] == split:
                verify_shard(self.root / e["path"], e, self.root)
                n += 1
        return n

    def _path(self, si: int) -> Path:
        return self.root / self.shards[si]["path"]

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

    def _errors(self, index: int, what: str):
        return shard_errors(self._path(self._where[index][0]), self.root, what)

    def scene(self, index: int) -> dict:
        f, row = self._locate(index)
        with self._errors(index, f"read the record of scene {index}"):
            return json.loads(f["scenes"][row])

    def view(self, index: int, u: int, v: int) -> dict:
        """Every stored per-view output the shard holds (``image``, ``instances``, ``depth``,
        ``normals`` from format 1.1; see clevr_remv/outputs.py), the cameras and the
        visible pixel counts."""
        f, row = self._locate(index)
        with self._errors(index, f"read scene {index} view ({u}, {v})"):
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
        with self._errors(index, f"read scene {index} view ({u}, {v}) {name}"):
            return f[outputs_mod.get(name).name][row, u, v]

    def image(self, index: int, u: int, v: int) -> np.ndarray:
        f, row = self._locate(index)
        with self._errors(index, f"read scene {index} view ({u}, {v}) image"):
            return f["images"][row, u, v]

    def instances(self, index: int, u: int, v: int) -> np.ndarray:
        f, row = self._locate(index)
        with self._errors(index, f"read scene {index} view ({u}, {v}) instances"):
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
            with shard_errors(self.root / e["path"], self.root, "read its expressions"):
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
    out = []
    for view in views:
        try:
            u, v = (int(x) for x in view)
        except (TypeError, ValueError):
            raise ValueError(f"a view is two integers (u, v), got {view!r}") from None
        if not (0 <= u < rows and 0 <= v < cols):
            raise ValueError(f"view ({u}, {v}) is outside the {rows}x{cols} grid")
        if (u, v) in out:
            raise ValueError(f"view ({u}, {v}) is given twice; give each view once")
        out.append((u, v))
    if not out:
        raise ValueError("no view given; give center, corners, all or views as 'u,v;u,v'")
    return out


class RefexpDataset:
    """Map-style dataset of valid (expression, view) pairs.

    ``verify=True`` checks the SHA-256 of the split's shards once, when the dataset is made
    (see :class:`Reader`).

    Items are dicts: ``image`` (uint8 HxWx3), ``mask`` (bool HxW: the target's instance
    pixels), ``text``, ``scene`` (global scene index), ``object`` (0-based), ``view`` (u, v),
    ``expression`` (id "scene-row"), ``family``; plus, on request, further stored per-view
    outputs by dataset name (``outputs=("normals", "depth")``: the items get ``normals``
    float16 HxWx3, ``depth`` float HxW).  ``transform(sample) -> sample`` is applied last
    (e.g. to make tensors or resize).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 views: str | Iterable[Sequence[int]] = "center", transform: Callable | None = None,
                 outputs: Sequence[str] = (), verify: bool = False):
        self.reader = Reader(root)
        if verify:  # once here, not in every DataLoader worker
            self.reader.verify(split)
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
        with shard_errors(self.reader._path(e["shard"]), self.reader.root,
                          f"read scene {e['scene']} view ({u}, {v})"):
            image = f["images"][row, u, v]
            mask = f["instances"][row, u, v] == e["object"] + 1
            extra = {name: f[name][row, u, v] for name in self.outputs}
        sample = {
            "image": image,
            "mask": mask,
            "text": e["text"],
            "scene": e["scene"],
            "object": e["object"],
            "view": (u, v),
            "expression": e["id"],
            "family": e["family"],
        }
        sample.update(extra)
        return self.transform(sample) if self.transform is not None else sample

    def pairs(self) -> list[tuple[str, int, int]]:
        """(expression id, u, v) of every item, in order."""
        return [(self._exprs[k]["id"], int(u), int(v)) for k, u, v in self._items]
