"""The registry of per-view outputs: from a Blender pass to an HDF5 dataset and back.

Each :class:`Output` says, in one place,

* which view-layer pass Blender must enable to produce it (``blender_pass``; the Combined
  pass is always rendered);
* which channels of the worker's multilayer EXR carry it (``channels``: per component, the
  name suffixes tried in order; Blender 4.x writes one part whose channels read
  ``ViewLayer.Depth.Z``, 5.x one part per pass and names some passes differently, e.g.
  ``Object Index.X``);
* how to decode those channels into the stored array (``decode``; some need the view's
  camera, given as ``view = {"intrinsics": K, "world_to_camera": E}``);
* its dtype, shape tail after ``[N, U, V, H, W]``, fill value and compression class, and its
  storage codec (``codec_for(cfg)``, :mod:`clevr_remv.render.codecs`): encode, decode and the
  HDF5 dataset spec;
* whether it is stored in the shards (``stored``); an output may be rendered for a consumer
  on the driver (e.g. an external denoiser) without being stored;
* when it is rendered at all (``wanted(cfg)``), and the key under which readers return it.

Adding an output touches this registry and, on the Blender side, nothing but the pass list the
driver sends (``render_passes``).  The format is described in docs/format.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import codecs

DEPTH_SENTINEL_MIN = 1e9  # Cycles writes 1e10 where a ray hits nothing; stored as +inf


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    c = np.clip(linear, 0.0, 1.0)
    s = np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)
    return np.floor(s * 255.0 + 0.5).astype(np.uint8)


def _decode_rgb(px: np.ndarray, view: dict | None) -> np.ndarray:  # noqa: ARG001
    return linear_to_srgb8(px[..., :3])


def _decode_instances(px: np.ndarray, view: dict | None) -> np.ndarray:  # noqa: ARG001
    return np.rint(px).astype(np.uint8)


def _decode_depth(px: np.ndarray, view: dict | None) -> np.ndarray:  # noqa: ARG001
    depth = np.array(px, dtype=np.float32)
    depth[depth >= DEPTH_SENTINEL_MIN] = np.inf
    return depth


def pixel_rays(intrinsics: np.ndarray, height: int, width: int) -> np.ndarray:
    """float64 HxWx3: the direction through each pixel centre in the camera frame (OpenCV)."""
    ys, xs = np.mgrid[0:height, 0:width]
    pix = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=np.float64)], -1)
    return pix @ np.linalg.inv(np.asarray(intrinsics, np.float64)).T


def camera_normals(world: np.ndarray, intrinsics: np.ndarray, world_to_camera: np.ndarray) -> np.ndarray:
    """World-space normals (HxWx3, 0 where nothing is hit) -> unit normals in the camera frame
    (OpenCV axes), flipped to face the camera; 0 where nothing is hit.  float32.

    Element-wise arithmetic only (no BLAS matmul, whose summation order may depend on threads
    and alignment), so the result is bit-reproducible."""
    world = np.asarray(world, np.float32)
    rot = np.asarray(world_to_camera, np.float64)[:3, :3].astype(np.float32)
    wx, wy, wz = world[..., 0], world[..., 1], world[..., 2]
    n = np.empty(world.shape, np.float32)
    for i in range(3):
        n[..., i] = wx * rot[i, 0] + wy * rot[i, 1] + wz * rot[i, 2]
    length = np.sqrt(n[..., 0] * n[..., 0] + n[..., 1] * n[..., 1] + n[..., 2] * n[..., 2])
    hit = length > 1e-6
    scale = np.zeros(length.shape, np.float32)
    np.divide(1.0, length, out=scale, where=hit)
    # Facing the camera: n . ray <= 0, with the ray through the pixel centre
    # ((x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, 1) (K has no skew).
    k = np.asarray(intrinsics, np.float64)
    h, w = world.shape[:2]
    rx = ((np.arange(w) + 0.5 - k[0, 2]) / k[0, 0]).astype(np.float32)
    ry = ((np.arange(h) + 0.5 - k[1, 2]) / k[1, 1]).astype(np.float32)
    facing = n[..., 0] * rx[None, :] + n[..., 1] * ry[:, None] + n[..., 2]
    scale[facing > 0] *= -1.0
    n *= scale[..., None]
    return n


# Stored normals are rounded to multiples of 2**-10 (under 0.06 degrees): Cycles' Normal pass
# differs in its last float32 bits between processes for rare pixels, which float16's fine steps
# near 0 would keep. The grid absorbs most of that, not all: a component that lies on a rounding
# boundary can fall either way, so two runs (or farm parts and one machine) agree within one
# 2**-10 step, and are usually identical (README, "Determinism").
NORMAL_STEP = 2.0 ** -10


def _decode_normals(px: np.ndarray, view: dict | None) -> np.ndarray:
    if view is None:
        raise ValueError("normals need the view's camera (intrinsics, world_to_camera) to decode")
    n = camera_normals(px, view["intrinsics"], view["world_to_camera"])
    n *= 1.0 / NORMAL_STEP
    np.round(n, out=n)
    n *= NORMAL_STEP
    n += 0.0  # no -0.0: the bytes of a zero are always the same
    return n.astype(np.float16)


@dataclass(frozen=True)
class Output:
    name: str                                  # HDF5 dataset name (and reader key)
    blender_pass: str | None                   # view-layer flag; None: Combined, always on
    channels: tuple[tuple[str, ...], ...]      # per component: EXR channel-name suffixes, in order
    decode: Callable[[np.ndarray, dict | None], np.ndarray] | None  # None: computed, not decoded
    dtype: str                                 # stored dtype
    tail: tuple[int, ...] = ()                 # shape after [N, U, V, H, W]
    fillvalue: float | None = None             # HDF5 fill value (None: the HDF5 default, 0)
    floating: bool = False                     # compression class: byte-shuffle floating data
    stored: bool = True                        # written to the shards
    dtype_setting: str | None = None           # output.<key> in the config overrides dtype
    wanted: Callable[[dict], bool] = lambda cfg: True  # rendered for this config?
    reader_key: str = ""                       # key in Reader.view() / RefexpDataset samples
    doc: str = ""
    since: str = "1.0"                         # first format version whose shards store it
    codec: str = "array"                       # its storage codec unless the config names another
    per_object: bool = False                   # one slice per object slot: [N, U, V, K, H, W, ...]
    computed: bool = False                     # not a render pass: the driver computes it (scene/amodal.py)

    @property
    def key(self) -> str:
        return self.reader_key or self.name

    def dtype_for(self, cfg: dict) -> np.dtype:
        if self.dtype_setting and cfg.get("output", {}).get(self.dtype_setting):
            return np.dtype(cfg["output"][self.dtype_setting])
        return np.dtype(self.dtype)

    def view_shape(self, height: int, width: int, max_objects: int) -> tuple[int, ...]:
        """The shape of one view's array: [H, W, ...], or [K, H, W, ...] per object slot."""
        head = (max_objects,) if self.per_object else ()
        return (*head, height, width, *self.tail)

    def codec_for(self, cfg: dict):
        """The storage codec a run with ``cfg`` writes this output with: ``output.codecs``
        names it, else ``output.profile`` (:data:`clevr_remv.render.codecs.PROFILES`), else
        the output's own (``array`` for most).  A codec that cannot store this output is a
        :class:`UsageError`."""
        oc = cfg.get("output", {})
        name = (oc.get("codecs") or {}).get(self.name) or codecs.PROFILES[oc.get("profile") or "standard"].get(
            self.name, self.codec)
        codec = codecs.make(name, self.dtype_for(cfg), cfg.get("render", {}).get("width"))
        problem = codec.fits(self.dtype_for(cfg), self.view_shape(0, 0, 0)[1:] if self.per_object
                             else self.view_shape(0, 0, 0))
        if problem:
            from ..errors import UsageError
            raise UsageError(f"config output.codecs: {self.name} cannot use {name}: {problem}; "
                             f"choose one of {', '.join(codecs.CODECS)} that fits")
        return codec

    def dataset_spec(self, cfg: dict, n: int, grid, height: int, width: int) -> dict:
        """h5py ``create_dataset`` arguments for ``n`` scenes (compression from ``cfg["output"]``,
        none when it names none)."""
        oc = cfg.get("output", {})
        k = cfg.get("scene", {}).get("max_objects", 0)
        return self.codec_for(cfg).dataset_spec((n, *grid), self.view_shape(height, width, k), self.fillvalue,
                                                oc.get("compression", "none"), oc.get("compression_level", 4),
                                                self.floating)


