"""NVIDIA GPUs of this machine: nvidia-smi or libcuda, compute capabilities, the driver's CUDA version."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass


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
