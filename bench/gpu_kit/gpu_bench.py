"""The measuring half of the GPU acceptance kit (run_on_gpu.sh starts it with the kit's Python,
after unpacking and installing).  It uses only what stays stable while the package is being
reorganised: the ``clevr-remv`` command line, the shards (h5py), ``OUT/logs/scenes.jsonl`` and
``OUT/manifest.json``.  It never imports clevr_remv.

Steps, each with an estimate and a cap, under one deadline (--budget of run_on_gpu.sh, counted
from the script's start): a step that would not fit in the time left is skipped and the report
says so; a step that runs over its cap is stopped (its whole process group) and reported.

  preflight   import bpy from the kit's venv (and nothing else), missing libraries (ldd)
  doctor      `clevr-remv doctor --json`: GPUs, kernels, ptxas, the denoiser's device
  kernels     `clevr-remv doctor --prepare`, timed (GPU only: the sm_XY kernel built with ptxas)
  renders     `clevr-remv generate` at the defaults (480x320, 9x9 rig) with --config JSON files
              written here: 1 and 2 workers, render.denoiser driver and cycles, 64/128/256 samples
              (CPU dry run: one tiny CPU render per denoiser instead)
  report      gpu_kit_report.json and gpu_kit_report.md in --report, logs as gpu_kit_logs.tar.gz

GPU memory comes from nvidia-smi, polled every 0.5 s during each render (the whole GPU and each
process: the driver's own process holds GPU memory when its OpenImageDenoise runs on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

SEED = 4000  # the scenes of bench/gpu.py: scenes 0..3 of seed 4000

# name, render.denoiser, samples, workers, scenes, estimate s, cap s (H100 estimates from
# docs/benchmarks.md: 8.1 to 9.5 s per scene at 256 samples with GPU denoising, one worker).
GPU_RUNS = [
    ("driver_s256_w1", "driver", 256, 1, 4, 60, 150),   # first: also gives the first-render time
    ("cycles_s256_w1", "cycles", 256, 1, 2, 30, 90),
    ("driver_s256_w2", "driver", 256, 2, 4, 45, 100),   # 2 workers did not finish in the 2026-11-24 H100 run: capped
    ("cycles_s256_w2", "cycles", 256, 2, 4, 40, 100),   # (that run denoised with Cycles on the GPU, as here)
    ("driver_s64_w1", "driver", 64, 1, 2, 25, 75),
    ("cycles_s64_w1", "cycles", 64, 1, 2, 25, 75),
    ("driver_s128_w1", "driver", 128, 1, 2, 27, 80),
    ("cycles_s128_w1", "cycles", 128, 1, 2, 27, 80),
]
CPU_RUNS = [  # the dry run: tiny, on the CPU, both denoisers
    ("cpu_driver_tiny", "driver", 1, 1, 1, 20, 120),
    ("cpu_cycles_tiny", "cycles", 1, 1, 1, 20, 120),
]
TINY = {"width": 96, "height": 64}
TINY_GRID = 3
DOCTOR_EST, DOCTOR_CAP = 20, 120
PREPARE_EST, PREPARE_CAP = 150, 330  # ptxas sm_90 on 16 cores: 130 s measured with CUDA 13 (H100, 2026-11-24)
REPORT_RESERVE = 10  # seconds kept for the report at the end


class Bench:
    def __init__(self, a):
        self.a = a
        self.setup = json.loads(Path(a.setup).read_text())
        self.t0 = float(self.setup["t0"])
        self.deadline = self.t0 + float(self.setup["budget_s"])
        self.gpu = a.mode == "gpu"
        self.work = Path(a.work)
        self.report_dir = Path(a.report)
        self.venv = Path(a.venv)
        self.cli = str(self.venv / "bin" / "clevr-remv")
        self.report: dict = {"mode": "gpu" if self.gpu else "cpu-dry-run", "setup": self.setup,
                             "steps": [], "runs": [], "skipped": []}
        self.logs: list[Path] = []
        # Cache and kernels inside the work folder: nothing of an earlier run on this machine counts.
        self.env = dict(os.environ, CLEVR_REMV_CACHE=str(self.work / "cache"))
        self.nvsmi_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}

    # -- time -------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return self.deadline - time.time() - REPORT_RESERVE

    def say(self, msg: str) -> None:
        print(f"[gpukit {self.elapsed():.0f}s] {msg}", flush=True)

    def fits(self, name: str, estimate: float) -> bool:
        if self.left() >= estimate:
            return True
        reason = f"not enough time left: needs about {estimate:.0f} s, {max(0, self.left()):.0f} s left of the budget"
        self.skip(name, reason)
        return False

    def skip(self, name: str, reason: str) -> None:
        self.report["skipped"].append({"step": name, "reason": reason})
        self.say(f"SKIPPED {name}: {reason}")

    # -- processes ----------------------------------------------------------------------------------
    def run(self, name: str, cmd: list, cap: float, log: Path | None = None, env=None) -> dict:
        """Run ``cmd`` in its own process group, at most min(cap, time left) seconds.  Returns
        {rc, wall_s, cpu_s (the process and the children it waited for), timed_out, pid}."""
        limit = max(1.0, min(cap, self.left()))
        out = open(log, "w") if log else subprocess.DEVNULL
        t = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                             env=env or self.env, start_new_session=True)
        self._current_pid = p.pid
        timed_out = False
        ru = None
        own_cpu = None  # the process's own CPU (all its threads), not its children's: /proc/PID/stat
        while True:
            own_cpu = _own_cpu(p.pid, own_cpu)
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t > limit:
                timed_out = True
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    time.sleep(3)
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t
        if log:
            out.close()
            self.logs.append(log)
        rc = os.waitstatus_to_exitcode(status)
        self._current_pid = None
        return {"rc": rc, "wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                "own_cpu_s": own_cpu and round(own_cpu, 2),
                "timed_out": timed_out, "limit_s": round(limit, 1), "pid": p.pid}

    # -- steps -----------------------------------------------------------------------------------------
    def preflight(self) -> bool:
        code = ("import json, sys, importlib.metadata as md, bpy\n"
                "print(json.dumps({'python': sys.version.split()[0], 'executable': sys.executable, "
                "'prefix': sys.prefix, 'base_prefix': sys.base_prefix, 'bpy_file': bpy.__file__, "
                "'bpy_version': bpy.app.version_string, 'bpy_dist': md.version('bpy'), "
                "'clevr_remv': md.version('clevr-remv'), 'sys_path': sys.path, "
                "'libpython': next((x.split()[-1] for x in open('/proc/self/maps') if 'libpython3' in x), None)}))\n")
        t = time.perf_counter()
        r = subprocess.run([self.venv / "bin" / "python", "-c", code], capture_output=True, text=True, env=self.env)
        rep: dict = {"wall_s": round(time.perf_counter() - t, 2)}
        if r.returncode != 0:
            rep["error"] = (r.stderr.strip().splitlines() or ["?"])[-1]
            self.report["preflight"] = rep
            self.say(f"FAILED: import bpy from the kit: {rep['error']}")
            return False
        rep.update(json.loads(r.stdout.strip().splitlines()[-1]))
        kit_root = str(self.work)
        outside = [p for p in rep["sys_path"] if p and not p.startswith(kit_root) and not p.endswith(".zip")]
        rep["from_kit"] = (rep["bpy_file"].startswith(kit_root) and rep["base_prefix"].startswith(kit_root)
                           and (rep["libpython"] is None or rep["libpython"].startswith(kit_root)))
        rep["sys_path_outside_kit"] = outside
        # bpy.__file__ is bpy/4.5/scripts/modules/bpy/__init__.py; the module's binary is bpy/__init__.so
        so = next((p / "__init__.so" for p in Path(rep["bpy_file"]).parents if (p / "__init__.so").exists()),
                  Path("bpy/__init__.so"))
        lib_from = {}
        missing = []
        if shutil.which("ldd") and so.exists():
            ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True, env=self.env).stdout
            for line in ldd.splitlines():
                parts = line.split()
                if "not found" in line:
                    missing.append(parts[0])
                elif "=>" in parts and len(parts) >= 3:
                    lib_from[parts[0]] = parts[2]
        rep["missing_libraries"] = missing
        rep["libraries_from_kit"] = sorted(k for k, v in lib_from.items() if v.startswith(kit_root))
        rep["libraries_from_system"] = sorted(f"{k} ({v})" for k, v in lib_from.items() if not v.startswith(kit_root))
        self.report["preflight"] = rep
        self.say(f"preflight: bpy {rep['bpy_version']} (dist {rep['bpy_dist']}) from {rep['bpy_file']}; "
                 f"Python {rep['python']} at {rep['base_prefix']} (libpython {rep['libpython']}); clevr-remv {rep['clevr_remv']}; "
                 f"from the kit: {rep['from_kit']}; sys.path outside the kit: {outside or 'none'}; "
                 f"missing libraries: {missing or 'none'}")
        return rep["from_kit"] and not missing

    def doctor(self) -> None:
        if not self.fits("doctor", DOCTOR_EST):
            return
        log = self.work / "logs" / "doctor.json"
        log.parent.mkdir(parents=True, exist_ok=True)
        r = self.run("doctor", [self.cli, "doctor", "--json"], DOCTOR_CAP, log=log)
        self.report["steps"].append({"step": "doctor", **r})
        rep = {}
        try:
            text = log.read_text()
            rep = json.loads(text[text.index("{"):])
        except (ValueError, OSError):
            pass
        b = rep.get("blender", {})
        k = rep.get("kernels", {})
        self.report["doctor"] = {
            "rc": r["rc"], "gpus": rep.get("gpus"), "ptxas": rep.get("ptxas"), "blender": b.get("blender"),
            "devices": b.get("devices"), "auto_device": b.get("auto_device"), "denoiser": b.get("denoiser"),
            "denoiser_where": b.get("denoiser_where"), "kernel_folder": k.get("folder"),
            "shipped_cubins": k.get("shipped_cubins"), "shipped_ptx": k.get("shipped_ptx"),
            "kernel_plans": [{"sm": p["status"]["sm"], "status": p["status"]["status"], "action": p["action"]}
                             for p in k.get("plans", [])],
            "missing_libraries": rep.get("libraries", {}).get("missing")}
        d = self.report["doctor"]
        self.say(f"doctor (exit {r['rc']}, {r['wall_s']} s): Blender {d['blender']}, auto device {d['auto_device']}, "
                 f"denoiser {d['denoiser']} {d['denoiser_where'] or ''}; kernels "
                 + ", ".join(f"{p['sm']} {p['status']}" for p in d["kernel_plans"])
                 + "; ptxas " + ", ".join(f"{p['version']} ({p['from']})" for p in (d["ptxas"] or [])))

    def ptxas(self) -> None:
        """The kit's ptxas (nvidia-cuda-nvcc-cu12) runs here: its version."""
        found = sorted(self.venv.glob("lib/python3.11/site-packages/nvidia/cuda_nvcc/bin/ptxas"))
        rep = {"path": str(found[0]) if found else None}
        if found:
            r = subprocess.run([str(found[0]), "--version"], capture_output=True, text=True)
            rep["version"] = (r.stdout.strip().splitlines() or ["?"])[-1]
            rep["rc"] = r.returncode
        self.report["kit_ptxas"] = rep
        self.say(f"kit ptxas: {rep.get('path')}: {rep.get('version', 'not found')}")

    def kernels(self) -> None:
        if not self.gpu:
            self.skip("kernel build (doctor --prepare)", "no GPU: CPU dry run (without a GPU, doctor --prepare "
                      "builds the sm_80 and sm_90 reference kernels: tens of minutes on a few cores)")
            return
        if not self.fits("kernel build (doctor --prepare)", PREPARE_EST):
            return
        log = self.work / "logs" / "doctor-prepare.log"
        self.say("building the GPU kernel: clevr-remv doctor --prepare (ptxas; about 2 minutes on 16 cores)")
        ptxas = self.report.get("kit_ptxas", {}).get("path")
        env = dict(self.env, CLEVR_REMV_PTXAS=ptxas) if ptxas else self.env  # the project's [gpu] ptxas
        r = self.run("kernels", [self.cli, "doctor", "--prepare"], PREPARE_CAP, log=log, env=env)
        markers = []
        for m in sorted(self.work.glob("cache/kernels/*/*.clevr-remv.json")):
            try:
                markers.append({"file": m.name.replace(".clevr-remv.json", ""), **json.loads(m.read_text())})
            except ValueError:
                pass
        self.report["kernel_build"] = {**r, "ptxas_forced": ptxas, "built": markers,
                                       "ptxas_seconds": [m.get("seconds") for m in markers]}
        self.report["steps"].append({"step": "kernels", **r})
        state = "TIMED OUT" if r["timed_out"] else f"exit {r['rc']}"
        self.say(f"kernel build: {state}, {r['wall_s']} s wall, {r['cpu_s']} s CPU; ptxas "
                 + ", ".join(f"{m['file']} {m.get('seconds')} s on {m.get('threads')} threads (CUDA "
                             f"{'.'.join(map(str, m.get('ptxas_version', [])))})" for m in markers))

    # -- renders ---------------------------------------------------------------------------------------
    def renders(self) -> None:
        runs = GPU_RUNS if self.gpu else CPU_RUNS
        if not self.gpu:
            for name, *_ in GPU_RUNS:
                self.skip(f"render {name}", "no GPU: CPU dry run (a tiny CPU render of each denoiser instead)")
        kb = self.report.get("kernel_build")
        if self.gpu and kb and (kb["timed_out"] or kb["rc"] != 0):
            for name, *_ in runs:
                self.skip(f"render {name}", "the kernel build did not finish: a GPU render would wait "
                          "minutes on the driver's JIT")
            return
        for name, denoiser, samples, workers, scenes, est, cap in runs:
            if not self.fits(f"render {name}", est):
                continue
            self.render(name, denoiser, samples, workers, scenes, cap)

    def render(self, name, denoiser, samples, workers, scenes, cap) -> None:
        out = self.work / "runs" / name
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        cfg = {"render": {"denoiser": denoiser, "samples": samples}}
        device = "auto"
        if not self.gpu:
            cfg["render"].update(TINY)
            cfg["rig"] = {"grid": TINY_GRID}
            device = "cpu"
        cfg_path = self.work / "runs" / f"{name}.config.json"
        cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
        cmd = [self.cli, "generate", "--scenes", scenes, "--seed", SEED, "--out", out, "--config", cfg_path,
               "--workers", workers, "--device", device, "--no-progress"]
        log = self.work / "logs" / f"{name}.log"
        self.say(f"render {name}: {' '.join(str(c) for c in cmd[1:])} (cap {cap} s)")
        sampler = GpuSampler(self.nvsmi_env) if self.gpu else None
        if sampler:
            sampler.start()
        r = self.run(name, cmd, cap, log=log)
        gpu = sampler.stop() if sampler else None
        rec = {"run": name, "denoiser": denoiser, "samples": samples, "workers": workers, "scenes_asked": scenes,
               "device_asked": device, "config": cfg, **r}
        rec.update(summarise(out, r, scenes))
        if gpu is not None:
            rec["gpu"] = gpu
            driver_mib = gpu["per_pid_peak_mib"].get(str(r["pid"]))
            rec["driver_process_gpu_mib"] = driver_mib
            rec["worker_processes_gpu_mib"] = {str(p): gpu["per_pid_peak_mib"].get(str(p)) for p in rec.get("worker_pids", [])}
        rec["denoiser_device"] = denoiser_device(rec, log, self.gpu)
        for f in sorted((out / "logs").glob("*")) if (out / "logs").is_dir() else []:
            self.logs.append(f)
        self.report["runs"].append(rec)
        status = "TIMED OUT" if r["timed_out"] else ("ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})")
        self.say(f"  {name}: {status}; {r['wall_s']} s wall, {rec.get('scenes_done', 0)} scenes; "
                 f"per view {fmt(rec.get('wall_per_view_s'))} s wall, render {fmt(rec.get('render_per_view_s'))} s; "
                 f"GPU memory peak {fmt(gpu and gpu.get('memory_used_peak_mib'), 0)} MiB; denoiser {rec['denoiser_device']}")
        if r["rc"] != 0 or r["timed_out"]:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            rec["log_tail"] = tail
            for line in tail:
                self.say(f"    | {line}")

    # -- report ---------------------------------------------------------------------------------------
    def finish(self) -> int:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        self.report["budget_s"] = self.setup["budget_s"]
        self.report["machine"] = {"host": platform.node(), "cores": os.cpu_count(), "kernel": platform.release(),
                                  "gpu": self.setup.get("gpu_line") or None}
        first = next((r for r in self.report["runs"] if r.get("first_render")), None)
        self.report["first_render"] = first and first["first_render"]
        table = markdown(self.report)
        self.report["table"] = table
        self.report_dir.mkdir(parents=True, exist_ok=True)
        (self.report_dir / "gpu_kit_report.json").write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        (self.report_dir / "gpu_kit_report.md").write_text(table + "\n")
        with tarfile.open(self.report_dir / "gpu_kit_logs.tar.gz", "w:gz") as tf:
            for f in self.logs:
                if f.exists() and f.stat().st_size < 8 << 20:
                    tf.add(f, arcname=str(f.relative_to(self.work)))
        print(table, flush=True)
        failed = [r["run"] for r in self.report["runs"] if r["rc"] != 0 or r["timed_out"]]
        pre = self.report.get("preflight", {})
        if failed:
            self.say(f"runs that failed or ran over their cap: {', '.join(failed)}")
        return 1 if failed or not pre.get("from_kit") or pre.get("missing_libraries") else 0