REGISTRY: tuple[Output, ...] = (
    Output("images", None, (("Combined", "Combined.RGBA"),), _decode_rgb, "uint8", (3,),
           reader_key="image", doc="sRGB colour"),
    Output("instances", "use_pass_object_index",
           (("IndexOB.X", "Object Index.X", "IndexOB", "Object Index"),), _decode_instances, "uint8",
           doc="0 = background, k + 1 = object k of the scene record"),
    Output("depth", "use_pass_z", (("Depth.Z", "Depth.V", "Depth"),), _decode_depth, "float32",
           fillvalue=np.inf, floating=True, dtype_setting="depth_dtype",
           doc="planar depth along the camera's z axis, scene units; +inf where no surface"),
    Output("normals", "use_pass_normal", (("Normal.X",), ("Normal.Y",), ("Normal.Z",)), _decode_normals,
           "float16", (3,), fillvalue=0.0, floating=True, since="1.1",
           doc="unit surface normals in the camera frame (OpenCV axes), facing the camera; 0 where no surface"),
    # Not rendered: the driver fills each object's projected silhouette (scene/amodal.py).
    Output("amodal", None, (), None, "bool", since="1.4", codec="bits", per_object=True, computed=True,
           doc="each object's whole silhouette, as if nothing hid it, clipped to the frame"),
)



