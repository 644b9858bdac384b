"""A rig so wide that objects leave the corner views' frames is reported, not taken quietly:
a warning past rig.warn_unseen_share, the share in the manifest and in ``stats``."""

import json

import pytest
from conftest import run_cli


@pytest.mark.render
def test_wide_baseline_warns_and_reports_the_share(tiny_cfg, tmp_path):
    out = tmp_path / "wide"
    r = run_cli("generate", "--out", out, "--config", tiny_cfg, "--scenes", 2, "--baseline", 50, "--seed", 3)
    assert r.returncode == 0, r.stderr
    st = json.loads((out / "manifest.json").read_text())["stats"]
    assert st["objects"] > 0 and st["objects_unseen_share"] == st["objects_unseen"] / st["objects"] > 0.05
    (line,) = [x for x in r.stderr.splitlines() if "show 0 pixels in some view" in x]
    assert "WARNING" in line and f"{st['objects_unseen']} of {st['objects']} objects" in line
    assert "rig.warn_unseen_share = 0.05" in line and "rig.baseline (now 50)" in line
    s = json.loads(run_cli("stats", out, "--json").stdout)
    assert s["all"]["objects_unseen"] == st["objects_unseen"] and s["all"]["objects"] == st["objects"]
    assert "objects with 0 px in some view" in run_cli("stats", out).stdout

    cfg = json.loads(tiny_cfg.read_text())
    cfg["rig"]["warn_unseen_share"] = 1.0  # the user accepts it: no warning, same dataset
    quiet = tmp_path / "quiet.json"
    quiet.write_text(json.dumps(cfg))
    r = run_cli("generate", "--out", out, "--config", quiet, "--scenes", 2, "--baseline", 50, "--seed", 3)
    assert r.returncode == 0, r.stderr
    assert "show 0 pixels" not in r.stderr and "already done" in r.stderr


@pytest.mark.render
def test_the_test_run_keeps_its_objects_in_frame(generated):
    st = json.loads((generated / "manifest.json").read_text())["stats"]
    assert st["objects"] > 0 and st["objects_unseen_share"] <= 0.05
