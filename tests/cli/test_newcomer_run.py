"""A real tiny run as a newcomer sees it without a terminal: the empty-split warning first,
per-scene log lines at their rate, and info's plain summary."""

import re
from datetime import datetime

import pytest
from conftest import run_cli

pytestmark = pytest.mark.render

LINE = re.compile(r"^(\S+) INFO scene (\d+) finished in (\d+\.\d) s; (\d+)/(\d+) scenes this run, "
                  r"elapsed \d+m\d\ds, ETA \d+m\d\ds$")


def test_two_scene_run_without_a_terminal(tmp_path, tiny_cfg):
    out = tmp_path / "run"
    # stderr is a pipe here, as under nohup, a farm scheduler or CI.
    r = run_cli("generate", "--scenes", 2, "--out", out, "--config", tiny_cfg, "--width", 64, "--height", 48)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    warning = ("WARNING --scenes 2 leaves test empty (train/val/test 70/15/15 by scene index); "
               "use at least 6 scenes to fill every split")
    warned = [i for i, line in enumerate(lines) if line.endswith(warning)]
    assert len(warned) == 1
    scene_lines = [(i, LINE.match(line)) for i, line in enumerate(lines) if LINE.match(line)]
    # The first scene always gets a line; after it, at most one line a minute.
    assert scene_lines and warned[0] < scene_lines[0][0]
    first = scene_lines[0][1]
    assert first.group(4) == "1" and first.group(5) == "2" and int(first.group(2)) in (0, 1)
    stamps = [datetime.fromisoformat(m.group(1)) for _, m in scene_lines]
    assert all((b - a).total_seconds() >= 59 for a, b in zip(stamps, stamps[1:]))  # log stamps are whole seconds
    assert len(scene_lines) == len({m.group(2) for _, m in scene_lines}) <= 2
    # No bar drawing in a log.
    assert "\r" not in r.stderr and "it/s" not in r.stderr

    r = run_cli("info", out)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s+test: no scenes \(0 of 2\)$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+train: scene 0; 1 shard finished \(1 scene\), \d+ expressions, \d+(\.\d+)? KB$",
                     r.stdout, re.M), r.stdout
    assert "0.00 GB" not in r.stdout and "scenes 2-1" not in r.stdout


def test_warning_does_not_come_before_a_bad_input_error(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    r = run_cli("generate", "--scenes", 2, "--out", f)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "is a file" in r.stderr
