"""GPU kernel decisions (README, GPU section), on fake add-on folders and capabilities, and a real ptxas
build of a small PTX file (ptxas needs no GPU)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard

from clevr_remv.gpu import discovery, kernels, prepare
from clevr_remv.render import blender, exr

H100_SMI = "0, NVIDIA H100 80GB HBM3, 9.0, 580.65.06, GPU-1a2b3c4d-0000-1111-2222-333344445555\n"
MIXED_SMI = (H100_SMI + "1, NVIDIA A100-SXM4-40GB, 8.0, 580.65.06, GPU-99990000-aaaa-bbbb-cccc-ddddeeeeffff\n"
             "2, NVIDIA GeForce RTX 4090, 8.9, 580.65.06, GPU-77777777-aaaa-bbbb-cccc-ddddeeeeffff\n")

# A small real kernel, in the PTX dialect of the one the bpy wheel ships (ISA 7.4, sm_75).
PTX = """.version 7.4
.target sm_75
.address_size 64

.visible .entry kernel_scale(.param .u64 out, .param .f32 k)
{
	.reg .b64 %rd<3>;
	.reg .f32 %f<3>;
	.reg .b32 %r<3>;
	ld.param.u64 %rd1, [out];
	ld.param.f32 %f1, [k];
	cvta.to.global.u64 %rd2, %rd1;
	mov.u32 %r1, %tid.x;
	cvt.rn.f32.u32 %f2, %r1;
	mul.f32 %f2, %f2, %f1;
	mul.wide.u32 %rd1, %r1, 4;
	add.s64 %rd2, %rd2, %rd1;
	st.global.f32 [%rd2], %f2;
	ret;
}
"""


def fake_lib(tmp_path: Path, cubins=("30", "75", "86", "89", "120"), ptx=("75",), ptx_text=PTX) -> Path:
    """An add-on folder laid out like the bpy 4.5/5.0 wheels' cycles/lib."""
    lib = tmp_path / "bpy" / "4.5" / "scripts" / "addons_core" / "cycles" / "lib"
    lib.mkdir(parents=True)
    for sm in cubins:
        (lib / f"kernel_sm_{sm}.cubin.zst").write_bytes(zstandard.compress(b"cubin"))
    for c in ptx:
        (lib / f"kernel_compute_{c}.ptx.zst").write_bytes(zstandard.ZstdCompressor().compress(ptx_text.encode()))
    (lib / "kernel_optix.ptx.zst").write_bytes(b"x")
    return lib


def test_nvidia_smi_rows_and_visible_devices():
    gpus = discovery.parse_nvidia_smi(MIXED_SMI + "garbage line\n")
    assert [(g.index, g.compute_capability, g.sm) for g in gpus] == [(0, (9, 0), "sm_90"), (1, (8, 0), "sm_80"),
                                                                   (2, (8, 9), "sm_89")]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].driver == "580.65.06"
    assert [g.index for g in discovery.select_visible(gpus, "2,0")] == [2, 0]
    assert [g.index for g in discovery.select_visible(gpus, "GPU-9999")] == [1]
    assert [g.index for g in discovery.select_visible(gpus, "1,7,0")] == [1]  # CUDA stops at an unknown entry
    assert discovery.select_visible(gpus, "") == [] and len(discovery.select_visible(gpus, None)) == 3


def test_kernel_status_follows_cycles_search_order(tmp_path):
    lib = fake_lib(tmp_path)
    assert kernels.kernel_status(lib, (8, 6)).status == "shipped"
    assert kernels.kernel_status(lib, (12, 0)).status == "shipped"
    for cc in [(9, 0), (8, 0), (10, 0), (8, 7)]:  # H100, A100, B200, Orin: the PTX, JIT-compiled
        st = kernels.kernel_status(lib, cc)
        assert st.status == "jit" and st.path.endswith("kernel_compute_75.ptx.zst") and not st.ready
    # Below the only PTX and without a cubin, Cycles has nothing.
    assert kernels.kernel_status(lib, (5, 0)).status == "missing"
    # The newest PTX at or below the capability wins.
    lib2 = fake_lib(tmp_path / "b", cubins=(), ptx=("50", "75", "86"))
    assert kernels.kernel_status(lib2, (8, 9)).ptx.endswith("compute_86.ptx.zst")
    assert kernels.kernel_status(lib2, (8, 0)).ptx.endswith("compute_75.ptx.zst")
    assert kernels.kernel_status(lib2, (6, 1)).ptx.endswith("compute_50.ptx.zst")


