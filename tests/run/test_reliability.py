"""Issue 12 (reliability) with real renders: damaged shards and manifests, outputs that cannot
be written, and (phase B) concurrent writers, full disks, hung workers, paths outside --out."""

import json
import shutil

import h5py
import pytest
from conftest import TINY, assert_same_run, listing, run_cli

from clevr_remv.data import Reader, RefexpDataset
from clevr_remv.errors import CorruptShardError

pytestmark = pytest.mark.render

SMALL = ["--scenes", 6, "--shard-size", 2, "--width", 48, "--height", 32]


@pytest.fixture(scope="module")
def small_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, small_cfg):
    """6 scenes: train 0-3 (2 shards), val 4, test 5; 48x32, 3x3 views."""
    out = tmp_path_factory.mktemp("small") / "run"
    r = run_cli("generate", "--out", out, "--config", small_cfg, *SMALL)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run_copy(small_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(small_run, dst)
    return dst


def _one_line(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    return lines[0]


def _last_line(r, code):
    """A run that had started logs its progress; its end is one line, without a traceback."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr and "Exception" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def _patch(path, offset, data: bytes):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _flip_scene_json(path):
    """Put a byte that is not UTF-8 into the stored JSON record of the shard's first scene."""
    with h5py.File(path, "r") as f:
        text = f["scenes"][0]
    blob = path.read_bytes()
    at = blob.index(text)
    _patch(path, at + len(text) // 2, b"\xff")


def _break_image_chunk(path, row=0):
    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info_by_coord((row, 0, 0, 0, 0, 0))
    _patch(path, info.byte_offset + info.size // 2, b"\x00\xff\x13\x37" * 4)


def _flip_refexp_object(path):
    with h5py.File(path, "r") as f:
        offset = f["refexps/object"].id.get_offset()
        first = int(f["refexps/object"][0])
    # another object of the same scene (objects 0..n-1, n >= 3): in range, so only the checksum tells
    _patch(path, offset, (first - 1 if first > 0 else first + 1).to_bytes(4, "little"))


# -- a damaged shard is refused, naming it -----------------------------
def test_reader_names_a_shard_with_damaged_scene_json(run_copy):
    shard = run_copy / "train" / "train-00000.h5"
    _flip_scene_json(shard)
    r = Reader(run_copy)
    with pytest.raises(CorruptShardError, match="train-00000.h5"):
        r.scene(0)
    assert r.scene(2)["index"] == 2  # other shards still read


def test_reader_names_a_shard_with_a_damaged_chunk(run_copy):
    shard = run_copy / "val" / "val-00000.h5"
    _break_image_chunk(shard)
    r = Reader(run_copy)
    with pytest.raises(CorruptShardError, match="val-00000.h5"):
        r.image(4, 0, 0)
    ds = RefexpDataset(run_copy, split="val", views="all")
    with pytest.raises(CorruptShardError, match="val-00000.h5"):
        for i in range(len(ds)):
            ds[i]


def test_verify_on_open_catches_a_flip_the_reader_cannot_see(run_copy):
    shard = run_copy / "train" / "train-00000.h5"
    _flip_refexp_object(shard)
    RefexpDataset(run_copy, split="train")  # without verify: silently wrong masks
    with pytest.raises(CorruptShardError, match="train-00000.h5.*SHA-256"):
        RefexpDataset(run_copy, split="train", verify=True)
    with pytest.raises(CorruptShardError, match="train-00000.h5"):
        Reader(run_copy, verify=True)
    RefexpDataset(run_copy, split="val", verify=True)  # only the split's shards are checked
    r = run_cli("info", run_copy, "--verify")
    assert r.returncode == 1 and "CHECKSUM MISMATCH train/train-00000.h5" in r.stdout


def test_info_verify_reads_contents_not_only_checksums(run_copy):
    """A shard damaged before its checksum was taken (two writers at once) has a matching
    SHA-256: --verify must still find it."""
    shard = run_copy / "test" / "test-00000.h5"
    _break_image_chunk(shard)
    m = files.read_json(run_copy / "manifest.json")
    for e in m["shards"]:
        if e["path"] == "test/test-00000.h5":
            e["sha256"] = shards.sha256_file(shard)
    files.write_json_atomic(run_copy / "manifest.json", m)
    r = run_cli("info", run_copy, "--verify")
    assert r.returncode == 1, r.stdout
    assert "UNREADABLE test/test-00000.h5" in r.stdout
    r = run_cli("export", "coco", run_copy, run_copy.parent / "exp", "--split", "test", "--views", "all")
    line = _one_line(r, 1)
    assert "test-00000.h5" in line and "damaged" in line


# -- a damaged manifest says what to run --------------------------------------------
@pytest.mark.parametrize("text", ["{not json", "[]", '{"shards": 3}'])
def test_damaged_manifest_names_the_fix(run_copy, text):
    (run_copy / "manifest.json").write_text(text)
    line = _one_line(run_cli("info", run_copy), 2)
    assert "manifest.json" in line and "re-run the same 'clevr-remv generate'" in line


def test_manifest_with_paths_outside_is_refused(run_copy):
    m = files.read_json(run_copy / "manifest.json")
    m["shards"][0]["path"] = "../../etc/passwd"
    files.write_json_atomic(run_copy / "manifest.json", m)
    line = _one_line(run_cli("info", run_copy), 2)
    assert "shard path" in line


# -- export / baseline / evaluate outputs and arguments --------------------------------
def test_export_and_baseline_refuse_unknown_splits(small_run, tmp_path):
    for cmd in (["export", "coco", small_run, tmp_path / "c", "--split", "tst"],
                ["export", "refcoco", small_run, tmp_path / "r", "--split", "tst"],
                ["baseline", small_run, tmp_path / "p.h5", "--split", "tst"]):
        line = _one_line(run_cli(*cmd), 2)
        assert "unknown split 'tst'" in line
    assert listing(tmp_path) == []


def test_export_refuses_repeated_views(small_run, tmp_path):
    line = _one_line(run_cli("export", "refcoco", small_run, tmp_path / "r", "--views", "0,0;0,0"), 2)
    assert "twice" in line
    assert listing(tmp_path) == []


def test_outputs_that_cannot_be_written_are_refused_before_the_work(small_run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["export", "coco", small_run, a_file], "is a file"),
        (["export", "refcoco", small_run, a_file / "sub"], "is a file"),
        (["export", "coco", small_run, "/proc/clevr-remv-export"], "cannot write"),
        (["baseline", small_run, a_file / "p.h5"], "is a file"),
        (["baseline", small_run, "/proc/p.h5"], "cannot write"),
        (["baseline", small_run, a_file], "exists"),
    ]
    for args, mention in cases:
        line = _one_line(run_cli(*args), 2)
        assert mention in line, (args, line)
    pred = tmp_path / "pred.h5"
    assert run_cli("baseline", small_run, pred).returncode == 0
    for report, mention in ((a_file, "is a file"), (a_file / "rep", "is a file"), ("/proc/rep", "cannot write")):
        r = run_cli("evaluate", small_run, "--predictions", pred, "--report", report)
        line = _one_line(r, 2)
        assert mention in line and r.stdout == "", (report, r.stdout)  # no tables before the error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "pred.h5"]


# -- phase B: writing -------------------------------------------------------------------------
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from clevr_remv.store import files, shards


def _cmd(out, cfg, *extra):
    return [sys.executable, "-m", "clevr_remv", "generate", "--out", str(out), "--config", str(cfg),
            *map(str, SMALL), *map(str, extra)]


def _gen(out, cfg, *extra, timeout=600):
    return run_cli(*_cmd(out, cfg, *extra)[3:], timeout=timeout)


def _digests(out, name="manifest.json"):
    return {e["path"]: e["sha256"] for e in files.read_json(out / name)["shards"]}


def _cfg_with(tmp_path, **sections):
    cfg = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _tree(root):
    """{relative path: bytes} of every file under root (symlinks not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


# -- --overwrite never removes anything outside --out -------------------------------------
@pytest.mark.parametrize("bad_split", ["..", "/ABS", "../sibling"])
def test_overwrite_with_a_manifest_naming_paths_outside(run_copy, small_cfg, tmp_path, bad_split):
    parent = run_copy.parent
    sibling = parent / "sibling"
    sibling.mkdir()
    (sibling / "thesis.tex").write_text("mine")
    (parent / "notes.txt").write_text("mine")
    absolute = tmp_path / "abs-target"
    absolute.mkdir()
    (absolute / "keep.txt").write_text("mine")
    name = str(absolute) if bad_split == "/ABS" else bad_split
    m = files.read_json(run_copy / "manifest.json")
    m["config"]["output"]["splits"] = {name: 1.0}
    m["splits"] = {name: {"scene_range": [0, 6]}}
    m["config_digest"] = "0000000000000000"  # "another run": --overwrite replaces it
    files.write_json_atomic(run_copy / "manifest.json", m)
    r = _gen(run_copy, small_cfg, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (sibling / "thesis.tex").read_text() == "mine"
    assert (parent / "notes.txt").read_text() == "mine"
    assert (absolute / "keep.txt").read_text() == "mine"
    assert run_cli("info", run_copy, "--verify").returncode == 0


def test_overwrite_never_follows_a_symlink_out(small_run, small_cfg, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "train").mkdir(parents=True)
    keep = {elsewhere / "train" / "train-00000.h5": b"not yours", elsewhere / "scene-0000001.h5": b"not yours",
            elsewhere / "worker-0.log": b"not yours"}
    for p, data in keep.items():
        p.write_bytes(data)
    shutil.rmtree(out / "logs")
    (out / "logs").symlink_to(elsewhere)
    (out / ".work").symlink_to(elsewhere)
    shutil.move(out / "val" / "val-00000.h5", elsewhere / "val-00000.h5")
    shutil.rmtree(out / "val")
    (out / "val").symlink_to(elsewhere)
    r = _gen(out, small_cfg, "--seed", 9, "--overwrite")
    assert r.returncode == 0, r.stderr
    for p, data in keep.items():
        assert p.read_bytes() == data, p
    assert (elsewhere / "val-00000.h5").exists()


# -- concurrent writers (docs/reliability.md) --------------------------------------------------------
def _start(out, cfg, *extra):
    return subprocess.Popen(_cmd(out, cfg, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p, timeout=600):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, err


def test_two_identical_writers_at_once(small_run, small_cfg, tmp_path):
    out = tmp_path / "out"
    a, b = _start(out, small_cfg), _start(out, small_cfg)
    results = [_finish(a), _finish(b)]
    codes = sorted(c for c, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        err = [e for c, e in results if c == 2][0]
        assert "another clevr-remv generate" in err and len(err.strip().splitlines()) == 1, err
    r = run_cli("info", out, "--verify")
    assert r.returncode == 0, r.stdout
    assert_same_run(out, small_run)  # identical to a run alone


def test_two_writers_with_other_settings_at_once(small_run, small_cfg, tmp_path):
    out = tmp_path / "out"
    a, b = _start(out, small_cfg), _start(out, small_cfg, "--seed", 5)
    (ca, ea), (cb, eb) = _finish(a), _finish(b)
    assert sorted([ca, cb]) == [0, 2], (ea, eb)
    m = files.read_json(out / "manifest.json")
    assert m["complete"]
    for e in m["shards"]:
        with h5py.File(out / e["path"], "r") as f:
            assert f.attrs["config_digest"] == m["config_digest"]
            assert {json.loads(s)["global_seed"] for s in f["scenes"][()]} == {m["seed"]}
    assert run_cli("info", out, "--verify").returncode == 0
    if ca == 0:
        assert_same_run(out, small_run)


def test_two_parts_at_once_lose_nothing(small_run, small_cfg, tmp_path):
    out = tmp_path / "out"
    procs = [_start(out, small_cfg, "--part", f"{k}/2") for k in (1, 2)]
    for p in procs:
        code, err = _finish(p)
        assert code == 0, err
    assert not (out / ".work").exists()
    r = run_cli("merge", out)
    assert r.returncode == 0 and "complete" in r.stderr, r.stderr
    assert_same_run(out, small_run)
    assert run_cli("info", out, "--verify").returncode == 0


def test_same_part_twice_at_once_is_refused(small_cfg, tmp_path):
    out = tmp_path / "out"
    a, b = _start(out, small_cfg, "--part", "1/2"), _start(out, small_cfg, "--part", "1/2")
    results = [_finish(a), _finish(b)]
    assert sorted(c for c, _ in results) in ([0, 0], [0, 2]), results
    assert json.loads((out / "manifest.part-001-of-002.json").read_text())["complete"]


def test_overwrite_of_one_part_touches_only_that_part(small_cfg, tmp_path):
    out = tmp_path / "out"
    for k in (1, 2):
        r = _gen(out, small_cfg, "--part", f"{k}/2")
        assert r.returncode == 0, r.stderr
    part2 = {path: data for path, data in _tree(out).items()
             if path in _digests(out, "manifest.part-002-of-002.json")
             or "part-002" in path}
    assert len(part2) >= 3
    # Another seed for part 1 only, without --overwrite: refused (settings differ).
    r = _gen(out, small_cfg, "--part", "1/2", "--seed", 7)
    assert r.returncode == 2 and "other settings" in r.stderr, r.stderr
    r = _gen(out, small_cfg, "--part", "1/2", "--seed", 7, "--overwrite")
    assert r.returncode == 0, r.stderr
    after = _tree(out)
    for path, data in part2.items():
        assert after.get(path) == data, f"part 2's {path} was touched"
    m1 = files.read_json(out / "manifest.part-001-of-002.json")
    assert m1["seed"] == 7 and m1["complete"]
    # A part 2 with part 1's new settings but without --overwrite: refused (its own old run).
    r = _gen(out, small_cfg, "--part", "2/2", "--seed", 0, "--shard-size", 3)
    assert r.returncode == 2, r.stderr
    assert run_cli("merge", out).returncode == 2  # mixed settings are never merged


def test_a_part_with_other_settings_is_refused(small_cfg, tmp_path):
    out = tmp_path / "out"
    assert _gen(out, small_cfg, "--part", "1/2").returncode == 0
    before = _tree(out)
    r = _gen(out, small_cfg, "--part", "2/2", "--seed", 3)
    line = _one_line(r, 2)
    assert "manifest.part-001-of-002.json" in line and "same settings" in line
    assert _tree(out) == before


def _wait_for(pred, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_scheduler_kill_of_a_part_is_finished_by_rerunning(small_run, small_cfg, tmp_path):
    """scancel / preemption / time limit: SIGTERM, then SIGKILL."""
    out = tmp_path / "out"
    p = _start(out, small_cfg, "--part", "1/2")
    assert _wait_for(lambda: (out / "logs" / "part-001-of-002" / "scenes.jsonl").exists())
    p.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    p.kill()
    p.communicate()
    assert p.returncode in (143, -9)
    for k in (1, 2):
        r = _gen(out, small_cfg, "--part", f"{k}/2")
        assert r.returncode == 0, r.stderr
    assert run_cli("merge", out).returncode == 0
    assert_same_run(out, small_run)


def test_stale_scene_file_of_other_settings_is_not_reused(small_run, small_cfg, tmp_path):
    """A --seed 5 --part 1/2 run killed after one scene, then a seed-0 run into the folder."""
    out = tmp_path / "out"
    p = _start(out, small_cfg, "--seed", 5, "--part", "1/2")
    work = out / ".work" / "part-001-of-002"
    assert _wait_for(lambda: any(work.glob("scene-*.h5")) if work.exists() else False)
    p.kill()
    p.communicate()
    r = _gen(out, small_cfg)
    assert r.returncode == 2 and "other settings" in r.stderr  # refused: no silent mix
    # The damaged-manifest path (rebuild) must not reuse the stale file either.
    (out / "manifest.part-001-of-002.json").write_text("{")
    stale = sorted(work.glob("scene-*.h5"))
    assert stale
    for s in stale:
        shutil.copy(s, tmp_path / s.name)
    r = _gen(out, small_cfg, "--part", "1/2")
    assert r.returncode == 0, r.stderr
    assert "not a finished scene" in r.stderr
    for e in files.read_json(out / "manifest.part-001-of-002.json")["shards"]:
        with h5py.File(out / e["path"], "r") as f:
            assert {json.loads(s)["global_seed"] for s in f["scenes"][()]} == {0}


# -- a damaged shard or manifest, seen by generate ----------------------------------------
def test_generate_re_renders_a_shard_that_fails_its_checksum(small_run, run_copy, small_cfg):
    _flip_refexp_object(run_copy / "train" / "train-00001.h5")
    r = _gen(run_copy, small_cfg)
    assert r.returncode == 0, r.stderr
    assert "train/train-00001.h5 does not match its SHA-256" in r.stderr
    assert "re-rendered 1 shard" in r.stderr
    assert_same_run(run_copy, small_run)
    assert run_cli("info", run_copy, "--verify").returncode == 0


@pytest.mark.parametrize("damage", ["garbage", "not-utf8", "not-an-object", "removed"])
def test_a_damaged_manifest_is_rebuilt_from_the_shards(small_run, run_copy, small_cfg, damage):
    if damage == "garbage":
        (run_copy / "manifest.json").write_text("{\"shards\": [")
    elif damage == "not-utf8":
        (run_copy / "manifest.json").write_bytes(b'{"created": "\xff\xfe", "shards": [')
    elif damage == "not-an-object":
        (run_copy / "manifest.json").write_text("[]")
    else:
        (run_copy / "manifest.json").unlink()
    r = _gen(run_copy, small_cfg)
    assert r.returncode == 0, r.stderr
    assert "0 scenes to render" in r.stderr, "intact shards are reused, not rendered again"
    assert_same_run(run_copy, small_run)
    assert run_cli("info", run_copy, "--verify").returncode == 0


# -- leaks after a kill; SIGTERM at once ----------------------------------------------------
def test_scene_files_of_a_finished_shard_are_cleaned_on_the_next_run(small_run, small_cfg, tmp_path):
    """The state a SIGKILL between a shard's rename and its scene clean-up leaves."""
    out = tmp_path / "out"
    p = _start(out, small_cfg)
    assert _wait_for(lambda: (out / ".work" / "scene-0000000.h5").exists())
    p.kill()
    p.communicate()
    shutil.copy(out / ".work" / "scene-0000000.h5", tmp_path / "scene-0000000.h5")
    assert _gen(out, small_cfg).returncode == 0
    (out / ".work").mkdir()
    shutil.copy(tmp_path / "scene-0000000.h5", out / ".work" / "scene-0000000.h5")
    r = _gen(out, small_cfg)
    assert r.returncode == 0, r.stderr
    assert not (out / ".work").exists(), listing(out / ".work")
    assert_same_run(out, small_run)


def test_sigterm_in_the_first_second_exits_143(small_cfg, tmp_path):
    out = tmp_path / "out"
    p = _start(out, small_cfg)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, err)
    assert "interrupted" in err and "Traceback" not in err
    r = _gen(out, small_cfg)
    assert r.returncode == 0, r.stderr


# -- a hung worker ----------------------------------------------------------------------------
FAKE_BLENDER = """#!{python}
# A Blender that starts, answers hello and configure, then hangs on every render.
import json, sys, time
for line in sys.stdin:
    cmd = json.loads(line)["cmd"]
    if cmd == "hello":
        reply = {{"event": "hello", "blender": "fake", "devices": {{"cpu": ["CPU"]}}}}
    elif cmd == "configure":
        reply = {{"event": "configured", "device": "cpu", "names": ["CPU"]}}
    elif cmd == "quit":
        break
    else:
        time.sleep(3600)
    print("@clevr-remv@ " + json.dumps(reply), flush=True)
"""


def test_a_worker_that_never_starts_times_out_at_start_up_not_at_the_first_view(tmp_path):
    """The start-up (hello) has its own short deadline: the long first-view one does not apply
    to a Blender that never answers.  One line, naming the worker's log, which says why."""
    fake = tmp_path / "blender"
    fake.write_text("#!/bin/sh\necho 'stand-in Blender: sleeping' >&2\nexec sleep 3600\n")
    fake.chmod(0o755)
    cfg = _cfg_with(tmp_path, workers={"startup_timeout": 3, "first_view_timeout": 1800})
    t0 = time.time()
    r = run_cli(*_cmd(tmp_path / "out", cfg, "--blender", fake)[3:], timeout=120)
    assert time.time() - t0 < 3 + 30
    line = _one_line(r, 2)
    assert "no reply from Blender in 3 s at its start-up" in line and "workers.startup_timeout" in line
    log = Path(line.rsplit("see ", 1)[1].split(";")[0].strip())
    assert "stand-in Blender: sleeping" in log.read_text()
    log.unlink()
    assert not (tmp_path / "out").exists()


def test_the_start_up_deadline_is_short_by_default_and_the_first_view_long():
    from clevr_remv import config
    from clevr_remv.render.blender import ReplyTimeouts

    t = ReplyTimeouts.from_config(config.load_config())
    assert t.startup <= 120 < 1800 <= t.first_view
    assert t.view() == t.first_view, "no view measured yet"
    t.observe(0.5)
    assert t.view() == t.minimum


def test_a_worker_that_hangs_on_render_is_retried_then_given_up(tmp_path):
    fake = tmp_path / "blender"
    fake.write_text(FAKE_BLENDER.format(python=sys.executable))
    fake.chmod(0o755)
    cfg = _cfg_with(tmp_path, workers={"startup_timeout": 3, "first_view_timeout": 3, "tries": 2})
    out = tmp_path / "out"
    t0 = time.time()
    r = run_cli(*_cmd(out, cfg, "--blender", fake)[3:], timeout=120)
    assert time.time() - t0 < 2 * 3 + 30
    line = _last_line(r, 1)
    assert "gave up after 2 tries" in line and "no reply from Blender in 3 s at its first view" in line
    assert str(out / "logs" / "worker-0.log") in line


def test_a_stopped_worker_is_killed_and_the_scene_retried(small_run, tmp_path):
    cfg = _cfg_with(tmp_path, workers={"view_timeout_min": 2})
    out = tmp_path / "out"
    p = _start(out, cfg)
    jsonl = out / "logs" / "scenes.jsonl"
    assert _wait_for(lambda: jsonl.exists() and jsonl.read_text().strip())
    pid = json.loads(jsonl.read_text().splitlines()[0])["worker_pid"]
    t0 = time.time()
    os.kill(pid, signal.SIGSTOP)
    code, err = _finish(p, timeout=300)
    assert code == 0, err
    assert "no reply from Blender in" in err and "retrying scene" in err, err
    assert time.time() - t0 < 2 + 60
    assert_same_run(out, small_run)


# -- a full disk ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_with_one_line_and_resumes(small_run, small_cfg, small_disk, tmp_path):
    out = small_disk / "out"
    r = _gen(out, small_cfg)
    line = _last_line(r, 1)
    assert "disk full while writing" in line and "re-run the same command" in line
    kept = sorted(p.name for p in (out / ".work").glob("scene-*.h5"))
    assert kept, "the scenes finished before the disk filled are kept"
    # Free space by moving the finished shards elsewhere... the simplest way: a bigger disk.
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    r = _gen(out, small_cfg)
    assert r.returncode == 0, r.stderr
    assert f"{6 - len(kept)} scenes to render" in r.stderr
    assert_same_run(out, small_run)
    assert not (out / ".work").exists() and not list(out.rglob("*.tmp"))


def test_sigint_exits_130_and_sigterm_143(small_cfg, tmp_path):
    """Ctrl-C keeps 130; SIGTERM (scancel, kill) is 128 + 15, as schedulers and shells expect."""
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out = tmp_path / f"out-{code}"
        p = _start(out, small_cfg)
        assert _wait_for(lambda: (out / "logs").exists())
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        assert p.returncode == code, (sig, p.returncode, err)
        assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["info", "."], ["stats", "."], ["validate", "."], ["merge", "."],
                                  ["doctor"], ["generate", "--scenes", "1", "--out", "o"]])
