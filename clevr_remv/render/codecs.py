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
MAX_VIEW_PIXELS = 8192 * 8192  # render.width and render.height are at most 8192
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

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:
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

    def dataset_spec(self, lead, view_shape, fillvalue, compression, level, floating) -> dict:
        return {"shape": tuple(lead), "dtype": self.stored_dtype(), "chunks": (1,) * len(lead)}

    def encode(self, arr: np.ndarray) -> np.ndarray:
        out = np.empty((), object)  # one element of the variable-length dataset
        out[()] = np.frombuffer(self._file(arr), np.uint8)
        return out

    def _file(self, arr: np.ndarray) -> bytes:
        import io

        from PIL import Image

        buf = io.BytesIO()
        img = Image.fromarray(np.ascontiguousarray(arr, np.uint8))
        if self.name.startswith("webp"):
            # effort 50, method 2: within 2% of the smallest file (effort 100, method 4) at a
            # tenth of its time (docs/benchmarks.md, "Storage profiles")
            img.save(buf, format="WEBP", lossless=True, quality=50, method=2, exact=True)
        else:
            img.save(buf, format="PNG", compress_level=6)
        return buf.getvalue()

    @staticmethod
    def _image(data: bytes) -> np.ndarray:
        import io

        from PIL import Image

        try:
            img = Image.open(io.BytesIO(data))  # reads the header only
        except Image.DecompressionBombError as exc:
            raise ValueError(f"a stored view is refused: {exc}") from None
        with img:
            if img.format not in ("WEBP", "PNG"):
                raise ValueError(f"a stored view holds a {img.format} image, not WebP or PNG")
            if img.width * img.height > MAX_VIEW_PIXELS:  # untrusted input: bounded before decoding
                raise ValueError(f"a stored view claims {img.width}x{img.height} pixels, more than a "
                                 f"view can have")
            return np.asarray(img)

    def _one(self, blob) -> np.ndarray:
        return self._image(np.asarray(blob, np.uint8).tobytes())

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



@dataclass(frozen=True)
class TwoByteWebP(ImageCodec):
    """A view of 16-bit values (HxW or HxWx3) as two WebP lossless RGB files, the high and the
    low byte of each value's 16 bits (a one-component view repeated into R, G, B, which WebP's
    colour transform stores almost for free).  Stored bytes: the component count (1 byte: 1 or
    3), the first file's length (4 bytes, little-endian), the two files.  Lossless.  ``webp16``: the bit pattern of any 2-byte dtype (float16 depth, +inf
    included)."""

    name: str = "webp16"
    dtype: str = "float16"

    def _to_u16(self, arr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(arr).astype(self.dtype, copy=False)).view(np.uint16)

    def _from_u16(self, k: np.ndarray) -> np.ndarray:
        return k.astype(np.uint16).view(self.dtype)

    def _file(self, arr: np.ndarray) -> bytes:
        k = self._to_u16(arr)
        planes = [(k >> 8).astype(np.uint8), (k & 255).astype(np.uint8)]
        if k.ndim == 2:
            planes = [np.repeat(p[..., None], 3, -1) for p in planes]
        hi, lo = (ImageCodec("webp")._file(p) for p in planes)
        return bytes([1 if k.ndim == 2 else 3]) + len(hi).to_bytes(4, "little") + hi + lo

    def _one(self, blob) -> np.ndarray:
        data = np.asarray(blob, np.uint8).tobytes()
        n = int.from_bytes(data[1:5], "little")
        hi, lo = self._image(data[5:5 + n]), self._image(data[5 + n:])
        if data[0] == 1:
            hi, lo = hi[..., 0], lo[..., 0]
        return self._from_u16((hi.astype(np.uint16) << 8) | lo)

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:
        if np.dtype(dtype).itemsize != 2 or view_shape[2:] not in ((), (3,)):
            return f"{self.name} stores 2-byte (e.g. float16) views of 1 or 3 components only"
        return None


@dataclass(frozen=True)
class FixedPointWebP(TwoByteWebP):
    """:class:`TwoByteWebP` of ``round(value * 2**bits) + 2**bits``, for views whose values lie on
    a fixed-point grid (multiples of ``2**-bits`` in [-1, 1], as the stored normals are), which
    compresses better than their float bits.  Lossless on the grid; a value off the grid is
    refused (ValueError), never rounded.  ``webp-q10``: the 2**-10 grid of the normals."""

    name: str = "webp-q10"
    bits: int = 10

    def _to_u16(self, arr: np.ndarray) -> np.ndarray:
        a = np.asarray(arr, np.float32) * (1 << self.bits)
        k = np.rint(a)
        if not np.array_equal(k, a) or np.abs(k).max(initial=0) > (1 << self.bits):
            raise ValueError(f"{self.name} stores values on the 2**-{self.bits} grid in [-1, 1] only")
        return (k + (1 << self.bits)).astype(np.uint16)

    def _from_u16(self, k: np.ndarray) -> np.ndarray:
        return ((k.astype(np.int32) - (1 << self.bits)).astype(np.float32) / (1 << self.bits)).astype(self.dtype)

    def fits(self, dtype: np.dtype, view_shape: tuple[int, ...]) -> str | None:
        if np.dtype(dtype).kind != "f" or view_shape[2:] != (3,):
            return f"{self.name} stores floating 3-component views on a fixed-point grid only"
        return None


CODECS = ("array", "webp", "png", "webp16", "webp-q10", "bits")

# output.profile -> {output name: codec name}; outputs not named use their own (``array``; the
# amodal masks ``bits``).
PROFILES = {
    "standard": {},                  # every output as its array through output.compression
    # for distribution: RGB, depth (its float16 bits) and normals (their 2**-10 grid) as
    # lossless WebP (reading needs Pillow too)
    "compact": {"images": "webp", "depth": "webp16", "normals": "webp-q10"},
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
    if name == "webp16":
        return TwoByteWebP(dtype=str(np.dtype(dtype)))
    if name == "webp-q10":
        return FixedPointWebP(dtype=str(np.dtype(dtype)))
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
    """{name: compressed chunk (bytes) or encoded value} of one view's arrays, the work a pool
    thread does before the writer stores them (``codecs`` from ``SceneWriter.chunk_codecs``:
    (level, shuffle, dtype, chunk shape, codec); level None for a codec whose value h5py stores,
    e.g. an image file).  An array whose encoding does not have the dataset's dtype and chunk
    shape is left to the writer."""
    out = {}
    for name, (level, shuffle, dtype, shape, codec) in codecs.items():
        arr = arrays.get(name)
        if arr is None:
            continue
        arr = codec.encode(arr)
        if level is None:
            out[name] = arr
        elif arr.dtype == dtype and tuple(arr.shape) == tuple(shape):
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
