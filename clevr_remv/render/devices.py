"""Device policy: pure decisions from what Blender reports and what the config asks for.

Which backend renders, how many worker processes run, and the render settings each worker
slot gets.  No Blender, no threads: unit-tested directly.
"""

from __future__ import annotations

import os

from ..config import GPU_BACKENDS, prefilter_of
from ..errors import UsageError
from .denoise import driver_denoises

# The settings of the cheap check render (visibility of every object in the central view).
CHEAP_CHECK = {"samples": 1, "adaptive_threshold": 0.0, "denoise": False}


def choose_device(wanted: str, devices: dict) -> dict:
    """{"device", "names", "count"} for the requested device, given Blender's report
    ``{backend: [device names]}``; an unavailable explicit device is a usage error."""
    gpus = {k: v for k, v in devices.items() if k != "cpu" and v}
    if wanted == "cpu":
        return {"device": "cpu", "names": ["CPU"], "count": 1}
    if wanted == "auto":
        for backend in GPU_BACKENDS:
            if gpus.get(backend):
                return {"device": backend, "names": gpus[backend], "count": len(gpus[backend])}
        return {"device": "cpu", "names": ["CPU"], "count": 1}
    if not gpus.get(wanted):
        have = ", ".join(sorted(devices)) or "cpu"
        raise UsageError(f"device '{wanted}' is not available on this machine (available: {have}); "
                         f"use --device auto or one of those")
    return {"device": wanted, "names": gpus[wanted], "count": len(gpus[wanted])}


def worker_count(requested: int | None, device_info: dict) -> int:
    """The number of Blender processes: as requested, else one per GPU, one on CPU."""
    if requested:
        return int(requested)
    return device_info.get("count", 1) if device_info.get("device") != "cpu" else 1


def render_settings(cfg: dict, device_info: dict, slot: int, nworkers: int, passes: list[str],
                    cpu_count: int | None = None) -> dict:
    """The settings worker ``slot`` of ``nworkers`` is configured with.

    On a GPU: that slot's GPU, and denoising on it (``denoising_use_gpu``, the Cycles property
    from Blender 4.1 on; Blender's default is the CPU, which made OpenImageDenoise about 75%
    of an H100's time per scene).  On the CPU: the cores shared among the workers."""
    rc = dict(cfg["render"])
    rc["device"] = device_info["device"]
    rc["passes"] = list(passes)
    rc["denoise_prefilter"] = prefilter_of(rc)  # for Cycles and the driver alike
    if driver_denoises(cfg):
        rc["denoise"] = False  # the driver denoises the noisy colour with its own filters
    if rc["device"] != "cpu":
        rc["gpu_index"] = slot % max(1, device_info.get("count", 1))
        rc["denoising_use_gpu"] = bool(rc.get("denoise", False))
    else:
        cpus = cpu_count if cpu_count is not None else usable_cpus()
        rc["threads"] = max(1, cpus // max(1, nworkers))
        rc["denoising_use_gpu"] = False
    return rc


def usable_cpus(granted=(), cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPU cores this process may use, not the machine's: a scheduler's task gets a share.
    The smallest of the CPU affinity (cpusets, Slurm task binding), the counts a scheduler
    ``granted`` the task (``farm.schedulers.usable_cpus`` reads them from its variables) and a
    cgroup v2 CPU quota (Kubernetes CPU limits), so Cycles' threads match what the task was given."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    counts += [n for n in granted if n and n > 0]
    try:
        with open(cgroup_cpu_max, encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(period) > 0:
            counts.append(max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, min(counts))
