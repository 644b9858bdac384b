"""Storage codecs per output (format 1.2): lossless image codecs, the compact profile, the codecs
in the settings digest, and runs of an older format that resume in their own format."""

import contextlib
import copy
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import TINY, assert_same_shard, run_cli

from clevr_remv import FORMAT_VERSION, config
from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.render import codecs, outputs


@pytest.mark.parametrize("name", ["webp", "png"])
def test_image_codecs_are_lossless(name):
    rng = np.random.default_rng(3)
    codec = codecs.make(name, np.uint8)
    rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb[:10] = (12, 200, 7)  # flat region, as in a render
    grey = rng.integers(0, 256, (32, 48), dtype=np.uint8)
    views = [rgb, np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)]
    if name == "png":
        views.append(grey)
    else:
        assert codec.fits(np.uint8, (32, 48)) is not None, "WebP has no grey mode"
    for arr in views:
        stored = codec.encode(arr)
        assert stored.dtype == object and stored[()].dtype == np.uint8
        back = codec.decode(stored[()])
        assert back.dtype == np.uint8 and np.array_equal(back, arr), "bit-identical"
    # several views at once (a scene's U x V), as readers ask for them
    many = np.empty((2, 3), object)
    for idx in np.ndindex(2, 3):
        many[idx] = codec.encode(rgb + np.uint8(idx[1]))[()]
    got = codec.decode(many)
    assert got.shape == (2, 3, 32, 48, 3) and np.array_equal(got[1, 2], rgb + np.uint8(2))
    assert codec.fits(np.float32, (32, 48)) is not None, "an image codec refuses float data"


@pytest.mark.parametrize("name", ["webp16", "webp-q10"])
def test_sixteen_bit_webp_codecs_are_lossless(name):
    rng = np.random.default_rng(4)
    codec = codecs.make(name, np.float16)
    if name == "webp16":  # any float16 bits: depth with +inf, -0.0, subnormals
        depth = rng.uniform(3, 30, (40, 56)).astype(np.float16)
        depth[:5] = np.inf
        depth[5, :3] = (-0.0, 6e-8, 65504)
        views = [depth, rng.uniform(-1, 1, (40, 56, 3)).astype(np.float16)]
    else:  # normals on their 2**-10 grid, as outputs.camera_normals + rounding store them
        n = rng.normal(size=(40, 56, 3))
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        n = (np.round(n * 1024) / 1024 + 0.0).astype(np.float16)
        n[:4] = 0.0
        views = [n]
        with pytest.raises(ValueError, match="grid"):
            codec.encode(np.full((4, 4, 3), 0.1, np.float16))
    for arr in views:
        back = codec.decode(codec.encode(arr)[()])
        assert back.dtype == np.float16 and back.shape == arr.shape
        assert np.array_equal(back.view(np.uint16), arr.view(np.uint16)), "bit-identical"
    assert codec.fits(np.float32, (8, 8)) is not None or name == "webp-q10"
    assert codecs.from_description(codec.describe()) == codec


def test_codecs_enter_the_digest_and_the_standard_profile_leaves_no_trace(cfg):
    base = config.digest(cfg, 0, 10)
    compact = copy.deepcopy(cfg)
    compact["output"]["profile"] = "compact"
    assert config.digest(compact, 0, 10) != base
    png = copy.deepcopy(cfg)
    png["output"]["codecs"] = {"images": "png"}
    assert config.digest(png, 0, 10) not in (base, config.digest(compact, 0, 10))
    f32 = copy.deepcopy(cfg)
    f32["output"]["depth_dtype"] = "float32"
    assert config.digest(f32, 0, 10) != base
    # A configuration written before profiles and codecs existed has the same digest.
    old = copy.deepcopy(cfg)
    del old["output"]["profile"], old["output"]["codecs"]
    assert config.digest(old, 0, 10) == base
    assert config.digest(cfg, 0, 10, "1.1") != base, "the format version is part of the digest"


