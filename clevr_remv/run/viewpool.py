"""The driver's per-view work at GPU speed: decode and compress views in a pool of threads."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from . import viewpool


def view_threads(nworkers: int) -> int:
    """Threads per worker slot for the per-view work (decode, compression): the cores left
    after one per Blender worker, at most 8; ``CLEVR_REMV_VIEW_THREADS`` overrides."""
    env = os.environ.get("CLEVR_REMV_VIEW_THREADS", "")
    return max(1, int(env)) if env.isdigit() else viewpool.default_threads(nworkers)


def default_threads(workers: int = 1, cores: int | None = None) -> int:
    """Threads per worker slot: the cores left after one per Blender worker, at most 8."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(8, cores // max(1, workers) - 1))


class ViewPool:
    """Runs per-view jobs in threads and hands their results back in submission order,
    with at most ``2 * threads`` views in flight (bounded memory)."""

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="view") if self.threads > 1 else None
        self._pending: deque = deque()

    def submit(self, fn, *args):
        """Queue ``fn(*args)``; returns the results that are ready, oldest first (all of them
        once the pool is full, so the caller never runs far ahead)."""
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised by result()
                fut.set_exception(exc)
        else:
            fut = self._pool.submit(fn, *args)
        self._pending.append(fut)
        out = []
        while self._pending and (self._pending[0].done() or len(self._pending) > 2 * self.threads):
            out.append(self._pending.popleft().result())
        return out

    def drain(self):
        """Every remaining result, in order."""
        out = []
        while self._pending:
            out.append(self._pending.popleft().result())
        return out

    def close(self) -> None:
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
