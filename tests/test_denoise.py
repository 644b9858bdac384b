"""The driver's OpenImageDenoise (clevr_remv/denoise.py), on real OIDN (pyoidn), no Blender."""

import subprocess
import sys

import numpy as np
import pytest

from clevr_remv import denoise



def _scene(h=48, w=64, seed=0, spp=2):
    """A small synthetic 'render': a lit gradient with a bright square, its albedo and normal,
    and a noisy colour as from a few samples."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    clean = np.stack([0.2 + 0.6 * x / w, 0.3 + 0.4 * y / h, np.full_like(x, 0.25)], -1)
    clean[h // 4:h // 2, w // 4:w // 2] = (2.0, 1.5, 0.4)
    albedo = np.clip(clean / clean.max(), 0, 1).astype(np.float32)
    normal = np.zeros((h, w, 3), np.float32)
    normal[..., 2] = 1.0
    noisy = clean * rng.gamma(spp, 1.0 / spp, size=clean.shape).astype(np.float32)
    return clean.astype(np.float32), noisy.astype(np.float32), albedo, normal


def test_denoiser_removes_noise_and_reuses_its_filters():
    clean, noisy, albedo, normal = _scene()
    dn = denoise.Denoiser("cpu")
    try:
        out = dn(noisy, albedo, normal)
        filters = list(dn._filters)
        again = dn(noisy, albedo, normal)
        assert dn._filters == filters  # same filter objects: nothing rebuilt between views
        assert np.array_equal(out, again)
        err_in = np.sqrt(np.mean((noisy - clean) ** 2))
        err_out = np.sqrt(np.mean((out - clean) ** 2))
        assert err_out < 0.5 * err_in
        # another size rebuilds the filters for it
        c2, n2, a2, nn2 = _scene(32, 40, seed=1)
        assert dn(n2, a2, nn2).shape == (32, 40, 3) and dn.shape == (32, 40)
    finally:
        dn.close()


def test_exposure_matches_oidn_own_auto_exposure():
    """Our fixed-order exposure gives what OIDN's parallel one gives, to float precision."""
    _, noisy, albedo, normal = _scene(70, 90, seed=3)
    dn = denoise.Denoiser("cpu")
    try:
        ours = dn(noisy, albedo, normal)
        main = dn._filters[2]
        main.set_float("inputScale", float("nan"))  # NaN: OIDN computes its own exposure
        main.commit()
        nb = noisy.size * 4
        for name, arr in (("color", noisy), ("albedo", albedo), ("normal", normal)):
            dn._buffers[name].write(0, nb, np.ascontiguousarray(arr))
        for f in dn._filters:
            f.execute()
        theirs = np.empty_like(ours)
        dn._buffers["output"].read(0, nb, theirs)
    finally:
        dn.close()
    assert np.abs(ours - theirs).max() < 1e-4 * max(1.0, float(np.abs(theirs).max()))


def test_auto_exposure_of_black_and_of_a_constant_image():
    assert denoise.auto_exposure(np.zeros((20, 30, 3), np.float32)) == 1.0
    img = np.full((33, 47, 3), 0.18, np.float32)  # luminance 0.18 everywhere -> exposure 1
    assert denoise.auto_exposure(img) == pytest.approx(1.0, rel=1e-6)


_CHILD = """
import sys, hashlib, numpy as np
sys.path.insert(0, {tests!r})
from test_denoise import _scene
from clevr_remv import denoise
_, noisy, albedo, normal = _scene(96, 128, seed=5)
dn = denoise.Denoiser("cpu", threads={threads})
print(hashlib.sha256(dn(noisy, albedo, normal).tobytes()).hexdigest())
"""


def test_denoised_bytes_are_identical_across_processes_and_thread_counts():
    import os
    tests = os.path.dirname(__file__)
    digests = set()
    for threads in (1, 2, None):
        r = subprocess.run([sys.executable, "-c", _CHILD.format(tests=tests, threads=threads)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        digests.add(r.stdout.strip())
    assert len(digests) == 1


def test_without_pyoidn_cycles_denoises():
    code = ("import sys; sys.modules['pyoidn'] = None\n"
            "from clevr_remv import config, denoise\n"
            "cfg = config.load_config()\n"
            "print(denoise.pyoidn_version(), denoise.driver_denoises(cfg))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "False"]


def test_who_denoises():
    from clevr_remv import config
    assert denoise.driver_denoises(config.load_config())  # pyoidn is installed here
    assert not denoise.driver_denoises(config.load_config(None, {"render.denoiser": "cycles"}))
    assert not denoise.driver_denoises(config.load_config(None, {"render.denoise": False}))
    assert "pyoidn" in denoise.describe(config.load_config())


def test_when_the_driver_denoises_cycles_does_not():
    from clevr_remv import config, devices
    cfg = config.load_config()
    for info in ({"device": "cpu"}, {"device": "optix", "names": ["A"], "count": 1}):
        s = devices.render_settings(cfg, info, 0, 1, ["use_pass_z", "cycles.denoising_store_passes"], cpu_count=2)
        assert s["denoise"] is False and s["denoising_use_gpu"] is False
        assert "cycles.denoising_store_passes" in s["passes"]
    s = devices.render_settings(config.load_config(None, {"render.denoiser": "cycles"}), {"device": "cpu"}, 0, 1, [])
    assert s["denoise"] is True
