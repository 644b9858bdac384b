"""OpenImageDenoise in the driver: one device and one set of filters per worker, for every view.

Cycles' own denoiser builds a new OIDN device, a new filter and two prefilters (albedo,
normal) in every render call: about 0.25 s per view on 2 CPU cores, more than the render of a
small 1-sample view (docs/benchmarks.md, "Per-view fixed cost").  Instead the worker renders
the noisy colour with Cycles' denoising-data passes (albedo and normal, one render), and the
driver denoises each view here with filters that live as long as the worker.  The filters are
those Cycles sets up (``intern/cycles/integrator/denoiser_oidn.cpp``) for the run's
``render.denoise_prefilter`` and ``render.denoise_quality``; with the defaults (prefilter
"Accurate", quality "High"), the albedo and normal passes are cleaned by their own RT filters,
then the colour is denoised with ``hdr``, ``cleanAux`` and ``quality = HIGH``.

Device: the one that renders (CUDA for ``cuda``/``optix``, HIP for ``hip``, SYCL for
``oneapi``, Metal for ``metal``; the CPU otherwise, and where OIDN cannot open that GPU).
``render.denoiser`` chooses: ``auto`` (here when the ``pyoidn`` package imports, else Cycles'
own denoiser in each render call, as before), ``driver`` or ``cycles``.

Determinism: OIDN's CPU device sums its auto-exposure with tbb::parallel_reduce, in an order
that depends on thread scheduling.  Here the exposure (``inputScale``) is computed with numpy in
a fixed order, by OIDN's formula, so the same input gives the same bytes in any process and
with any thread count (tests/render/test_denoise.py).  Cycles' float passes themselves still differ in
their last bits between processes for a few pixels, so denoised 8-bit images can differ by one
level in rare pixels (README, "Determinism").
"""

from __future__ import annotations

import functools
import logging
import sys
import threading

import numpy as np

from ..config import DENOISE_PREFILTERS as PREFILTERS
from ..config import DENOISE_QUALITIES as QUALITIES
from ..config import prefilter_of

log = logging.getLogger("clevr_remv")

# render device -> pyoidn device type name
_OIDN_DEVICE = {"cpu": "CPU", "cuda": "CUDA", "optix": "CUDA", "hip": "HIP", "oneapi": "SYCL", "metal": "METAL"}

# OIDN's auto-exposure (core/cpu/cpu_autoexposure.cpp): the mean luminance of bins of at most
# 16x16 pixels; exposure = key / 2^(mean of log2 over the bins brighter than eps).
_AE_KEY = 0.18
_AE_EPS = 1e-8
_AE_BIN = 16


def _import_pyoidn():
    """Import pyoidn without letting it import torch (its optional torch helpers cost seconds of
    start-up per process, and the driver never hands it tensors)."""
    if "pyoidn" in sys.modules or "torch" in sys.modules:
        import pyoidn
        return pyoidn
    sys.modules["torch"] = None  # makes pyoidn's `import torch` raise ImportError
    try:
        import pyoidn
    finally:
        del sys.modules["torch"]
    return pyoidn


@functools.lru_cache(maxsize=1)
def pyoidn_version() -> str | None:
    """The pyoidn version, or None when it cannot be imported (looked up once per process:
    several calls per scene, and importlib.metadata costs about 1.5 ms each)."""
    try:
        pyoidn = _import_pyoidn()
    except Exception:  # noqa: BLE001 - missing, or its shared libraries do not load here
        return None
    try:
        from importlib.metadata import version
        return version("pyoidn")
    except Exception:  # noqa: BLE001
        return getattr(pyoidn, "__version__", "unknown")


