"""Blender worker processes: start, speak the protocol, time out, clean up."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..config import GPU_BACKENDS
from ..errors import UsageError, WorkerError
from ..resources import resource_dir
from .exr import read_view
from .protocol import PROTOCOL_MARKER, ViewEvent

log = logging.getLogger("clevr_remv")


def worker_script() -> Path:
    return resource_dir("blender_scripts") / "worker.py"


def package_parent() -> str:
    import clevr_remv
    return str(Path(clevr_remv.__file__).resolve().parent.parent)


def worker_command(blender: str | None) -> list[str]:
    script = str(worker_script())
    tail = ["--", "--pythonpath", package_parent()]
    if blender:
        return [blender, "--background", "--factory-startup", "--python-exit-code", "1",
                "--python", script] + tail
    return [sys.executable, script] + tail


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed driver leaves no orphan
    except OSError:
        pass


def scratch_root() -> str:
    """Where EXR passes go between Blender and the driver: RAM when the OS offers it."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def clean_stale_scratch() -> None:
    """Remove scratch folders left by drivers that were killed (their pid is gone)."""
    root = Path(scratch_root())
    for d in root.glob("clevr-remv-*"):
        try:
            pid = int(d.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


class ReplyTimeouts:
    """How long the driver waits for a worker's next reply before it kills the worker.

    * ``startup``: a worker's start (hello, configure) and its first render reply, which may
      include building the scene and compiling GPU kernels;
    * afterwards: ``factor`` x the slowest view measured so far in this run, at least
      ``minimum`` seconds (generous: a hung or stopped worker is what it is for).
    Shared by every worker of a run, so a restarted worker inherits the measurements."""

    def __init__(self, startup: float | None = 1800.0, minimum: float = 60.0, factor: float = 20.0):
        self.startup, self.minimum, self.factor = startup, minimum, factor
        self.slowest: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: dict) -> "ReplyTimeouts":
        w = cfg["workers"]
        return cls(w.get("startup_timeout", 1800.0), w.get("view_timeout_min", 60.0), w.get("view_timeout_factor", 20.0))

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.slowest = seconds if self.slowest is None else max(self.slowest, seconds)

    def view(self) -> float | None:
        with self._lock:
            if self.slowest is None:
                return self.startup
            return max(self.minimum, self.factor * self.slowest)


