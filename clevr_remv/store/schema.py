"""The shard format (docs/format.md), defined once: every dataset with its shape, dtype, chunks
and compression (:func:`layout`), derived from the output registry; the file attributes; and
the per-view outputs read back through their codecs (:func:`read_output`).

``create_datasets`` builds a shard from :func:`layout` and ``clevr-remv validate`` checks a
shard against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

from .. import FORMAT_VERSION, __version__
from ..render import codecs, denoise, outputs
from ..render.codecs import compression_kwargs, needs_plugin  # noqa: F401  (the format's filters)

STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the format: what ``create_dataset`` gets, and what validate checks."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None = None
    options: dict = field(default_factory=dict)   # compression, shuffle, fillvalue
    codec: object = None                          # per-view outputs: how a view is stored (render/codecs.py)

    @property
    def is_string(self) -> bool:
        return h5py.check_string_dtype(self.dtype) is not None

    def create(self, f: h5py.File) -> h5py.Dataset:
        group, _, _ = self.name.rpartition("/")
        if group and group not in f:
            f.create_group(group, track_order=False)
        return f.create_dataset(self.name, self.shape, self.dtype, chunks=self.chunks, track_times=False,
                                **self.options)

    def problem(self, ds) -> str | None:
        """None when the open dataset ``ds`` has this spec's shape and dtype, else what differs."""
        if not isinstance(ds, h5py.Dataset):
            return f"{self.name} is not a dataset"
        if tuple(ds.shape) != tuple(self.shape):
            return f"{self.name} has shape {ds.shape}, expected {self.shape}"
        if self.is_string:
            if h5py.check_string_dtype(ds.dtype) is None:
                return f"{self.name} has dtype {ds.dtype}, expected UTF-8 strings"
        elif h5py.check_vlen_dtype(self.dtype) is not None:
            if h5py.check_vlen_dtype(ds.dtype) != h5py.check_vlen_dtype(self.dtype):
                return f"{self.name} has dtype {ds.dtype}, expected variable-length {h5py.check_vlen_dtype(self.dtype)}"
        elif ds.dtype != self.dtype:
            return f"{self.name} has dtype {ds.dtype}, expected {self.dtype}"
        return None


def version_key(v: str) -> tuple[int, ...]:
    """A format version as a tuple that orders ("1.10" after "1.9")."""
    return tuple(int(x) for x in str(v).split("."))


_version = version_key
VLEN_INT32 = h5py.vlen_dtype(np.int32)

# The expression columns (store/refexps.py writes them): name -> (dtype, per-view tail?)
REFEXP_COLUMNS: tuple[tuple[str, object, bool], ...] = (
    ("scene", np.int32, False), ("object", np.int32, False), ("text", STR, False),
    ("family", STR, False), ("num_relations", np.uint8, False), ("program", STR, False),
    ("valid_views", np.bool_, True), ("anchor", np.int32, False),
    ("targets", VLEN_INT32, False), ("anchors", VLEN_INT32, False),
)
# Columns newer than format 1.0, with the version that added them.
REFEXP_SINCE = {"targets": "1.3", "anchors": "1.3"}


def refexp_columns(version: str = FORMAT_VERSION) -> tuple[tuple[str, object, bool], ...]:
    """The expression columns of a shard of format ``version``."""
    return tuple(c for c in REFEXP_COLUMNS if _version(REFEXP_SINCE.get(c[0], "1.0")) <= _version(version))


def stored_outputs(cfg: dict, version: str = FORMAT_VERSION) -> tuple[outputs.Output, ...]:
    """The per-view outputs a shard of format ``version`` made with ``cfg`` stores."""
    return tuple(o for o in outputs.stored(cfg) if _version(o.since) <= _version(version))


def layout(n: int, grid, height: int, width: int, max_objects: int, cfg: dict, refexps: int | None = None,
           version: str = FORMAT_VERSION) -> dict[str, DatasetSpec]:
    """Every dataset of a shard of ``n`` scenes, by name, in creation order; the ``refexps/*``
    columns too when ``refexps`` (their row count) is given."""
    rows, cols = grid
    oc = cfg.get("output", {})
    specs: dict[str, DatasetSpec] = {}
    for out in stored_outputs(cfg, version):
        codec = out.codec_for(cfg)
        kw = codec.dataset_spec((n, rows, cols), out.view_shape(height, width, max_objects), out.fillvalue,
                                oc.get("compression", "gzip"), oc.get("compression_level", 4), out.floating)
        shape, dtype, chunks = kw.pop("shape"), kw.pop("dtype"), kw.pop("chunks")
        specs[out.name] = DatasetSpec(out.name, shape, dtype, chunks, kw, codec)
    for spec in (
        DatasetSpec("visible_pixels", (n, rows, cols, max_objects), np.dtype(np.int32), options={"fillvalue": -1}),
        DatasetSpec("cameras/intrinsics", (n, rows, cols, 3, 3), np.dtype(np.float64)),
        DatasetSpec("cameras/world_to_camera", (n, rows, cols, 4, 4), np.dtype(np.float64)),
        DatasetSpec("scenes", (n,), STR),
    ):
        specs[spec.name] = spec
    if "amodal" in specs:  # the in-frame pixels of each amodal mask (-1: no object), from 1.4
        specs["amodal_pixels"] = DatasetSpec("amodal_pixels", (n, rows, cols, max_objects), np.dtype(np.int32),
                                             options={"fillvalue": -1})
    if refexps is not None:
        for name, dtype, per_view in refexp_columns(version):
            shape = (refexps, rows, cols) if per_view else (refexps,)
            specs[f"refexps/{name}"] = DatasetSpec(f"refexps/{name}", shape, np.dtype(dtype) if dtype is not STR
                                                   else STR)
    return specs


