"""merge that cannot write manifest.json (a full disk, a file-size limit) ends with one line and
leaves no temporary file and no torn manifest."""

import json
import resource
import signal
import subprocess
import sys

from clevr_remv.store import files


def _parts(out, n=2):
    """Two part manifests of a made-up but well-formed 4-scene run (merge reads only manifests)."""
    shards = [{"path": f"train/train-{k:05d}.h5", "split": "train", "number": k, "scene_range": [k, k + 1],
               "num_scenes": 1, "views": 9, "sha256": "0" * 64, "bytes": 10, "refexps": 8} for k in range(4)]
    base = {"format_version": "1.1", "config_digest": "d" * 16, "scenes": 4, "seed": 0, "grid": [3, 3],
            "resolution": [48, 32], "splits": {"train": {"scene_range": [0, 4]}},
            "config": {"output": {"shard_size": 1}}, "complete": True}
    out.mkdir()
    for k in range(1, n + 1):
        mine = [e for e in shards if e["number"] % n == k - 1]
        files.write_json_atomic(out / f"manifest.part-{k:03d}-of-{n:03d}.json",
                                {**base, "shards": mine, "part": [k, n], "shards_planned": len(mine)})


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))


def test_merge_that_cannot_write_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    _parts(out)
    before = sorted(p.name for p in out.iterdir())
    r = subprocess.run([sys.executable, "-m", "clevr_remv", "merge", out], capture_output=True, text=True,
                       timeout=120, preexec_fn=_limit_file_size, check=False)
    assert r.returncode in (1, 2), r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "internal error" not in err[0] and "manifest.json" in err[0], r.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # no .manifest.json.<pid>.tmp, no manifest


def test_merge_writes_the_manifest(tmp_path):
    out = tmp_path / "run"
    _parts(out)
    r = subprocess.run([sys.executable, "-m", "clevr_remv", "merge", out], capture_output=True, text=True, timeout=120, check=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["parts_merged"] == 2 and len(m["shards"]) == 4, r.stderr
    assert not list(out.glob(".*.tmp"))
