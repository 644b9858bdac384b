"""The driver's per-view work at GPU speed: decode and compress views in a pool of threads.

At GPU speed (about 0.1 s per view on an H100) the driver's serial per-view work (EXR
decode and sRGB conversion, then HDF5's gzip filter on each dataset, 40 to 48 ms per view
there) is the next bottleneck.  Here each view's arrays are compressed by ``zlib`` in worker
threads (zlib and numpy release the GIL) into exactly the bytes HDF5's deflate filter
(with byte shuffle for floats) would have stored, and written with
``write_direct_chunk``: the files stay byte-identical, the work runs on idle cores.

Only the default pipeline (gzip, with or without shuffle) is done this way; a dataset with
any other filter pipeline is written through h5py as before (:func:`gzip_spec` says which).
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

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


def default_threads(workers: int = 1, cores: int | None = None) -> int:
    """Threads per worker slot: the cores left after one per Blender worker, at most 8."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(8, cores // max(1, workers) - 1))


class ViewPool:
    """Runs per-view jobs in threads and hands their results back in submission order,
    with at most ``2 * threads`` views in flight (bounded memory)."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="view") if self.threads > 1 else None
        self._pending: deque = deque()

    def submit(self, fn, *args):
        """Queue ``fn(*args)``; returns the results that are ready, oldest first (all of them
        once the pool is full, so the caller never runs far ahead)."""
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                fut.set_exception(exc)
        else:
            fut = self._pool.submit(fn, *args)
        self._pending.append(fut)
        out = []
        while self._pending and (self._pending[0].done() or len(self._pending) > 2 * self.threads):
            out.append(self._pending.popleft().result())
        return out

    def drain(self):
        """Every remaining result, in order."""
        out = []
        while self._pending:
            out.append(self._pending.popleft().result())
        return out

    def close(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
