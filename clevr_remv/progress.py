"""Progress for people and for logs: a bar with ETA on a terminal (tqdm); otherwise (nohup,
a farm log, CI, a terminal without a size) log lines: one per finished shard, and one per
finished scene at most once a minute, so a slow run is never silent for longer than a scene
and a fast one does not flood the log."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger("clevr_remv")


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"


# Per-scene log lines: at most one per SCENE_LINE_INTERVAL seconds, and at most one per scene
# (a line is only written when a scene finishes): whichever is rarer.
SCENE_LINE_INTERVAL = 60.0
# Narrower than this, a tqdm bar is unreadable (a pty with no size set reports 0 columns, and
# tqdm then draws nothing at all).
MIN_BAR_COLUMNS = 20


def bar_usable(stream=None) -> bool:
    """Whether a live bar can be drawn on ``stream``: a terminal (not TERM=dumb) that reports
    a usable width.  Otherwise progress goes to log lines."""
    stream = sys.stderr if stream is None else stream
    try:
        if not stream.isatty():
            return False
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return False
    return os.environ.get("TERM", "") != "dumb" and columns >= MIN_BAR_COLUMNS


class _BarSafeHandler(logging.Handler):
    """Log records printed above a live tqdm bar instead of through it."""

    def __init__(self, inner: logging.Handler):
        super().__init__(inner.level)
        self.inner = inner
        self.setFormatter(inner.formatter)

    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


class Progress:
    """``enabled``: True draws a bar, False writes log lines, None (the default) draws a bar
    where :func:`bar_usable` says one can be seen.  ``clock`` (seconds, monotonic) and
    ``line_interval`` are there for tests."""

    def __init__(self, total_scenes: int, views_per_scene: int, shards_total: int, shards_done: int,
                 enabled: bool | None = None, clock=time.monotonic,
                 line_interval: float = SCENE_LINE_INTERVAL):
        self.total = total_scenes
        self.views_per_scene = views_per_scene
        self.shards_total = shards_total
        self.shards_done = shards_done
        self.scenes_done = 0
        self.clock = clock
        self.line_interval = line_interval
        self.t0 = clock()
        self.last_line: float | None = None  # when the last per-scene line was written
        self.lock = threading.Lock()
        if enabled is None:
            enabled = bar_usable()
        self.bar = None
        if enabled and total_scenes:
            from tqdm import tqdm
            self.bar = tqdm(total=total_scenes * views_per_scene, unit="view", dynamic_ncols=True,
                            desc="rendering", smoothing=0.05, file=sys.stderr)
            self._handlers = log.handlers[:]
            log.handlers = [_BarSafeHandler(h) if isinstance(h, logging.StreamHandler) else h
                            for h in self._handlers]
            self._postfix()

    def advance_view(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(1)

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"scenes {self.scenes_done}/{self.total}, "
                                     f"shards {self.shards_done}/{self.shards_total}")

    def scene_done(self, index: int | None = None, seconds: float | None = None) -> None:
        """A scene finished (its global index and wall seconds).  Without a bar, log a line
        if none was logged in the last ``line_interval`` seconds."""
        with self.lock:
            self.scenes_done += 1
            self._postfix()
            if self.bar is not None:
                return
            now = self.clock()
            if self.last_line is not None and now - self.last_line < self.line_interval:
                return
            self.last_line = now
            eta = self.eta(now)
            what = f"scene {index}" if index is not None else "a scene"
            took = f" in {seconds:.1f} s" if seconds is not None else ""
            log.info(f"{what} finished{took}; {self.scenes_done}/{self.total} scenes this run, "
                     f"elapsed {_fmt_duration(now - self.t0)}"
                     + (f", ETA {_fmt_duration(eta)}" if eta is not None else ""))

    def eta(self, now: float | None = None) -> float | None:
        if not self.scenes_done:
            return None
        elapsed = (self.clock() if now is None else now) - self.t0
        return elapsed / self.scenes_done * (self.total - self.scenes_done)

    def shard_done(self, name: str, entry: dict, seconds: float) -> None:
        with self.lock:
            self.shards_done += 1
            eta = self.eta()
            a, b = entry["scene_range"]
            msg = (f"shard {name} done: {f'scene {a}' if b - a == 1 else f'scenes {a}-{b - 1}'}, "
                   f"{entry['bytes'] / 1e6:.1f} MB, {entry['refexps']} expressions; "
                   f"{self.shards_done}/{self.shards_total} shards, "
                   f"{self.scenes_done}/{self.total} scenes this run, elapsed "
                   f"{_fmt_duration(self.clock() - self.t0)}"
                   + (f", ETA {_fmt_duration(eta)}" if eta is not None else ""))
            log.info(msg)
            self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            log.handlers = self._handlers


class Heartbeat:
    """Call ``tick()`` every ``every`` seconds while the ``with`` block runs (from a daemon
    thread), until the block ends or :meth:`stop`.  ``enabled=False``: never."""

    def __init__(self, every: float, tick, enabled: bool = True, thread_name: str = "heartbeat"):
        self.every = every
        self.tick = tick
        self.enabled = enabled
        self.thread_name = thread_name
        self._done = threading.Event()
        self._thread = None
        self._t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the ``with`` block began."""
        return time.perf_counter() - self._t0

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True, name=self.thread_name)
            self._thread.start()
        return self

    def _run(self):
        while not self._done.wait(self.every):
            self.tick()

    def stop(self):
        self._done.set()

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        return False