def test_the_installed_wheel_lacks_sm80_and_sm90():
    """The fact behind the kernel build (no sm_80/sm_90 cubin in the wheel), on the bpy actually installed."""
    lib = kernels.cycles_lib_dir()
    assert lib is not None and lib.name == "lib" and lib.parent.name == "cycles"
    shipped = kernels.shipped_kernels(lib)
    assert (7, 5) in shipped["ptx"] and (8, 6) in shipped["cubin"]
    assert kernels.kernel_status(lib, (9, 0)).status in ("jit", "built")
    assert kernels.kernel_status(lib, (8, 0)).status in ("jit", "built")
    assert kernels.blender_version(lib).count(".") == 2  # e.g. 4.5.15, from the wheel's metadata


def test_ptxas_choice_respects_targets_and_driver():
    cu13 = kernels.Ptxas("/opt/cuda13/ptxas", (13, 0), "PATH")
    cu12 = kernels.Ptxas("/venv/nvidia/cuda_nvcc/bin/ptxas", (12, 9), "pip")
    cu11 = kernels.Ptxas("/opt/cuda11/ptxas", (11, 4), "CUDA_HOME")
    # A driver of the CUDA 12 line (e.g. 550) cannot load CUDA 13 cubins: the cu12 ptxas is chosen.
    assert kernels.choose_ptxas([cu13, cu12], (9, 0), (12, 4)) is cu12
    assert kernels.choose_ptxas([cu13, cu12], (9, 0), (13, 0)) is cu13
    assert kernels.choose_ptxas([cu13, cu12], (9, 0), None) is cu12  # no driver: the widest-loading one
    # CUDA 13 dropped targets below sm_75; 11.4 predates sm_90.
    assert kernels.choose_ptxas([cu13, cu12], (7, 0), (13, 0)) is cu12
    assert kernels.choose_ptxas([cu11], (9, 0), (12, 0)) is None
    assert kernels.choose_ptxas([cu11], (8, 0), (12, 0)) is cu11
    assert discovery.cuda_version_of_driver("580.65.06") == (13, 0)
    assert discovery.cuda_version_of_driver("550.54.15") == (12, 0)
    assert discovery.cuda_version_of_driver("470.1") == (11, 0) and discovery.cuda_version_of_driver(None) is None


def test_plan_per_capability(tmp_path):
    lib = fake_lib(tmp_path)
    gpus = discovery.parse_nvidia_smi(MIXED_SMI)
    env = {"CLEVR_REMV_CACHE": str(tmp_path / "cache")}
    cu12 = kernels.Ptxas("/venv/ptxas", (12, 9), "pip")
    plans = {p.status.sm: p for p in kernels.plan_kernels(gpus, lib, [cu12], env=env)}
    assert plans["sm_89"].action == "ready"
    assert plans["sm_90"].action == "build" and plans["sm_80"].action == "build"
    assert plans["sm_90"].cached == str(tmp_path / "cache" / "kernels" / "4.5" / "kernel_sm_90.cubin.zst")
    # No ptxas: left to the driver's JIT, with one line saying what that costs and what to install.
    none = {p.status.sm: p for p in kernels.plan_kernels(gpus, lib, [], env=env, cores=16)}
    msg = none["sm_90"].message
    assert none["sm_90"].action == "jit" and "\n" not in msg
    assert "sm_90" in msg and "pip install" in msg and "about 2 minutes on 16 cores" in msg
    # A ptxas whose cubins the driver cannot load is not used, and the line says why.
    cu13 = kernels.Ptxas("/opt/cuda13/ptxas", (13, 0), "PATH")
    old_driver = discovery.parse_nvidia_smi(H100_SMI.replace("580.65.06", "550.54.15"))
    p = kernels.plan_kernels(old_driver, lib, [cu13], env=env)[0]
    assert p.action == "jit" and "cannot load" in p.message