def _decode_linear(px: np.ndarray, view: dict | None) -> np.ndarray:  # noqa: ARG001
    return np.ascontiguousarray(px[..., :3], dtype=np.float32)


def _driver_denoises(cfg: dict) -> bool:
    from .denoise import driver_denoises
    return driver_denoises(cfg)


# Rendered, not stored: the inputs of the driver's denoiser (clevr_remv/denoise.py), which
# turns them into "images".  With these, Cycles' own denoiser is off (devices.render_settings).
REGISTRY += (
    Output("noisy_color", None, (("Combined", "Combined.RGBA"),), _decode_linear, "float32", (3,),
           stored=False, wanted=_driver_denoises, doc="linear colour before denoising"),
    Output("denoising_albedo", "cycles.denoising_store_passes", (("Denoising Albedo", "Denoising Albedo.RGB"),),
           _decode_linear, "float32", (3,), stored=False, wanted=_driver_denoises,
           doc="Cycles' denoising albedo (a guide of the denoiser)"),
    Output("denoising_normal", "cycles.denoising_store_passes",
           (("Denoising Normal.X",), ("Denoising Normal.Y",), ("Denoising Normal.Z",)), _decode_linear,
           "float32", (3,), stored=False, wanted=_driver_denoises,
           doc="Cycles' denoising normal (a guide of the denoiser)"),
)

BY_NAME = {o.name: o for o in REGISTRY}


def get(name: str) -> Output:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no per-view output {name!r} (have: {', '.join(BY_NAME)})") from None


def rendered(cfg: dict) -> tuple[Output, ...]:
    """The outputs a run renders (stored or not)."""
    return tuple(o for o in REGISTRY if o.wanted(cfg))


def stored(cfg: dict | None = None) -> tuple[Output, ...]:
    """The outputs written to the shards (all stored ones when ``cfg`` is None)."""
    return tuple(o for o in REGISTRY if o.stored and (cfg is None or o.wanted(cfg)))


def check_codecs(cfg: dict) -> None:
    """Every output ``output.codecs`` names is a stored output and its codec fits it
    (:class:`UsageError` otherwise)."""
    from ..errors import UsageError

    oc = cfg.get("output", {})
    if (oc.get("profile") or "standard") not in codecs.PROFILES:
        raise UsageError(f"config output.profile = {json.dumps(oc.get('profile'))} is invalid: expected one of "
                         f"{', '.join(codecs.PROFILES)}")
    for name, codec in (oc.get("codecs") or {}).items():
        if codec not in codecs.CODECS:
            raise UsageError(f"config output.codecs: unknown codec {json.dumps(codec)} for {name}; "
                             f"known: {', '.join(codecs.CODECS)}")
    names = {o.name for o in REGISTRY if o.stored}
    for name in (oc.get("codecs") or {}):
        if name not in names:
            raise UsageError(f"config output.codecs names {name!r}, which is not a stored output "
                             f"(stored: {', '.join(sorted(names))})")
    for o in stored(cfg):
        o.codec_for(cfg)


def from_render(outs) -> tuple[Output, ...]:
    """The outputs among ``outs`` that a view's render (its EXR) carries; not the computed ones."""
    return tuple(o for o in outs if not o.computed)


def render_passes(outputs) -> list[str]:
    """The view-layer flags the worker enables for these outputs (sent with the settings)."""
    return sorted({o.blender_pass for o in outputs if o.blender_pass})


def find_pixels(channels: dict, output: Output) -> np.ndarray:
    """The EXR pixels of ``output`` (HxW, HxWxC for a grouped channel, or stacked components).
    ``channels`` maps full channel names to arrays."""
    comps = []
    for suffixes in output.channels:
        comps.append(_channel(channels, output.name, suffixes))
    return comps[0] if len(comps) == 1 else np.stack(comps, -1)


def _channel(channels: dict, name: str, suffixes: tuple[str, ...]) -> np.ndarray:
    for suffix in suffixes:
        for full, px in channels.items():
            # whole name components only: "Depth.Z" must not match "Denoising Depth.Z"
            if full == suffix or full.endswith("." + suffix):
                return px
    from ..errors import WorkerError
    raise WorkerError(f"render pass for {name} missing (looked for {suffixes}; have {sorted(channels)})")
