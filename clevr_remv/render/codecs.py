"""Storage codecs of the per-view outputs: how one view's array becomes what its HDF5 dataset
holds, and back.

A codec is one class here.  The output registry (:mod:`clevr_remv.render.outputs`) names the
codec of each output; the shard format (:mod:`clevr_remv.store.schema`) creates the datasets
from the codec's spec, the writers store ``encode(array)`` and every reader returns
``decode(stored)``.  ``array`` is the codec of every output up to format 1.1: the array itself
(in the output's dtype) through the run's HDF5 compression filter (``output.compression``),
one view per chunk; the driver may compress those chunks itself (:func:`gzip_chunk`), byte-
identical to HDF5's deflate filter.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

H5Z_FILTER_DEFLATE = 1
H5Z_FILTER_SHUFFLE = 2


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
    """True when reading a ``name``-compressed dataset needs hdf5plugin."""
    return name not in ("gzip", "lzf", "none")


@dataclass(frozen=True)
class ArrayCodec:
    """The view's array itself, in ``dtype``, through the run's HDF5 compression filter."""

    dtype: str
    name: str = "array"

    def stored_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def dataset_spec(self, lead: tuple[int, ...], view_shape: tuple[int, ...], fillvalue, compression: str,
                     level: int, floating: bool) -> dict:
        """h5py ``create_dataset`` keywords: shape ``lead + view_shape``, one view per chunk."""
        spec = {"shape": (*lead, *view_shape), "dtype": self.stored_dtype(),
                "chunks": (1,) * len(lead) + tuple(view_shape)}
        if fillvalue is not None:
            spec["fillvalue"] = fillvalue
        spec.update(compression_kwargs(compression, level, floating=floating))
        return spec

    def encode(self, arr: np.ndarray) -> np.ndarray:
        """What is stored for one view (h5py converts to the dataset's dtype on writing)."""
        return arr

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """The array of one view, or of several (leading dimensions kept)."""
        return stored

    def describe(self) -> dict:
        return {"codec": self.name, "dtype": str(self.stored_dtype())}


def gzip_chunk(arr: np.ndarray, level: int, shuffle: bool) -> bytes:
    """The bytes HDF5 stores for one chunk through [shuffle,] deflate(level).  zlib reads
    the array's memory directly (no intermediate bytes object)."""
    a = np.ascontiguousarray(arr)
    if shuffle and a.itemsize > 1:
        a = np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.itemsize).T)
    return zlib.compress(memoryview(a).cast("B"), level)


def encode_view_chunks(arrays: dict, codecs: dict) -> dict:
    """{name: compressed chunk} for the arrays whose dtype and shape are exactly the
    dataset's (``codecs`` from ``SceneWriter.chunk_codecs``); an array that would need a
    conversion (e.g. float32 depth into a float16 dataset) is left to h5py."""
    out = {}
    for name, (level, shuffle, dtype, shape) in codecs.items():
        arr = arrays.get(name)
        if arr is not None and arr.dtype == dtype and tuple(arr.shape) == tuple(shape):
            out[name] = gzip_chunk(arr, level, shuffle)
    return out


def gzip_spec(dataset) -> tuple[int, bool] | None:
    """(deflate level, shuffle) when ``dataset``'s filters are exactly [shuffle,] deflate, in
    that order; None for any other pipeline (write it through h5py)."""
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    codes = [f[0] for f in filters]
    if codes == [H5Z_FILTER_DEFLATE]:
        return int(filters[0][2][0]), False
    if codes == [H5Z_FILTER_SHUFFLE, H5Z_FILTER_DEFLATE]:
        return int(filters[1][2][0]), True
    return None
