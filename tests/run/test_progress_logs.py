"""Progress without a terminal: per-scene log lines at a sensible rate; the bar only where a
terminal can show it."""

import fcntl
import logging
import os
import struct
import termios

import pytest

from clevr_remv import progress
from clevr_remv.progress import Progress, bar_usable


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def records():
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    log = logging.getLogger("clevr_remv")
    old = log.handlers[:], log.level, log.propagate
    log.handlers[:] = [Keep()]
    log.setLevel(logging.INFO)
    yield got
    log.handlers[:], log.level, log.propagate = old[0], old[1], old[2]


def scene_lines(messages):
    return [m for m in messages if m.startswith("scene ")]


def test_fast_scenes_give_at_most_one_line_a_minute(records):
    clock = Clock()
    p = Progress(total_scenes=100, views_per_scene=9, shards_total=10, shards_done=0, enabled=False, clock=clock)
    for i in range(100):  # a scene every 10 s: 1000 s in all
        clock.t += 10
        p.scene_done(i, 10.0)
    lines = scene_lines(records)
    # The first scene, then one line each time a minute has passed since the last line.
    assert len(lines) == 1 + (1000 - 10) // 60
    assert lines[0] == "scene 0 finished in 10.0 s; 1/100 scenes this run, elapsed 0m10s, ETA 16m30s"
    assert lines[1].startswith("scene 6 finished in 10.0 s; 7/100 scenes")  # 70 s: 60 s after the first
    p.close()


def test_slow_scenes_give_a_line_per_scene(records):
    clock = Clock()
    p = Progress(total_scenes=3, views_per_scene=81, shards_total=1, shards_done=0, enabled=False, clock=clock)
    for i, dt in zip((4, 5, 6), (540.0, 532.5, 61.0)):
        clock.t += dt
        p.scene_done(i, dt)
    assert scene_lines(records) == [
        "scene 4 finished in 540.0 s; 1/3 scenes this run, elapsed 9m00s, ETA 18m00s",
        "scene 5 finished in 532.5 s; 2/3 scenes this run, elapsed 17m52s, ETA 8m56s",
        "scene 6 finished in 61.0 s; 3/3 scenes this run, elapsed 18m53s, ETA 0m00s",
    ]


def test_a_line_comes_a_minute_after_the_last_one_not_after_the_run_start(records):
    clock = Clock()
    p = Progress(total_scenes=10, views_per_scene=9, shards_total=1, shards_done=0, enabled=False, clock=clock)
    for dt in (30, 59, 0.5, 0.6):  # first line at 30 s; the next only once 60 s have passed since
        clock.t += dt
        p.scene_done(0, dt)
    assert len(scene_lines(records)) == 2
    assert "4/10 scenes" in scene_lines(records)[1]


def test_shard_lines_still_come(records):
    clock = Clock()
    p = Progress(total_scenes=2, views_per_scene=9, shards_total=1, shards_done=0, enabled=False, clock=clock)
    clock.t += 5
    p.scene_done(0, 5.0)
    p.scene_done(1, 0.1)
    p.shard_done("train/train-00000.h5", {"scene_range": [0, 2], "bytes": 2_500_000, "refexps": 16}, 0.2)
    assert records[-1].startswith("shard train/train-00000.h5 done: scenes 0-1, 2.5 MB, 16 expressions; 1/1 shards")


def _pty_with_size(rows, cols):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, os.fdopen(slave, "w")


def test_bar_only_where_a_terminal_can_show_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TERM", "xterm")
    master, tty = _pty_with_size(24, 80)
    try:
        assert bar_usable(tty)
        monkeypatch.setenv("TERM", "dumb")
        assert not bar_usable(tty)  # no cursor control
    finally:
        tty.close()
        os.close(master)
    monkeypatch.setenv("TERM", "xterm")
    master, tty = _pty_with_size(0, 0)  # a terminal with no size set: tqdm draws nothing
    try:
        assert not bar_usable(tty)
    finally:
        tty.close()
        os.close(master)
    with open(tmp_path / "log.txt", "w") as fh:  # nohup, a farm log
        assert not bar_usable(fh)
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:  # CI, `| tee`
        assert not bar_usable(pipe)
    os.close(r)


def test_no_bar_on_a_sizeless_terminal_means_lines(monkeypatch, records):
    master, tty = _pty_with_size(0, 0)
    try:
        monkeypatch.setattr(progress.sys, "stderr", tty)
        clock = Clock()
        p = Progress(total_scenes=2, views_per_scene=9, shards_total=1, shards_done=0, clock=clock)
        assert p.bar is None
        clock.t += 3
        p.scene_done(1, 3.0)
        p.close()
    finally:
        tty.close()
        os.close(master)
    assert scene_lines(records) == ["scene 1 finished in 3.0 s; 1/2 scenes this run, elapsed 0m03s, ETA 0m03s"]