def _own_cpu(pid: int, last):
    """utime + stime of ``pid`` itself (fields 14 and 15 of /proc/PID/stat), or ``last``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return last


class GpuSampler(threading.Thread):
    """nvidia-smi every 0.5 s: the GPU's memory in use and utilisation, and each process's memory."""

    def __init__(self, env):
        super().__init__(daemon=True)
        self.env = env
        self.done = threading.Event()
        self.samples = []
        self.per_pid: dict = {}

    def _q(self, args):
        try:
            r = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True,
                               text=True, timeout=5, env=self.env)
            return [[x.strip() for x in line.split(",")] for line in r.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            return []

    def run(self):
        while not self.done.is_set():
            t = time.time()
            for row in self._q(["--query-gpu=memory.used,utilization.gpu"]):
                try:
                    self.samples.append((t, float(row[0]), float(row[1])))
                except (ValueError, IndexError):
                    pass
            for row in self._q(["--query-compute-apps=pid,used_memory"]):
                try:
                    self.per_pid[row[0]] = max(self.per_pid.get(row[0], 0.0), float(row[1]))
                except (ValueError, IndexError):
                    pass
            self.done.wait(0.5)

    def stop(self) -> dict:
        self.done.set()
        self.join(timeout=10)
        mem = [s[1] for s in self.samples]
        util = [s[2] for s in self.samples]
        return {"samples": len(self.samples), "memory_used_peak_mib": max(mem) if mem else None,
                "memory_used_median_mib": statistics.median(mem) if mem else None,
                "utilization_mean_pct": round(statistics.mean(util), 1) if util else None,
                "utilization_max_pct": max(util) if util else None,
                "per_pid_peak_mib": self.per_pid}


def summarise(out: Path, r: dict, scenes_asked: int) -> dict:
    """What the run's own files say: scenes.jsonl timings, manifest, one shard's attributes."""
    rec: dict = {}
    log = out / "logs" / "scenes.jsonl"
    rows = []
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    rec["scenes_done"] = len(rows)
    man = {}
    try:
        man = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        pass
    grid = man.get("grid") or [None, None]
    rec["device_used"] = man.get("device")
    rec["grid"] = grid
    rec["resolution"] = man.get("resolution")
    if not rows:
        return rec
    views_per_scene = grid[0] * grid[1] if grid[0] else None
    if views_per_scene is None:
        return rec
    views = len(rows) * views_per_scene
    tot = lambda k: sum(x.get(k, 0.0) for x in rows)  # noqa: E731
    rec.update({
        "views": views,
        "scene_wall_s": [x["wall_s"] for x in rows],
        "scene_check_s": [x.get("check_s") for x in rows],
        "wall_per_scene_s": round(r["wall_s"] / len(rows), 3),          # the whole command, start-up included
        "wall_per_view_s": round(r["wall_s"] / views, 4),
        "scene_wall_median_s": round(statistics.median(x["wall_s"] for x in rows), 3),
        "render_per_view_s": round(tot("render_s") / views, 4),          # Blender's render calls
        "driver_view_per_view_s": round(tot("driver_view_s") / views, 4),  # the slot thread's time on views
        "view_work_per_view_s": round(tot("view_work_s") / views, 4),    # decode+denoise+compress, all threads (CPU)
        "denoise_per_view_s": round(tot("denoise_s") / views, 4),
        "cpu_per_view_s": round(r["cpu_s"] / views, 4),                  # driver + workers, whole command
        # the driver process alone (its threads: scene logic, EXR decode, denoise, compression),
        # sampled from /proc every 0.1 s until it exits (so up to 0.1 s short)
        "driver_cpu_per_view_s": r.get("own_cpu_s") and round(r["own_cpu_s"] / views, 4),
        "startup_s": round(r["wall_s"] - sum(x["wall_s"] for x in rows) / max(1, len({x.get('worker') for x in rows})), 2),
        "worker_peak_rss_mb": round(max(x.get("worker_peak_rss") or 0 for x in rows) / 1e6),
        "worker_pids": sorted({x.get("worker_pid") for x in rows if x.get("worker_pid")}),
    })
    if len(rows) >= 2:
        first, rest = rows[0], rows[1:]
        med_wall = statistics.median(x["wall_s"] for x in rest)
        med_check = statistics.median(x.get("check_s", 0.0) for x in rest)
        rec["first_render"] = {"first_scene_wall_s": first["wall_s"], "later_scenes_wall_median_s": med_wall,
                               "first_scene_check_s": first.get("check_s"), "later_check_median_s": med_check,
                               "first_render_extra_s": round(first.get("check_s", 0.0) - med_check, 3),
                               "note": "check_s is the scene's 1-sample visibility render: the worker's first "
                                       "render call, where Cycles loads its kernels"}
    shard = next(iter(sorted(out.glob("*/*.h5"))), None)
    if shard is not None:
        try:
            import h5py

            with h5py.File(shard, "r") as f:
                rec["shard"] = {"file": str(shard.relative_to(out)), "denoiser_attr": str(f.attrs.get("denoiser")),
                                "images_shape": list(f["images"].shape)}
        except Exception as exc:  # noqa: BLE001 - a report, not a check of the format
            rec["shard"] = {"error": str(exc)}
    return rec


def denoiser_device(rec: dict, log: Path, gpu: bool) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    if rec["denoiser"] == "driver":
        if "OpenImageDenoise cannot use" in text:
            return "driver OIDN on the CPU (it could not open the GPU: see the run's log)"
        if not gpu:
            return "driver OIDN on the CPU"
        mib = rec.get("driver_process_gpu_mib")
        if mib:
            return f"driver OIDN on the GPU (the driver process held {mib:.0f} MiB there)"
        return "driver OIDN: its process was not seen on the GPU by nvidia-smi (CPU?)"
    if not gpu:
        return "Cycles' OIDN on the CPU"
    return (f"Cycles' OIDN in Blender (GPU asked: cycles.denoising_use_gpu; CPU per view "
            f"{fmt(rec.get('cpu_per_view_s'))} s against the driver runs' says where it ran)")


def fmt(x, nd=3):
    if x is None:
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def markdown(rep: dict) -> str:
    lines = [f"## clevr-remv GPU acceptance kit: {rep['mode']}, {rep.get('elapsed_s')} s of a {rep.get('budget_s')} s budget",
             "", f"machine: {rep['machine'].get('gpu') or 'no GPU'}; {rep['machine']['cores']} cores",
             f"setup: check + unpack {rep['setup'].get('extract_s')} s, venv {rep['setup'].get('venv_s')} s, "
             f"install {rep['setup'].get('install_s')} s ({rep['setup'].get('project_source')})"]
    pre = rep.get("preflight", {})
    lines.append(f"bpy {pre.get('bpy_version')} from the kit: {pre.get('from_kit')}; missing libraries: "
                 f"{pre.get('missing_libraries') or 'none'}")
    d = rep.get("doctor") or {}
    if d:
        lines.append(f"doctor: auto device {d.get('auto_device')}, driver's denoiser on {d.get('denoiser')} "
                     f"{d.get('denoiser_where') or ''}; kernels "
                     + (", ".join(f"{p['sm']} {p['status']}" for p in d.get("kernel_plans") or []) or "-"))
    kb = rep.get("kernel_build")
    if kb:
        lines.append(f"**kernel build** (doctor --prepare): {'TIMED OUT after ' if kb['timed_out'] else ''}"
                     f"{kb['wall_s']} s wall, {kb['cpu_s']} s CPU; ptxas itself: "
                     + (", ".join(f"{m['file']} {m.get('seconds')} s" for m in kb.get("built", [])) or "nothing built"))
    fr = rep.get("first_render")
    if fr:
        lines.append(f"**first render**: first scene {fr['first_scene_wall_s']} s against {fr['later_scenes_wall_median_s']} s "
                     f"for later ones; its first render call (1-sample check) {fr['first_scene_check_s']} s against "
                     f"{fr['later_check_median_s']} s")
    lines += ["", "| run | denoiser | samples | workers | status | scenes | s/scene | s/view | render s/view "
              "| driver CPU s/view | driver CPU / render | GPU mem peak MiB | denoiser ran |", "|" + "---|" * 13]
    for r in rep["runs"]:
        status = "timed out" if r["timed_out"] else ("ok" if r["rc"] == 0 else f"exit {r['rc']}")
        g = r.get("gpu") or {}
        dc, rv = r.get("driver_cpu_per_view_s"), r.get("render_per_view_s")
        share = f"{dc / rv:.2f}" if dc and rv else "-"
        lines.append(f"| {r['run']} | {r['denoiser']} | {r['samples']} | {r['workers']} | {status} | {r.get('scenes_done', 0)} "
                     f"| {fmt(r.get('wall_per_scene_s'), 2)} | {fmt(r.get('wall_per_view_s'))} | {fmt(rv)} "
                     f"| {fmt(dc)} | {share} | {fmt(g.get('memory_used_peak_mib'), 0)} | {r.get('denoiser_device')} |")
    lines += ["", "s/scene, s/view: the whole command's wall time (start-up included) per scene and per view; render: "
              "Blender's render calls; driver CPU: the driver process alone, its start-up included (a few CPU "
              "seconds: it dominates a 1-scene dry run), target under a quarter of the render time; the JSON has every figure (per-scene times, worker memory, each process's GPU memory)."]
    if rep["skipped"]:
        lines += ["", "Skipped:"] + [f"- {s['step']}: {s['reason']}" for s in rep["skipped"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--setup", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--syslibs", required=True)
    a = ap.parse_args()
    b = Bench(a)
    (b.work / "logs").mkdir(parents=True, exist_ok=True)
    rc = 1
    try:
        if b.preflight():
            b.ptxas()
            b.doctor()
            b.kernels()
            b.renders()
        else:
            b.skip("doctor, kernels, renders", "the preflight failed: bpy does not import from the kit")
    except KeyboardInterrupt:
        b.say("interrupted: writing the report of what ran")
    finally:
        rc = b.finish()
    return rc


if __name__ == "__main__":
    sys.exit(main())
