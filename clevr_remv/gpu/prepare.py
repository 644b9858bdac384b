"""Preparing a run on NVIDIA GPUs: kernels for every GPU, a persistent CUDA JIT cache, and word during a first render."""


from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import Heartbeat
from .discovery import query_gpus
from .kernels import (
    DRIVER_JIT_AT_LEAST_S,
    KernelStatus,
    _marker,
    blender_version,
    cache_root,
    cycles_lib_dir,
    ensure_kernels,
    kernel_cache_dir,
    kernel_status,
    sha256,
)

log = logging.getLogger("clevr_remv")


# The driver's JIT cache: 4 GiB is the largest size the driver accepts (default 256 MiB
# to 1 GiB depending on the driver, too small to keep several Cycles kernels).
CUDA_CACHE_MAXSIZE = 4 * 1024**3


def jit_cache_env(env: dict | None = None) -> dict:
    """Variables for the worker's environment so that the driver's JIT cache (used when a
    kernel is JIT-compiled from PTX) persists and holds a whole Cycles kernel: only those
    the user has not set."""
    env = os.environ if env is None else env
    out = {}
    if "CUDA_CACHE_MAXSIZE" not in env:
        out["CUDA_CACHE_MAXSIZE"] = str(CUDA_CACHE_MAXSIZE)
    if "CUDA_CACHE_PATH" not in env:
        out["CUDA_CACHE_PATH"] = str(cache_root(env) / "cuda-jit")
    if env.get("CUDA_CACHE_DISABLE") == "1":
        log.warning("CUDA_CACHE_DISABLE=1: every worker JIT-compiles GPU kernels again")
    return out


# -- a read-only Blender install -------------------------------------------------------------------
def overlay_addon(lib_dir: Path, kernels: list[Path], root: Path) -> Path:
    """Where the add-on's folder cannot take a kernel (a shared, read-only install): a folder
    that mirrors the Cycles add-on with symbolic links, plus the built kernels in its
    ``lib/``.  The worker points Cycles at it (``_cycles.init``, which sets the folder Cycles
    looks up ``lib/kernel_sm_XY.cubin.zst`` in).  Made once per content under ``root``
    (a temporary name, then renamed: concurrent drivers reuse one).  Returns the folder."""
    addon = lib_dir.parent
    key = hashlib.sha256("\n".join([str(addon.resolve())] + [f"{k.name}:{sha256(k)}" for k in sorted(kernels)])
                         .encode()).hexdigest()[:16]
    dest = Path(root) / f"cycles-{key}"
    if (dest / ".complete").exists():
        return dest
    Path(root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".cycles-{key}-", dir=root))
    try:
        for entry in addon.iterdir():
            if entry.name != "lib" and entry.name != "__pycache__":
                (tmp / entry.name).symlink_to(entry.resolve())
        (tmp / "lib").mkdir()
        for f in lib_dir.iterdir():
            (tmp / "lib" / f.name).symlink_to(f.resolve())
        for k in kernels:
            target = tmp / "lib" / k.name
            if target.is_symlink() or target.exists():
                target.unlink()
            shutil.copyfile(k, target)
            shutil.copyfile(_marker(k), _marker(target))
        (tmp / ".complete").write_text("")
        try:
            os.rename(tmp, dest)
        except OSError:  # another driver made it first
            if not (dest / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# -- the driver's hooks ------------------------------------------------------------------------------
@dataclass
class GpuRunPrep:
    """What the driver passes on to its workers after :func:`prepare_gpu_run`."""
    env: dict = field(default_factory=dict)          # for the worker processes' environment
    kernels: list = field(default_factory=list)      # KernelStatus per selected capability
    cycles_path: str | None = None                   # an add-on overlay (read-only installs)


def prepare_gpu_run(device: str, blender: str | None = None, *, say=None, env: dict | None = None,
                    jobs: int | None = None) -> GpuRunPrep:
    """Before the first render on ``device``: for CUDA/OptiX, make sure Cycles has a cubin for
    every selected NVIDIA GPU (building missing ones with ptxas, with progress lines), and
    give the workers a persistent, large CUDA JIT cache.  Never raises for a missing tool
    or driver: the driver's own JIT remains, and the log says so."""
    say = say or log.info
    if device not in ("cuda", "optix"):
        return GpuRunPrep()
    prep = GpuRunPrep(env=jit_cache_env(env))
    gpus, how = query_gpus(env)
    if not gpus:
        log.debug("no NVIDIA GPU to prepare kernels for (%s)", how)
        return prep
    lib = cycles_lib_dir(blender)
    if lib is None:
        log.debug("Cycles add-on folder not found; kernels not checked")
        return prep
    try:
        statuses = ensure_kernels(gpus, lib, jobs=jobs, say=say, env=env)
        cached = [Path(s.path) for s in statuses if s.status == "cached"]
        if cached:
            overlay = overlay_addon(lib, cached, kernel_cache_dir(blender_version(lib), env))
            prep.cycles_path = str(overlay)
            statuses = [kernel_status(overlay / "lib", s.capability) for s in statuses]
    except (OSError, RuntimeError) as exc:  # a failed build: the driver's JIT remains
        log.warning("could not build GPU kernels (%s); the NVIDIA driver will compile them on the first "
                    "render instead, %.0f+ minutes once per machine", exc, DRIVER_JIT_AT_LEAST_S / 60)
        statuses = [kernel_status(lib, g.compute_capability) for g in gpus]
    prep.kernels = statuses
    return prep


class FirstRenderWatch(Heartbeat):
    """While a worker's first GPU render runs (the driver may be JIT-compiling kernels for
    minutes, silently), say so every ``every`` seconds.  Use as a context manager; stops at
    exit or on :meth:`seen`."""

    def __init__(self, statuses: list[KernelStatus], say=None, every: float = 60.0, name: str = "worker"):
        self.jit = [s.sm for s in statuses if s.status == "jit"]
        self.say = say or log.info
        self.name = name
        super().__init__(every, self._tick, enabled=bool(self.jit), thread_name="first-render-watch")

    def _tick(self):
        self.say(f"{self.name}: first GPU render still starting after {self.elapsed:.0f} s: "
                 f"the NVIDIA driver is compiling the Cycles kernel for {', '.join(self.jit)} from PTX "
                 f"(once per machine; 'clevr-remv doctor --prepare' with ptxas avoids this)")

    def seen(self):
        self.stop()