def test_build_install_and_reuse_with_real_ptxas(tmp_path):
    tools = kernels.find_ptxas()
    assert tools, "ptxas is needed for this test: pip install nvidia-cuda-nvcc-cu12 (the [gpu] extra)"
    lib = fake_lib(tmp_path)
    env = {"CLEVR_REMV_CACHE": str(tmp_path / "cache")}
    h100 = discovery.parse_nvidia_smi(H100_SMI)
    [plan] = kernels.plan_kernels(h100, lib, tools, env=env)
    assert plan.action == "build"
    said = []
    status = kernels.execute_plan(plan, lib, jobs=2, say=said.append)
    assert status.status == "built" and status.ready
    assert status.path == str(lib / "kernel_sm_90.cubin.zst")
    assert any("building the Cycles GPU kernel for sm_90" in s for s in said)
    cubin = zstandard.ZstdDecompressor().decompress(Path(status.path).read_bytes())
    assert cubin[:4] == b"\x7fELF"
    e_machine = struct.unpack_from("<H", cubin, 18)[0]
    e_flags = struct.unpack_from("<I", cubin, 48)[0]
    assert e_machine == 190  # EM_CUDA
    assert 90 in (e_flags & 0xFF, (e_flags >> 8) & 0xFF)  # the target: sm_90
    # Zstd frame with its content size, as Cycles' reader expects of Blender's own files.
    assert zstandard.frame_content_size(Path(status.path).read_bytes()) == len(cubin)
    meta = json.loads((lib / "kernel_sm_90.cubin.zst.clevr-remv.json").read_text())
    assert meta["capability"] == [9, 0] and meta["ptx_sha256"] == kernels.sha256(lib / "kernel_compute_75.ptx.zst")

    # A second add-on folder of the same Blender version takes the cached build: no ptxas run.
    lib2 = fake_lib(tmp_path / "other")
    [again] = kernels.plan_kernels(h100, lib2, [], env=env)
    assert again.action == "install"
    assert kernels.execute_plan(again, lib2, say=said.append).status == "built"
    # A changed PTX (another build of the same version) invalidates the cached kernel.
    lib3 = fake_lib(tmp_path / "third", ptx_text=PTX.replace("mul.f32", "add.f32"))
    assert kernels.plan_kernels(h100, lib3, [], env=env)[0].action == "jit"


def test_failed_build_leaves_nothing(tmp_path):
    tools = kernels.find_ptxas()
    assert tools
    lib = fake_lib(tmp_path, ptx_text=PTX.replace("ret;", "bogus.instruction;"))
    dest = tmp_path / "cache" / "kernel_sm_90.cubin.zst"
    with pytest.raises(RuntimeError, match="ptxas failed for sm_90"):
        kernels.build_kernel(lib / "kernel_compute_75.ptx.zst", (9, 0), tools[0], dest, say=lambda s: None)
    assert list(dest.parent.iterdir()) == []


def test_jit_cache_environment():
    env = prepare.jit_cache_env({"HOME": "/home/u"})
    assert env["CUDA_CACHE_MAXSIZE"] == str(4 * 1024**3)
    assert env["CUDA_CACHE_PATH"] == "/home/u/.cache/clevr-remv/cuda-jit"
    assert prepare.jit_cache_env({"CUDA_CACHE_PATH": "/x", "CUDA_CACHE_MAXSIZE": "1", "XDG_CACHE_HOME": "/c"}) == {}


def test_render_settings_denoise_where_the_render_runs(cfg):
    from clevr_remv.render import devices

    # Cycles' own denoiser (the driver's one is placed in clevr_remv/denoise.py)
    cfg = {**cfg, "render": {**cfg["render"], "denoiser": "cycles"}}

    for backend in ("optix", "cuda", "hip", "metal", "oneapi"):
        info = {"device": backend, "names": ["A", "B"], "count": 2}
        s = devices.render_settings(cfg, info, 3, 4, ["use_pass_z"], cpu_count=16)
        assert s["device"] == backend and s["gpu_index"] == 1 and "threads" not in s
        assert s["denoising_use_gpu"] is True
        # everything else is the run's configuration, untouched but for the prefilter's "auto"
        # resolved (the defaults' 256 samples: Cycles' "accurate")
        assert {k: s[k] for k in cfg["render"]} == {**cfg["render"], "device": backend,
                                                    "denoise_prefilter": "accurate"}
    s = devices.render_settings(cfg, {"device": "cpu"}, 1, 2, [], cpu_count=16)
    assert s["denoising_use_gpu"] is False and s["threads"] == 8 and "gpu_index" not in s
    assert devices.render_settings(cfg, {"device": "cpu"}, 0, 32, [], cpu_count=16)["threads"] == 1
    # No denoiser, nothing to place on the GPU.
    off = {**cfg, "render": {**cfg["render"], "denoise": False}}
    assert devices.render_settings(off, {"device": "optix", "count": 1}, 0, 1, [])["denoising_use_gpu"] is False
    assert "denoising_use_gpu" not in cfg["render"]  # the input is not modified


