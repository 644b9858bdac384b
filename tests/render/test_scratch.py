"""Stale-scratch clean-up removes only scratch folders this tool provably made (a marker with
pid, start time, host and boot) whose process is gone; never a link, never a folder without
the marker (another program's, or a user's --out that happens to be named clevr-remv-N)."""

import json
import os
import subprocess

from clevr_remv.render import blender


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _marked(root, name, **owner):
    d = root / name
    d.mkdir()
    (d / "view.exr").write_bytes(b"x")
    me = {"pid": os.getpid(), "start": blender._start_ticks(os.getpid()), "host": os.uname().nodename,
          "boot": blender._boot_id()}
    (d / blender.SCRATCH_MARKER).write_text(json.dumps({**me, **owner}))
    return d


def test_a_folder_without_the_marker_is_never_removed(tmp_path):
    plain = tmp_path / "clevr-remv-4242"   # e.g. mkdir /dev/shm/clevr-remv-4242, or an --out
    plain.mkdir()
    (plain / "data.h5").write_bytes(b"keep")
    assert blender.clean_stale_scratch(tmp_path) == []
    assert (plain / "data.h5").read_bytes() == b"keep"


def test_scratch_of_a_gone_process_is_removed_and_a_live_ones_kept(tmp_path):
    dead = _marked(tmp_path, "clevr-remv-1-a", pid=_dead_pid(), start=1)
    live = _marked(tmp_path, "clevr-remv-2-b")  # this process
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        other = _marked(tmp_path, "clevr-remv-3-c", pid=sleeper.pid, start=blender._start_ticks(sleeper.pid))
        reused = _marked(tmp_path, "clevr-remv-4-d", pid=sleeper.pid, start=blender._start_ticks(sleeper.pid) - 1)
        elsewhere = _marked(tmp_path, "clevr-remv-5-e", pid=_dead_pid(), host="another-node")
        removed = blender.clean_stale_scratch(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(removed) == sorted([dead, reused]), "gone, or the pid now names another process"
    assert live.is_dir() and other.is_dir() and elsewhere.is_dir()


def test_a_link_named_like_scratch_is_not_followed(tmp_path):
    target = _marked(tmp_path, "precious", pid=_dead_pid(), start=1)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "clevr-remv-77-x").symlink_to(target, target_is_directory=True)
    assert blender.clean_stale_scratch(tmp_path / "root") == []
    assert (target / "view.exr").exists()
    # A marker that is itself a link is not read either.
    d = tmp_path / "root" / "clevr-remv-78-y"
    d.mkdir()
    (d / blender.SCRATCH_MARKER).symlink_to(target / blender.SCRATCH_MARKER)
    assert blender.clean_stale_scratch(tmp_path / "root") == [] and d.is_dir()


def test_a_workers_scratch_carries_the_marker_of_its_maker():
    d = blender.make_scratch()
    try:
        owner = json.loads((d / blender.SCRATCH_MARKER).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == os.uname().nodename
        assert owner["start"] == blender._start_ticks(os.getpid())
        assert d not in blender.clean_stale_scratch(d.parent), "its maker is alive"
    finally:
        import shutil
        shutil.rmtree(d)
