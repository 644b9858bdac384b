"""The drop rule of docs/fidelity.md, end to end: in a real run (tiny Blender renders).  A wide baseline
hides objects in some views, and asking for more expressions than a scene has visible
descriptions makes the generator reach for hidden ones, so the rule has work to do."""

import json

import h5py
import numpy as np
import pytest
from conftest import run_cli

from clevr_remv.language import validity
from clevr_remv.store import files, refexps

pytestmark = pytest.mark.render

WIDE = {"rig": {"grid": 3, "baseline": 4.0}, "render": {"width": 64, "height": 48, "samples": 1, "denoise": False},
        "scene": {"max_objects": 6}, "expressions": {"per_scene": 200}, "output": {"shard_size": 3}}


def _run(tmp_path, name, when_hidden):
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps({**WIDE, "expressions": {**WIDE["expressions"], "when_hidden": when_hidden}}))
    out = tmp_path / name
    r = run_cli("generate", "--scenes", 3, "--out", out, "--config", cfg, "--seed", 5, "--no-progress")
    assert r.returncode == 0, r.stderr
    m = files.read_json(out / "manifest.json")
    scenes = []
    for e in m["shards"]:
        with h5py.File(out / e["path"], "r") as f:
            refs = refexps.read_refexps(f)
            for i in range(f["scenes"].shape[0]):
                scenes.append((json.loads(f["scenes"][i]), f["visible_pixels"][i], [x for x in refs if x["scene"] == i]))
    return m, scenes, r.stderr


def test_drop_rule_and_its_names_in_manifest_and_log(tmp_path):
    m, scenes, log = _run(tmp_path, "drop", "drop_expression")
    st = m["stats"]
    dropped = sum(rec["expressions"]["dropped_hidden"] for rec, _, _ in scenes)
    assert dropped > 0, "the run exercises the rule"
    assert st["expressions_dropped_hidden"] == dropped
    assert st["expressions_dropped_hidden_share"] == pytest.approx(dropped / (dropped + st["expressions"]))
    assert "view_pairs_dropped" not in st and st["view_pairs_not_valid"] == 0
    assert sum(st["scenes_short"].values()) == sum(bool(rec["expressions"]["shortfall"]) for rec, _, _ in scenes)
    assert "expressions dropped because their target or anchor is hidden in some view" in log
    assert "pairs kept but not valid in that view" in log
    for rec, vis, refs in scenes:
        hidden = validity.hidden_objects(vis, len(rec["objects"]), 1)
        for e in refs:
            assert not hidden[e["object"]] and (e["anchor"] is None or not hidden[e["anchor"]]), e["text"]
            assert e["valid_views"].all()

    m2, marked, _ = _run(tmp_path, "mark", "mark_views")
    assert m2["stats"]["expressions_dropped_hidden"] == 0
    assert m2["stats"]["expressions"] == st["expressions"] + dropped
    assert m2["stats"]["view_pairs_not_valid"] > 0
    for (rec, vis, refs), (rec2, vis2, refs2) in zip(scenes, marked):
        assert np.array_equal(vis, vis2)
        kept = {e["text"] for e in refs}
        extra = [e for e in refs2 if e["text"] not in kept]
        assert kept <= {e["text"] for e in refs2}
        assert len(extra) == rec["expressions"]["dropped_hidden"]
        hidden = validity.hidden_objects(vis, len(rec["objects"]), 1)
        for e in extra:
            assert hidden[e["object"]] or (e["anchor"] is not None and hidden[e["anchor"]])
            assert not e["valid_views"].all()
