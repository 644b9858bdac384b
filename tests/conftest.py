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
