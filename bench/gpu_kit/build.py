"""Build the GPU acceptance kit on a CPU machine: everything a GPU node without network and
without Python 3.11 needs to install clevr-remv and measure it, in numbered parts of at most
56 MiB (one part per device call, which carries at most 64 MiB with the working tree).

    nice -n 10 python3 bench/gpu_kit/build.py --no-measure   # -> .gpukit/ (part-000 ..., SHA256SUMS, manifest.json, run_on_gpu.sh)
    python3 bench/gpu_kit/build.py --scripts-only            # the same parts, new device script and helpers
    python3 bench/gpu_kit/build.py --help

What goes in (each an .tar.xz of its own inside one uncompressed tar, the "archive"):
  python   a CPython 3.11 runtime (a relocated copy of --python, default pyenv's 3.11.7), without
           its test suite, tkinter, idle, static library and site-packages;
  syslibs  the system libraries bpy and that Python link against, unpacked from Debian 12's
           packages (apt-get download; never installed here);
  bpy      bpy 4.5.15 (cp311, manylinux_2_28) from PyPI, stripped of what a headless Cycles render
           does not need (rules below), repacked as a wheel; the CUDA PTX that doctor --prepare
           builds the GPU's kernel from stays (the prebuilt cubins go unless --keep-cubins);
  wheels   every dependency's wheel, the `gpu` extra included, and setuptools + wheel (to install
           a checkout offline); pyoidn and nvidia-cuda-nvcc-cu12 slimmed (see SLIM); every wheel
           stored uncompressed so that xz sees the bytes;
  project  the project's wheel, built from this checkout (a component of its own: it changes
           with every commit).

Scratch (downloads, staging, the compressed components) stays in KIT/work/ and is reused by the
next build: a component whose files did not change is not compressed again (--fresh drops it).
Results and the exact commands: docs/benchmarks.md, "The GPU acceptance kit".
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import fnmatch
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import kitparts  # noqa: E402

BPY_VERSION = "4.5.15"
MIB = 1 << 20

# bpy: what a headless Cycles render (CPU, CUDA, OptiX) does not need.  Each rule is
# (name, globs relative to the unpacked wheel, why).  Kept on purpose: every library
# bpy/__init__.so or a kept library lists as NEEDED (readelf -d), so libcycles_kernel_oneapi_aot,
# libsycl, libur_loader and libembree4 stay although no Intel GPU is used; Cycles' compute_75
# PTX and the OptiX PTX (and its CUDA cubins with --keep-cubins); the OIDN core, CPU and CUDA
# libraries.
BPY_RULES = [
    ("cycles_hip_kernels", ["bpy/4.5/scripts/addons_core/cycles/lib/kernel_gfx*.fatbin.zst",
                            "bpy/4.5/scripts/addons_core/cycles/lib/kernel_rt_gfx*.hipfb.zst"],
     "AMD HIP kernels (gfx10xx-12xx); no AMD GPU here"),
    ("oidn_hip_sycl_devices", ["bpy/lib/libOpenImageDenoise_device_hip.so*",
                               "bpy/lib/libOpenImageDenoise_device_sycl.so*"],
     "OpenImageDenoise's AMD and Intel GPU devices (loaded on demand, not NEEDED); CPU and CUDA stay"),
    ("python_usd_materialx", ["bpy/4.5/python/lib/python3.11/site-packages/pxr",
                              "bpy/4.5/python/lib/python3.11/site-packages/MaterialX",
                              "bpy/4.5/python/lib/python3.11/site-packages/openvdb.cpython-311-x86_64-linux-gnu.so"],
     "Python bindings of USD (with its test environment), MaterialX and OpenVDB; oslquery, OpenImageIO "
     "and PyOpenColorIO stay"),
    ("usd_materialx_data", ["bpy/lib/usd", "bpy/lib/materialx", "bpy/lib/libMaterialXRenderHw.so*"],
     "USD plug-in descriptions and MaterialX's libraries (USD/MaterialX import/export only), the "
     "MaterialX hardware renderer (not NEEDED)"),
    ("datafiles_assets_studiolights", ["bpy/4.5/datafiles/assets", "bpy/4.5/datafiles/studiolights",
                                       "bpy/4.5/datafiles/locale"],
     "the Essentials asset library, viewport studio lights and matcaps, translations"),
    ("addons_not_cycles", ["bpy/4.5/scripts/addons_core/rigify", "bpy/4.5/scripts/addons_core/io_scene_gltf2",
                           "bpy/4.5/scripts/addons_core/io_scene_fbx", "bpy/4.5/scripts/addons_core/bl_pkg",
                           "bpy/4.5/scripts/addons_core/node_wrangler", "bpy/4.5/scripts/addons_core/viewport_vr_preview",
                           "bpy/4.5/scripts/addons_core/io_curve_svg", "bpy/4.5/scripts/addons_core/io_anim_bvh",
                           "bpy/4.5/scripts/addons_core/io_mesh_uv_layout", "bpy/4.5/scripts/addons_core/pose_library",
                           "bpy/4.5/scripts/addons_core/ui_translate", "bpy/4.5/scripts/addons_core/hydra_storm",
                           "bpy/4.5/scripts/addons_core/copy_global_transform.py"],
     "bundled add-ons other than Cycles (none is enabled by the worker)"),
    ("scripts_ui_extras", ["bpy/4.5/scripts/startup/bl_app_templates_system", "bpy/4.5/scripts/presets",
                           "bpy/4.5/scripts/templates_py", "bpy/4.5/scripts/templates_osl",
                           "bpy/4.5/scripts/templates_toml", "bpy/4.5/scripts/freestyle",
                           "bpy/4.5/scripts/modules/bl_i18n_utils"],
     "application templates, presets, script templates, Freestyle, translation tools"),
    ("pycache", ["**/__pycache__"], "compiled Python caches (rebuilt on import)"),
]
# Not a removal: bpy/__init__.so ships its full symbol table (.symtab/.strtab); `strip
# --strip-unneeded` drops it (.dynsym, which Python and the libraries use, stays).
STRIP_BINARIES = ["bpy/__init__.so"]

# Other wheels slimmed to what the run uses (name prefix of the wheel file -> globs removed).
SLIM = {
    "pyoidn-": (["pyoidn/oidn/lib/libOpenImageDenoise_device_hip.so*", "pyoidn/oidn/lib/libOpenImageDenoise_device_sycl.so*",
                 "pyoidn/oidn/lib/libsycl.so*", "pyoidn/oidn/lib/libur_*", "pyoidn/oidn/lib/libumf.so*",
                 "pyoidn/oidn/lib/libze_*", "pyoidn/oidn/lib/libhwloc.so*", "pyoidn/oidn/lib/libtcm*"],
                "OpenImageDenoise's AMD (HIP) and Intel (SYCL, Level Zero, Unified Runtime) devices; CPU and CUDA stay"),
    "nvidia_cuda_nvcc_cu12-": (["nvidia/cuda_nvcc/nvvm/*", "nvidia/cuda_nvcc/include/*", "nvidia/cuda_nvcc/lib/*",
                                "nvidia/cuda_nvcc/bin/*"],
                               "everything but bin/ptxas (clevr-remv only runs ptxas; nvcc, cicc/libnvvm, headers go)"),
}
SLIM_KEEP = {"nvidia_cuda_nvcc_cu12-": ["nvidia/cuda_nvcc/bin/ptxas", "nvidia/cuda_nvcc/__init__.py"]}

# Debian 12 packages: the Dockerfile's list (what bpy links against outside its wheel), plus the
# libraries the kit's Python's standard modules link against (ctypes, ssl, hashlib, lzma, bz2,
# zlib, sqlite3, pyexpat, uuid).  glibc, libstdc++ and libgcc are the node's own.
DEBS_BPY = ["libgl1", "libglx0", "libglvnd0", "libx11-6", "libxcb1", "libxau6", "libxdmcp6", "libxext6",
            "libxfixes3", "libxi6", "libxrender1", "libxt6", "libsm6", "libice6", "libxkbcommon0", "libbsd0",
            "libmd0", "libuuid1", "libgomp1"]
DEBS_PYTHON = ["libffi8", "libssl3", "liblzma5", "libbz2-1.0", "zlib1g", "libsqlite3-0", "libexpat1"]

# The Python runtime: what is left out of the copy (globs relative to its prefix).
PYTHON_DROP = ["lib/python3.11/site-packages/*", "lib/python3.11/test", "lib/python3.11/idlelib",
               "lib/python3.11/tkinter", "lib/python3.11/turtledemo", "lib/python3.11/lib2to3/tests",
               "lib/python3.11/ctypes/test", "lib/python3.11/distutils/tests", "lib/python3.11/unittest/test",
               "lib/python3.11/sqlite3/test", "lib/python3.11/config-3.11-x86_64-linux-gnu/*.a",
               "lib/python3.11/lib-dynload/_test*", "lib/python3.11/lib-dynload/_ctypes_test*",
               "lib/python3.11/lib-dynload/xxlimited*", "lib/python3.11/lib-dynload/_xxtestfuzz*",
               "lib/python3.11/lib-dynload/_tkinter*", "lib/python3.11/lib-dynload/_curses*",
               "lib/python3.11/lib-dynload/readline*", "lib/python3.11/lib-dynload/nis*",
               "lib/python3.11/lib-dynload/ossaudiodev*", "lib/python3.11/lib-dynload/_crypt*",
               "lib/libpython3.11.a", "lib/pkgconfig", "lib/tcl*", "lib/tk*", "lib/itcl*", "lib/thread*",
               "include", "share", "**/__pycache__", "bin/idle*", "bin/pydoc*", "bin/2to3*", "bin/pip*",
               "bin/python3.11-config", "bin/python3-config", "bin/python-config"]


# -- helpers ------------------------------------------------------------------------------------------
class Log:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.steps: dict = {}

    def __call__(self, msg: str) -> None:
        print(f"[build {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def step(self, name: str):
        log = self

        class _Step:
            def __enter__(self_):
                self_.t = time.perf_counter()
                log(f"== {name}")

            def __exit__(self_, *exc):
                log.steps[name] = round(time.perf_counter() - self_.t, 1)
                return False
        return _Step()


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def tree_bytes(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def match(root: Path, patterns) -> list[Path]:
    """Paths under ``root`` matching any glob (``**`` allowed), outermost only."""
    found = []
    for pat in patterns:
        found += list(root.glob(pat))
    found = sorted(set(found))
    out = []
    for p in found:
        if not any(q in p.parents for q in out):
            out.append(p)
    return out


def xz_bytes(paths: list[Path], root: Path, level: str) -> int:
    """Size of these files as their own tar.xz, at the kit's level: what removing them saves."""
    if not paths:
        return 0
    names = [str(p.relative_to(root)) for p in paths]
    tar = subprocess.Popen(["tar", "-C", str(root), "--sort=name", "-cf", "-", "--", *names], stdout=subprocess.PIPE)
    xz = subprocess.Popen(["xz", level, "-T2", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
    tar.stdout.close()
    n = 0
    for block in iter(lambda: xz.stdout.read(1 << 20), b""):
        n += len(block)
    tar.wait()
    xz.wait()
    return n


def human(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# -- wheels -----------------------------------------------------------------------------------------------
def unpack_wheel(whl: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def _record_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def pack_wheel(tree: Path, whl: Path) -> None:
    """Write ``tree`` as a wheel, every member stored (not deflated), RECORD rewritten from the
    files as they are now.  Reproducible: sorted, fixed dates; the .dist-info folder last."""
    dist_info = [p for p in tree.iterdir() if p.name.endswith(".dist-info")]
    if len(dist_info) != 1:
        raise SystemExit(f"{tree}: expected one .dist-info folder, found {len(dist_info)}")
    dist_info = dist_info[0]
    record = dist_info / "RECORD"
    files = sorted((p for p in tree.rglob("*") if p.is_file() and p != record),
                   key=lambda p: (dist_info in p.parents, str(p.relative_to(tree))))
    rows = [[str(p.relative_to(tree)), _record_hash(p), str(p.stat().st_size)] for p in files]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    w.writerow([str(record.relative_to(tree)), "", ""])
    record.write_text(buf.getvalue())
    whl.parent.mkdir(parents=True, exist_ok=True)
    tmp = whl.with_name(whl.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for p in files + [record]:
            info = zipfile.ZipInfo(str(p.relative_to(tree)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = ((p.stat().st_mode & 0o777) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_STORED
            with open(p, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, whl)


def restore_wheel(whl: Path, dest: Path) -> None:
    """Re-write a wheel with every member stored; contents and RECORD unchanged."""
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(whl) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zo:
        for info in zi.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            new.external_attr = info.external_attr
            new.compress_type = zipfile.ZIP_STORED
            with zi.open(info) as src, zo.open(new, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, dest)


def wheel_version(name: str) -> str:
    parts = name.split("-")
    return parts[1] if len(parts) > 2 else "?"


# -- the steps ---------------------------------------------------------------------------------------------
def step_download(a, work: Path, log: Log) -> dict:
    dl = work / "download"
    proj = work / "project"
    if proj.exists():
        shutil.rmtree(proj)
    proj.mkdir(parents=True)
    # The project's wheel, from this checkout (its committed and uncommitted files alike).
    run([a.python_exe, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", proj, ROOT])
    wheel = next(proj.glob("clevr_remv-*.whl"))
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' in-tree build folder (git-ignored)
    if dl.exists() and not a.reuse_downloads:
        shutil.rmtree(dl)  # a fresh folder: pip download keeps every version it ever fetched
    dl.mkdir(parents=True, exist_ok=True)
    for old in dl.glob("clevr_remv-*.whl"):
        old.unlink()  # pip keeps an existing file of the same name: this checkout's wheel must win
    run([a.python_exe, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--only-binary=:all:",
         "-d", dl, f"{wheel}[gpu]", f"bpy=={BPY_VERSION}", "setuptools>=77", "wheel"])
    names = [w.name.split("-")[0].lower() for w in dl.glob("*.whl")]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SystemExit(f"{dl} holds two versions of {', '.join(twice)}: run without --reuse-downloads")
    return {"project_wheel": wheel.name}


def step_bpy(a, work: Path, out_wheels: Path, log: Log) -> dict:
    src = next((work / "download").glob(f"bpy-{BPY_VERSION}-cp311-*.whl"))
    stage = work / "stage" / "bpy"
    log(f"unpacking {src.name} ({human(src.stat().st_size)})")
    unpack_wheel(src, stage)
    before = tree_bytes(stage)
    rules = []
    for name, globs, why in BPY_RULES:
        hits = match(stage, globs)
        raw = sum(tree_bytes(p) for p in hits)
        nfiles = sum(1 if p.is_file() else sum(1 for q in p.rglob("*") if q.is_file()) for p in hits)
        packed = xz_bytes(hits, stage, a.xz_level) if a.measure and hits else None
        for p in hits:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        rules.append({"rule": name, "why": why, "paths": len(hits), "files": nfiles, "raw_bytes": raw,
                      "xz_bytes": packed})
        log(f"  - {name}: {nfiles} files, {human(raw)} raw" + (f", {human(packed)} as xz" if packed else ""))
    if a.drop_cubins:
        hits = match(stage, ["bpy/4.5/scripts/addons_core/cycles/lib/kernel_sm_*.cubin.zst"])
        raw = sum(tree_bytes(p) for p in hits)
        for p in hits:
            p.unlink()
        rules.append({"rule": "cycles_cuda_cubins", "why": "sm_30-89/120 cubins, left out without --keep-cubins (an H100 uses "
                      "the sm_90 kernel doctor --prepare builds from the PTX)", "paths": len(hits),
                      "files": len(hits), "raw_bytes": raw, "xz_bytes": raw})
    for rel in STRIP_BINARIES:
        p = stage / rel
        size0 = p.stat().st_size
        saved_xz = None
        if a.measure:
            orig = work / "stage" / "orig-init.so"
            shutil.copyfile(p, orig)
        run(["strip", "--strip-unneeded", p])
        size1 = p.stat().st_size
        if a.measure:
            saved_xz = xz_bytes([orig], orig.parent, a.xz_level) - xz_bytes([p], stage, a.xz_level)
            orig.unlink()
        rules.append({"rule": "strip_symbols", "why": f"strip --strip-unneeded {rel} (its .symtab/.strtab; "
                      ".dynsym stays)", "paths": 1, "files": 1, "raw_bytes": size0 - size1, "xz_bytes": saved_xz})
        log(f"  - strip {rel}: {human(size0)} -> {human(size1)}"
            + (f", {human(saved_xz)} less as xz" if saved_xz is not None else ""))
    kept = {
        "cuda_cubins": sorted(p.name for p in stage.glob("bpy/4.5/scripts/addons_core/cycles/lib/kernel_sm_*")),
        "cuda_ptx": sorted(p.name for p in stage.glob("bpy/4.5/scripts/addons_core/cycles/lib/kernel_compute_*")),
        "optix_ptx": sorted(p.name for p in stage.glob("bpy/4.5/scripts/addons_core/cycles/lib/kernel_optix*")),
        "oidn": sorted(p.name for p in stage.glob("bpy/lib/libOpenImageDenoise*")),
    }
    if not kept["cuda_ptx"] or not kept["optix_ptx"] or not any("cuda" in n for n in kept["oidn"]):
        raise SystemExit(f"stripping removed what must stay: {kept}")
    after = tree_bytes(stage)
    dest = out_wheels / src.name
    pack_wheel(stage, dest)
    log(f"bpy: {human(before)} -> {human(after)} unpacked; stored wheel {human(dest.stat().st_size)}")
    return {"source_wheel": src.name, "source_wheel_bytes": src.stat().st_size, "unpacked_bytes_before": before,
            "unpacked_bytes_after": after, "rules": rules, "kept": kept, "wheel": dest.name}


def step_wheels(a, work: Path, out_wheels: Path, log: Log, project_wheel: str, out_project: Path) -> list:
    """The dependencies' wheels into ``out_wheels``; the project's own wheel into ``out_project``
    (a component of its own: it changes with every commit, the others rarely)."""
    out = []
    out_wheels.mkdir(parents=True, exist_ok=True)
    out_project.mkdir(parents=True, exist_ok=True)
    for whl in sorted((work / "download").glob("*.whl")):
        if whl.name.startswith(f"bpy-{BPY_VERSION}-"):
            continue
        dest = (out_project if whl.name == project_wheel else out_wheels) / whl.name
        slim = next((k for k in SLIM if whl.name.startswith(k)), None)
        entry = {"wheel": whl.name, "version": wheel_version(whl.name), "download_bytes": whl.stat().st_size}
        if slim:
            globs, why = SLIM[slim]
            stage = work / "stage" / whl.name
            unpack_wheel(whl, stage)
            keep = {stage / k for k in SLIM_KEEP.get(slim, [])}
            hits = [p for p in match(stage, globs) if p not in keep]
            raw = sum(tree_bytes(p) for p in hits)
            for p in hits:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            pack_wheel(stage, dest)
            shutil.rmtree(stage)
            entry.update(slimmed=why, removed_files=len(hits), removed_raw_bytes=raw)
            log(f"  {whl.name}: slimmed, {len(hits)} files ({human(raw)}) out")
        else:
            restore_wheel(whl, dest)
        entry["stored_bytes"] = dest.stat().st_size
        entry["project"] = whl.name == project_wheel
        out.append(entry)
    return out


def step_python(a, work: Path, dest: Path, log: Log) -> dict:
    src = Path(a.python)
    if dest.exists():
        shutil.rmtree(dest)
    drop = PYTHON_DROP

    def ignore(dirpath, names):
        rel = Path(dirpath).relative_to(src)
        out = []
        for n in names:
            r = (rel / n).as_posix()
            if any(fnmatch.fnmatch(r, pat) or (pat.startswith("**/") and n == pat[3:]) for pat in drop):
                out.append(n)
        return out
    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    (dest / "lib/python3.11/site-packages").mkdir(exist_ok=True)
    version = subprocess.run([src / "bin/python3.11", "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    log(f"python {version}: {human(tree_bytes(src))} at {src} -> {human(tree_bytes(dest))}")
    return {"source": str(src), "version": version, "bytes": tree_bytes(dest),
            "why": "a relocated copy of this machine's pyenv CPython (unpatched, with ensurepip/venv and a "
                   "shared libpython found through LD_LIBRARY_PATH); see docs/benchmarks.md, \"GPU acceptance kit\""}


def step_syslibs(a, work: Path, dest: Path, log: Log) -> dict:
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    wanted = DEBS_BPY + DEBS_PYTHON
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    missing = [d for d in wanted if d not in have]
    if missing:
        run(["apt-get", "download", *missing], cwd=debs, stdout=subprocess.DEVNULL)
    root = work / "stage" / "debroot"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    pkgs = []
    for deb in sorted(debs.glob("*.deb")):
        name, version = deb.name.split("_")[:2]
        if name not in wanted:
            continue
        run(["dpkg-deb", "-x", deb, root])
        pkgs.append({"package": name, "version": version.replace("%3a", ":"), "deb_bytes": deb.stat().st_size})
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for libdir in (root / "lib/x86_64-linux-gnu", root / "usr/lib/x86_64-linux-gnu"):
        if not libdir.is_dir():
            continue
        for p in sorted(libdir.iterdir()):
            if ".so" in p.name and (p.is_file() or p.is_symlink()) and not (dest / p.name).exists():
                if p.is_symlink():
                    (dest / p.name).symlink_to(os.readlink(p))
                else:
                    shutil.copy2(p, dest / p.name)
    for link in dest.iterdir():  # links to what was not copied (.so dev links into other folders)
        if link.is_symlink() and not link.exists():
            link.unlink()
    log(f"syslibs: {len(pkgs)} packages, {sum(1 for _ in dest.iterdir())} files, {human(tree_bytes(dest))}")
    return {"packages": pkgs, "files": sorted(p.name for p in dest.iterdir()), "bytes": tree_bytes(dest)}


def tree_digest(root: Path) -> str:
    """SHA-256 of a tree: every path (sorted), its mode, and its bytes or link target."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        st = p.lstat()
        h.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(kitparts._sha256_file(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def tar_xz(src_dir: Path, dest: Path, level: str) -> None:
    """``src_dir``'s contents as a reproducible tar.xz (sorted names, uid 0, fixed time)."""
    tar = subprocess.Popen(["tar", "-C", str(src_dir), "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                            "--mtime=@0", "-cf", "-", "."], stdout=subprocess.PIPE)
    with open(dest, "wb") as fo:
        xz = subprocess.Popen(["xz", level, "-T2", "-c"], stdin=tar.stdout, stdout=fo)
        tar.stdout.close()
        if xz.wait() or tar.wait():
            raise SystemExit(f"tar | xz failed for {src_dir}")


def git_info() -> dict:
    def g(*args):
        r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    return {"commit": g("rev-parse", "HEAD"), "branch": g("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(g("status", "--porcelain", "--untracked-files=no"))}


def tracked_tree_bytes() -> int | None:
    # what a device call copies: tracked files and untracked ones git does not ignore
    r = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True)
    if r.returncode:
        return None
    return sum((ROOT / f).stat().st_size for f in r.stdout.decode().split("\0") if f and (ROOT / f).is_file())


SMALL_FILES = ["run_on_gpu.sh", "kitparts.py", "gpu_bench.py", kitparts.MANIFEST, kitparts.SUMS]


def travel_plan(kit_rel: str, parts: list) -> list:
    """The calls that bring the kit to a GPU node, back to back (it goes back after 30 s idle)."""
    calls = []
    n = len(parts)
    for i, p in enumerate(parts):
        carry = [f"{kit_rel}/{p['name']}"]
        if i == 0:
            carry += [f"{kit_rel}/{f}" for f in SMALL_FILES]
        cmd = f"python3 {kit_rel}/kitparts.py check-part {kit_rel} {p['name']}"
        if i == 0:
            cmd = f"bash {kit_rel}/run_on_gpu.sh --preflight; " + cmd
        if i == n - 1:
            cmd = f"bash {kit_rel}/run_on_gpu.sh"
        calls.append({"call": i + 1, "carry": carry, "command": cmd,
                      "timeout_s": 600 if i == n - 1 else 120})
    return calls


def render_runner(template: Path, dest: Path, values: dict) -> None:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace("@" + k + "@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise SystemExit(f"{template}: unfilled placeholders {sorted(set(left))}")
    dest.write_text(text)
    dest.chmod(0o755)


def finish_kit(kit: Path, info: dict, parts: list, log) -> None:
    """The small files beside the parts: kitparts.py, gpu_bench.py, the device script (rendered
    from run_on_gpu.sh.in with this kit's values), SHA256SUMS and manifest.json (with the
    travel plan).  Also what ``--scripts-only`` redoes for an existing kit."""
    shutil.copyfile(HERE / "kitparts.py", kit / "kitparts.py")
    shutil.copyfile(HERE / "gpu_bench.py", kit / "gpu_bench.py")
    kit_rel = os.path.relpath(kit, ROOT)
    info["helpers"] = {n: kitparts._sha256_file(kit / n) for n in ("kitparts.py", "gpu_bench.py")}
    render_runner(HERE / "run_on_gpu.sh.in", kit / "run_on_gpu.sh", {
        "KIT_FORMAT": 1, "BPY_VERSION": BPY_VERSION, "PYTHON_VERSION": info["python"]["version"],
        "PROJECT_WHEEL": info["download"]["project_wheel"], "PROJECT_COMMIT": info["project"]["commit"] or "unknown",
        "ARCHIVE_SHA256": info["archive"]["sha256"], "NPARTS": len(parts)})
    info["helpers"]["run_on_gpu.sh"] = kitparts._sha256_file(kit / "run_on_gpu.sh")
    tree = tracked_tree_bytes()
    info["travel"] = {"tracked_tree_bytes": tree, "calls": travel_plan(kit_rel, parts),
                      "note": "one call per part, back to back (the GPU machine goes back after about 30 s "
                              "idle); the first also carries the small files; the last runs the script"}
    small = sum((kit / f).stat().st_size for f in SMALL_FILES if (kit / f).exists())
    biggest_call = max(p["bytes"] for p in parts) + small + (tree or 0)
    info["travel"]["largest_call_bytes"] = biggest_call
    if biggest_call > 64 * MIB - 1 * MIB:
        log(f"WARNING: the largest call would carry {human(biggest_call)} with the working tree: over the 64 MiB "
            f"a call may carry; use a smaller --part-mib")
    kitparts.write_sums(kit, parts)
    kitparts.write_manifest(kit, info)
    total = sum(p["bytes"] for p in parts)
    log(f"kit ready in {kit}: {len(parts)} parts, {human(total)} in all; largest call {human(biggest_call)} "
        f"with the working tree")
    for c in info["travel"]["calls"]:
        log(f"  call {c['call']}: carry {c['carry']}; run: {c['command']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kit", default=str(ROOT / ".gpukit"), help="the kit's folder [.gpukit at the repository root]")
    ap.add_argument("--python", default="/root/.pyenv/versions/3.11.7",
                    help="prefix of the CPython 3.11 to relocate into the kit [%(default)s]")
    ap.add_argument("--part-mib", type=float, default=None,
                    help="largest part, MiB; with --scripts-only, cut the kit's archive again at this size [56: with the working tree (about 3 MB) and the small files, a call "
                         "stays under the 64 MiB a device call may carry, with room for the tree to grow]")
    ap.add_argument("--xz-level", default="-9", help="xz preset for the components [-9]")
    ap.add_argument("--keep-cubins", dest="drop_cubins", action="store_false",
                    help="keep Cycles' prebuilt CUDA cubins (sm_30-89, 120; 45 MB, already zstd-compressed). "
                         "Left out by default: the lent GPU nodes are H100/H200 (sm_90), which never load them "
                         "(doctor --prepare builds sm_90 from the PTX, which stays), and without them the kit "
                         "is one part (one device call) shorter; another GPU gets its kernel from doctor --prepare")
    ap.add_argument("--no-measure", dest="measure", action="store_false",
                    help="skip measuring each bpy removal as xz (saves a few minutes)")
    ap.add_argument("--fresh", action="store_true", help="drop KIT/work (downloads, staging) first")
    ap.add_argument("--reuse-downloads", action="store_true",
                    help="keep KIT/work/download from the last build instead of downloading again")
    ap.add_argument("--scripts-only", action="store_true",
                    help="keep the parts of the kit already in --kit; write its device script, helpers, sums and "
                         "manifest again (after a change to run_on_gpu.sh.in, gpu_bench.py or kitparts.py)")
    a = ap.parse_args(argv)
    if a.scripts_only:
        kit = Path(a.kit).resolve()
        try:
            info = kitparts.check(kit)
        except kitparts.KitError as exc:
            ap.error(f"--scripts-only needs a whole kit in {kit}: {exc}")
        info["scripts_refreshed"] = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                     "project": git_info()}
        parts = info["parts"]
        if a.part_mib is not None and int(a.part_mib * MIB) != info.get("part_bytes_max"):  # cut it again
            joined = kit / "work" / "kit.tar"
            joined.parent.mkdir(parents=True, exist_ok=True)
            with open(joined, "wb") as fo:
                for p in parts:
                    with open(kit / p["name"], "rb") as fi:
                        shutil.copyfileobj(fi, fo, 1 << 22)
            parts = kitparts.split_file(joined, kit, int(a.part_mib * MIB))
            joined.unlink()
            info["parts"], info["part_bytes_max"] = parts, int(a.part_mib * MIB)
        finish_kit(kit, info, parts, Log())
        return 0
    if a.part_mib is None:
        a.part_mib = 56.0
    a.python_exe = Path(a.python) / "bin" / "python3.11"
    if not a.python_exe.exists():
        ap.error(f"no python3.11 under {a.python}")
    for tool in ("xz", "tar", "strip", "apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            ap.error(f"{tool} is needed on the build machine")
    kit = Path(a.kit).resolve()
    work = kit / "work"
    if a.fresh and work.exists():
        shutil.rmtree(work)
    payload = work / "payload"          # the component trees
    comps = work / "components"         # their .tar.xz files
    if payload.exists():
        shutil.rmtree(payload)
    payload.mkdir(parents=True)
    comps.mkdir(parents=True, exist_ok=True)  # kept: a component whose tree did not change is reused
    log = Log()
    info: dict = {"kit": "clevr-remv GPU acceptance kit", "format": 1,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "built_on": {"host": platform.node(), "machine": platform.machine(),
                               "cpu_cores": os.cpu_count(), "builder_python": sys.version.split()[0]},
                  "project": git_info(), "bpy_version": BPY_VERSION}

    with log.step("download"):
        info["download"] = step_download(a, work, log)
    with log.step("bpy"):
        info["bpy"] = step_bpy(a, work, payload / "bpy", log)
    with log.step("wheels"):
        info["wheels"] = step_wheels(a, work, payload / "wheels", log, info["download"]["project_wheel"],
                                     payload / "project")
    with log.step("python"):
        info["python"] = step_python(a, work, payload / "python", log)
    with log.step("syslibs"):
        info["syslibs"] = step_syslibs(a, work, payload / "syslibs", log)

    with log.step("compress"):
        components = []
        for name in ("python", "syslibs", "wheels", "bpy", "project"):
            t = time.perf_counter()
            dest = comps / f"{name}.tar.xz"
            stamp = comps / f"{name}.tree"
            digest = f"{tree_digest(payload / name)} xz {a.xz_level}"
            reused = dest.exists() and stamp.exists() and stamp.read_text() == digest
            if not reused:
                stamp.unlink(missing_ok=True)
                tar_xz(payload / name, dest, a.xz_level)
                stamp.write_text(digest)
            components.append({"name": name, "file": dest.name, "unpacked_bytes": tree_bytes(payload / name),
                               "xz_bytes": dest.stat().st_size, "sha256": kitparts._sha256_file(dest),
                               "seconds": round(time.perf_counter() - t, 1), "reused": reused})
            log(f"  {dest.name}: {human(components[-1]['unpacked_bytes'])} -> {human(components[-1]['xz_bytes'])} "
                + ("(the same tree as the last build: reused)" if reused else f"in {components[-1]['seconds']} s"))
        archive = work / "kit.tar"
        with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tf:
            for c in components:
                ti = tf.gettarinfo(str(comps / c["file"]), arcname=c["file"])
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", 0o644
                with open(comps / c["file"], "rb") as fh:
                    tf.addfile(ti, fh)
        info["components"] = components

    with log.step("split"):
        for f in kit.iterdir():
            if f.is_file() and (f.name.startswith(kitparts.PART_PREFIX) or f.name in SMALL_FILES):
                f.unlink()
        parts = kitparts.split_file(archive, kit, int(a.part_mib * MIB))
        info.update(kitparts.describe_parts(parts, kitparts._sha256_file(archive), archive.stat().st_size))
        info["part_bytes_max"] = int(a.part_mib * MIB)
        archive.unlink()
    info["build_seconds"] = log.steps
    finish_kit(kit, info, parts, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
