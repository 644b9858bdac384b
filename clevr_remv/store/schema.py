"""The shard format (docs/format.md): every dataset, its shape, dtype and compression; the file attributes."""

from __future__ import annotations

import json

import h5py
import numpy as np

from .. import FORMAT_VERSION, __version__
from ..render import denoise, outputs

STR = h5py.string_dtype("utf-8")


def compression_kwargs(name: str, level: int, *, floating: bool = False) -> dict:
    """h5py dataset-creation keywords for a compression choice (see docs/benchmarks.md)."""
    if name == "none":
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": int(min(level, 9)), "shuffle": floating}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": floating}
    import hdf5plugin  # registers the filters with HDF5

    if name == "zstd":
        return {"compression": hdf5plugin.Zstd(clevel=int(level)), "shuffle": floating}
    if name.startswith("blosc2-"):
        shuffle = hdf5plugin.Blosc2.SHUFFLE if floating else hdf5plugin.Blosc2.NOFILTER
        return {"compression": hdf5plugin.Blosc2(cname=name.split("-", 1)[1], clevel=int(min(level, 9)),
                                                  filters=shuffle)}
    raise ValueError(f"unknown compression {name!r}")


def needs_plugin(name: str) -> bool:
    return name not in ("gzip", "lzf", "none")


def create_datasets(f: h5py.File, n: int, cfg: dict, grid) -> None:
    """Create every dataset of the shard format (docs/format.md) for ``n`` scenes: one per
    stored per-view output of the registry (one view per chunk), then the per-scene ones."""
    rc, oc = cfg["render"], cfg["output"]
    common = {"track_times": False}
    for out in outputs.stored(cfg):
        spec = out.dataset_spec(cfg, n, grid, rc["height"], rc["width"])
        f.create_dataset(out.name, **spec, **compression_kwargs(oc["compression"], oc["compression_level"],
                                                                floating=out.floating), **common)
    rows, cols = grid
    f.create_dataset("visible_pixels", (n, rows, cols, cfg["scene"]["max_objects"]), np.int32,
                     fillvalue=-1, **common)
    cams = f.create_group("cameras", track_order=False)
    cams.create_dataset("intrinsics", (n, rows, cols, 3, 3), np.float64, **common)
    cams.create_dataset("world_to_camera", (n, rows, cols, 4, 4), np.float64, **common)
    f.create_dataset("scenes", (n,), STR, **common)


def set_file_attrs(f: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def file_attrs(cfg: dict, digest: str, grid) -> dict:
    rc = cfg["render"]
    return {
        "format_version": FORMAT_VERSION,
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
