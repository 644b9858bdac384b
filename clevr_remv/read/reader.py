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
from ..store import schema
from ..store.manifest import load_manifest
from ..store.refexps import read_refexps
from .checks import MAX_OBJECTS, check_shard, parse_record, shard_problem

# What to do about a shard that fails: the same command that made it re-renders it.
_REPAIR = "check with 'clevr-remv info --verify {root}'; re-running the same 'clevr-remv generate' re-renders it"
# A shard that reads but is not the one its manifest entry names: the manifest is wrong.
MISMATCH_REPAIR = ("remove '{root}/manifest.json' and re-run the same 'clevr-remv generate' command: it "
                   "rebuilds the manifest from the shards' own attributes and re-renders what is not this run's")


@contextlib.contextmanager
def shard_errors(path: Path, root: Path, what: str = "read"):
    """Turn what a damaged shard raises (HDF5 filter failures, truncated files, bytes that are
    not UTF-8 or not JSON) into one :class:`CorruptShardError` naming the shard."""
    try:
        yield
    except CorruptShardError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, KeyError, RecursionError) as exc:
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
                            pass  # parsed, with bounds, by shard_problem below
                        elif obj.dtype.kind == "O":
                            for x in np.atleast_1d(data):
                                x.decode("utf-8") if isinstance(x, bytes) else x
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    problems.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            f.visititems(visit)
            if not problems:
                problem = shard_problem(f)
                if problem:
                    problems.append(problem)
    except OSError as exc:
        return f"cannot open: {str(exc).splitlines()[0]}"
    return problems[0] if problems else None


