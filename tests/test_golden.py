"""Behaviour stays the same: a fresh tiny run matches the stored golden reference.

The comparison is per dataset of decoded contents (see tests/golden/make_golden.py), not of
whole-file bytes: format 1.1 added ``normals``, which changes the files' bytes while every
dataset that existed before must stay identical.  Datasets the reference does not list (newer
ones) are not compared here; their own tests check them.

A change that legitimately alters content regenerates the reference with
``python tests/golden/make_golden.py``, committed with a message saying why.
"""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import make_golden  # noqa: E402

pytestmark = pytest.mark.render


def test_tiny_run_matches_the_golden_reference(tmp_path):
    golden = json.loads(make_golden.GOLDEN.read_text())
    assert golden["config"] == make_golden.TINY and golden["args"] == make_golden.ARGS, \
        "the reference was made with other settings: regenerate it"
    fresh = make_golden.run_digests(make_golden.tiny_run(tmp_path))
    assert sorted(fresh) == sorted(golden["shards"])
    for shard, datasets in golden["shards"].items():
        for name, digest in datasets.items():
            assert name in fresh[shard], f"{shard}: dataset {name} disappeared"
            assert fresh[shard][name] == digest, (
                f"{shard}: {name} changed; if intended, run python tests/golden/make_golden.py "
                f"and say why in the commit message")
