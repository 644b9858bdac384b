"""Storage: bytes per view of every stored per-view output under each storage profile and codec,
measured on real rendered views (the finished shards of a run), re-written through the real
writers (SceneWriter, assemble_shard) in each profile; with write and read time and the depth
error of float16.

    python bench/storage.py DIR --scenes 2 --out bench/results/storage.json \
        [--profiles-out DIR2]    # also keep complete run folders per profile (for bench/loader.py)

Profiles: ``1.1`` (format 1.1: depth float32, gzip 4), ``standard`` (the default: depth
float16, gzip 6), ``compact`` (standard + RGB as lossless WebP, normals as lossless WebP of
their 2**-10 grid) and two variations.  Sizes are whole shard files divided by their
views; the projection is for the source's 10,000 scenes of 81 views.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

from clevr_remv import FORMAT_VERSION, config
from clevr_remv.data import Reader
from clevr_remv.render import outputs
from clevr_remv.render.codecs import encode_view_chunks
from clevr_remv.scene import lightfield
from clevr_remv.store import schema, shards
from clevr_remv.store.refexps import read_refexps

STD = {"depth_dtype": "float16", "compression_level": 6, "profile": "standard", "codecs": {}}
PROFILES = {
    "1.1": ({"depth_dtype": "float32", "compression_level": 4, "profile": "standard", "codecs": {}}, "1.1"),
    "1.2, gzip 4": ({**STD, "compression_level": 4}, FORMAT_VERSION),
    "standard": (STD, FORMAT_VERSION),
    "compact": ({**STD, "profile": "compact"}, FORMAT_VERSION),
    "compact, png RGB": ({**STD, "profile": "compact", "codecs": {"images": "png"}}, FORMAT_VERSION),
}
PROJECT_VIEWS = 10_000 * 81


def load_scenes(reader: Reader, n: int) -> list[dict]:
    """Every stored output of every view, and what a scene file needs besides, for n scenes."""
    out = []
    names = reader.stored_outputs()
    for index in reader.scene_indices[:n]:
        si, row = reader.location(index)
        with h5py.File(reader.root / reader.shards[si]["path"], "r") as f:
            extra = {"intrinsics": f["cameras/intrinsics"][row], "world_to_camera": f["cameras/world_to_camera"][row],
                     "visible_pixels": f["visible_pixels"][row],
                     "amodal_pixels": f["amodal_pixels"][row] if "amodal_pixels" in f else None,
                     "refexps": [e for e in read_refexps(f) if e["scene"] == row]}
        views = reader.scene_views(index, names)
        out.append({"index": index, "record": views["scene"], "views": views, "names": names, **extra})
    return out


def write_profile(scenes, cfg, version, folder: Path, digest: str) -> dict:
    """One shard per scene, through the writers; returns sizes and times."""
    grid = (cfg["rig"]["grid"], cfg["rig"]["grid"])
    if "amodal" not in scenes[0]["names"] and version == FORMAT_VERSION and FORMAT_VERSION == "1.4":
        version = "1.3"  # a run of an older format has no amodal masks to write: its other outputs as 1.3
    attrs = schema.file_attrs(cfg, digest, grid, version)
    rows, cols = grid
    t_write = 0.0
    paths = []
    for sc in scenes:
        t0 = time.perf_counter()
        w = shards.SceneWriter(folder / f"scene-{sc['index']}.h5", cfg, grid, attrs)
        codecs = w.chunk_codecs()
        for u in range(rows):
            for v in range(cols):
                arrays = {name: sc["views"][name][u, v] for name in sc["names"]}
                w.write_view(u, v, arrays, encode_view_chunks(arrays, codecs))
        w.finish(sc["record"], sc["intrinsics"], sc["world_to_camera"], sc["visible_pixels"],
                 [{**e, "scene": 0} for e in sc["refexps"]], sc["amodal_pixels"])
        w.commit()
        t_write += time.perf_counter() - t0
        shard = folder / f"shard-{sc['index']}.h5"
        shards.assemble_shard([w.path], shard, cfg, grid, attrs)
        w.path.unlink()
        paths.append(shard)
    nviews = len(scenes) * rows * cols
    per_output: dict[str, float] = {}
    total = data = 0
    t0 = time.perf_counter()
    for p in paths:
        total += p.stat().st_size
        with h5py.File(p, "r") as f:
            codecs = schema.file_codecs(f)
            for name in schema.stored_names(f):
                for idx in np.ndindex(*f[name].shape[:3]):
                    schema.read_output(f, name, idx, codecs[name])

            def visit(name, ds):
                nonlocal data
                if not isinstance(ds, h5py.Dataset):
                    return
                if h5py.check_vlen_dtype(ds.dtype) is not None and h5py.check_string_dtype(ds.dtype) is None:
                    size = sum(len(ds[idx]) for idx in np.ndindex(*ds.shape))  # blobs live in the heap
                else:
                    size = ds.id.get_storage_size()
                data += size
                if name in codecs:
                    per_output[name] = per_output.get(name, 0) + size
            f.visititems(visit)
    t_read = time.perf_counter() - t0
    # A file's fixed cost (superblock, object headers, chunk indexes, heaps) is spread over
    # output.shard_size scenes in a real shard, not over the one scene per file written here.
    fixed = (total - data) / len(paths)
    shard_size = config.default_config()["output"]["shard_size"]
    projected = (data + fixed * len(paths) / shard_size) / nviews
    return {"file_bytes_per_view": total / nviews, "bytes_per_view": projected,
            "per_output_bytes_per_view": {k: v / nviews for k, v in per_output.items()},
            "fixed_bytes_per_file": fixed, "shard_size": shard_size,
            "write_ms_per_view": 1000 * t_write / nviews, "read_ms_per_view": 1000 * t_read / nviews,
            "projected_GB": projected * PROJECT_VIEWS / 1e9, "paths": paths}


def keep_run(reader: Reader, scenes, result, cfg, version, out: Path) -> None:
    """A complete run folder of the written shards (manifest of the source, entries updated)."""
    shutil.rmtree(out, ignore_errors=True)
    (out).mkdir(parents=True)
    m = copy.deepcopy(reader.manifest)
    m["config"] = cfg
    m["format_version"] = version
    entries = []
    numbers: dict[str, int] = {}
    for sc, path in zip(scenes, result["paths"]):
        si, _ = reader.location(sc["index"])
        e = copy.deepcopy(reader.shards[si])
        k = numbers[e["split"]] = numbers.get(e["split"], -1) + 1
        e.update({"path": f"{e['split']}/{e['split']}-{k:05d}.h5", "number": k,
                  "scene_range": [sc["index"], sc["index"] + 1],
                  "num_scenes": 1, "sha256": shards.sha256_file(path), "bytes": path.stat().st_size,
                  "refexps": len(sc["refexps"])})
        (out / e["split"]).mkdir(exist_ok=True)
        shutil.copyfile(path, out / e["path"])
        entries.append(e)
    m["shards"] = entries
    (out / "manifest.json").write_text(json.dumps(m, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--out", default="bench/results/storage.json")
    ap.add_argument("--profiles-out", type=Path, default=None,
                    help="keep a complete run folder per profile here (DIR2/<profile>)")
    args = ap.parse_args()
    reader = Reader(args.root)
    scenes = load_scenes(reader, args.scenes)
    base = reader.manifest["config"]
    w, h = reader.width, reader.height
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (over, version) in PROFILES.items():
            cfg = copy.deepcopy(base)
            cfg["output"].update(over)
            folder = Path(tmp) / name
            folder.mkdir()
            res = write_profile(scenes, cfg, version, folder, reader.manifest["config_digest"])
            if args.profiles_out:
                keep_run(reader, scenes, res, cfg, version, args.profiles_out / name.replace(", ", "-").replace(" ", "-"))
            res.pop("paths")
            results[name] = res
            print(name, json.dumps(res), flush=True)
    # float16 depth: its error on these views
    d32 = np.concatenate([np.asarray(sc["views"]["depth"], np.float32).ravel() for sc in scenes])
    d32 = d32[np.isfinite(d32)]
    rel = np.abs(d32.astype(np.float16).astype(np.float64) / d32 - 1)
    rig = scenes[0]["record"]["rig"]
    err_px = np.abs(lightfield.disparity(rig, d32.astype(np.float16).astype(np.float64))
                    - lightfield.disparity(rig, d32.astype(np.float64)))
    depth = {"max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean()),
             "max_disparity_error_px": float(err_px.max())}
    nviews = len(scenes) * reader.grid[0] * reader.grid[1]
    names = [o.name for o in outputs.stored() if o.name in scenes[0]["names"]]
    print(f"\n{nviews} real views of {w}x{h} ({len(scenes)} scenes of {args.root}); shard KB/view: all of a "
          f"shard of {config.default_config()['output']['shard_size']} scenes (cameras, records, expressions, the file's fixed "
          f"cost spread over its scenes)")
    print("| profile | " + " | ".join(f"{k} KB/view" for k in names)
          + " | shard KB/view | write ms/view | read ms/view | 10,000 scenes x 81 views (GB) |")
    print("|---|" + "---|" * (len(names) + 4))
    for name, res in results.items():
        s = res["per_output_bytes_per_view"]
        print(f"| {name} | " + " | ".join(f"{s.get(k, 0) / 1e3:.1f}" for k in names)
              + f" | {res['bytes_per_view'] / 1e3:.1f} | {res['write_ms_per_view']:.1f} | "
              f"{res['read_ms_per_view']:.1f} | {res['projected_GB']:.1f} |")
    print(f"\nfloat16 depth: max relative error {depth['max_rel_error']:.2e} (mean {depth['mean_rel_error']:.2e}), "
          f"max disparity error {depth['max_disparity_error_px']:.4f} px at baseline {rig['baseline']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"views": nviews, "width": w, "height": h, "profiles": results,
                                          "depth_float16": depth}, indent=1) + "\n")


if __name__ == "__main__":
    main()