def test_first_render_watch_speaks_only_while_jit_compiling():
    import time as _time

    said = []
    jit = kernels.KernelStatus((9, 0), "jit", "p", "p")
    with prepare.FirstRenderWatch([jit], say=said.append, every=0.05, name="worker-0"):
        _time.sleep(0.3)
    n = len(said)
    assert n >= 2 and all("compiling the Cycles kernel for sm_90" in s for s in said)
    _time.sleep(0.15)
    assert len(said) == n  # stopped at exit
    quiet = []
    with prepare.FirstRenderWatch([kernels.KernelStatus((8, 6), "shipped", "c", None)], say=quiet.append, every=0.01):
        _time.sleep(0.1)
    assert quiet == []


def test_prepare_gpu_run_is_a_no_op_off_nvidia():
    assert prepare.prepare_gpu_run("cpu") == prepare.GpuRunPrep()
    assert prepare.prepare_gpu_run("hip") == prepare.GpuRunPrep()


def test_overlay_for_a_read_only_addon(tmp_path):
    lib = fake_lib(tmp_path)
    (lib.parent / "__init__.py").write_text("# the add-on\n")
    (lib.parent / "shader").mkdir()
    built = tmp_path / "cache" / "kernel_sm_90.cubin.zst"
    built.parent.mkdir()
    built.write_bytes(zstandard.compress(b"\x7fELF sm_90"))
    (built.parent / (built.name + ".clevr-remv.json")).write_text("{}")
    over = prepare.overlay_addon(lib, [built], tmp_path / "cache")
    assert (over / "__init__.py").is_symlink() and (over / "shader").is_symlink()
    assert (over / "lib" / "kernel_sm_86.cubin.zst").is_symlink()
    assert kernels.kernel_status(over / "lib", (9, 0)).status == "built"
    assert kernels.kernel_status(lib, (9, 0)).status == "jit"  # the install itself is untouched
    assert prepare.overlay_addon(lib, [built], tmp_path / "cache") == over  # made once
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []


@pytest.mark.render
def test_worker_renders_through_an_addon_overlay(tmp_path, cfg):
    """Cycles pointed at a linked copy of its add-on folder renders the same view (CPU here;
    on a GPU the copy's lib/ carries the built kernel)."""
    from clevr_remv.render import devices, outputs
    from clevr_remv.scene import layout

    lib = kernels.cycles_lib_dir()
    over = prepare.overlay_addon(lib, [], tmp_path)
    rc = {**cfg["render"], "width": 64, "height": 48, "samples": 2, "denoise": False}
    record = layout.sample_scene({**cfg, "render": rc}, 5, 0, 0)
    views = []
    w = blender.BlenderWorker(name="overlay")
    try:
        w.hello()
        for path in (None, str(over)):
            settings = devices.render_settings({**cfg, "render": rc}, {"device": "cpu"}, 0, 1,
                                               outputs.render_passes(outputs.rendered(cfg)), cpu_count=2)
            if path:
                settings["cycles_path"] = path
            w.configure(settings)
            [ev] = list(w.render(record, [(1, 1)], tag=f"o{bool(path)}"))
            views.append(exr.read_view(ev.path, ["images", "instances", "depth"]))
    finally:
        w.kill()
    for name in ("images", "instances", "depth"):
        np.testing.assert_array_equal(views[0][name], views[1][name])


def test_two_drivers_build_a_kernel_once(tmp_path):
    import threading

    tools = kernels.find_ptxas()
    assert tools
    env = {"CLEVR_REMV_CACHE": str(tmp_path / "cache")}
    h100 = discovery.parse_nvidia_smi(H100_SMI)
    libs = [fake_lib(tmp_path / "a"), fake_lib(tmp_path / "b")]
    plans = [kernels.plan_kernels(h100, lib, tools, env=env)[0] for lib in libs]
    assert [p.action for p in plans] == ["build", "build"]
    said, results = [], []
    threads = [threading.Thread(target=lambda p=p, lib=lib: results.append(kernels.execute_plan(p, lib, jobs=1, say=said.append)))
               for p, lib in zip(plans, libs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["built", "built"]
    assert sum("building the Cycles GPU kernel" in s for s in said) == 1
