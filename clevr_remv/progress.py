"""Progress for people and for logs: a bar with ETA on a terminal (tqdm), one log line per
finished shard otherwise (farm logs stay readable)."""

from __future__ import annotations

import logging
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
    def __init__(self, total_scenes: int, views_per_scene: int, shards_total: int, shards_done: int,
                 enabled: bool | None = None):
        self.total = total_scenes
        self.views_per_scene = views_per_scene
        self.shards_total = shards_total
        self.shards_done = shards_done
        self.scenes_done = 0
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        if enabled is None:
            enabled = sys.stderr.isatty()
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

    def scene_done(self) -> None:
        with self.lock:
            self.scenes_done += 1
            self._postfix()

    def eta(self) -> float | None:
        if not self.scenes_done:
            return None
        elapsed = time.monotonic() - self.t0
        return elapsed / self.scenes_done * (self.total - self.scenes_done)

    def shard_done(self, name: str, entry: dict, seconds: float) -> None:
        with self.lock:
            self.shards_done += 1
            eta = self.eta()
            msg = (f"shard {name} done: scenes {entry['scene_range'][0]}-{entry['scene_range'][1] - 1}, "
                   f"{entry['bytes'] / 1e6:.1f} MB, {entry['refexps']} expressions; "
                   f"{self.shards_done}/{self.shards_total} shards, "
                   f"{self.scenes_done}/{self.total} scenes this run, elapsed "
                   f"{_fmt_duration(time.monotonic() - self.t0)}"
                   + (f", ETA {_fmt_duration(eta)}" if eta is not None else ""))
            log.info(msg)
            self._postfix()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            log.handlers = self._handlers
