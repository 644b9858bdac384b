import json

import pytest

from clevr_remv import config
from clevr_remv.errors import UsageError
from clevr_remv.scene import visibility


def test_default_is_the_source(cfg):
    assert cfg["render"]["width"] == 480 and cfg["render"]["height"] == 320
    assert cfg["rig"]["grid"] == 9
    assert cfg["scene"]["min_objects"] == 3 and cfg["scene"]["max_objects"] == 10
    assert cfg["output"]["splits"] == {"train": 0.7, "val": 0.15, "test": 0.15}


def test_presets_ship_and_load():
    names = config.shipped_config_names()
    assert {"default", "preview"} <= set(names)
    preview = config.load_config("preview")
    assert preview["rig"]["grid"] == 3 and preview["render"]["width"] < 480
    # a quick look: the denoiser's cheap prefilter, as Blender's previews (docs/benchmarks.md)
    assert preview["render"]["denoise_prefilter"] == "fast"
    assert config.load_config()["render"]["denoise_prefilter"] == "accurate"


def test_user_file_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"render": {"samples": 16}}))
    cfg = config.load_config(str(p))
    assert cfg["render"]["samples"] == 16 and cfg["render"]["width"] == 480
    t = tmp_path / "mine.toml"
    t.write_text("[rig]\ngrid = 5\nbaseline = 0.5\n")
    cfg = config.load_config(str(t))
    assert cfg["rig"]["grid"] == 5 and cfg["rig"]["baseline"] == 0.5


@pytest.mark.parametrize("content, message", [
    ({"render": {"samples": 0}}, "render.samples"),
    ({"render": {"sample": 4}}, "unknown config key 'render.sample'"),
    ({"rig": {"grid": 4}}, "odd"),
    ({"scene": {"min_objects": 8, "max_objects": 4}}, "min_objects"),
    ({"output": {"compression": "rar"}}, "output.compression"),
    ({"render": {"denoise": "yes"}}, "true or false"),
])
def test_bad_values_are_named(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(content))
    with pytest.raises(UsageError, match=message):
        config.load_config(str(p))


def test_unreadable_or_missing_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        config.load_config(str(tmp_path / "nope.json"))
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        config.load_config(str(p))


def test_digest_tracks_dataset_settings_only(cfg):
    d = config.digest(cfg, 0, 100)
    assert d == config.digest(config.load_config(), 0, 100)
    assert d != config.digest(cfg, 1, 100)
    assert d != config.digest(cfg, 0, 101)
    other = config.load_config(overrides={"render.samples": 32})
    assert config.digest(other, 0, 100) != d
    same = config.load_config(overrides={"workers.count": 4, "render.device": "cpu"})
    assert config.digest(same, 0, 100) == d, "device and worker count do not change the data"


def test_pixel_threshold_scales_with_resolution(cfg):
    assert visibility.threshold(cfg) == 200
    small = config.load_config(overrides={"render.width": 240, "render.height": 160})
    assert visibility.threshold(small) == 50


def test_preset_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "preview").mkdir()  # e.g. the output of an earlier --out preview
    assert config.load_config("preview")["rig"]["grid"] == 3
    (tmp_path / "folder").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        config.load_config("folder")


def test_split_shares_that_do_not_sum_to_one_warn(tmp_path):
    import logging

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep = Keep()
    logger = logging.getLogger("clevr_remv")
    logger.addHandler(keep)
    try:
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"output": {"splits": {"train": 0.9, "val": 0.5, "test": 0.1}}}))
        cfg = config.load_config(str(path))
        assert cfg["output"]["splits"] == {"train": 0.9, "val": 0.5, "test": 0.1}
        (msg,) = [m for m in keep.messages if "output.splits" in m]
        assert "sum to 1.5, not 1" in msg and "train 60.0%" in msg and "test 6.7%" in msg
        keep.messages.clear()
        path.write_text(json.dumps({"output": {"splits": {"train": 0.7, "val": 0.2, "test": 0.1}}}))
        config.load_config(str(path))
        config.load_config()
        assert not [m for m in keep.messages if "output.splits" in m]
    finally:
        logger.removeHandler(keep)
