"""Bad input (docs/reliability.md) that used to end in "internal error"
or a half-written folder.  Each case: one line on stderr, exit code 2, no traceback, nothing
written under --out (and nothing anywhere else)."""

import json
import os
import stat

import click
import pytest
from conftest import TINY, listing, run_cli

from clevr_remv import config
from clevr_remv.cli import cli
from clevr_remv.errors import UsageError


def _clean_failure(result, out, mention):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert lines[0].startswith("clevr-remv: error:"), lines[0]
    assert mention in lines[0], lines[0]
    assert not out.exists() or listing(out) == []


def _gen(tmp_path, *args):
    """A tiny run (so that, on code that accepts the bad value, the test still ends quickly)."""
    out = tmp_path / "out"
    if "--config" not in args:
        args = ("--config", _cfg_file(tmp_path, {}), *args)
    return run_cli("generate", "--scenes", "2", "--out", out, "--width", "48", "--height", "32",
                   *args, timeout=300), out


def _cfg_file(tmp_path, content, name="c.json"):
    """TINY with ``content`` merged in (dict), or the file's raw text/bytes."""
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content)
    else:
        merged = json.loads(json.dumps(TINY))
        for section, values in content.items():
            merged.setdefault(section, {}).update(values)
        p.write_text(json.dumps(merged))
    return p


LIGHT = {"name": "key", "position": [6.45, -2.91, 4.26], "size": 0.5, "energy": 400.0}


@pytest.mark.parametrize("content, mention", [
    (b'{"render": {"samples": 4}, "name": "caf\xe9"}', "not UTF-8"),
    ({"scene": {"camera_position": ["a", "b", "c"]}}, "scene.camera_position"),
    ({"scene": {"camera_position": [1, 2]}}, "scene.camera_position"),
    ({"scene": {"lights": [{**LIGHT, "size": "big"}]}}, "scene.lights[0].size"),
    ({"scene": {"lights": [{**LIGHT, "size": 0}]}}, "scene.lights[0].size"),
    ({"scene": {"lights": [{**LIGHT, "position": [1.0, 2.0]}]}}, "scene.lights[0].position"),
    ({"scene": {"lights": [LIGHT, LIGHT]}}, "scene.lights[1].name"),
    ({"scene": {"lights": ["key"]}}, "scene.lights[0]"),
    ('{"rig": {"baseline": Infinity}}', "rig.baseline"),
    ('{"scene": {"extent": NaN}}', "scene.extent"),
    ({"output": {"splits": {"..": 1}}}, "split name"),
    ({"output": {"splits": {"train": 0.5, "/tmp/x": 0.5}}}, "split name"),
    ({"output": {"splits": {"a/b": 1}}}, "split name"),
    ({"output": {"splits": {"": 1}}}, "split name"),
    ({"output": {"splits": {".hidden": 1}}}, "split name"),
    ({"output": {"splits": {"logs": 1}}}, "reserved"),
    ({"output": {"splits": {"train": True}}}, "output.splits"),
])
def test_bad_config_values_before_anything_is_written(tmp_path, content, mention):
    r, out = _gen(tmp_path, "--config", _cfg_file(tmp_path, content))
    _clean_failure(r, out, mention)
    assert sorted(os.listdir(tmp_path)) == ["c.json"]  # nothing beside --out either


def test_config_that_is_a_device_or_empty(tmp_path):
    r, out = _gen(tmp_path, "--config", "/dev/null")
    assert "is a folder" not in r.stderr
    _clean_failure(r, out, "'/dev/null'")


@pytest.mark.parametrize("args, mention", [
    (["--baseline", "inf"], "rig.baseline"),
    (["--baseline", "nan"], "rig.baseline"),
    (["--baseline", "-1"], "rig.baseline"),
])
def test_bad_numbers_on_the_command_line(tmp_path, args, mention):
    r, out = _gen(tmp_path, *args)
    _clean_failure(r, out, mention)


def test_scene_count_is_bounded(tmp_path):
    # Used to print nothing and grow by ~200 MB/s while planning 10**14 scenes.
    r = run_cli("generate", "--scenes", "99999999999999", "--out", tmp_path / "out", timeout=60)
    _clean_failure(r, tmp_path / "out", "--scenes")


def test_unusable_blender_paths(tmp_path):
    not_exec = tmp_path / "blender-noexec"
    not_exec.write_text("#!/bin/sh\nexit 0\n")
    folder = tmp_path / "blender-dir"
    folder.mkdir()
    garbage = tmp_path / "blender-garbage"
    garbage.write_bytes(b"\x00\x01\x02 not a program")
    garbage.chmod(garbage.stat().st_mode | stat.S_IXUSR)
    for path, mention in ((not_exec, "not executable"), (folder, "is a folder"), (garbage, "cannot start Blender")):
        r, out = _gen(tmp_path, "--blender", path)
        _clean_failure(r, out, mention)


def test_driver_denoiser_without_pyoidn_writes_nothing(tmp_path):
    """render.denoiser = driver where pyoidn cannot be imported: refused before OUT (or its
    lock file) is created.  The child imports a pyoidn that raises ImportError, as a missing
    package does."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "pyoidn.py").write_text("raise ImportError('No module named pyoidn (test shim)')\n")
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    cfg = _cfg_file(tmp_path, {"render": {"denoise": True, "denoiser": "driver"}})
    out = tmp_path / "out"
    r = run_cli("generate", "--scenes", "2", "--out", out, "--width", "48", "--height", "32",
                "--config", cfg, timeout=300, env={"PYTHONPATH": path})
    _clean_failure(r, out, "pyoidn")
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["c.json", "shim"]


def test_split_names_are_checked_in_the_config_module(cfg):
    for name in ("..", ".", "/abs", "a/b", "", ".work", "x" * 65, "logs", "a\\b", "a b"):
        bad = json.loads(json.dumps(cfg))
        bad["output"]["splits"] = {name: 1}
        with pytest.raises(UsageError):
            config.validate(bad)
    ok = json.loads(json.dumps(cfg))
    ok["output"]["splits"] = {"train": 1, "val-2": 1, "test_b": 1, "v1.1": 1}
    config.validate(ok)


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def test_every_subcommand_takes_verbose():
    found = list(_commands(cli))
    assert len(found) >= 7
    for path, cmd in found:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert "-v" in opts, path
    r = run_cli("info", "-v", "--help")
    assert r.returncode == 0 and "--verbose" in r.stdout
    # A group added whole (submit) gets it too, through the same mechanism: one -v each.
    slurm = cli.commands["submit"].commands["slurm"]
    assert [p.opts for p in slurm.params if p.name == "verbose"] == [["-v", "--verbose"]]
    r = run_cli("submit", "slurm", "-vv", "--help")
    assert r.returncode == 0 and r.stdout.count("--verbose") == 1
