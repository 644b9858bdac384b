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
