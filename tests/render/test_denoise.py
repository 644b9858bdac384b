"""The driver's OpenImageDenoise (clevr_remv/render/denoise.py), on real OIDN (pyoidn), no Blender."""

import subprocess
import sys

import numpy as np
import pytest

from clevr_remv.render import blender, denoise, exr


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
from clevr_remv.render import denoise
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
            "from clevr_remv import config\nfrom clevr_remv.render import denoise\n"
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
    from clevr_remv import config
    from clevr_remv.render import devices
    cfg = config.load_config()
    for info in ({"device": "cpu"}, {"device": "optix", "names": ["A"], "count": 1}):
        s = devices.render_settings(cfg, info, 0, 1, ["use_pass_z", "cycles.denoising_store_passes"], cpu_count=2)
        assert s["denoise"] is False and s["denoising_use_gpu"] is False
        assert "cycles.denoising_store_passes" in s["passes"]
    s = devices.render_settings(config.load_config(None, {"render.denoiser": "cycles"}), {"device": "cpu"}, 0, 1, [])
    assert s["denoise"] is True


def _rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_prefilters_as_cycles_names_them():
    """accurate: two guide prefilters then the colour filter; fast and none: the colour filter
    alone (noisy guides, or guides taken as clean).  With a noisy albedo, accurate and fast
    remove most of the noise; none, which takes that albedo as clean, keeps more of it."""
    clean, noisy, albedo, normal = _scene(48, 64, seed=7)
    rng = np.random.default_rng(8)
    noisy_albedo = np.clip(albedo * rng.gamma(2, 0.5, size=albedo.shape), 0, 1).astype(np.float32)
    outs = {}
    for pf, nfilters in (("accurate", 3), ("fast", 1), ("none", 1)):
        dn = denoise.Denoiser("cpu", prefilter=pf)
        try:
            outs[pf] = dn(noisy, noisy_albedo, normal)
            assert len(dn._filters) == nfilters and dn.prefilter == pf
        finally:
            dn.close()
    for pf in ("accurate", "fast"):
        assert _rmse(outs[pf], clean) < 0.5 * _rmse(noisy, clean), pf
        assert _rmse(outs[pf], clean) < _rmse(outs["none"], clean), pf
    assert not np.array_equal(outs["accurate"], outs["fast"])
    with pytest.raises(ValueError, match="prefilter must be one of accurate, fast, none"):
        denoise.Denoiser("cpu", prefilter="auto")  # "auto" is resolved before a denoiser is made
    with pytest.raises(ValueError, match="quality must be one of high, balanced, fast"):
        denoise.Denoiser("cpu", quality="best")


def test_prefilter_default_is_cycles_accurate_and_the_choice_is_recorded():
    from clevr_remv import config
    assert denoise.prefilter_of({"samples": 1}) == "accurate"  # a config from before the setting
    assert denoise.prefilter_of({"denoise_prefilter": "none"}) == "none"
    assert config.load_config()["render"]["denoise_prefilter"] == "accurate"
    assert config.load_config(None, {"render.samples": 1})["render"]["denoise_prefilter"] == "accurate"
    fast = config.load_config(None, {"render.denoise_prefilter": "fast", "render.denoise_quality": "balanced"})
    assert "prefilter fast, quality balanced" in denoise.describe(fast)
    assert "prefilter accurate, quality high" in denoise.describe(config.load_config())
    from clevr_remv.errors import UsageError
    for key, bad, hint in (("render.denoise_prefilter", "auto", "render.denoise_prefilter"),
                           ("render.denoise_quality", "best", "high, balanced or fast")):
        with pytest.raises(UsageError, match=hint):
            config.load_config(None, {key: bad})


def test_prefilter_and_quality_in_the_digest_only_when_they_change_the_bytes():
    """Runs made before these settings existed used Cycles' defaults (accurate, high): with those,
    the digest is the one such a run recorded, so it resumes; any other choice is a new digest."""
    from clevr_remv import config

    def dig(spec=None, **over):
        return config.digest(config.load_config(spec, {f"render.{k}": v for k, v in over.items()}), 0, 10)

    base = config.load_config()
    old = {**base, "render": {k: v for k, v in base["render"].items()
                              if k not in ("denoise_prefilter", "denoise_quality")}}
    assert config.digest(old, 0, 10) == dig()
    assert dig(denoise_prefilter="accurate") == dig()
    assert dig(denoise_prefilter="fast") != dig()
    assert dig(denoise_prefilter="none") != dig(denoise_prefilter="fast")
    assert dig(denoise_quality="balanced") != dig()
    # no denoising, no prefilter: the choice changes nothing
    assert dig(denoise=False, denoise_prefilter="fast") == dig(denoise=False)


@pytest.mark.render
def test_cycles_and_the_driver_apply_the_same_prefilter():
    """A real render: Cycles' own denoiser honours render.denoise_prefilter (its images change
    with it), and the driver's filters with a prefilter give images closer to Cycles' with the
    same prefilter than to Cycles' with the other."""
    from clevr_remv import config
    from clevr_remv.render import outputs
    from clevr_remv.scene import layout

    cfg = config.load_config(None, {"render.width": 64, "render.height": 48, "render.samples": 1,
                                    "render.adaptive_threshold": 0.0, "rig.grid": 3})
    rec = layout.sample_scene(cfg, 0, 0)
    stored = outputs.render_passes(outputs.stored(cfg))
    base = {**cfg["render"], "device": "cpu", "passes": stored, "denoise": True}
    cycles = {}
    w = blender.BlenderWorker()
    w.hello()
    try:
        for pf in ("accurate", "fast"):
            w.configure({**base, "denoise_prefilter": pf})
            ev = list(w.render(rec, [(1, 1)], tag=pf))[0]
            cycles[pf] = exr.read_view(ev.path, ["images"])["images"].astype(int)
        w.configure({**base, "denoise": False, "passes": stored + ["cycles.denoising_store_passes"]})
        ev = list(w.render(rec, [(1, 1)], tag="passes"))[0]
        px = w.read_view(ev, ["noisy_color", "denoising_albedo", "denoising_normal"])
    finally:
        w.close()
    driver = {}
    for pf in ("accurate", "fast"):
        dn = denoise.Denoiser("cpu", prefilter=pf)
        try:
            out = dn(px["noisy_color"], px["denoising_albedo"], px["denoising_normal"])
        finally:
            dn.close()
        driver[pf] = outputs.linear_to_srgb8(out).astype(int)

    def dist(a, b):
        return float(np.abs(a - b).mean())

    assert dist(cycles["accurate"], cycles["fast"]) > 0.1
    assert dist(driver["accurate"], cycles["accurate"]) < dist(driver["accurate"], cycles["fast"])
    assert dist(driver["fast"], cycles["fast"]) < dist(driver["fast"], cycles["accurate"])


def test_auto_resolves_to_what_was_measured_on_each_device():
    from clevr_remv import config

    auto = config.load_config()
    assert denoise.resolve_auto(auto, "cpu") == "driver"  # pyoidn is installed here
    for gpu in config.GPU_BACKENDS:
        assert denoise.resolve_auto(auto, gpu) == "cycles"
    for chosen in ("driver", "cycles"):
        pinned = config.load_config(None, {"render.denoiser": chosen})
        assert {denoise.resolve_auto(pinned, d) for d in ("cpu", "cuda")} == {chosen}