class BlenderWorker:
    """One Blender child process speaking the JSON-lines protocol of ``worker.py``."""

    def __init__(self, blender: str | None = None, log_path: Path | None = None, name: str = "worker",
                 timeouts: ReplyTimeouts | None = None):
        self.name = name
        self.timeouts = timeouts or ReplyTimeouts(startup=None)
        self.timed_out: float | None = None
        self._rendered = False
        self.cmd = worker_command(blender)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"clevr-remv-{os.getpid()}-", dir=scratch_root()))
        # stderr always goes to a file, so a worker that dies early can say why.
        self.log_path = Path(log_path) if log_path else self.scratch / "worker.log"
        self._log_file = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log_file,
                text=True, bufsize=1, env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        except OSError as exc:  # not found, not executable, not a program (exec format error)
            self._log_file.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            why = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
            raise UsageError(f"cannot start Blender: '{self.cmd[0]}': {why}; "
                             f"fix --blender / workers.blender or leave it null to use the bpy module") from None
        self.info: dict = {}
        self._meshes: dict | None = None

    # -- protocol ------------------------------------------------------------------------
    def _send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed() from None

    def _on_timeout(self, seconds: float) -> None:
        self.timed_out = seconds
        try:
            self.proc.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
        except OSError:
            pass

    def _recv(self, timeout: float | None = None) -> dict:
        """The next protocol reply; after ``timeout`` seconds without one the worker is killed
        and a WorkerError says so."""
        timer = None
        if timeout:
            timer = threading.Timer(timeout, self._on_timeout, args=(timeout,))
            timer.daemon = True
            timer.start()
        try:
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    raise self._crashed()
                if line.startswith(PROTOCOL_MARKER):
                    break
                log.debug("%s: %s", self.name, line.rstrip())  # e.g. a standalone Blender's banner
        finally:
            if timer is not None:
                timer.cancel()
        try:
            return json.loads(line[len(PROTOCOL_MARKER):])
        except json.JSONDecodeError:
            raise WorkerError(f"{self.name}: unreadable reply {line[:200]!r}") from None

    def _crashed(self) -> WorkerError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        last = self._last_log_line()
        where = "" if self.log_path.parent == self.scratch else f"; see {self.log_path}"
        if self.timed_out is not None:
            return WorkerError(f"{self.name}: no reply from Blender in {self.timed_out:.0f} s (hung or stopped), "
                               f"killed it; raise workers.startup_timeout / workers.view_timeout_min if "
                               f"it is only slow{where}")
        return WorkerError(f"{self.name}: Blender process ended unexpectedly (exit code {code})"
                           + (f": {last}" if last else "") + where)

    def _last_log_line(self) -> str:
        try:
            self._log_file.flush()
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        errors = [ln for ln in lines if "Error" in ln and not ln.startswith("Error: script failed")]
        return (errors or lines or [""])[-1][:300]

    def hello(self) -> dict:
        self._send({"cmd": "hello", "backends": list(GPU_BACKENDS)})
        reply = self._recv(self.timeouts.startup)
        if reply.get("event") == "error":
            raise WorkerError(f"{self.name}: {reply.get('message')}")
        if reply.get("event") != "hello":
            raise WorkerError(f"{self.name}: bad hello reply {reply}")
        self.info = reply
        return reply

    def configure(self, settings: dict) -> dict:
        self._send({"cmd": "configure", "settings": settings})
        reply = self._recv(self.timeouts.startup)
        if reply.get("event") == "error":
            if reply.get("kind") == "device":
                have = ", ".join(sorted(reply.get("devices", {}))) or "cpu"
                raise UsageError(f"device '{settings.get('device')}' is not available on this machine "
                                 f"(available: {have}); use --device auto or one of those")
            if reply.get("kind") == "denoiser":
                raise UsageError(f"{reply.get('message')}; set render.denoise to false in --config, "
                                 f"or use a Blender (or bpy) that includes it")
            raise WorkerError(f"{self.name}: configure failed: {reply.get('message')}")
        return reply

    def meshes(self) -> dict:
        """{shape: {"vertices": [[x, y, z], ...], "faces": [[i, ...], ...]}}: each shape's mesh
        as Blender built it, in the shape's own frame (asked once per worker, after configure;
        see scene/amodal.py)."""
        if self._meshes is None:
            self._send({"cmd": "meshes"})
            reply = self._recv(self.timeouts.startup)
            if reply.get("event") != "meshes":
                raise WorkerError(f"{self.name}: meshes failed: {reply.get('message', reply)}")
            self._meshes = reply["shapes"]
        return self._meshes

    @property
    def rendered(self) -> bool:
        """Whether this worker has had a reply to a render (its first, slow one is behind it)."""
        return self._rendered

    def render(self, scene: dict, views, tag: str, settings: dict | None = None):
        """Yield a :class:`ViewEvent` per view as soon as its file is written; the caller can
        process a view while Blender renders the next.  Returns the 'done' reply."""
        self._send({"cmd": "render", "scene": scene, "views": [list(v) for v in views],
                    "out_dir": str(self.scratch), "tag": tag, "settings": settings or {}})
        while True:
            # A worker's first reply may include building the scene and compiling kernels.
            reply = self._recv(self.timeouts.view() if self._rendered else self.timeouts.startup)
            self._rendered = True
            event = reply.get("event")
            if event == "view":
                if tag == "view":
                    self.timeouts.observe(float(reply["seconds"]))
                yield ViewEvent(reply["u"], reply["v"], reply["path"], reply["seconds"])
            elif event == "done":
                return reply
            elif event == "error":
                raise WorkerError(f"{self.name}: render failed: {reply.get('kind')}: {reply.get('message')}")
            else:
                raise WorkerError(f"{self.name}: unexpected reply {reply}")

    def read_view(self, event: ViewEvent, outputs=None, view: dict | None = None) -> dict:
        """The arrays of a view this worker rendered (see :func:`read_view`); removes its file."""
        return read_view(event.path, outputs, view)

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"cmd": "quit"})
                self.proc.wait(timeout=timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                self.kill()
        self._cleanup()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _status_bytes(self, field: str) -> int | None:
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith(field):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def peak_rss_bytes(self) -> int | None:
        """Peak resident memory of the worker so far (Linux), for logs and benchmarks."""
        return self._status_bytes("VmHWM:")

    def rss_bytes(self) -> int | None:
        """Current resident memory of the worker (Linux)."""
        return self._status_bytes("VmRSS:")
