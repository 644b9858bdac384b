"""Storage codecs of the per-view outputs: how one view's array becomes what its HDF5 dataset
holds, and back.

A codec is one class here.  The output registry (:mod:`clevr_remv.render.outputs`) names the
codec of each output; the shard format (:mod:`clevr_remv.store.schema`) creates the datasets
from the codec's spec, the writers store ``encode(array)`` and every reader returns
``decode(stored)``.  ``array`` is the codec of every output up to format 1.1: the array itself
(in the output's dtype) through the run's HDF5 compression filter (``output.compression``),
one view per chunk; the driver may compress those chunks itself (:func:`gzip_chunk`), byte-
identical to HDF5's deflate filter.  From format 1.2 a shard names each output's codec in its
``codecs`` attribute (:func:`from_description` reads it back); the ``output.profile`` setting
picks a set of codecs (:data:`PROFILES`) and ``output.codecs`` overrides single outputs.

Precision is the output's dtype (``output.depth_dtype``): float16 depth rounds to the nearest
float16, a relative error of at most 2**-11 (about 4.9e-4) for depths from 6.1e-5 to 65504;
+inf stays +inf.  Image codecs are lossless: a decoded view is bit-identical to the array that
was encoded.  ``bits`` (format 1.4, the amodal masks) packs a bool view eight pixels to a byte
along its rows before the compression filter: bit-identical too, and 8x fewer bytes to compress.
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
        """What is stored for one view: the array in the dataset's dtype (numpy's cast, the
        one h5py itself applies on writing; float32 -> float16 rounds to nearest even)."""
        return np.asarray(arr).astype(self.dtype, copy=False)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """The array of one view, or of several (leading dimensions kept)."""
        return stored

    raw_chunks = True  # a chunk's bytes hold the view itself: shards copy them between files

    def describe(self) -> dict:
        return {"codec": self.name, "dtype": str(self.stored_dtype())}

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:  # noqa: ARG002
        return None


@dataclass(frozen=True)
class ImageCodec:
    """A uint8 view (HxWx3; PNG also HxW) as one lossless image file (WebP lossless or PNG, through
    Pillow) in a variable-length uint8 dataset [N, U, V], one view per chunk.  Reading needs
    h5py and Pillow."""

    name: str                    # "webp" or "png"
    dtype: str = "uint8"         # the decoded dtype
    raw_chunks = False           # chunks hold references into the file's heap: copy by value

    def stored_dtype(self):
        import h5py

        return h5py.vlen_dtype(np.uint8)

    def dataset_spec(self, lead, view_shape, fillvalue, compression, level, floating) -> dict:  # noqa: ARG002
        return {"shape": tuple(lead), "dtype": self.stored_dtype(), "chunks": (1,) * len(lead)}

    def encode(self, arr: np.ndarray) -> np.ndarray:
        import io

        from PIL import Image

        buf = io.BytesIO()
        img = Image.fromarray(np.ascontiguousarray(arr, np.uint8))
        if self.name == "webp":
            img.save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
        else:
            img.save(buf, format="PNG", compress_level=6)
        out = np.empty((), object)  # one element of the variable-length dataset
        out[()] = np.frombuffer(buf.getvalue(), np.uint8)
        return out

    def _one(self, blob) -> np.ndarray:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(np.asarray(blob, np.uint8).tobytes())) as img:
            if img.format not in ("WEBP", "PNG"):
                raise ValueError(f"a {self.name} view holds a {img.format} image")
            return np.asarray(img)

    def decode(self, stored) -> np.ndarray:
        stored = np.asarray(stored, dtype=object) if not isinstance(stored, np.ndarray) else stored
        if stored.dtype != object:  # one view: its bytes
            return self._one(stored)
        views = [self._one(b) for b in stored.ravel()]
        return np.stack(views).reshape(stored.shape + views[0].shape) if views else np.zeros(stored.shape, np.uint8)

    def describe(self) -> dict:
        return {"codec": self.name, "dtype": self.dtype}

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:
        if np.dtype(dtype) != np.uint8 or view_shape[2:] not in (((3,),) if self.name == "webp" else ((), (3,))):
            return f"{self.name} stores uint8 {'RGB' if self.name == 'webp' else 'grey or RGB'} views only"
        return None


@dataclass(frozen=True)
class BitsCodec:
    """A bool view [..., W] packed eight pixels to a byte along its last axis
    (``np.packbits``, big bit order, the last byte padded with zeros): uint8 [..., ceil(W / 8)]
    through the run's HDF5 compression filter, one view per chunk.  ``width`` is W."""

    width: int
    name: str = "bits"
    dtype: str = "bool"          # the decoded dtype
    raw_chunks = True            # a chunk's bytes hold the view itself: shards copy them between files

    def stored_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def dataset_spec(self, lead, view_shape, fillvalue, compression, level, floating) -> dict:  # noqa: ARG002
        packed = (*view_shape[:-1], (int(view_shape[-1]) + 7) // 8)
        spec = {"shape": (*lead, *packed), "dtype": self.stored_dtype(), "chunks": (1,) * len(lead) + packed}
        spec.update(compression_kwargs(compression, level))
        return spec

    def encode(self, arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.shape[-1] != self.width:
            raise ValueError(f"bits codec: a view {arr.shape[-1]} wide, the codec's width is {self.width}")
        return np.packbits(arr.astype(bool, copy=False), axis=-1)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """The bool array of one view, or of several (leading dimensions kept)."""
        return np.unpackbits(np.asarray(stored, np.uint8), axis=-1, count=self.width).view(bool)

    def describe(self) -> dict:
        return {"codec": self.name, "dtype": self.dtype, "width": self.width}

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:  # noqa: ARG002
        if np.dtype(dtype) != np.bool_:
            return "bits stores bool views only"
        return None


CODECS = ("array", "webp", "png", "bits")

# output.profile -> {output name: codec name}; outputs not named use ``array``.
PROFILES = {
    "standard": {},                  # every output as its array through output.compression
    "compact": {"images": "webp"},   # for distribution: RGB as lossless WebP (needs Pillow to read)
}


def make(name: str, dtype, width: int | None = None) -> ArrayCodec | ImageCodec | BitsCodec:
    """The codec called ``name`` for an output whose arrays have ``dtype`` (and views ``width``
    pixels wide: ``bits`` needs it to unpack)."""
    if name == "array":
        return ArrayCodec(str(np.dtype(dtype)))
    if name in ("webp", "png"):
        return ImageCodec(name)
    if name == "bits":
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"the bits codec needs the views' width, got {width!r}")
        return BitsCodec(width)
    raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")


def from_description(desc: dict) -> ArrayCodec | ImageCodec | BitsCodec:
    """The codec of a shard's ``codecs`` attribute entry (``{"codec": ..., "dtype": ...}``, and
    ``width`` for ``bits``)."""
    return make(desc["codec"], desc.get("dtype", "uint8"), desc.get("width"))


def gzip_chunk(arr: np.ndarray, level: int, shuffle: bool) -> bytes:
    """The bytes HDF5 stores for one chunk through [shuffle,] deflate(level).  zlib reads
    the array's memory directly (no intermediate bytes object)."""
    a = np.ascontiguousarray(arr)
    if shuffle and a.itemsize > 1:
        a = np.ascontiguousarray(a.view(np.uint8).reshape(-1, a.itemsize).T)
    return zlib.compress(memoryview(a).cast("B"), level)


def encode_view_chunks(arrays: dict, codecs: dict) -> dict:
    """{name: compressed chunk} of one view's arrays (``codecs`` from
    ``SceneWriter.chunk_codecs``: (level, shuffle, dtype, chunk shape, codec)), each encoded by
    its codec first; an array whose encoding does not have the dataset's dtype and chunk shape
    is left to h5py."""
    out = {}
    for name, (level, shuffle, dtype, shape, codec) in codecs.items():
        arr = arrays.get(name)
        if arr is None:
            continue
        arr = codec.encode(arr)
        if arr.dtype == dtype and tuple(arr.shape) == tuple(shape):
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
