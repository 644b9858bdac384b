"""Empty splits are named, sizes read in a fitting unit, and --help does not show one
preset's values as the defaults."""

import re

import pytest
from conftest import run_cli

from clevr_remv import config
from clevr_remv.run.plan import empty_split_warning, min_scenes_to_fill, split_ranges
from clevr_remv.tools.info import human_bytes

DEFAULT_SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def test_min_scenes_is_the_real_minimum():
    for splits in (DEFAULT_SPLITS, {"train": 0.8, "val": 0.1, "test": 0.1}, {"a": 0.98, "b": 0.01, "c": 0.01},
                   {"train": 1.0}, {"train": 0.5, "unused": 0.0, "test": 0.5}):
        n = min_scenes_to_fill(splits)
        used = [k for k, v in splits.items() if v > 0]
        for count in range(n, 4 * n + 50):
            r = split_ranges(count, splits)
            assert all(r[k][1] > r[k][0] for k in used), (splits, count)
        r = split_ranges(n - 1, splits)
        assert n == 1 or any(r[k][1] <= r[k][0] for k in used)
    assert min_scenes_to_fill(DEFAULT_SPLITS) == 6


def test_empty_split_warning_names_the_empty_splits():
    assert empty_split_warning(2, DEFAULT_SPLITS) == (
        "--scenes 2 leaves test empty (train/val/test 70/15/15 by scene index); "
        "use at least 6 scenes to fill every split")
    assert empty_split_warning(1, DEFAULT_SPLITS).startswith("--scenes 1 leaves val and test empty")
    assert empty_split_warning(4, DEFAULT_SPLITS).startswith("--scenes 4 leaves val empty")
    assert all(empty_split_warning(n, DEFAULT_SPLITS) is None for n in range(6, 300))
    # A share of 0 is a choice: not warned about.
    assert empty_split_warning(10, {"train": 1.0, "val": 0.0}) is None


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (12_345, "12.3 KB"), (2_500_000, "2.5 MB"),
                                     (123_000_000, "123 MB"), (1_234_000_000, "1.23 GB"), (5.2e12, "5.2 TB")])
def test_sizes_in_a_unit_that_fits(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize("command", [["generate"], ["submit", "slurm"]])
def test_generate_help_shows_config_defaults_per_preset(command):
    r = run_cli(*command, "--help", env={"COLUMNS": "400"})
    assert r.returncode == 0
    blocks = [" ".join(b.split()) for b in re.split(r"\n  (?=-)", r.stdout)]
    lines = {b.split()[0]: b for b in blocks if b.startswith("--")}
    default, preview = config.load_config("default"), config.load_config("preview")
    for opt, key in (("--samples", ("render", "samples")), ("--width", ("render", "width")),
                     ("--height", ("render", "height")), ("--grid", ("rig", "grid")),
                     ("--baseline", ("rig", "baseline")), ("--shard-size", ("output", "shard_size"))):
        d, p = default[key[0]][key[1]], preview[key[0]][key[1]]
        assert f"[default: from --config: {d} in the default preset, {p} in preview]" in lines[opt], lines[opt]
        assert f"[default: {d}]" not in lines[opt]
    assert "[default: from --config: auto in every shipped preset]" in lines["--device"]
    assert "[default: from --config: one per GPU (one on CPU) in every shipped preset]" in lines["--workers"]
    if command != ["generate"]:
        return
    # The number of scenes that fills every split, as stated in --scenes' help.
    assert f"{min_scenes_to_fill(default['output']['splits'])} or more scenes fill every split" in lines["--scenes"]


def test_help_examples_fill_every_split():
    texts = run_cli("--help", env={"COLUMNS": "200"}).stdout + run_cli("generate", "--help", env={"COLUMNS": "200"}).stdout
    texts = " ".join(texts.split())
    counts = [int(n) for n in re.findall(r"generate --scenes (\d+)", texts)]
    assert counts
    for n in counts:
        # 2 at the defaults is the one exception, and the help says so next to it.
        assert empty_split_warning(n, DEFAULT_SPLITS) is None or "2 scenes fill train and val only" in texts, n
