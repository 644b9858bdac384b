"""Blender worker processes: start, speak the protocol, time out, clean up."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..config import GPU_BACKENDS
from ..errors import UsageError, WorkerError
from ..resources import resource_dir
from .exr import read_view
from .protocol import PROTOCOL_MARKER, Denoise, ViewEvent

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


SCRATCH_MARKER = ".clevr-remv-scratch.json"  # in every scratch folder this tool makes


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc); None if it is gone or unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of stat(5), counted after the command name
    except (OSError, IndexError, ValueError):
        return None


def make_scratch() -> Path:
    """A new scratch folder with a marker naming its maker (pid, its start time, host, boot),
    so that a later run removes it only when that process is provably gone."""
    d = Path(tempfile.mkdtemp(prefix=f"clevr-remv-{os.getpid()}-", dir=scratch_root()))
    marker = {"pid": os.getpid(), "start": _start_ticks(os.getpid()), "host": os.uname().nodename,
              "boot": _boot_id()}
    fd = os.open(d / SCRATCH_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(marker, fh)
    return d


def _scratch_owner(folder: Path) -> dict | None:
    """The marker of a scratch folder this tool made, or None (no marker, a link, damaged)."""
    try:
        fd = os.open(folder / SCRATCH_MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        owner = json.loads(text)
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except ValueError:
        return None


def _owner_gone(owner: dict) -> bool:
    if owner.get("host") != os.uname().nodename:
        return False  # another machine's (a shared TMPDIR): its process cannot be seen from here
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return True  # made before this machine restarted
    pid = owner["pid"]
    if pid == os.getpid():
        return False
    start = _start_ticks(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False  # alive, its start time unreadable: kept
    return owner.get("start") is not None and start != owner["start"]  # the pid now names another process


def clean_stale_scratch(root: Path | None = None) -> list[Path]:
    """Remove scratch folders of killed drivers: only folders (never links) that carry this
    tool's marker, whose process is provably gone (the pid's start time differs, or no such
    process).  Anything else named clevr-remv-* is left alone.  Returns what was removed."""
    root = Path(root or scratch_root())
    removed = []
    for d in root.glob("clevr-remv-*"):
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        owner = _scratch_owner(d)
        if owner is None or not _owner_gone(owner):
            continue
        shutil.rmtree(d, ignore_errors=True)  # does not follow links inside the tree
        removed.append(d)
    return removed


class ReplyTimeouts:
    """How long the driver waits for a worker's next reply before it kills the worker.

    * ``startup``: the process is up and answers ``hello`` and ``configure`` (short: a Blender
      that never starts ends the run within minutes, not half an hour);
    * ``first_view``: a worker's first render reply, which may include building the scene and
      compiling GPU kernels (long; the run's heartbeat reports the compile meanwhile);
    * afterwards: ``factor`` x the slowest view measured so far in this run, at least
      ``minimum`` seconds (generous: a hung or stopped worker is what it is for).
    Shared by every worker of a run, so a restarted worker inherits the measurements.  None:
    wait for ever.  The run's values come from ``workers.*`` (scene_configs/default.json)."""

    def __init__(self, startup: float | None = None, first_view: float | None = None,
                 minimum: float = 60.0, factor: float = 20.0):
        self.startup, self.first_view, self.minimum, self.factor = startup, first_view, minimum, factor
        self.slowest: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: dict) -> ReplyTimeouts:
        w = cfg["workers"]
        return cls(w["startup_timeout"], w["first_view_timeout"], w["view_timeout_min"], w["view_timeout_factor"])

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.slowest = seconds if self.slowest is None else max(self.slowest, seconds)

    def view(self) -> float | None:
        """The timeout of a view reply after the worker's first."""
        with self._lock:
            if self.slowest is None:
                return self.first_view
            return max(self.minimum, self.factor * self.slowest)


class BlenderWorker:
    """One Blender child process speaking the JSON-lines protocol of ``worker.py``."""

    def __init__(self, blender: str | None = None, log_path: Path | None = None, name: str = "worker",
                 timeouts: ReplyTimeouts | None = None, denoiser: Denoise | None = None):
        """``timeouts``: shared by the workers of a run (None: wait for ever); ``denoiser``:
        the driver's denoiser for this worker's views (see :class:`protocol.Worker`)."""
        self.name = name
        self.timeouts = timeouts or ReplyTimeouts()
        self._phase = "start-up"
        self.denoiser = denoiser
        self.timed_out: float | None = None
        self.timed_out_in = ""  # the phase a timeout hit: start-up, first view, view
        self._rendered = False
        self.cmd = worker_command(blender)
        self.scratch = make_scratch()
        # stderr always goes to a file, so a worker that dies early can say why.
        self.log_path = Path(log_path) if log_path else self.scratch / "worker.log"
        try:  # never through a link: a log named by the run folder stays in it
            self._log_file = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                                               | os.O_CLOEXEC, 0o644), "ab")
        except OSError as exc:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise UsageError(f"cannot write the worker log '{self.log_path}' ({exc.strerror}); "
                             f"it must be a plain file, not a link") from None
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
        self.timed_out_in = self._phase
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
        where = f"; see {self._kept_log()}"
        if self.timed_out is not None:
            phase = self.timed_out_in
            key = {"start-up": "workers.startup_timeout", "first view": "workers.first_view_timeout"}.get(
                phase, "workers.view_timeout_min")
            return WorkerError(f"{self.name}: no reply from Blender in {self.timed_out:.0f} s at its {phase} "
                               f"(hung or stopped), killed it; raise {key} if it is only slow{where}")
        return WorkerError(f"{self.name}: Blender process ended unexpectedly (exit code {code})"
                           + (f": {last}" if last else "") + where)

    def _kept_log(self) -> Path:
        """The worker's log, where it outlives the worker: a log in the scratch folder (no
        run folder yet, e.g. the probe) is copied next to it first."""
        if self.log_path.parent != self.scratch:
            return self.log_path
        kept = Path(tempfile.gettempdir()) / f"clevr-remv-{self.name}-{os.getpid()}-{self.proc.pid}.log"
        try:
            self._log_file.flush()
            shutil.copyfile(self.log_path, kept)
        except (OSError, ValueError, AttributeError):
            return self.log_path
        return kept

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
    def pid(self) -> int | None:
        return self.proc.pid

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
            self._phase = "view" if self._rendered else "first view"
            reply = self._recv(self.timeouts.view() if self._rendered else self.timeouts.first_view)
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
