"""The worker pool: driver threads, each owning one worker process, fed from one queue.

* a slot starts its worker lazily, restarts it every ``restart_every`` items (Blender's memory
  grows slowly), and retries an item on a fresh worker when the worker fails (crashed, or
  killed after a reply timeout), ``tries`` times in all, then gives up (the run ends, exit 1);
* SIGINT / SIGTERM only set flags: every slot finishes its own clean-up (half-written files
  removed by the task) before :meth:`WorkerPool.run` raises ``KeyboardInterrupt``; a second
  Ctrl-C stops waiting;
* the first error of any slot stops the others and is raised by :meth:`run`.

Workers are created by a factory, so the pool runs with any :class:`render.protocol.Worker`
(``render.blender.BlenderWorker``, or a fake in the tests).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from ..errors import Terminated, WorkerError
from ..render.protocol import Worker

log = logging.getLogger("clevr_remv")

CLEANUP_WAIT = 10.0  # seconds an interrupted run waits for its slots to clean up


class WorkerPool:
    def __init__(self, start: Callable[[int], Worker], setup: Callable[[Worker, int], None],
                 restart_every: int, tries: int, retire: Callable[[Worker], None] | None = None):
        """``start(slot)`` returns a new worker; ``setup(worker, slot)`` configures it (it may
        be killed in between when the pool stops); ``retire(worker)`` runs before it closes;
        ``tries`` per item (``workers.tries``; its default is in scene_configs/default.json)."""
        self.start = start
        self.setup = setup
        self.restart_every = restart_every
        self.on_retire = retire
        self.tries = max(1, int(tries))  # per item, each try on a fresh worker
        self.stopping = threading.Event()   # set: slots take no new item
        self.interrupted = threading.Event()
        self.terminated = False  # the interrupt was a SIGTERM (exit 143, not 130)
        self.lock = threading.Lock()
        self.workers: list = []
        self.errors: list[BaseException] = []
        self._queue: list[int] = []

    # -- the run ----------------------------------------------------------------------------
    def run(self, items: list[int], nworkers: int, task: Callable[[object, int], None]) -> None:
        """Run ``task(worker, item)`` for every item (in order of the list) on ``nworkers``
        slots.  Raises KeyboardInterrupt after an interrupt, or the first slot error."""
        self._queue = list(reversed(items))
        threads = []
        restore = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):  # noqa: ARG001
                if signum == signal.SIGTERM:
                    self.terminated = True
                if self.interrupted.is_set():  # a second Ctrl-C: stop waiting for clean-up
                    raise Terminated if self.terminated else KeyboardInterrupt
                self.interrupted.set()
                self.stopping.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, on_signal)
        try:
            for slot in range(nworkers if items else 0):
                t = threading.Thread(target=self._slot, args=(slot, task), name=f"slot-{slot}", daemon=True)
                threads.append(t)
                t.start()
            # The signal handler only sets flags, so no exception ever interrupts a join:
            # every slot finishes its own clean-up before the interrupt is reported.
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
                if self.interrupted.is_set():
                    self.kill_all()
                    # Each slot removes its own half-written file; a slot stuck in a long
                    # computation is not waited for beyond CLEANUP_WAIT (a scheduler's SIGKILL
                    # follows SIGTERM within seconds): its temporary file is removed by the next run.
                    deadline = time.monotonic() + CLEANUP_WAIT
                    for t in threads:
                        t.join(timeout=max(0.0, deadline - time.monotonic()))
                    if any(t.is_alive() for t in threads):
                        log.warning("stopping without waiting longer for a worker slot's clean-up; "
                                    "the next run removes what it left")
                    break
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        if self.interrupted.is_set():
            raise Terminated if self.terminated else KeyboardInterrupt
        if self.errors:
            raise self.errors[0]

    def kill_all(self) -> None:
        with self.lock:
            workers = list(self.workers)
        for w in workers:
            w.kill()

    # -- one slot ------------------------------------------------------------------------------
    def _next(self) -> int | None:
        with self.lock:
            if self.stopping.is_set() or not self._queue:
                return None
            return self._queue.pop()

    def _slot(self, slot: int, task) -> None:
        worker = None
        served = 0
        try:
            while True:
                item = self._next()
                if item is None:
                    return
                if worker is None or served >= self.restart_every:
                    worker = self._fresh(slot, worker)
                    served = 0
                attempt = 1
                while True:
                    try:
                        task(worker, item)
                        break
                    except WorkerError as exc:
                        if self.stopping.is_set():
                            return
                        if attempt >= self.tries:
                            raise WorkerError(f"scene {item}: gave up after {attempt} tries; the last: {exc}") from None
                        attempt += 1
                        log.warning("%s; retrying scene %d with a new Blender process (try %d of %d)",
                                    exc, item, attempt, self.tries)
                        worker = self._fresh(slot, worker)
                        served = 0
                served += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            if not self.stopping.is_set():
                self.errors.append(exc)
                self.stopping.set()
        finally:
            if worker is not None:
                self.retire(worker)

    def _fresh(self, slot: int, old):
        if old is not None:
            self.retire(old)
        w = self.start(slot)
        with self.lock:
            self.workers.append(w)
            if self.stopping.is_set():
                w.kill()
                raise WorkerError("stopping")
        self.setup(w, slot)
        return w

    def retire(self, worker) -> None:
        """Record what the owner wants to know (e.g. peak memory), end the worker, forget it."""
        if self.on_retire is not None:
            self.on_retire(worker)
        worker.close()
        with self.lock:
            if worker in self.workers:
                self.workers.remove(worker)