def test_unknown_codec_or_profile_is_one_line_and_exit_2(tmp_path):
    for bad, words in (({"codecs": {"depth": "webp"}}, "depth cannot use webp"),
                       ({"codecs": {"images": "jxl"}}, "unknown codec \"jxl\""),
                       ({"codecs": {"albedo": "png"}}, "not a stored output"),
                       ({"profile": "tiny"}, "output.profile")):
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"output": bad}))
        r = run_cli("generate", "--out", tmp_path / "out", "--scenes", 1, "--config", path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr
        assert not (tmp_path / "out").exists(), "nothing written"


def _tiny(tmp_path, name, output=None):
    cfg = copy.deepcopy(TINY)
    cfg["output"].update(output or {})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


ARGS = ["--scenes", 2, "--shard-size", 1, "--seed", 5, "--workers", 1, "--no-progress", "-q"]


@pytest.mark.render
def test_compact_profile_stores_the_same_pixels_in_fewer_bytes(tmp_path):
    std, small = tmp_path / "std", tmp_path / "compact"
    for out, extra in ((std, []), (small, ["--profile", "compact"])):
        r = run_cli("generate", "--out", out, "--config", _tiny(tmp_path, "t"), *ARGS, *extra)
        assert r.returncode == 0, r.stderr
    a, b = Reader(std), Reader(small)
    assert b.manifest["config"]["output"]["profile"] == "compact"
    with h5py.File(small / b.shards[0]["path"], "r") as f:
        assert json.loads(f.attrs["codecs"])["images"] == {"codec": "webp", "dtype": "uint8"}
        assert f.attrs["format_version"] == FORMAT_VERSION and f["images"].shape == (1, 3, 3)
    for i in a.scene_indices:
        for u in range(3):
            for v in range(3):
                va, vb = a.view(i, u, v), b.view(i, u, v)
                assert va.keys() == vb.keys()
                for key in va:
                    assert np.array_equal(va[key], vb[key]), key
    assert sum(e["bytes"] for e in b.shards) < sum(e["bytes"] for e in a.shards)
    da, db = RefexpDataset(std, split="train"), RefexpDataset(small, split="train", outputs=("depth",))
    assert len(da) == len(db) > 0
    assert np.array_equal(da[0]["image"], db[0]["image"]) and db[0]["depth"].dtype == np.float16
    r = run_cli("validate", small)
    assert r.returncode == 0 and "no violations" in r.stdout + r.stderr
    # validate checks the codecs a shard names against the run's settings
    for reader in (a, b, da.reader, db.reader):
        reader.close()
    with h5py.File(small / b.shards[0]["path"], "r+") as f:
        named = json.loads(f.attrs["codecs"])
        named["images"] = {"codec": "png", "dtype": "uint8"}
        f.attrs["codecs"] = json.dumps(named)
    r = run_cli("validate", small)
    assert r.returncode == 1 and "file attribute codecs" in r.stdout + r.stderr


OLD_RUN = """
import sys
import clevr_remv
clevr_remv.FORMAT_VERSION = "1.1"   # the format and the storage defaults before codecs
from clevr_remv.cli import run
sys.argv = ["clevr-remv"] + sys.argv[1:]
run()
"""


@pytest.mark.render
def test_a_format_1_1_run_resumes_with_its_codec_and_format(tmp_path):
    """A folder written as format 1.1 wrote it (depth float32, no codecs attribute, a manifest
    whose config has no profile or codecs): the same command today renders only what is
    missing, into the same format, byte for byte."""
    out = tmp_path / "old"
    old_cfg = _tiny(tmp_path, "old", {"depth_dtype": "float32", "compression_level": 4})  # 1.1 defaults
    r = subprocess.run([sys.executable, "-c", OLD_RUN, "generate", "--out", str(out), "--config", str(old_cfg),
                        *map(str, ARGS)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["format_version"] == "1.1"
    for key in ("profile", "codecs"):
        del m["config"]["output"][key]
    (out / "manifest.json").write_text(json.dumps(m))
    shard = out / m["shards"][1]["path"]
    before = tmp_path / "before.h5"
    shutil.copyfile(shard, before)
    shard.unlink()
    # Today's command: the defaults (depth float16, standard profile) are not given explicitly.
    r = run_cli("generate", "--out", out, "--config", _tiny(tmp_path, "new"), *ARGS)
    assert r.returncode == 0, r.stderr
    assert_same_shard(shard, before)  # re-rendered in format 1.1, byte for byte but for normals' last step
    with h5py.File(shard, "r") as f:
        assert f.attrs["format_version"] == "1.1" and "codecs" not in f.attrs
        assert f["depth"].dtype == np.float32
    m2 = json.loads((out / "manifest.json").read_text())
    assert m2["format_version"] == "1.1" and m2["config_digest"] == m["config_digest"]
    reader = Reader(out)
    assert reader.output("depth", 1, 1, 1).dtype == np.float32
    assert reader.stored_outputs() == [o.name for o in outputs.stored() if o.since <= "1.1"], "1.1's outputs"
    # Asking for another codec explicitly is another run: refused, as before.
    r = run_cli("generate", "--out", out, "--config", _tiny(tmp_path, "new"), *ARGS, "--profile", "compact")
    assert r.returncode == 2 and "other settings" in r.stderr


def _png_claiming(width, height) -> bytes:
    """A PNG whose header claims width x height (its data is a 1x1 image's)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length and type of IHDR
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def test_a_stored_image_of_the_wrong_size_is_refused_before_it_is_decoded(tmp_path, cfg):
    from clevr_remv.store import schema, shards

    c = copy.deepcopy(cfg)
    c["rig"]["grid"], c["render"]["width"], c["render"]["height"] = 1, 16, 8
    c["output"]["profile"] = "compact"
    w = shards.SceneWriter(tmp_path / "s.h5", c, (1, 1), schema.file_attrs(c, "d", (1, 1)))
    w.write_view(0, 0, {"images": np.zeros((8, 16, 3), np.uint8), "instances": np.zeros((8, 16), np.uint8),
                        "depth": np.ones((8, 16), np.float32), "normals": np.zeros((8, 16, 3), np.float16),
                        "amodal": np.zeros((c["scene"]["max_objects"], 8, 16), bool)})
    assert schema.read_output(w.f, "images", (0, 0, 0)).shape == (8, 16, 3)
    other = codecs.make("png", np.uint8).encode(np.zeros((4, 4, 3), np.uint8))
    w.f["images"][0, 0, 0] = other
    with pytest.raises(ValueError, match="decodes to"):
        schema.read_output(w.f, "images", (0, 0, 0))
    for size, words in ((10_000, "claims 10000x10000"), (100_000, "decompression bomb")):
        bomb = np.empty((), object)
        bomb[()] = np.frombuffer(_png_claiming(size, size), np.uint8)
        w.f["images"][0, 0, 0] = bomb
        with pytest.warns(Warning) if size == 10_000 else contextlib.nullcontext(), \
                pytest.raises(ValueError, match=words):
            schema.read_output(w.f, "images", (0, 0, 0))
    w.abort()
