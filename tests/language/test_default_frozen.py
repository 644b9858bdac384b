"""The default language output is frozen: what the language step makes of 300 sampled scenes
under the default templates (plain; the drop rule with some objects hidden; mark_views), as
written by the code before the selection was generalised to N hops and several targets, must
come out byte-identical (texts, targets, anchors, programs, order, shortfalls, valid views).

tests/language/data/default_expressions.json.gz was written by running this file as a script.
Re-freeze only for a change the docs say alters the default output:
    .venv/bin/python tests/language/test_default_frozen.py
"""

import gzip
import json
import pathlib

import numpy as np

from clevr_remv import config
from clevr_remv.language import selection, validity
from clevr_remv.scene import layout

OUT = pathlib.Path(__file__).parent / "data" / "default_expressions.json.gz"
SEED = 7
SCENES = 300


def visible_table(scene, index):
    """A deterministic visible-pixel table [3, 3, n] that hides a few objects in a few views."""
    n = len(scene["objects"])
    gen = np.random.default_rng(1000 + index)
    vis = gen.integers(0, 60, size=(3, 3, n))
    vis[vis < 6] = 0
    return vis


def record(e):
    out = {k: e[k] for k in ("object", "text", "family", "num_relations", "program", "anchor")}
    if "valid_views" in e:
        out["valid_views"] = np.asarray(e["valid_views"]).astype(int).tolist()
    return out


def freeze():
    cfg = config.load_config(overrides={"rig.grid": 3})
    rows = []
    for index in range(SCENES):
        s = layout.sample_scene(cfg, SEED, index)
        plain = selection.select(s, SEED, 8)
        vis = visible_table(s, index)
        drop = selection.select(s, SEED, 8, visible=vis, min_pixels=4)
        mark = selection.select(s, SEED, 8, visible=vis, min_pixels=4, when_hidden="mark_views")
        for e in mark.kept:
            e["valid_views"] = validity.valid_views(e, s, vis, 4)
        rows.append({"index": index,
                     "plain": [record(e) for e in plain.kept], "plain_shortfall": plain.shortfall,
                     "drop": [record(e) for e in drop.kept], "dropped": [record(e) for e in drop.dropped],
                     "drop_shortfall": drop.shortfall,
                     "mark": [record(e) for e in mark.kept], "mark_shortfall": mark.shortfall})
    return rows


def test_default_output_is_unchanged():
    with gzip.open(OUT, "rt", encoding="utf-8") as fh:
        frozen = json.load(fh)
    assert (frozen["seed"], frozen["scenes"]) == (SEED, SCENES)
    now = freeze()
    for want, got in zip(frozen["rows"], now):
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), f"scene {want['index']}"
    assert len(now) == len(frozen["rows"])


if __name__ == "__main__":
    OUT.parent.mkdir(exist_ok=True)
    with gzip.open(OUT, "wt", encoding="utf-8") as fh:
        json.dump({"seed": SEED, "scenes": SCENES, "rows": freeze()}, fh, sort_keys=True)
    print(OUT, OUT.stat().st_size)
