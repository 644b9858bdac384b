"""What this machine offers for rendering, and (``--prepare``) the GPU kernels built ahead
of time, so a farm's container image can bake them in.

Reports: the system libraries Blender needs, Blender and its compute devices, the NVIDIA
GPUs with their compute capabilities and driver, each capability's Cycles kernel (shipped,
built, JIT-compiled by the driver on first use, or missing), ptxas, the denoiser's device
and the CUDA JIT cache.  Exit code 0 when Blender can render here (a machine without a GPU
included), 1 when something stops it (or a kernel could not be prepared).  The command
line is clevr_remv/cli/doctor.py.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .. import __version__
from ..gpu import discovery, kernels
from ..gpu import prepare as gpu_prepare
from ..render import system_libs

# Reference capabilities when no GPU is here (e.g. a container image built on a CPU host):
# A100 and H100, the farm GPUs the bpy wheel ships no cubin for.
FARM_CAPABILITIES = ((8, 0), (9, 0))


def parse_sm_list(spec: str | None) -> list[tuple[int, int]]:
    """'80,90' or 'sm_80,9.0' -> [(8, 0), (9, 0)]; ValueError names a bad item."""
    out = []
    for item in (spec or "").split(","):
        item = item.strip().lower().removeprefix("sm_")
        if not item:
            continue
        try:
            cc = discovery.parse_capability(item) if "." in item else (int(item[:-1]), int(item[-1]))
        except (ValueError, IndexError):
            raise ValueError(f"'{item}' is not a compute capability like 90, sm_90 or 9.0") from None
        if cc not in out:
            out.append(cc)
    return out


def _blender_report(blender: str | None, cfg: dict, missing: list[str]) -> dict:
    """Start one real worker: its Blender version, devices, and where it would denoise.
    ``missing``: the system libraries :func:`collect` found its binary lacks (ldd)."""
    from ..errors import UsageError, WorkerError
    from ..render.blender import BlenderWorker
    from ..render.devices import choose_device, render_settings
    from ..render.outputs import render_passes, rendered

    rep: dict = {"ok": False, "via": blender or "bpy module"}
    try:
        w = BlenderWorker(blender, log_path=None, name="doctor")
    except UsageError as exc:
        rep["error"] = str(exc)
        return rep
    try:
        hello = w.hello()
        devices = hello.get("devices", {})
        rep.update(ok=True, blender=hello.get("blender"), devices=devices)
        info = choose_device("auto", devices)
        from ..render import denoise
        cfg["render"]["denoiser"] = denoise.resolve_auto(cfg, info["device"])  # as generate does
        used = w.configure(render_settings(cfg, info, 0, 1, render_passes(rendered(cfg))))
        rep["auto_device"] = used.get("device", info["device"])
        rep["auto_device_names"] = used.get("names", [])
        rep["denoiser"] = used.get("denoiser", "unknown")
        if denoise.driver_denoises(cfg):  # the driver denoises: where its OIDN device opens
            dn = denoise.open_denoiser(info["device"], 0 if info["device"] != "cpu" else None)
            rep["denoiser"] = "cpu" if dn.kind == "CPU" else "gpu"
            rep["denoiser_where"] = f"in the driver (pyoidn {denoise.pyoidn_version()}, OIDN {dn.kind} device)"
            dn.close()
    except (WorkerError, UsageError) as exc:
        rep["error"] = str(exc)
        line = system_libs.missing_library_message(str(exc), missing=missing)
        if line:
            rep["error"] = line
    finally:
        w.kill()
    return rep


def collect(blender: str | None = None, sm: list | None = None, start_blender: bool = True) -> dict:
    from ..config import load_config

    binary = system_libs.blender_binary(blender) if blender else system_libs.bpy_binary()
    missing = system_libs.missing_libraries(binary)
    report: dict = {
        "clevr_remv": __version__, "python": platform.python_version(), "cpu_cores": os.cpu_count(),
        "libraries": {"binary": str(binary) if binary else None, "missing": missing,
                      "install": system_libs.install_hint(missing) if missing else None},
    }
    gpus, how = discovery.query_gpus()
    driver_cuda = discovery.driver_cuda_version()
    report["gpus"] = {"found_by" if gpus else "none_because": how,
                      "list": [{"index": g.index, "name": g.name, "compute_capability": f"{g.compute_capability[0]}.{g.compute_capability[1]}",
                                "sm": g.sm, "driver": g.driver} for g in gpus],
                      "driver_cuda": f"{driver_cuda[0]}.{driver_cuda[1]}" if driver_cuda else None}
    lib = kernels.cycles_lib_dir(blender)
    ptxas = kernels.find_ptxas()
    report["ptxas"] = [{"path": p.path, "version": f"{p.version[0]}.{p.version[1]}", "from": p.source} for p in ptxas]
    targets = gpus
    reference = False
    if sm:
        targets = [discovery.Gpu(-1, "(--sm)", cc) for cc in sm]
    elif not gpus:
        targets = [discovery.Gpu(-1, "(reference: no GPU here)", cc) for cc in FARM_CAPABILITIES]
        reference = True
    kern: dict = {"folder": str(lib) if lib else None, "reference_only": reference}
    if lib is not None:
        shipped = kernels.shipped_kernels(lib)
        kern["blender_version"] = kernels.blender_version(lib)
        kern["shipped_cubins"] = [discovery.sm_name(c) for c in shipped["cubin"]]
        kern["shipped_ptx"] = [f"compute_{a}{b}" for a, b in shipped["ptx"]]
        kern["cache"] = str(gpu_prepare.kernel_cache_dir(kern["blender_version"]))
        kern["plans"] = [p.as_dict() for p in kernels.plan_kernels(targets, lib, ptxas, driver_cuda=driver_cuda)]
    report["kernels"] = kern
    report["cuda_jit_cache"] = {**{k: os.environ[k] for k in ("CUDA_CACHE_PATH", "CUDA_CACHE_MAXSIZE") if k in os.environ},
                                **gpu_prepare.jit_cache_env()}
    if start_blender:
        report["blender"] = _blender_report(blender, load_config(), missing)
    return report


def render_text(r: dict) -> list[str]:
    out = [f"clevr-remv {r['clevr_remv']}, Python {r['python']}, {r['cpu_cores']} CPU cores"]
    libs = r["libraries"]
    if libs["missing"]:
        out.append(f"system libraries: MISSING {', '.join(libs['missing'])}; on Debian/Ubuntu: {libs['install']}")
    elif libs["binary"]:
        out.append(f"system libraries: all found ({libs['binary']})")
    else:
        out.append("system libraries: not checked (no bpy binary found, or no ldd)")
    b = r.get("blender")
    if b is not None:
        if b["ok"]:
            devs = b["devices"]
            gpus = [f"{k}: {', '.join(v)}" for k, v in devs.items() if k != "cpu"]
            out.append(f"Blender {b['blender']} ({b['via']}): CPU; "
                       f"GPU backends: {'; '.join(gpus) if gpus else 'none'}")
            out.append(f"--device auto renders on: {b['auto_device']}"
                       + (f" ({', '.join(b['auto_device_names'])})" if b["auto_device"] != "cpu" else "")
                       + f"; denoiser (OpenImageDenoise) runs on: {b['denoiser']}"
                       + (f" {b['denoiser_where']}" if b.get("denoiser_where") else ""))
        else:
            out.append(f"Blender ({b['via']}): CANNOT START: {b['error']}")
    g = r["gpus"]
    if g["list"]:
        out.append(f"NVIDIA GPUs ({g['found_by']}; driver supports CUDA {g['driver_cuda'] or '?'}):")
        out += [f"  {x['index']}: {x['name']}, compute capability {x['compute_capability']} ({x['sm']}), "
                f"driver {x['driver'] or '?'}" for x in g["list"]]
    else:
        out.append(f"NVIDIA GPUs: none ({g['none_because']})")
    k = r["kernels"]
    if k["folder"] is None:
        out.append("Cycles kernels: add-on folder not found")
    else:
        out.append(f"Cycles kernels: {k['folder']} (Blender {k['blender_version']}); shipped cubins "
                   f"{' '.join(x.removeprefix('sm_') for x in k['shipped_cubins'])} (sm_), PTX {' '.join(k['shipped_ptx'])}")
        head = "  for reference (no GPU here), " if k["reference_only"] else "  "
        for p in k["plans"]:
            st = p["status"]
            out.append(f"{head}{st['sm']}: {st['status']} ({st['detail']})"
                       + (f"; {p['message']}" if p["action"] in ("build", "install", "jit") else ""))
        out.append(f"  kernel cache: {k['cache']}")
    out.append("ptxas: " + ("; ".join(f"{p['path']} (CUDA {p['version']}, {p['from']})" for p in r["ptxas"])
                            or f"none (to build kernels ahead of time: {kernels.PIP_EXTRA})"))
    out.append("CUDA JIT cache for workers: " + ", ".join(f"{k}={v}" for k, v in r["cuda_jit_cache"].items()))
    return out


def prepare(report: dict, jobs: int | None, say) -> bool:
    """Build and install every kernel the report's plans call for.  True when all are ready."""
    k = report["kernels"]
    if k.get("folder") is None:
        say("cannot prepare kernels: the Cycles add-on folder was not found")
        return False
    lib = Path(k["folder"])
    ok = True
    results = []
    # Plan again (the report's plans may be stale), once for all of them; the GPUs' driver
    # versions stay, for plan_kernels' fallback where libcuda gives no CUDA version.
    drivers = {tuple(int(x) for x in g["compute_capability"].split(".")): g["driver"]
               for g in reversed(report.get("gpus", {}).get("list", []))}
    ccs = [tuple(p["status"]["capability"]) for p in k["plans"]]
    plans = kernels.plan_kernels([discovery.Gpu(-1, "", cc, drivers.get(cc)) for cc in ccs], lib, kernels.find_ptxas(),
                             driver_cuda=discovery.driver_cuda_version())
    for plan in plans:
        status = kernels.execute_plan(plan, lib, jobs=jobs, say=say)
        results.append({"sm": status.sm, "status": status.status, "path": status.path})
        if not status.ready:
            ok = False
    report["prepared"] = results
    return ok
