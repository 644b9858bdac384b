"""Cycles' GPU kernels: which ones the Blender install ships, building the missing ones with ptxas, installing them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..progress import Heartbeat
from ..render.system_libs import blender_binary
from .discovery import (
    Gpu,
    cuda_version_of_driver,
    driver_cuda_version,
    sm_name,
)

log = logging.getLogger("clevr_remv")


# Measured on an H100 node (16 cores, CUDA 13.0 ptxas; docs/benchmarks.md): 130 s for sm_90.
PTXAS_SECONDS_16_CORES = 130.0


HEARTBEAT_S = 15.0


PIP_EXTRA = "pip install 'clevr-remv[gpu]'"  # nvidia-cuda-nvcc-cu12 (see pyproject.toml)


# -- the add-on's kernel folder ---------------------------------------------------------------
_ADDON_GLOBS = ("*/scripts/addons_core/cycles/lib", "*/scripts/addons/cycles/lib")


def cycles_lib_dir(blender: str | None = None) -> Path | None:
    """``.../cycles/lib`` of the bpy module (or of a standalone ``blender`` executable)."""
    if blender:
        exe = blender_binary(blender)
        roots = [exe.resolve().parent] if exe else []
    else:
        spec = importlib.util.find_spec("bpy")
        if spec is None:
            return None
        roots = [Path(p) for p in (spec.submodule_search_locations or [])] or \
                ([Path(spec.origin).parent] if spec.origin else [])
    for root in roots:
        for pattern in _ADDON_GLOBS:
            found = sorted(root.glob(pattern))
            if found:
                return found[-1]
    return None


def blender_version(lib_dir: Path) -> str:
    """'4.5.15' for the bpy wheel (its distribution's version), else the version folder."""
    try:
        from importlib.metadata import distribution

        dist = distribution("bpy")
        if Path(dist.locate_file("bpy")).resolve() in lib_dir.resolve().parents:
            return dist.version
    except Exception:  # noqa: BLE001 - not installed as a distribution
        pass
    for part in reversed(lib_dir.resolve().parts):
        if re.fullmatch(r"\d+\.\d+", part):
            return part
    return "unknown"


def shipped_kernels(lib_dir: Path) -> dict:
    """What the folder holds: cubin capabilities and PTX capabilities (CUDA only)."""
    cubins, ptx = [], []
    if lib_dir and lib_dir.is_dir():
        for p in lib_dir.iterdir():
            m = re.fullmatch(r"kernel_sm_(\d+)(\d)\.cubin(\.zst)?", p.name)
            if m:
                cubins.append((int(m.group(1)), int(m.group(2))))
            m = re.fullmatch(r"kernel_compute_(\d+)(\d)\.ptx(\.zst)?", p.name)
            if m:
                ptx.append((int(m.group(1)), int(m.group(2))))
    return {"cubin": sorted(cubins), "ptx": sorted(ptx)}


@dataclass
class KernelStatus:
    capability: tuple[int, int]
    status: str          # "shipped" | "built" | "cached" (not installable: overlay) | "jit" | "missing"
    path: str | None     # the file Cycles will load
    ptx: str | None      # the PTX a kernel can be built from
    detail: str = ""

    @property
    def sm(self) -> str:
        return sm_name(self.capability)

    @property
    def ready(self) -> bool:
        return self.status in ("shipped", "built", "cached")


def _marker(cubin: Path) -> Path:
    return cubin.with_name(cubin.name + ".clevr-remv.json")


def kernel_status(lib_dir: Path, cc: tuple[int, int]) -> KernelStatus:
    """What Cycles will load for a GPU of capability ``cc``, in Cycles' own order:
    ``kernel_sm_<major><minor>.cubin.zst`` if present, else the PTX of the newest
    ``compute_XY`` at or below ``cc`` (JIT-compiled by the driver), else nothing."""
    major, minor = cc
    cubin = lib_dir / f"kernel_sm_{major}{minor}.cubin.zst"
    ptx = _ptx_for(lib_dir, cc)
    if cubin.exists():
        built = _marker(cubin).exists()
        return KernelStatus(cc, "built" if built else "shipped", str(cubin), ptx,
                            "built by clevr-remv" if built else "ships with Blender")
    if ptx:
        return KernelStatus(cc, "jit", ptx, ptx, "no cubin: the driver JIT-compiles the PTX on first use")
    return KernelStatus(cc, "missing", None, None, "no cubin and no PTX: Cycles cannot use this GPU")


def _ptx_for(lib_dir: Path, cc: tuple[int, int]) -> str | None:
    major, minor = cc
    while major >= 3:
        p = lib_dir / f"kernel_compute_{major}{minor}.ptx.zst"
        if p.exists():
            return str(p)
        if minor > 0:
            minor -= 1
        else:
            major, minor = major - 1, 9
    return None


# -- ptxas --------------------------------------------------------------------------------------
@dataclass
class Ptxas:
    path: str
    version: tuple[int, int]
    source: str

    def supports(self, cc: tuple[int, int]) -> bool:
        return ptxas_supports(self.version, cc)

    def loadable_by(self, driver_cuda: tuple[int, int] | None) -> bool:
        """A cubin from CUDA X.y's ptxas loads on any driver of the CUDA X line or newer
        (minor-version compatibility), not on an older line."""
        return driver_cuda is None or self.version[0] <= driver_cuda[0]


def ptxas_supports(version: tuple[int, int], cc: tuple[int, int]) -> bool:
    """Targets each CUDA release's ptxas can build (from NVIDIA's release notes)."""
    if version >= (13, 0):
        lowest, highest = (7, 5), (12, 1)
    elif version >= (12, 8):
        lowest, highest = (5, 0), (12, 0)
    elif version >= (11, 8):
        lowest, highest = (3, 5), (9, 0)
    elif version >= (11, 1):
        lowest, highest = (3, 5), (8, 6)
    else:
        lowest, highest = (3, 5), (8, 0)
    return lowest <= cc <= highest


def ptxas_version(path: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def ptxas_candidates(env: dict | None = None) -> list[tuple[str, str]]:
    """(path, where from) in order of preference: $CLEVR_REMV_PTXAS, $CUDA_HOME/bin,
    $CUDA_PATH/bin, PATH, the pip packages nvidia-cuda-nvcc(-cu12), /usr/local/cuda/bin."""
    env = os.environ if env is None else env
    out: list[tuple[str, str]] = []

    def add(path, source):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if all(os.path.realpath(p) != real for p, _ in out):
                out.append((str(path), source))

    add(env.get("CLEVR_REMV_PTXAS"), "CLEVR_REMV_PTXAS")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            add(os.path.join(env[var], "bin", "ptxas"), var)
    add(shutil.which("ptxas", path=env.get("PATH")), "PATH")
    for pkg_dir in _nvidia_package_dirs():
        for sub in ("cuda_nvcc/bin/ptxas", "cu13/bin/ptxas", "cu12/bin/ptxas"):
            add(str(pkg_dir / sub), "pip package nvidia-cuda-nvcc")
    add("/usr/local/cuda/bin/ptxas", "/usr/local/cuda")
    return out


def _nvidia_package_dirs() -> list[Path]:
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def choose_ptxas(candidates: list[Ptxas], cc: tuple[int, int], driver_cuda: tuple[int, int] | None) -> Ptxas | None:
    """The first candidate that can build ``cc`` and whose output the driver can load; with
    no driver to ask (an image built on a machine without a GPU), the oldest that can build
    it, whose cubins load on the most drivers."""
    usable = [p for p in candidates if p.supports(cc) and p.loadable_by(driver_cuda)]
    if driver_cuda is None:
        usable.sort(key=lambda p: p.version)
    return usable[0] if usable else None


def find_ptxas(env: dict | None = None) -> list[Ptxas]:
    found = []
    for path, source in ptxas_candidates(env):
        version = ptxas_version(path)
        if version:
            found.append(Ptxas(path, version, source))
    return found


# -- estimates and messages -------------------------------------------------------------------------
def ptxas_estimate_s(cores: int) -> float:
    """ptxas with --split-compile: 130 s on 16 cores; assume most of it scales with cores."""
    cores = max(1, min(cores, 16))
    return PTXAS_SECONDS_16_CORES * (0.25 + 0.75 * 16 / cores)


def no_ptxas_message(sm: str, cores: int | None = None) -> str:
    cores = cores or os.cpu_count() or 1
    minutes = max(1, round(ptxas_estimate_s(cores) / 60))
    return (f"no prebuilt Cycles kernel for {sm} and no ptxas: the NVIDIA driver will compile it on the "
            f"first GPU render, on one thread, {DRIVER_JIT_AT_LEAST_S / 60:.0f}+ minutes once per machine "
            f"(kept in the CUDA cache); install ptxas ({PIP_EXTRA}, or a CUDA toolkit on PATH) to build it "
            f"in about {minutes} minute{'s' if minutes != 1 else ''} on {cores} cores with "
            f"'clevr-remv doctor --prepare'")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _zstd(src: Path, dest: Path, *, compress: bool, level: int = 10) -> None:
    """zstd-(de)compress ``src`` to ``dest``: with the zstandard package, else the zstd tool.
    Compressed: a single frame with the content size in its header, like Blender's own files."""
    try:
        import zstandard
    except ImportError:
        zstd = shutil.which("zstd")
        if not zstd:
            raise RuntimeError(f"cannot {'write' if compress else 'read'} zstd files: pip install zstandard "
                               "(or install the zstd tool)") from None
        subprocess.run([zstd, "-q", f"-{level}" if compress else "-d", "-f", str(src), "-o", str(dest)], check=True)
        return
    if compress:
        dest.write_bytes(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(src.read_bytes()))
    else:
        with open(src, "rb") as fi, open(dest, "wb") as fo:
            zstandard.ZstdDecompressor().copy_stream(fi, fo)


def build_kernel(ptx_zst: Path, cc: tuple[int, int], ptxas: Ptxas, dest: Path, *,
                 jobs: int | None = None, say=None) -> Path:
    """``ptxas -arch=sm_XY --split-compile=N`` on the add-on's PTX, zstd-compressed to
    ``dest`` (written under a temporary name, then renamed).  ``say`` gets a progress line
    every 15 s while ptxas runs."""
    say = say or log.info
    sm = sm_name(cc)
    jobs = jobs or os.cpu_count() or 1
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clevr-remv-ptxas-", dir=dest.parent) as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        _zstd(ptx_zst, ptx, compress=False)
        cubin = Path(tmp) / f"kernel_{sm}.cubin"
        cmd = [ptxas.path, f"-arch={sm}", "-o", str(cubin), str(ptx)]
        if ptxas.version >= (12, 0) and jobs > 1:
            cmd[1:1] = [f"--split-compile={jobs}"]
        say(f"building the Cycles GPU kernel for {sm} with ptxas {ptxas.version[0]}.{ptxas.version[1]} "
            f"on {jobs} threads (about {ptxas_estimate_s(jobs) / 60:.0f} min; once per machine)")
        with Heartbeat(HEARTBEAT_S, lambda: say(f"  still building the {sm} kernel: "
                                                f"{time.perf_counter() - t0:.0f} s so far")):
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not cubin.exists():
            tail = proc.stdout.strip().splitlines()[-3:]
            raise RuntimeError(f"ptxas failed for {sm} (exit code {proc.returncode}): {' | '.join(tail)}")
        packed = Path(tmp) / (dest.name + ".part")
        _zstd(cubin, packed, compress=True)
        os.replace(packed, dest)
    seconds = time.perf_counter() - t0
    _marker(dest).write_text(json.dumps({
        "capability": list(cc), "ptx": str(ptx_zst), "ptx_sha256": sha256(ptx_zst),
        "ptxas": ptxas.path, "ptxas_version": list(ptxas.version), "seconds": round(seconds, 1),
        "threads": jobs}, indent=1) + "\n")
    say(f"built {dest.name} in {seconds:.0f} s")
    return dest


def install_kernel(cubin_zst: Path, lib_dir: Path) -> Path:
    """Copy a built kernel into the add-on's ``lib/`` (temporary name, then rename).
    Raises PermissionError (or another OSError) where the folder is not writable."""
    target = lib_dir / cubin_zst.name
    tmp = lib_dir / f".{cubin_zst.name}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(cubin_zst, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    shutil.copyfile(_marker(cubin_zst), _marker(target))
    return target


def _cached_kernel_valid(cached: Path, ptx: str) -> bool:
    try:
        meta = json.loads(_marker(cached).read_text())
        return cached.exists() and meta.get("ptx_sha256") == sha256(Path(ptx))
    except (OSError, ValueError):
        return False


@dataclass
class KernelPlan:
    """What to do for one compute capability, decided before any GPU render."""
    status: KernelStatus
    action: str                       # "ready" | "install" | "build" | "jit" | "unsupported"
    cached: str | None = None
    ptxas: Ptxas | None = None
    message: str = ""
    gpus: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["status"] = {**asdict(self.status), "sm": self.status.sm}
        return d


def plan_kernels(gpus: list[Gpu], lib_dir: Path, ptxas: list[Ptxas], *,
                 driver_cuda: tuple[int, int] | None = None, env: dict | None = None,
                 cores: int | None = None) -> list[KernelPlan]:
    """One plan per distinct compute capability among ``gpus``: nothing to do (a shipped or
    built cubin), install a cached build, build with ptxas, or leave it to the driver's JIT
    (no usable ptxas: the message says what that costs and what to install)."""
    version = blender_version(lib_dir)
    plans = []
    by_cc: dict[tuple[int, int], list[str]] = {}
    for g in gpus:
        by_cc.setdefault(g.compute_capability, []).append(g.name)
    if driver_cuda is None:
        driver_cuda = next((cuda_version_of_driver(g.driver) for g in gpus if g.driver), None)
    for cc, names in sorted(by_cc.items()):
        st = kernel_status(lib_dir, cc)
        if st.ready:
            plans.append(KernelPlan(st, "ready", gpus=names, message=st.detail))
            continue
        if st.status == "missing":
            plans.append(KernelPlan(st, "unsupported", gpus=names,
                                    message="this Blender has no CUDA kernel for it"))
            continue
        cached = kernel_cache_dir(version, env) / f"kernel_{st.sm}.cubin.zst"
        if _cached_kernel_valid(cached, st.ptx):
            plans.append(KernelPlan(st, "install", str(cached), gpus=names,
                                    message=f"built earlier, to install from {cached.parent}"))
            continue
        tool = choose_ptxas(ptxas, cc, driver_cuda)
        if tool:
            plans.append(KernelPlan(st, "build", str(cached), tool, gpus=names,
                                    message=f"to build with {tool.path} (CUDA {tool.version[0]}.{tool.version[1]}), "
                                            f"about {ptxas_estimate_s(cores or os.cpu_count() or 1) / 60:.0f} min"))
        else:
            why = ""
            if ptxas:
                why = (" (ptxas found, but " + ", ".join(
                    f"{p.path} (CUDA {p.version[0]}.{p.version[1]}) "
                    + ("cannot build it" if not p.supports(cc) else "makes kernels this driver cannot load")
                    for p in ptxas) + ")")
            plans.append(KernelPlan(st, "jit", gpus=names, message=no_ptxas_message(st.sm, cores) + why))
    return plans


def execute_plan(plan: KernelPlan, lib_dir: Path, *, jobs: int | None = None, say=None) -> KernelStatus:
    """Build (if needed) and install one kernel.  Returns Cycles' view afterwards."""
    say = say or log.info
    if plan.action in ("ready", "unsupported", "jit"):
        if plan.action == "jit":
            say(plan.message)
        return plan.status
    cached = Path(plan.cached)
    if plan.action == "build":
        # One build per machine: a second driver (another --part on this node) waits for the
        # first and takes its kernel.
        cached.parent.mkdir(parents=True, exist_ok=True)
        with open(cached.with_name(cached.name + ".lock"), "w") as lock:
            try:
                import fcntl

                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    say(f"waiting for another clevr-remv that is building the {plan.status.sm} kernel")
                    fcntl.flock(lock, fcntl.LOCK_EX)
            except ImportError:  # not on POSIX: no lock
                pass
            if not _cached_kernel_valid(cached, plan.status.ptx):
                build_kernel(Path(plan.status.ptx), plan.status.capability, plan.ptxas, cached, jobs=jobs, say=say)
    try:
        install_kernel(cached, lib_dir)
    except OSError as exc:
        say(f"cannot install {cached.name} into {lib_dir} ({exc.strerror or exc}); generate's workers will "
            f"load it through a copy of the Cycles add-on's folder made of links (see gpu.overlay_addon)")
        return KernelStatus(plan.status.capability, "cached", str(cached), plan.status.ptx,
                            f"built, in {cached.parent}; the add-on's folder is not writable")
    status = kernel_status(lib_dir, plan.status.capability)
    say(f"{status.sm}: kernel installed as {status.path}")
    return status


def ensure_kernels(gpus: list[Gpu], lib_dir: Path | None, *, jobs: int | None = None,
                   say=None, env: dict | None = None) -> list[KernelStatus]:
    """Before the first GPU render: make sure Cycles finds a cubin for every selected GPU,
    building the missing ones with ptxas where it can, saying what happens where it cannot."""
    say = say or log.info
    if not gpus or lib_dir is None:
        return []
    plans = plan_kernels(gpus, lib_dir, find_ptxas(env), driver_cuda=driver_cuda_version(), env=env)
    return [execute_plan(plan, lib_dir, jobs=jobs, say=say) for plan in plans]


# The driver's own JIT of the same PTX, single-threaded: still running after 560 s there.
DRIVER_JIT_AT_LEAST_S = 560.0


# -- cache and building --------------------------------------------------------------------------
def cache_root(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CLEVR_REMV_CACHE"):
        return Path(env["CLEVR_REMV_CACHE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "clevr-remv"


def kernel_cache_dir(version: str, env: dict | None = None) -> Path:
    return cache_root(env) / "kernels" / version
