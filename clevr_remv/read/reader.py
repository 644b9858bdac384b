"""Random access to a generated folder through its manifest: scenes, views, objects, expressions."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import CorruptShardError, UsageError
from ..render import outputs as outputs_mod
from ..store.manifest import load_manifest

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
    from ..store.shards import sha256_file

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
    from ..store.schema import needs_plugin

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

    # -- amodal masks and occlusion (format 1.4 on; docs/format.md) -------------------------
    def has_amodal(self) -> bool:
        """Whether the shards store amodal masks (``amodal``, ``amodal_pixels``)."""
        if not self.shards:
            return False
        with shard_errors(self._path(0), self.root, "list its datasets"):
            return "amodal_pixels" in self._files.get(self._path(0))

    def _amodal_file(self, index: int) -> tuple[h5py.File, int]:
        f, row = self._locate(index)
        if "amodal_pixels" not in f:
            raise UsageError(f"'{self.root}' has no amodal masks (format {self.manifest.get('format_version')}; "
                             f"they are stored from format 1.4 on); generate it again to have them")
        return f, row

    def amodal_mask(self, index: int, obj: int, u: int, v: int) -> np.ndarray:
        """bool HxW: the whole silhouette of object ``obj`` (0-based) in view (u, v), as if
        nothing hid it (clipped to the frame)."""
        self._amodal_file(index)
        return self.output("amodal", index, u, v)[obj]

    def amodal_pixels(self, index: int) -> np.ndarray:
        """int32 [U, V, K]: the in-frame pixels of each object's amodal mask (-1: no object)."""
        f, row = self._amodal_file(index)
        with self._errors(index, f"read the amodal pixels of scene {index}"):
            return f["amodal_pixels"][row]

    def occlusion(self, index: int) -> np.ndarray:
        """float32 [U, V, K]: ``1 - visible / amodal`` of each object in each view; NaN where
        an object has no amodal pixel (out of frame, or no such object)."""
        from ..scene.amodal import occlusion

        amodal_px = self.amodal_pixels(index)
        f, row = self._locate(index)
        with self._errors(index, f"read the visible pixels of scene {index}"):
            return occlusion(f["visible_pixels"][row], amodal_px)

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