def test_every_subcommand_ends_143_on_a_sigterm(tmp_path, argv):
    """A SIGTERM that arrives while the command line starts is handled as one a moment later,
    whatever the subcommand: one line, exit 143.  Only generate has work to resume."""
    code = ("import sys; from clevr_remv.cli import main; "
            f"sys.exit(main({argv!r}, pending_signals=[15]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 143, r.stderr
    assert "interrupted (SIGTERM)" in r.stderr and r.stderr.count("\n") == 1
    if argv[0] == "generate":
        assert "finished scenes and shards are kept, re-run the same command to resume" in r.stderr
    else:
        assert r.stderr == "clevr-remv: interrupted (SIGTERM)\n", r.stderr


# -- a rig far too large: refused up front; SIGTERM ends a large rig within seconds ---------------
def test_a_grid_above_the_bound_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    r = run_cli("generate", "--config", "preview", "--scenes", 8, "--grid", 1001, "--out", out, timeout=120)
    line = _one_line(r, 2)
    assert "rig.grid" in line and "from 1 to 101" in line
    assert not out.exists()


def test_a_rig_too_large_for_the_disk_is_refused_with_the_figures(tmp_path):
    out = tmp_path / "out"
    t0 = time.time()
    r = run_cli("generate", "--scenes", 8, "--grid", 101, "--width", 8192, "--height", 8192, "--out", out,
                timeout=120)
    line = _one_line(r, 2)
    assert "too large for the disk" in line and "10201 views" in line and "MB are free at" in line, line
    assert time.time() - t0 < 60, "refused before Blender starts"
    assert not out.exists()


def test_the_budget_of_a_rig_against_given_disk_and_memory():
    from clevr_remv import config
    from clevr_remv.errors import UsageError
    from clevr_remv.run import budget

    cfg = config.load_config(None, {"rig.grid": 9, "render.width": 480, "render.height": 320})
    b = budget.estimate(cfg)
    assert b.views == 81 and b.scene_disk == 81 * 480 * 320 * 16 + (64 << 10)
    assert b.view_memory == 480 * 320 * budget.VIEW_BYTES_PER_PIXEL
    budget.check(cfg, Path("/nonexistent/out"), free=b.scene_disk, memory=b.run_memory)  # just fits
    with pytest.raises(UsageError, match=r"disk: one scene takes up to 190 MB .* 189 MB are free"):
        budget.check(cfg, Path("/nonexistent/out"), free=189 << 20, memory=1 << 40)
    with pytest.raises(UsageError, match="memory: about .* 4 worker"):
        budget.check(cfg, Path("/nonexistent/out"), 4, free=1 << 40, memory=b.run_memory)


def test_sigterm_ends_a_large_rig_within_seconds(tmp_path):
    cfg = _cfg_with(tmp_path, rig={"grid": 101}, render={"width": 8, "height": 8})
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "clevr_remv", "generate", "--out", str(out), "--config", str(cfg),
                          "--scenes", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: list((out / ".work").glob("*.tmp")) if (out / ".work").exists() else False,
                     timeout=300), "the first scene's views started"
    time.sleep(2)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert time.time() - t0 < 15, f"took {time.time() - t0:.1f} s"
    assert not list(out.rglob("*.tmp")), "nothing torn left"