def shard_layout(cfg: dict, n: int, grid, refexps: int | None = None,
                 version: str = FORMAT_VERSION) -> dict[str, DatasetSpec]:
    """:func:`layout` with the sizes a run's configuration gives."""
    rc = cfg["render"]
    return layout(n, grid, rc["height"], rc["width"], cfg["scene"]["max_objects"], cfg, refexps, version)


def create_datasets(f: h5py.File, n: int, cfg: dict, grid, version: str = FORMAT_VERSION) -> None:
    """Create every dataset of the shard format for ``n`` scenes (the ``refexps/*`` columns are
    written with their data by :func:`clevr_remv.store.refexps.write_refexps`)."""
    for spec in shard_layout(cfg, n, grid, version=version).values():
        spec.create(f)


def set_file_attrs(f: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def codec_descriptions(cfg: dict, version: str = FORMAT_VERSION) -> dict:
    """{output name: {"codec": ..., "dtype": ...}} of the stored outputs: the shard attribute
    ``codecs`` (format 1.2 on) and the manifest's."""
    return {o.name: o.codec_for(cfg).describe() for o in stored_outputs(cfg, version)}


def file_attrs(cfg: dict, digest: str, grid, version: str = FORMAT_VERSION) -> dict:
    """The attributes of every shard of a run (``version``: the run's format version; a run
    resumed from an older version keeps writing that version's attributes)."""
    rc = cfg["render"]
    outputs.check_codecs(cfg)
    attrs = {
        "format_version": version,
        "generator": "clevr-remv",
        "generator_version": __version__,
        "grid": list(grid),
        "resolution": [rc["width"], rc["height"]],
        "render_settings": {k: rc[k] for k in ("samples", "adaptive_threshold", "denoise", "max_bounces", "seed")},
        "denoiser": denoise.describe(cfg),
        "config_digest": digest,
        "compression": cfg["output"]["compression"],
        "instance_ids": outputs.get("instances").doc,
        "depth_units": outputs.get("depth").doc,
        "normals": outputs.get("normals").doc,
        "visible_pixels_absent": -1,
    }
    if _version(version) >= (1, 2):
        attrs["codecs"] = codec_descriptions(cfg, version)
    if any(o.name == "amodal" for o in stored_outputs(cfg, version)):
        attrs["amodal"] = outputs.get("amodal").doc + "; amodal_pixels: its in-frame pixels, -1 where no object"
    return attrs


# -- reading --------------------------------------------------------------------------------
def file_codecs(f: h5py.File) -> dict:
    """{output name: codec} of an open shard: its ``codecs`` attribute (format 1.2 on); the
    ``array`` codec in the dataset's dtype for outputs it does not name (formats 1.0, 1.1).
    An unknown codec name raises ValueError (a newer format: update clevr-remv)."""
    raw = f.attrs.get("codecs")
    named = json.loads(raw) if raw is not None else {}
    out = {}
    for name in stored_names(f):
        if name in named:
            out[name] = codecs.from_description(named[name])
        else:
            out[name] = codecs.ArrayCodec(str(f[name].dtype))
    return out


def read_output(f: h5py.File, name: str, index, codec=None) -> np.ndarray:
    """The decoded per-view output ``name`` at ``index`` (e.g. ``(row, u, v)`` for one view,
    ``row`` for every view of a scene) of an open shard (``codec``: from :func:`file_codecs`,
    read from the file when not given)."""
    codec = codec or file_codecs(f)[name]
    out = codec.decode(f[name][index])
    if not codec.raw_chunks:  # a file inside the shard: its size must be the view's
        want = _view_shape(f, name)
        if want is not None and tuple(out.shape[out.ndim - len(want):]) != want:
            raise ValueError(f"{name}: a stored view decodes to {out.shape}, not a {want} view")
    return out


def _view_shape(f: h5py.File, name: str) -> tuple[int, ...] | None:
    """(H, W, *tail) of one view of ``name``, from the file's resolution attribute."""
    try:
        w, h = json.loads(f.attrs["resolution"]) if isinstance(f.attrs.get("resolution"), str) \
            else [int(x) for x in f.attrs["resolution"]]
    except (KeyError, ValueError, TypeError):
        return None
    out = outputs.BY_NAME.get(name)
    return (int(h), int(w), *(out.tail if out else ()))


def stored_names(f: h5py.File) -> list[str]:
    """The registry's per-view outputs an open shard holds."""
    return [o.name for o in outputs.stored() if o.name in f]