def auto_exposure(color: np.ndarray) -> float:
    """OIDN's auto-exposure of a linear HDR image (H, W, 3), summed in a fixed order.  (OIDN
    sums the bins with tbb::parallel_reduce, whose order depends on thread scheduling.)"""
    h, w = color.shape[:2]
    c = np.clip(np.nan_to_num(color[..., :3].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0),
                0.0, np.finfo(np.float32).max)
    lum = 0.212671 * c[..., 0] + 0.715160 * c[..., 1] + 0.072169 * c[..., 2]
    nby, nbx = -(-h // _AE_BIN), -(-w // _AE_BIN)
    ys = [(i * h) // nby for i in range(nby + 1)]
    xs = [(j * w) // nbx for j in range(nbx + 1)]
    # bin sums: np.add.reduceat over the bin edges, rows then columns (a fixed order)
    rows = np.add.reduceat(lum, ys[:-1], axis=0)
    sums = np.add.reduceat(rows, xs[:-1], axis=1)
    areas = np.outer(np.diff(ys), np.diff(xs))
    means = sums / areas
    logs = np.log2(means[means > _AE_EPS])
    return float(_AE_KEY / np.exp2(logs.mean())) if logs.size else 1.0



class Denoiser:
    """One OIDN device and its filters, reused for every view of one size; rebuilt only when
    the image size changes.

    ``prefilter`` and ``quality`` mean what Cycles' ``denoising_prefilter`` and
    ``denoising_quality`` mean: ``accurate`` cleans the albedo and normal guides with filters
    of their own, then denoises the colour with ``cleanAux`` (three filters); ``fast`` hands
    the noisy guides to the colour filter (one filter, ``cleanAux`` off); ``none`` takes the
    guides as clean (one filter, ``cleanAux`` on)."""

    def __init__(self, device: str = "cpu", gpu_index: int | None = None, threads: int | None = None,
                 quality: str = "high", prefilter: str = "accurate"):
        if prefilter not in PREFILTERS:
            raise ValueError(f"prefilter must be one of {', '.join(PREFILTERS)}, not {prefilter!r}")
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")
        pyoidn = _import_pyoidn()
        self._pyoidn = pyoidn
        self.prefilter = prefilter
        self.quality = getattr(pyoidn, f"OIDN_QUALITY_{quality.upper()}")
        self.kind = _OIDN_DEVICE.get(device, "CPU")
        if self.kind == "CUDA" and gpu_index is not None:
            from pyoidn.capi import oidn_Capi, oidn_ffi
            ids = oidn_ffi.new("int[]", [int(gpu_index)])
            streams = oidn_ffi.new("cudaStream_t[]", [oidn_ffi.NULL])
            self.device = pyoidn.Device.__new__(pyoidn.Device)
            self.device._device = oidn_Capi.oidnNewCUDADevice(ids, streams, 1)
        else:
            self.device = pyoidn.Device(getattr(pyoidn, f"OIDN_DEVICE_TYPE_{self.kind}"))
        if self.kind == "CPU":
            self.device.set_bool("setAffinity", False)  # as Cycles: never pin a shared machine's threads
            if threads:
                from pyoidn.capi import oidn_Capi
                oidn_Capi.oidnSetDeviceInt(self.device._device, b"numThreads", int(threads))
        self.device.commit()
        self._check("device")
        self.shape: tuple[int, int] | None = None
        self._lock = threading.Lock()  # the driver's view threads share one filter set
        self._filters: list = []
        self._buffers: dict = {}

    def _check(self, what: str) -> None:
        err = self.device.get_error()
        if err:
            raise RuntimeError(f"OpenImageDenoise ({self.kind}) {what}: {err}")

    def _setup(self, h: int, w: int) -> None:
        p = self._pyoidn
        self._release_filters()
        nbytes = h * w * 3 * 4
        self._buffers = {name: p.Buffer(self.device, nbytes) for name in ("color", "albedo", "normal", "output")}
        b = self._buffers
        fmt = p.OIDN_FORMAT_FLOAT3
        # Cycles' "Accurate" prefilter: the albedo and normal guides cleaned in place first
        for aux in ("albedo", "normal") if self.prefilter == "accurate" else ():
            f = p.Filter(self.device, p.OIDN_FILTER_TYPE_RT)
            f.set_image(aux, b[aux], fmt, w, h)
            f.set_image(p.OIDN_IMAGE_OUTPUT, b[aux], fmt, w, h)
            f.set_int("quality", self.quality)
            f.commit()
            self._filters.append(f)
        f = p.Filter(self.device, p.OIDN_FILTER_TYPE_RT)
        for name in ("color", "albedo", "normal"):
            f.set_image(name, b[name], fmt, w, h)
        f.set_image(p.OIDN_IMAGE_OUTPUT, b["output"], fmt, w, h)
        f.set_bool("hdr", True)
        f.set_bool("srgb", False)
        f.set_bool("cleanAux", self.prefilter != "fast")
        f.set_int("quality", self.quality)
        f.commit()
        self._filters.append(f)
        self._check("filter set-up")
        self.shape = (h, w)

    def __call__(self, color: np.ndarray, albedo: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Denoise one view: linear colour, albedo and normal (H, W, 3) -> linear colour."""
        with self._lock:
            return self._denoise(color, albedo, normal)

    def _denoise(self, color: np.ndarray, albedo: np.ndarray, normal: np.ndarray) -> np.ndarray:
        h, w = color.shape[:2]
        if self.shape != (h, w):
            self._setup(h, w)
        b = self._buffers
        nbytes = h * w * 3 * 4
        for name, arr in (("color", color), ("albedo", albedo), ("normal", normal)):
            b[name].write(0, nbytes, np.ascontiguousarray(arr[..., :3], dtype=np.float32))
        main = self._filters[-1]
        main.set_float("inputScale", auto_exposure(color))
        main.commit()  # a parameter change only: no new device, filter or weights
        for f in self._filters:
            f.execute()
        out = np.empty((h, w, 3), np.float32)
        b["output"].read(0, nbytes, out)
        self._check("execute")
        return out

    def _release_filters(self) -> None:
        for f in self._filters:
            f.release()
        for buf in self._buffers.values():
            buf.release()
        self._filters, self._buffers = [], {}

    def close(self) -> None:
        self._release_filters()
        if self.device is not None:
            self.device.release()
            self.device = None


def resolve_auto(cfg: dict, device: str) -> str:
    """``render.denoiser`` made concrete for a run on ``device`` ("cpu" or a GPU backend).

    'auto' is the driver's OpenImageDenoise on the CPU, where it was measured faster than
    Cycles' (docs/benchmarks.md, per-view fixed cost), and Cycles' own denoiser on a GPU: the
    only denoising ever measured on a GPU (an H100, docs/benchmarks.md); the driver's OIDN on
    CUDA has not run on a GPU yet, so it is not the default until the GPU kit measures it
    (bench/gpu_kit).  Without pyoidn, Cycles.  'driver' and 'cycles' stay as they are."""
    choice = cfg.get("render", {}).get("denoiser", "auto")
    if choice != "auto":
        return choice
    return "driver" if device == "cpu" and pyoidn_version() is not None else "cycles"


def driver_denoises(cfg: dict) -> bool:
    """Whether this run denoises in the driver (render.denoise on, render.denoiser 'driver', or
    'auto' with pyoidn importable); otherwise Cycles denoises (or nothing does).  A run makes
    'auto' concrete with :func:`resolve_auto` once it knows its device."""
    rc = cfg.get("render", {})
    if not rc.get("denoise"):
        return False
    choice = rc.get("denoiser", "auto")
    return choice == "driver" or (choice == "auto" and pyoidn_version() is not None)


def describe(cfg: dict) -> str:
    """The denoiser a run uses, for logs and file attributes."""
    rc = cfg.get("render", {})
    if not rc.get("denoise"):
        return "none"
    how = f"prefilter {prefilter_of(rc)}, quality {rc.get('denoise_quality', 'high')}"
    if driver_denoises(cfg):
        return f"OpenImageDenoise (pyoidn {pyoidn_version()}) in the driver, {how}"
    return f"Cycles (OpenImageDenoise in each render call), {how}"


def open_denoiser(device: str, gpu_index: int | None = None, threads: int | None = None,
                  quality: str = "high", prefilter: str = "accurate") -> Denoiser:
    """A :class:`Denoiser` on the render device; on the CPU where OIDN cannot open that device
    (e.g. a GPU its build does not support), with a warning."""
    try:
        return Denoiser(device, gpu_index, threads, quality, prefilter)
    except Exception as exc:  # noqa: BLE001
        if _OIDN_DEVICE.get(device, "CPU") == "CPU":
            raise
        log.warning("OpenImageDenoise cannot use %s (%s); denoising on the CPU", device, exc)
        return Denoiser("cpu", None, threads, quality, prefilter)
