"""GPU kernels for Cycles: which GPUs are selected, which kernels Cycles has for them, and
building the missing ones ahead of time.

Pure Python; never imports bpy (the add-on's folder is found through the package's files).

Why: the bpy wheels (4.5 and 5.0) ship Cycles cubins for sm_30 to sm_89 and sm_120 only.
On an sm_80 (A100) or sm_90 (H100) GPU, Cycles falls back to ``kernel_compute_75.ptx.zst``
and the driver JIT-compiles it on one thread: more than 9 minutes, silently, before the
first view.  ``ptxas -arch=sm_90 --split-compile=0`` builds the same kernel from the same
PTX in about 130 s on 16 cores; compressed with zstd and placed in the add-on's ``lib/``
as ``kernel_sm_90.cubin.zst``, Cycles uses it at once (Cycles looks for
``lib/kernel_sm_<major><minor>.cubin.zst`` first, then the newest ``compute_XY`` PTX at or
below the GPU's capability).

Kernels are built once per (Blender version, compute capability) into the cache
(``$CLEVR_REMV_CACHE`` or ``$XDG_CACHE_HOME/clevr-remv`` or ``~/.cache/clevr-remv``, under
``kernels/<blender-version>/``) and copied into the add-on's ``lib/`` folder.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .system_libs import blender_binary

log = logging.getLogger("clevr_remv")

# Measured on the H100 run of issue 10 (16 cores, CUDA 13.0 ptxas): 130 s for sm_90.
PTXAS_SECONDS_16_CORES = 130.0
# The driver's own JIT of the same PTX, single-threaded: still running after 560 s there.
DRIVER_JIT_AT_LEAST_S = 560.0
HEARTBEAT_S = 15.0
# The driver's JIT cache: 4 GiB is the largest size the driver accepts (default 256 MiB
# to 1 GiB depending on the driver, too small to keep several Cycles kernels).
CUDA_CACHE_MAXSIZE = 4 * 1024**3
PIP_EXTRA = "pip install 'clevr-remv[gpu]'"  # nvidia-cuda-nvcc-cu12 (see pyproject.toml)


# -- GPUs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: tuple[int, int]
    driver: str | None = None
    uuid: str | None = None

    @property
    def sm(self) -> str:
        return sm_name(self.compute_capability)


def sm_name(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def parse_capability(text: str) -> tuple[int, int]:
    major, _, minor = text.strip().partition(".")
    return int(major), int(minor or 0)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of ``nvidia-smi --query-gpu=index,name,compute_cap,driver_version,uuid
    --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            cc = parse_capability(parts[2])
        except ValueError:
            continue
        gpus.append(Gpu(int(parts[0]), parts[1], cc, parts[3] or None, parts[4] if len(parts) > 4 else None))
    return gpus


def select_visible(gpus: list[Gpu], visible: str | None) -> list[Gpu]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` leaves to Blender (indices or UUID prefixes)."""
    if visible is None:
        return list(gpus)
    chosen = []
    for item in (x.strip() for x in visible.split(",")):
        if not item:
            continue
        if item.isdigit():
            match = [g for g in gpus if g.index == int(item)]
        else:
            match = [g for g in gpus if g.uuid and g.uuid.startswith(item if item.startswith("GPU-") else "GPU-" + item)]
        if not match:
            break  # CUDA stops at the first entry it cannot resolve
        chosen += [g for g in match if g not in chosen]
    return chosen


@functools.lru_cache(maxsize=None)
def _libcuda():
    """The CUDA driver library (loaded once per process), or None."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _query_libcuda() -> list[Gpu]:
    cuda = _libcuda()
    if cuda is None or cuda.cuInit(0) != 0:
        return []
    count = ctypes.c_int()
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    version = driver_cuda_version()
    gpus = []
    for i in range(count.value):
        dev = ctypes.c_int()
        if cuda.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        major, minor = ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        gpus.append(Gpu(i, name.value.decode(errors="replace"), (major.value, minor.value),
                        f"CUDA {version[0]}.{version[1]}" if version else None))
    return gpus


def query_gpus(env: dict | None = None, timeout: float = 30.0) -> tuple[list[Gpu], str]:
    """(selected NVIDIA GPUs, how they were found or why there are none).  Never raises."""
    env = os.environ if env is None else env
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=index,name,compute_cap,driver_version,uuid",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=timeout)
            if out.returncode == 0:
                gpus = parse_nvidia_smi(out.stdout)
                if gpus:
                    return select_visible(gpus, env.get("CUDA_VISIBLE_DEVICES")), "nvidia-smi"
            why = (out.stderr or out.stdout).strip().splitlines()
            note = f"nvidia-smi failed: {why[-1] if why else out.returncode}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            note = f"nvidia-smi failed: {exc}"
    else:
        note = "no nvidia-smi on PATH"
    gpus = _query_libcuda()  # libcuda already applies CUDA_VISIBLE_DEVICES
    if gpus:
        return gpus, "libcuda"
    return [], note + ("; no NVIDIA driver (libcuda.so.1)" if _libcuda() is None else "; libcuda sees no GPU")


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, e.g. (13, 0); None without one."""
    cuda = _libcuda()
    if cuda is None:
        return None
    v = ctypes.c_int()
    if cuda.cuDriverGetVersion(ctypes.byref(v)) != 0 or v.value <= 0:
        return None
    return v.value // 1000, (v.value % 1000) // 10


def cuda_version_of_driver(driver: str | None) -> tuple[int, int] | None:
    """From a driver version string ('580.65.06'): the CUDA major line it runs (table of
    NVIDIA's minimum drivers: 580 for CUDA 13, 525 for 12, 450 for 11)."""
    if not driver:
        return None
    m = re.match(r"(\d+)", driver)
    if not m:
        return None
    major = int(m.group(1))
    for minimum, cuda in ((580, (13, 0)), (525, (12, 0)), (450, (11, 0))):
        if major >= minimum:
            return cuda
    return None


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


# -- cache and building --------------------------------------------------------------------------
def cache_root(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CLEVR_REMV_CACHE"):
        return Path(env["CLEVR_REMV_CACHE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "clevr-remv"


def kernel_cache_dir(version: str, env: dict | None = None) -> Path:
    return cache_root(env) / "kernels" / version


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
