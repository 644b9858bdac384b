"""Writing shards: a scene file view by view, then the shard assembled from its scene files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py

from .. import FORMAT_VERSION
from .files import _fsync, _fsync_dir
from .refexps import expression_stats, read_refexps, write_refexps
from .schema import create_datasets, set_file_attrs, stored_outputs


class SceneWriter:
    """Writes one scene file (N = 1) view by view; atomic on :meth:`commit`."""

    def __init__(self, path: Path, cfg: dict, grid, attrs: dict):
        self.path = Path(path)
        # Unique per process: two writers never share (or delete) each other's temporary file.
        self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        self.grid = tuple(grid)
        version = attrs.get("format_version", FORMAT_VERSION)
        self.outputs = stored_outputs(cfg, version)
        self.codecs = {o.name: o.codec_for(cfg) for o in self.outputs}
        self.f = h5py.File(self.tmp, "w", track_order=False)
        try:
            create_datasets(self.f, 1, cfg, grid, version)
            set_file_attrs(self.f, attrs)
        except BaseException:
            self.abort()
            raise

    def write_view(self, u: int, v: int, arrays: dict, chunks: dict | None = None) -> None:
        """Store every stored output of one view (``arrays``: output name -> array).  An
        output in ``chunks`` is written as those already-compressed bytes (see
        :meth:`chunk_codecs`), the rest encoded by its codec and written through h5py's filters."""
        for out in self.outputs:
            chunk = chunks.get(out.name) if chunks else None
            if isinstance(chunk, bytes):
                offset = (0, u, v) + (0,) * (self.f[out.name].ndim - 3)
                self.f[out.name].id.write_direct_chunk(offset, chunk, 0)
            elif chunk is not None:  # already encoded (an image file): h5py stores the value
                self.f[out.name][0, u, v] = chunk
            else:
                self.f[out.name][0, u, v] = self.codecs[out.name].encode(arrays[out.name])

    def chunk_codecs(self) -> dict:
        """{output name: (deflate level, shuffle, dtype, chunk shape, codec)} for the stored
        outputs whose chunks the driver may compress itself, byte-identical to HDF5's filters
        (gzip, the default); (None, None, None, None, codec) for outputs whose codec makes a
        value h5py stores (an image file), encoded in the driver's threads too; outputs with any
        other compression are not listed."""
        from ..render.codecs import gzip_spec

        out = {}
        for o in self.outputs:
            ds = self.f[o.name]
            codec = self.codecs[o.name]
            if not codec.raw_chunks:
                out[o.name] = (None, None, None, None, codec)
                continue
            spec = gzip_spec(ds)
            if spec is not None:
                out[o.name] = (*spec, ds.dtype, ds.chunks[3:], codec)
        return out

    def finish(self, scene: dict, intrinsics, extrinsics, visible_pixels, refexps: list[dict],
               amodal_pixels=None) -> None:
        """The per-scene datasets; ``amodal_pixels`` [U, V, K] where the format stores amodal masks."""
        if "amodal_pixels" in self.f:
            if amodal_pixels is None:
                raise ValueError("this format stores amodal masks: finish() needs their amodal_pixels")
            self.f["amodal_pixels"][0] = amodal_pixels
        self.f["visible_pixels"][0] = visible_pixels
        self.f["cameras/intrinsics"][0] = intrinsics
        self.f["cameras/world_to_camera"][0] = extrinsics
        self.f["scenes"][0] = json.dumps(scene, sort_keys=True)
        write_refexps(self.f, [{**e, "scene": 0} for e in refexps], self.grid)

    def commit(self) -> None:
        self.f.close()
        _fsync(self.tmp)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001
            pass
        self.tmp.unlink(missing_ok=True)


def assemble_shard(scene_paths: list[Path], final: Path, cfg: dict, grid, attrs: dict) -> dict:
    """Concatenate scene files into a shard by copying their compressed chunks (both are
    created by :func:`create_datasets` with the same settings, so the filters match); write to
    a temporary name in the same folder, fsync, rename.  Returns sha256, bytes, refexps."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    refexps: list[dict] = []
    records: list[dict] = []
    try:
        _assemble_into(tmp, scene_paths, cfg, grid, attrs, refexps, records)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file
        raise
    _fsync(tmp)
    with h5py.File(tmp, "r") as f:
        visible = f["visible_pixels"][()]
    entry = {"sha256": sha256_file(tmp), "bytes": tmp.stat().st_size, "refexps": len(refexps),
             "expression_stats": expression_stats(refexps, records, visible)}
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return entry


def _assemble_into(tmp: Path, scene_paths: list[Path], cfg: dict, grid, attrs: dict, refexps: list,
                   records: list) -> None:
    rows, cols = grid
    version = attrs.get("format_version", FORMAT_VERSION)
    with h5py.File(tmp, "w", track_order=False) as out:
        create_datasets(out, len(scene_paths), cfg, grid, version)
        stored = stored_outputs(cfg, version)
        for i, path in enumerate(scene_paths):
            with h5py.File(path, "r") as src:
                for o in stored:
                    name = o.name
                    if not o.codec_for(cfg).raw_chunks:  # chunks that point into the file's heap
                        out[name][i] = src[name][0]
                        continue
                    s, d = src[name].id, out[name].id
                    tail = (0,) * (len(src[name].shape) - 3)
                    for u in range(rows):
                        for v in range(cols):
                            mask, chunk = s.read_direct_chunk((0, u, v) + tail)
                            d.write_direct_chunk((i, u, v) + tail, chunk, mask)
                for name in ("visible_pixels", "scenes", "cameras/intrinsics", "cameras/world_to_camera",
                             "amodal_pixels"):
                    if name in out:
                        out[name][i] = src[name][0]
                refexps += [{**e, "scene": i} for e in read_refexps(src)]
                records.append(json.loads(src["scenes"][0]))
        write_refexps(out, refexps, grid)
        set_file_attrs(out, attrs)


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
