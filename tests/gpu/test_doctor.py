"""``clevr-remv doctor`` on this CPU machine (real bpy), and the system-library table."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import listing, run_cli
from test_gpu_kernels import fake_lib

from clevr_remv.gpu import discovery, kernels
from clevr_remv.render import system_libs
from clevr_remv.tools import doctor


def test_doctor_on_a_machine_without_gpu(tmp_path):
    r = run_cli("doctor", env={"CLEVR_REMV_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "Traceback" not in out + r.stderr
    assert "system libraries: all found" in out
    assert "Blender 4.5" in out or "Blender 5." in out
    assert "--device auto renders on: cpu; denoiser (OpenImageDenoise) runs on: cpu" in out
    assert "NVIDIA GPUs: none" in out
    # No GPU: the farm capabilities are reported for reference, in Cycles' terms.
    assert "for reference (no GPU here), sm_90: jit" in out or "sm_90: built" in out
    assert f"CUDA_CACHE_PATH={tmp_path / 'cache' / 'cuda-jit'}" in out
    assert not (tmp_path / "cache").exists()  # reporting writes nothing


def test_doctor_json(tmp_path):
    r = run_cli("doctor", "--json", "--sm", "sm_80,9.0,86", env={"CLEVR_REMV_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["gpus"]["list"] == [] and rep["blender"]["ok"] is True
    assert rep["blender"]["auto_device"] == "cpu" and rep["blender"]["denoiser"] == "cpu"
    assert rep["libraries"]["missing"] == []
    plans = {p["status"]["sm"]: p for p in rep["kernels"]["plans"]}
    assert set(plans) == {"sm_80", "sm_90", "sm_86"}
    assert plans["sm_86"]["status"]["status"] == "shipped" and plans["sm_86"]["action"] == "ready"
    assert plans["sm_90"]["action"] in ("build", "jit", "ready", "install")
    assert "sm_90" in rep["kernels"]["shipped_cubins"] or plans["sm_90"]["status"]["status"] == "jit"


def test_doctor_bad_capability_is_one_line():
    r = run_cli("doctor", "--sm", "nine")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--sm" in r.stderr
    assert doctor.parse_sm_list("80, sm_90,9.0,120") == [(8, 0), (9, 0), (12, 0)]


def test_prepare_builds_and_installs_for_the_listed_capabilities(tmp_path, monkeypatch):
    """--prepare's work, on a fake add-on folder (the real one belongs to the shared install)."""
    monkeypatch.setenv("CLEVR_REMV_CACHE", str(tmp_path / "cache"))
    lib = fake_lib(tmp_path)
    plans = kernels.plan_kernels([discovery.Gpu(-1, "", (9, 0)), discovery.Gpu(-1, "", (8, 6))], lib, kernels.find_ptxas())
    report = {"kernels": {"folder": str(lib), "plans": [p.as_dict() for p in plans]}}
    said = []
    assert doctor.prepare(report, jobs=2, say=said.append) is True
    assert {r["sm"]: r["status"] for r in report["prepared"]} == {"sm_86": "shipped", "sm_90": "built"}
    assert (lib / "kernel_sm_90.cubin.zst").exists()
    assert any("installed" in s for s in said)


SYSTEM_BLENDER = shutil.which("blender")


@pytest.mark.skipif(SYSTEM_BLENDER is None and not os.environ.get("CLEVR_REMV_REQUIRE_BLENDER"),
                    reason="no standalone blender on PATH (CI installs Debian's and requires it)")
def test_doctor_with_a_blender_named_on_path(tmp_path):
    """`--blender blender` (a name, not a path): doctor reports on the executable PATH gives,
    the one the worker runs, not on ./blender."""
    assert SYSTEM_BLENDER, "CLEVR_REMV_REQUIRE_BLENDER is set but no blender is on PATH"
    exe = Path(SYSTEM_BLENDER)
    assert system_libs.blender_binary("blender") == exe
    assert system_libs.blender_binary(str(exe)) == exe
    assert system_libs.blender_binary(str(tmp_path / "blender")) is None
    env = {**os.environ, "CLEVR_REMV_CACHE": str(tmp_path / "cache")}

    def doctor_here(*args):  # from a folder with no ./blender in it
        return subprocess.run([sys.executable, "-m", "clevr_remv", "doctor", *args], capture_output=True,
                              text=True, timeout=900, env=env, cwd=tmp_path)

    r = doctor_here("--json", "--blender", "blender")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["libraries"] == {"binary": str(exe), "missing": system_libs.missing_libraries(exe), "install": None}
    assert rep["libraries"]["missing"] == []
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout.split()[1]
    assert rep["blender"]["ok"] is True and rep["blender"]["via"] == "blender"
    assert rep["blender"]["blender"].startswith(version), (rep["blender"], version)
    text = doctor_here("--blender", "blender")
    assert f"system libraries: all found ({exe})" in text.stdout
    assert f"Blender {rep['blender']['blender']} (blender): CPU" in text.stdout


# -- system libraries ------------------------------------------------------------------------
def test_library_names_in_loader_errors():
    msg = "ImportError: libGL.so.1: cannot open shared object file: No such file or directory"
    assert system_libs.library_in_error(msg) == "libGL.so.1"
    assert system_libs.library_in_error("ImportError: libxkbcommon.so.0: cannot open shared object file") == "libxkbcommon.so.0"
    assert system_libs.library_in_error("ModuleNotFoundError: No module named 'bpy'") is None
    line = system_libs.missing_library_message(msg, binary="/nonexistent")
    assert line == "Blender cannot start: system library libGL.so.1 missing; on Debian/Ubuntu: apt-get install libgl1"
    assert system_libs.install_hint(["libXi.so.6", "libX11.so.6", "libXi.so.6", "libfoo.so.9"]) == (
        "apt-get install libxi6 libx11-6; install the package that provides libfoo.so.9 "
        "(Debian/Ubuntu: apt-file search libfoo.so.9)")


