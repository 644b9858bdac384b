"""Make (or check against) the golden reference of a tiny real run.

    python tests/golden/make_golden.py            # regenerate tests/golden/tiny_run.json

A tiny real ``generate`` (Blender, 3x3 views at 64x48, 2 samples, denoiser off, 2 scenes) is
run into a temporary folder and, for every shard, the SHA-256 of each dataset's decoded array
contents is recorded (images, instances, depth, visible_pixels, cameras/*, scenes,
refexps/*).  ``tests/test_golden.py`` renders the same run and compares.

Rendered datasets (images, depth, instances, visible_pixels) are also stored as arrays in
``tiny_run_rendered.npz`` and compared within a stated tolerance, because Cycles on the CPU
does not give the same bits on every processor (its kernels take other SIMD paths); every
other dataset (cameras, scenes, expressions) must match exactly on any machine.

Per-dataset contents, not whole-file bytes: a new format version may add datasets (format 1.1
added ``normals``), which changes the file bytes but must leave the datasets that already
existed untouched.  A change that legitimately alters content (e.g. new expression rules or
sizes) regenerates this file, in a commit whose message says why.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "tiny_run.json"
RENDERED_ARRAYS = HERE / "tiny_run_rendered.npz"
# Datasets Cycles computes: compared by tolerance (tests/test_golden.py), not by digest.
RENDERED = ("images", "depth", "instances", "visible_pixels")

TINY = {
    "rig": {"grid": 3, "baseline": 1.0},
    "render": {"width": 64, "height": 48, "samples": 2, "denoise": False},
    "scene": {"max_objects": 6},
    "output": {"shard_size": 2},
}
ARGS = ["--scenes", "2", "--shard-size", "1", "--seed", "11", "--workers", "1", "--no-progress", "-q"]

# The datasets of format 1.0; later versions may add others (compared only when listed here).
DATASETS = ("images", "instances", "depth", "visible_pixels", "cameras/intrinsics",
            "cameras/world_to_camera", "scenes")


def dataset_digest(ds) -> str:
    """SHA-256 of a dataset's decoded contents (dtype, shape and values; strings as UTF-8)."""
    import numpy as np

    import h5py

    h = hashlib.sha256()
    vlen = h5py.check_vlen_dtype(ds.dtype)
    if vlen is not None and h5py.check_string_dtype(ds.dtype) is None:  # variable-length numbers
        h.update(f"vlen{np.dtype(vlen).str}{ds.shape}".encode())
        h.update(json.dumps([np.asarray(x).tolist() for x in ds[()].ravel()]).encode("utf-8"))
    elif ds.dtype.kind in ("O", "S"):  # variable-length strings: compare the text
        values = ds.asstr()[()]
        h.update(f"str{ds.shape}".encode())
        h.update(json.dumps([str(x) for x in np.asarray(values, dtype=object).ravel()]).encode("utf-8"))
    else:
        arr = np.asarray(ds[()])
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def shard_digests(path: Path) -> dict[str, str]:
    import h5py
    try:
        import hdf5plugin  # noqa: F401  (compressed shards)
    except ImportError:
        pass
    out = {}
    with h5py.File(path, "r") as f:
        names = list(DATASETS) + [f"refexps/{k}" for k in sorted(f["refexps"])]
        for name in names:
            out[name] = dataset_digest(f[name])
    return out


def run_digests(out: Path) -> dict[str, dict[str, str]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {e["path"]: shard_digests(out / e["path"]) for e in manifest["shards"]}


def run_rendered(out: Path) -> dict:
    """{"<shard path>:<dataset>": array} of the RENDERED datasets of every shard."""
    import h5py
    import numpy as np

    manifest = json.loads((out / "manifest.json").read_text())
    arrays = {}
    for e in manifest["shards"]:
        with h5py.File(out / e["path"], "r") as f:
            for name in RENDERED:
                arrays[f"{e['path']}:{name}"] = np.asarray(f[name][()])
    return arrays


def tiny_run(folder: Path) -> Path:
    cfg = folder / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    out = folder / "run"
    r = subprocess.run([sys.executable, "-m", "clevr_remv", "generate", "--out", str(out),
                        "--config", str(cfg), *ARGS], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"generate failed ({r.returncode}): {r.stderr[-2000:]}")
    return out


def main() -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        run = tiny_run(Path(tmp))
        digests = run_digests(run)
        np.savez_compressed(RENDERED_ARRAYS, **run_rendered(run))
    GOLDEN.write_text(json.dumps({"config": TINY, "args": ARGS, "shards": digests}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(digests)} shards)")


if __name__ == "__main__":
    main()
