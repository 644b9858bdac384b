"""HDF5 shards and the manifest (docs/format.md).

Two kinds of file share one schema (every array has a leading scene axis N):

* a *scene file* (N = 1) under ``OUT/.work/``, written view by view while Blender renders
  and renamed into place when the scene is complete: a killed run loses no finished scene;
* a *shard* (N = shard size) under ``OUT/<split>/``, assembled from its scene files by
  copying their compressed chunks as they are (no recompression), written to a temporary
  name in the same folder, fsynced, then renamed.

``manifest.json`` is rewritten atomically (temporary file, fsync, rename) after every shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from . import FORMAT_VERSION, __version__, denoise, outputs

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


def write_refexps(f: h5py.File, refexps: list[dict], grid) -> None:
    """The ``refexps/*`` datasets for a list of expression records (may be empty)."""
    rows, cols = grid
    g = f.create_group("refexps", track_order=False)
    r = len(refexps)
    common = {"track_times": False}
    g.create_dataset("scene", data=np.array([e["scene"] for e in refexps], np.int32).reshape(r), **common)
    g.create_dataset("object", data=np.array([e["object"] for e in refexps], np.int32).reshape(r), **common)
    g.create_dataset("text", data=np.array([e["text"] for e in refexps], dtype=object).reshape(r), dtype=STR, **common)
    g.create_dataset("family", data=np.array([e["family"] for e in refexps], dtype=object).reshape(r), dtype=STR, **common)
    g.create_dataset("num_relations", data=np.array([e["num_relations"] for e in refexps], np.uint8).reshape(r), **common)
    g.create_dataset("program", data=np.array([json.dumps(e["program"], sort_keys=True) for e in refexps],
                                              dtype=object).reshape(r), dtype=STR, **common)
    valid = np.array([e["valid_views"] for e in refexps], dtype=bool).reshape(r, rows, cols)
    g.create_dataset("valid_views", data=valid, **common)
    # Extension: the anchor object of a one-relation expression (-1 for none).
    anchors = [(-1 if e.get("anchor") is None else e["anchor"]) for e in refexps]
    g.create_dataset("anchor", data=np.array(anchors, np.int32).reshape(r), **common)


def read_refexps(f: h5py.File) -> list[dict]:
    g = f["refexps"]
    out = []
    for i in range(g["scene"].shape[0]):
        out.append({
            "scene": int(g["scene"][i]),
            "object": int(g["object"][i]),
            "text": g["text"][i].decode("utf-8") if isinstance(g["text"][i], bytes) else g["text"][i],
            "family": g["family"][i].decode("utf-8") if isinstance(g["family"][i], bytes) else g["family"][i],
            "num_relations": int(g["num_relations"][i]),
            "program": json.loads(g["program"][i]),
            "valid_views": g["valid_views"][i],
            "anchor": (None if "anchor" not in g or int(g["anchor"][i]) < 0 else int(g["anchor"][i])),
        })
    return out


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


class SceneWriter:
    """Writes one scene file (N = 1) view by view; atomic on :meth:`commit`."""

    def __init__(self, path: Path, cfg: dict, grid, attrs: dict):
        self.path = Path(path)
        # Unique per process: two writers never share (or delete) each other's temporary file.
        self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        self.grid = tuple(grid)
        self.outputs = outputs.stored(cfg)
        self.f = h5py.File(self.tmp, "w", track_order=False)
        try:
            create_datasets(self.f, 1, cfg, grid)
            set_file_attrs(self.f, attrs)
        except BaseException:
            self.abort()
            raise

    def write_view(self, u: int, v: int, arrays: dict, chunks: dict | None = None) -> None:
        """Store every stored output of one view (``arrays``: output name -> array).  An
        output in ``chunks`` is written as those already-compressed bytes (see
        :meth:`chunk_codecs`), the rest through h5py's filters."""
        for out in self.outputs:
            if chunks and out.name in chunks:
                offset = (0, u, v) + (0,) * (self.f[out.name].ndim - 3)
                self.f[out.name].id.write_direct_chunk(offset, chunks[out.name], 0)
            else:
                self.f[out.name][0, u, v] = arrays[out.name]

    def chunk_codecs(self) -> dict:
        """{output name: (deflate level, shuffle, dtype, chunk shape)} for the stored outputs
        whose chunks the driver may compress itself, byte-identical to HDF5's filters (gzip,
        the default); outputs with any other compression are not listed."""
        from .view_codec import gzip_spec

        out = {}
        for o in self.outputs:
            ds = self.f[o.name]
            spec = gzip_spec(ds)
            if spec is not None:
                out[o.name] = (*spec, ds.dtype, ds.chunks[3:])
        return out

    def finish(self, scene: dict, intrinsics, extrinsics, visible_pixels, refexps: list[dict]) -> None:
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


def expression_stats(refexps: list[dict], scenes: list[dict] = ()) -> dict:
    """Counts a manifest entry carries, so dataset statistics survive resumed runs.

    ``view_pairs_not_valid``: (expression, view) pairs that are kept but not valid in that view.
    From the scene records (``record["expressions"]``): ``expressions_dropped_hidden``, the
    expressions the drop rule removed (target or anchor hidden in some view), and
    ``scenes_short``, scenes with fewer than ``per_scene`` expressions by reason."""
    from .expressions import word_count

    families: dict[str, int] = {}
    for e in refexps:
        families[e["family"]] = families.get(e["family"], 0) + 1
    pairs = sum(int(np.asarray(e["valid_views"]).size) for e in refexps)
    valid = sum(int(np.asarray(e["valid_views"]).sum()) for e in refexps)
    short: dict[str, int] = {}
    for rec in scenes:
        reason = rec.get("expressions", {}).get("shortfall")
        if reason:
            short[reason] = short.get(reason, 0) + 1
    return {"expressions": len(refexps), "words": sum(word_count(e["text"]) for e in refexps),
            "families": families, "view_pairs": pairs, "view_pairs_not_valid": pairs - valid,
            "expressions_dropped_hidden": sum(rec.get("expressions", {}).get("dropped_hidden", 0) for rec in scenes),
            "scenes_short": short}


def dataset_stats(entries: list[dict]) -> dict:
    """Totals over finished shards: scenes, views, bytes, expressions, the expressions dropped
    (target or anchor hidden in some view) and the (expression, view) pairs not valid."""
    counts = ("expressions", "words", "view_pairs", "view_pairs_not_valid", "expressions_dropped_hidden")
    out = {"shards": len(entries), "scenes": sum(e["num_scenes"] for e in entries),
           "views": sum(e["views"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
           **{k: 0 for k in counts}, "families": {}, "scenes_short": {}}
    for e in entries:
        st = e.get("expression_stats", {})
        for k in counts:
            out[k] += st.get(k, 0)
        for key in ("families", "scenes_short"):
            for name, n in st.get(key, {}).items():
                out[key][name] = out[key].get(name, 0) + n
    out["expressions_per_scene"] = out["expressions"] / out["scenes"] if out["scenes"] else 0.0
    out["mean_words"] = out["words"] / out["expressions"] if out["expressions"] else 0.0
    out["view_pairs_not_valid_share"] = out["view_pairs_not_valid"] / out["view_pairs"] if out["view_pairs"] else 0.0
    chosen = out["expressions"] + out["expressions_dropped_hidden"]
    out["expressions_dropped_hidden_share"] = out["expressions_dropped_hidden"] / chosen if chosen else 0.0
    return out


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
    entry = {"sha256": sha256_file(tmp), "bytes": tmp.stat().st_size, "refexps": len(refexps),
             "expression_stats": expression_stats(refexps, records)}
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return entry


def _assemble_into(tmp: Path, scene_paths: list[Path], cfg: dict, grid, attrs: dict, refexps: list,
                   records: list) -> None:
    rows, cols = grid
    with h5py.File(tmp, "w", track_order=False) as out:
        create_datasets(out, len(scene_paths), cfg, grid)
        names = [o.name for o in outputs.stored(cfg)]
        for i, path in enumerate(scene_paths):
            with h5py.File(path, "r") as src:
                for name in names:
                    s, d = src[name].id, out[name].id
                    tail = (0,) * (len(src[name].shape) - 3)
                    for u in range(rows):
                        for v in range(cols):
                            mask, chunk = s.read_direct_chunk((0, u, v) + tail)
                            d.write_direct_chunk((i, u, v) + tail, chunk, mask)
                for name in ("visible_pixels", "scenes", "cameras/intrinsics", "cameras/world_to_camera"):
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