def test_package_table_agrees_with_dpkg():
    """Each library installed on this machine belongs to the package the table names."""
    dpkg = shutil.which("dpkg")
    assert dpkg, "this check needs a Debian/Ubuntu host"
    # Everything bpy links against is in the table.
    needed = subprocess.run(["ldd", str(system_libs.bpy_binary())], capture_output=True, text=True).stdout
    names = {ln.split()[0] for ln in needed.splitlines() if "=>" in ln and "/bpy/" not in ln}
    names -= {"libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libutil.so.1"}
    assert names - set(system_libs.DEBIAN_PACKAGES) == set()
    checked = 0
    for lib, pkg in system_libs.DEBIAN_PACKAGES.items():
        r = subprocess.run([dpkg, "-S", f"*/{lib}"], capture_output=True, text=True)
        if r.returncode != 0:
            continue  # not installed here
        owners = {line.split(":")[0] for line in r.stdout.splitlines() if line.strip().endswith("/" + lib)}
        assert pkg in owners, (lib, owners)
        checked += 1
    assert checked >= len(names)


def _bpy_needing_a_missing_library(tmp_path: Path, missing: str) -> Path:
    """A real extension module named bpy whose loading genuinely fails: it needs a shared
    object the loader cannot find (built here with gcc, then the library is removed)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "this test needs a C compiler"
    build = tmp_path / "build"
    build.mkdir()
    (build / "dep.c").write_text("int clevr_remv_dep(void) { return 1; }\n")
    # The loader fails before Python looks for PyInit_bpy: no Python headers needed.
    (build / "mod.c").write_text("extern int clevr_remv_dep(void);\nint clevr_remv_mod(void) { return clevr_remv_dep(); }\n")
    import sysconfig
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(build / missing), f"-Wl,-soname,{missing}",
                    str(build / "dep.c")], check=True)
    site = tmp_path / "site"
    site.mkdir()
    ext = site / ("bpy" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(ext), str(build / "mod.c"),
                    str(build / missing)], check=True)
    shutil.rmtree(build)
    return site


@pytest.mark.parametrize("command", ["generate", "doctor"])
def test_missing_system_library_is_one_line(tmp_path, command):
    missing = "libclevrremv-absent.so.3"
    site = _bpy_needing_a_missing_library(tmp_path, missing)
    out = tmp_path / "out"
    args = ["generate", "--scenes", "2", "--out", out] if command == "generate" else ["doctor"]
    r = run_cli(*args, env={"PYTHONPATH": str(site)})
    if command == "generate":
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert lines[0].startswith("clevr-remv: error: Blender cannot start: system library " + missing)
        assert "apt-file search " + missing in lines[0]
        assert listing(out) == []
    else:
        assert r.returncode == 1
        assert f"system libraries: MISSING {missing}" in r.stdout
        assert "CANNOT START" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_report_text_for_a_gpu_node(tmp_path):
    """The GPU branch of the report (no GPU here): an H100 node without ptxas, built from
    the same pieces collect() uses."""
    from test_gpu_kernels import H100_SMI

    lib = fake_lib(tmp_path)
    gpus = discovery.parse_nvidia_smi(H100_SMI)
    plans = kernels.plan_kernels(gpus, lib, [], env={"CLEVR_REMV_CACHE": str(tmp_path)}, cores=16)
    report = {
        "clevr_remv": "x", "python": "3.11", "cpu_cores": 16,
        "libraries": {"binary": "/x/bpy/__init__.so", "missing": ["libGL.so.1"], "install": "apt-get install libgl1"},
        "gpus": {"found_by": "nvidia-smi", "driver_cuda": "13.0",
                 "list": [{"index": 0, "name": gpus[0].name, "compute_capability": "9.0", "sm": "sm_90",
                           "driver": "580.65.06"}]},
        "ptxas": [],
        "kernels": {"folder": str(lib), "reference_only": False, "blender_version": "4.5.15",
                    "shipped_cubins": ["sm_86"], "shipped_ptx": ["compute_75"], "cache": str(tmp_path),
                    "plans": [p.as_dict() for p in plans]},
        "cuda_jit_cache": {"CUDA_CACHE_MAXSIZE": "4294967296"},
        "blender": {"ok": True, "via": "bpy module", "blender": "4.5.15", "devices": {"cpu": ["CPU"], "optix": [gpus[0].name]},
                    "auto_device": "optix", "auto_device_names": [gpus[0].name], "denoiser": "gpu"},
    }
    text = "\n".join(doctor.render_text(report))
    assert "system libraries: MISSING libGL.so.1; on Debian/Ubuntu: apt-get install libgl1" in text
    assert "GPU backends: optix: NVIDIA H100 80GB HBM3" in text
    assert "--device auto renders on: optix (NVIDIA H100 80GB HBM3); denoiser (OpenImageDenoise) runs on: gpu" in text
    assert "0: NVIDIA H100 80GB HBM3, compute capability 9.0 (sm_90), driver 580.65.06" in text
    assert "  sm_90: jit (no cubin" in text and "about 2 minutes on 16 cores" in text
    assert "ptxas: none (to build kernels ahead of time: pip install 'clevr-remv[gpu]')" in text
    json.dumps(report)  # --json can print it
