"""The bits codec of the amodal masks: bool views packed eight pixels to a byte along rows."""

import h5py
import numpy as np
import pytest

from clevr_remv import config
from clevr_remv.errors import UsageError
from clevr_remv.render import codecs, outputs


@pytest.mark.parametrize("width", [1, 7, 8, 9, 96, 481])
def test_bits_round_trip_any_width(width):
    gen = np.random.default_rng(width)
    view = gen.random((3, 5, width)) < 0.4
    c = codecs.make("bits", np.bool_, width)
    stored = c.encode(view)
    assert stored.dtype == np.uint8 and stored.shape == (3, 5, (width + 7) // 8)
    assert np.array_equal(c.decode(stored), view) and c.decode(stored).dtype == bool
    several = np.stack([stored, stored[::-1]])  # leading dimensions kept
    assert np.array_equal(c.decode(several), np.stack([view, view[::-1]]))
    assert codecs.from_description(c.describe()) == c


def test_bits_needs_a_width_and_bool_views():
    with pytest.raises(ValueError, match="width"):
        codecs.make("bits", np.bool_)
    c = codecs.make("bits", np.bool_, 10)
    assert c.fits(np.uint8, (10,)) and c.fits(np.bool_, (10,)) is None
    with pytest.raises(ValueError, match="11 wide"):
        c.encode(np.zeros((2, 11), bool))


def test_the_amodal_output_stores_bits_in_a_dataset_of_its_spec(tmp_path):
    cfg = config.load_config(overrides={"render.width": 20, "render.height": 8, "rig.grid": 3,
                                        "scene.max_objects": 4})
    out = outputs.get("amodal")
    assert out.computed and out.per_object and out.since == "1.4" and out not in outputs.from_render([out])
    spec = out.dataset_spec(cfg, 2, (3, 3), 8, 20)
    assert spec["shape"] == (2, 3, 3, 4, 8, 3) and spec["chunks"] == (1, 1, 1, 4, 8, 3)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("amodal", **spec)
        view = np.zeros((4, 8, 20), bool)
        view[1, 2:5, 3:17] = True
        codec = out.codec_for(cfg)
        ds[1, 2, 0] = codec.encode(view)
        assert np.array_equal(codec.decode(ds[1, 2, 0]), view) and not codec.decode(ds[0, 0, 0]).any()
    plain = out.codec_for({**cfg, "output": {**cfg["output"], "codecs": {"amodal": "array"}}})
    assert plain == codecs.ArrayCodec("bool")
    with pytest.raises(UsageError, match="amodal cannot use webp"):
        out.codec_for({**cfg, "output": {**cfg["output"], "codecs": {"amodal": "webp"}}})
