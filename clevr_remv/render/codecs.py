""""""

from __future__ import annotations

import zlib

import numpy as np

H5Z_FILTER_DEFLATE = 1


H5Z_FILTER_SHUFFLE = 2


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