def _text(x) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _maybe_plugins(compression: str) -> None:
    from ..store.schema import needs_plugin

    if needs_plugin(compression):
        import hdf5plugin  # noqa: F401  (registers Blosc2/Zstd with HDF5)


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _LazyFiles:
    """Per-process cache of open read-only HDF5 files; dropped when pickled.

    The identity (device, inode, size, mtime) of each file at its first opening is kept, also
    across pickling and forks: a DataLoader worker that opens a shard later gets
    :class:`CorruptShardError` if another file now has its name (a run written over the
    folder), instead of pixels that do not belong to the text read earlier."""

    def __init__(self, root: Path | None = None, identities: dict | None = None):
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()
        self._root = root
        self._ident: dict[str, tuple] = dict(identities or {})

    def get(self, path: Path, check=None) -> h5py.File:
        """The open file; ``check(f)`` runs when it is first opened in this process."""
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share handles
            self._files, self._pid = {}, os.getpid()
        key = str(path)
        f = self._files.get(key)
        if f is None:
            root = self._root or Path(path).parent.parent
            with shard_errors(path, root, "open it"):
                ident = _identity(path)
                known = self._ident.setdefault(key, ident)
                if known != ident:
                    raise CorruptShardError(
                        f"shard '{path}' was replaced after this dataset or reader was made (another "
                        f"run wrote into '{root}'?); make the dataset again to read the new files")
                f = h5py.File(path, "r")
                if check is not None:
                    try:
                        check(f)
                    except BaseException:
                        f.close()
                        raise
                self._files[key] = f
        return f

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        self._files = {}

    def __getstate__(self):
        return {"root": self._root, "identities": self._ident}

    def __setstate__(self, state):
        self.__init__(state.get("root"), state.get("identities"))


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
        self._codecs: dict[str, dict] = {}
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

    def _shard(self, si: int) -> h5py.File:
        """Shard ``si`` open, checked against its manifest entry when first opened."""
        return self._files.get(self._path(si), check=lambda f: self._check_shard(si, f))

    def _check_shard(self, si: int, f: h5py.File) -> None:
        """The shard's records and expressions are within bounds (:func:`.checks.check_shard`)
        and it is the one its manifest entry names (:meth:`_check_entry`)."""
        check_shard(f, self._path(si), self.root)
        self._check_entry(si, f)

    def _check_entry(self, si: int, f: h5py.File) -> None:
        """The shard is the one its manifest entry names: its own settings digest, grid and
        number of scenes, and the global indices its first and last scene records carry (a
        swapped scene_range would otherwise hand out another scene under an index)."""
        e = self.shards[si]
        path = self._path(si)
        a, b = e["scene_range"]

        def bad(what: str):
            return CorruptShardError(f"shard '{path}' does not match its manifest entry ({what}); "
                                     + MISMATCH_REPAIR.format(root=self.root))

        digest = f.attrs.get("config_digest")
        if digest is not None and _text(digest) != self.manifest["config_digest"]:
            raise bad(f"settings digest {_text(digest)}, the manifest's {self.manifest['config_digest']}")
        if "grid" in f.attrs and json.loads(_text(f.attrs["grid"])) != list(self.grid):
            raise bad(f"grid {_text(f.attrs['grid'])}, the manifest's {list(self.grid)}")
        n = f["scenes"].shape[0]
        if n != b - a:
            raise bad(f"{n} scenes, the manifest's scene range {a}-{b - 1} holds {b - a}")
        for row in (0, n - 1):
            index = self._record(f, row, path).get("index")
            if index is not None and index != a + row:
                raise bad(f"row {row} holds scene {index}, the manifest's range says {a + row}")

    def _record(self, f: h5py.File, row: int, path: Path) -> dict:
        """Scene record ``row`` parsed and checked (see :mod:`.checks`)."""
        try:
            return parse_record(f["scenes"][row], row, min(f["visible_pixels"].shape[-1], MAX_OBJECTS))
        except ValueError as exc:
            raise CorruptShardError(f"shard '{path}' is damaged ({exc}); " + _REPAIR.format(root=self.root)) from None

    # -- scenes and views -----------------------------------------------------------------
    @property
    def scene_indices(self) -> list[int]:
        return sorted(self._where)

    def split_of(self, index: int) -> str:
        return self.shards[self._where[index][0]]["split"]

    def scenes_in(self, split: str) -> list[int]:
        return [i for i in self.scene_indices if self.split_of(i) == split]

    def has_scene(self, index: int) -> bool:
        return index in self._where

    def location(self, index: int) -> tuple[int, int]:
        """(shard number in :attr:`shards`, row within that shard) of a global scene index."""
        try:
            return self._where[index]
        except KeyError:
            raise KeyError(f"scene {index} is not in a finished shard of {self.root}") from None

    def _locate(self, index: int) -> tuple[h5py.File, int]:
        si, row = self.location(index)
        return self._shard(si), row

    def _read(self, f: h5py.File, name: str, index) -> np.ndarray:
        """A per-view output of an open shard, decoded by the shard's codec for it."""
        codecs = self._codecs.get(f.filename)
        if codecs is None:
            codecs = self._codecs[f.filename] = schema.file_codecs(f)
        return schema.read_output(f, name, index, codecs[name])

    def _errors(self, index: int, what: str):
        return shard_errors(self._path(self._where[index][0]), self.root, what)

    def scene(self, index: int) -> dict:
        f, row = self._locate(index)
        with self._errors(index, f"read the record of scene {index}"):
            return self._record(f, row, self._path(self._where[index][0]))

    def stored_outputs(self) -> list[str]:
        """The per-view outputs (dataset names) this dataset's shards store."""
        if not self.shards:
            return []
        with shard_errors(self._path(0), self.root, "list its datasets"):
            return schema.stored_names(self._shard(0))

    def outputs(self, index: int, u: int, v: int, names) -> dict:
        """{name: decoded array} of the per-view outputs ``names`` of one view."""
        f, row = self._locate(index)
        for name in names:
            if name not in f:
                raise KeyError(f"{name!r} is not stored in this dataset (format "
                               f"{self.manifest.get('format_version')})")
        with self._errors(index, f"read scene {index} view ({u}, {v})"):
            return {name: self._read(f, name, (row, u, v)) for name in names}

    def view(self, index: int, u: int, v: int) -> dict:
        """Every stored per-view output the shard holds (``image``, ``instances``, ``depth``,
        ``normals`` from format 1.1; see clevr_remv/render/outputs.py), the cameras and the
        visible pixel counts."""
        f, row = self._locate(index)
        with self._errors(index, f"read scene {index} view ({u}, {v})"):
            out = {o.key: self._read(f, o.name, (row, u, v)) for o in outputs_mod.stored() if o.name in f}
            out.update({
                "intrinsics": f["cameras/intrinsics"][row, u, v],
                "world_to_camera": f["cameras/world_to_camera"][row, u, v],
                "visible_pixels": f["visible_pixels"][row, u, v],
            })
        return out

    def scene_views(self, index: int, names=("images", "instances")) -> dict:
        """Every view of one scene at once: {name: decoded array [U, V, ...]} for the per-view
        outputs ``names``, plus ``scene`` (the record) and ``visible_pixels`` [U, V, K]."""
        f, row = self._locate(index)
        with self._errors(index, f"read scene {index}"):
            out = {name: self._read(f, name, row) for name in names}
            out["scene"] = self._record(f, row, self._path(self._where[index][0]))
            out["visible_pixels"] = f["visible_pixels"][row]
        return out

    def output(self, name: str, index: int, u: int, v: int) -> np.ndarray:
        """One stored per-view output (by dataset name, e.g. ``normals``) of a view."""
        return self.outputs(index, u, v, [outputs_mod.get(name).name])[name]

    def image(self, index: int, u: int, v: int) -> np.ndarray:
        return self.output("images", index, u, v)

    def instances(self, index: int, u: int, v: int) -> np.ndarray:
        return self.output("instances", index, u, v)

    def object_mask(self, index: int, obj: int, u: int, v: int) -> np.ndarray:
        """bool HxW: the pixels of object ``obj`` (0-based) in view (u, v)."""
        return self.instances(index, u, v) == obj + 1

    def targets_mask(self, index: int, targets, u: int, v: int) -> np.ndarray:
        """bool HxW: the union of the pixels of ``targets`` (0-based ids; none: all False)."""
        return np.isin(self.instances(index, u, v), np.asarray(list(targets), np.int64) + 1)

    def max_objects(self) -> int:
        """Object slots per scene (the last axis of ``visible_pixels``); 0 without shards."""
        if not self.shards:
            return 0
        return int(self._shard(0)["visible_pixels"].shape[-1])

    # -- amodal masks and occlusion (format 1.4 on; docs/format.md) -------------------------
    def has_amodal(self) -> bool:
        """Whether the shards store amodal masks (``amodal``, ``amodal_pixels``)."""
        if not self.shards:
            return False
        with shard_errors(self._path(0), self.root, "list its datasets"):
            return "amodal_pixels" in self._shard(0)

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

    def targets_amodal_mask(self, index: int, targets, u: int, v: int) -> np.ndarray:
        """bool HxW: the union of the amodal masks of ``targets`` (0-based ids; none: all False),
        as :meth:`targets_mask` is of their visible pixels."""
        self._amodal_file(index)
        return self.output("amodal", index, u, v)[np.asarray(list(targets), np.int64)].any(axis=0)

    def amodal_pixels(self, index: int) -> np.ndarray:
        """int32 [U, V, K]: the in-frame pixels of each object's amodal mask (-1: no object)."""
        f, row = self._amodal_file(index)
        with self._errors(index, f"read the amodal pixels of scene {index}"):
            return f["amodal_pixels"][row]

    def visible_pixels(self, index: int) -> np.ndarray:
        """int32 [U, V, K]: the visible pixels of each object in each view (-1: no object)."""
        f, row = self._locate(index)
        with self._errors(index, f"read the visible pixels of scene {index}"):
            return f["visible_pixels"][row]

    def occlusion(self, index: int) -> np.ndarray:
        """float32 [U, V, K]: ``1 - visible / amodal`` of each object in each view; NaN where
        an object has no amodal pixel (out of frame, or no such object)."""
        from ..scene.amodal import occlusion

        return occlusion(self.visible_pixels(index), self.amodal_pixels(index))

    # -- expressions ------------------------------------------------------------------------
    def expressions(self, split: str | None = None, scene: int | None = None,
                    shard: int | None = None) -> list[dict]:
        """Every expression (of a split, of one scene or of one shard), with the global scene index and shard
        location.  ``id`` is "<scene>-<k>": the k-th expression (0-based) of that scene.  Each
        carries the fields of :func:`clevr_remv.store.refexps.read_refexps` (``program``,
        ``targets``, ``anchor``, ...); ``scene`` is the global index, ``scene_row`` its row in
        the shard."""
        out = []
        shards = range(len(self.shards))
        if scene is not None:
            shards = [self.location(scene)[0]]
        elif shard is not None:
            shards = [shard]
        for si in shards:
            e = self.shards[si]
            if split is not None and e["split"] != split:
                continue
            path = self._path(si)
            with shard_errors(path, self.root, "read its expressions"):
                records = read_refexps(self._shard(si))
            within: dict[int, int] = {}
            for rec in records:
                index = e["scene_range"][0] + rec["scene"]
                k = within[index] = within.get(index, -1) + 1
                if scene is not None and index != scene:
                    continue
                out.append({**rec, "id": f"{index}-{k}", "shard": si, "row": rec["row"], "scene": index,
                            "scene_row": rec["scene"], "split": e["split"]})
        return out

    def close(self) -> None:
        self._files.close()
