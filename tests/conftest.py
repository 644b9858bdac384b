import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clevr_remv import config

# The smallest real render that still exercises everything: 3x3 rig, tiny images, 2 samples.
TINY = {
    "rig": {"grid": 3, "baseline": 1.0},
    "render": {"width": 64, "height": 48, "samples": 2, "denoise": False},
    "scene": {"max_objects": 6},
    "output": {"shard_size": 2},
}


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture
def cfg():
    return config.load_config()


def run_cli(*args, timeout=900, env=None):
    """Run the real command line in a child process (real exit codes, real stderr)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "clevr_remv", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# One small real dataset for the whole session: 6 scenes (train 0-3 in two shards, val 4,
# test 5), 3x3 views at 96x64, rendered by Blender.
GEN_ARGS = ["--scenes", 6, "--shard-size", 2, "--width", 96, "--height", 64, "--seed", 11]


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


# The generalized setting on a real render: several targets or none, chains of two relations,
# hidden targets marked per view.  4 scenes, 3x3 views at 64x48.
GRES_EXPRESSIONS = {"targets": "generalized", "max_relations": 2, "per_scene": 12, "when_hidden": "mark_views"}


@pytest.fixture(scope="session")
def generated_gres(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gres")
    cfg = folder / "gres.json"
    cfg.write_text(json.dumps({**TINY, "expressions": GRES_EXPRESSIONS}))
    out = folder / "run"
    r = run_cli("generate", "--out", out, "--config", cfg, "--scenes", 4, "--shard-size", 2, "--seed", 5)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def generated(tmp_path_factory, tiny_cfg) -> Path:
    out = tmp_path_factory.mktemp("run") / "a"
    r = run_cli("generate", "--out", out, "--config", tiny_cfg, *GEN_ARGS)
    assert r.returncode == 0, r.stderr
    return out


# -- comparing the shards of two runs of the same command ------------------------------------
NORMAL_STEP = 2.0 ** -10  # the storage grid of normals (clevr_remv/render/outputs.py)


def _datasets(f) -> dict:
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if hasattr(obj, "dtype") else None)
    return out


def _equal(x, y) -> bool:
    import numpy as np

    if x.dtype.kind == "O":  # variable-length strings or integer lists
        return x.shape == y.shape and all(np.array_equal(np.asarray(p), np.asarray(q))
                                          for p, q in zip(x.ravel(), y.ravel(), strict=True))
    return np.array_equal(x, y, equal_nan=x.dtype.kind == "f")


def assert_same_shard(a: Path, b: Path, rgb_share: float = 0.0) -> None:
    """The same shard written by two processes: the same bytes or, where Cycles' Normal pass put
    a component on the other side of a rounding boundary, normals within one 2^-10 step and every
    other dataset and attribute identical (README, "Determinism").  ``rgb_share``: the share of
    RGB values that may differ by one 8-bit level (denoised runs, Cycles 5)."""
    import h5py
    import numpy as np

    from clevr_remv.store import shards

    if shards.sha256_file(a) == shards.sha256_file(b):
        return
    try:
        import hdf5plugin  # noqa: F401  (compressed shards)
    except ImportError:
        pass
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa.attrs) == sorted(fb.attrs), (a.name, "attributes")
        for key in fa.attrs:
            assert np.array_equal(np.asarray(fa.attrs[key]), np.asarray(fb.attrs[key])), (a.name, key)
        da, db = _datasets(fa), _datasets(fb)
    assert sorted(da) == sorted(db), a.name
    differ = []
    for name, x in da.items():
        y = db[name]
        assert x.shape == y.shape and x.dtype == y.dtype, (a.name, name)
        if name == "normals":
            assert np.abs(x.astype(np.float32) - y.astype(np.float32)).max() <= NORMAL_STEP, (a.name, name)
        elif name == "images" and rgb_share:
            diff = np.abs(x.astype(int) - y.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < rgb_share, (a.name, name)
        else:
            assert _equal(x, y), (a.name, name)
        if not _equal(x, y):
            differ.append(name)
    assert differ, f"{a.name}: the files differ but none of their datasets does (layout, padding?)"


def assert_same_run(a: Path, b: Path, manifest: str = "manifest.json", rgb_share: float = 0.0) -> None:
    """Two run folders hold the same shards (:func:`assert_same_shard`), listed alike (the
    entries' checksum and size follow the files)."""
    ma, mb = (json.loads((root / manifest).read_text()) for root in (a, b))

    def entries(m):
        return {e["path"]: {k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in m["shards"]}

    assert entries(ma) == entries(mb)
    for path in entries(ma):
        assert_same_shard(a / path, b / path, rgb_share)
