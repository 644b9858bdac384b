"""Configurations: the shipped defaults, named presets in ``scene_configs/``, a user's file,
command-line overrides; validated with errors a user can act on.

A configuration is a nested JSON object.  A user's file (``.json`` or ``.toml``, read by
extension) only needs the keys it changes; everything else comes from
``scene_configs/default.json``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tomllib
from pathlib import Path

from .errors import UsageError
from .resources import resource_dir

log = logging.getLogger("clevr_remv")

# GPU backends in the order ``device = auto`` prefers them (the Blender side is sent this order
# with the hello request and reports what it has under the same names).
GPU_BACKENDS = ("optix", "cuda", "hip", "metal", "oneapi")
DEVICES = ("auto", "cpu", *GPU_BACKENDS)
DENOISERS = ("auto", "driver", "cycles")
# Cycles' names (denoising_prefilter, denoising_quality), applied by both denoisers
DENOISE_PREFILTERS = ("accurate", "fast", "none")
DENOISE_QUALITIES = ("high", "balanced", "fast")
COMPRESSIONS = ("gzip", "lzf", "zstd", "blosc2-zstd", "blosc2-lz4", "none")

# Config files are read by extension.  YAML is not read: TOML (stdlib tomllib) and JSON
# cover the same nested settings without another dependency.
CONFIG_FORMATS = {".json": "JSON", ".toml": "TOML"}
# The largest light-field grid (MAX_GRID x MAX_GRID views per scene); the disk and memory a
# rig needs are checked against the machine before a run starts (run/budget.py).
MAX_GRID = 101

# key path -> (type, check, hint).  ``check`` returns True when the value is acceptable.
_SCHEMA: dict[str, tuple[type | tuple, object, str]] = {
    "name": (str, None, "a short name"),
    "description": (str, None, "free text"),
    "scene.min_objects": (int, lambda v: v >= 1, "an integer >= 1"),
    "scene.max_objects": (int, lambda v: 1 <= v <= 254, "an integer from 1 to 254"),
    "scene.extent": (float, lambda v: v > 0, "a positive number (half side of the placement square)"),
    "scene.min_dist": (float, lambda v: v >= 0, "a number >= 0"),
    "scene.margin": (float, lambda v: v >= 0, "a number >= 0"),
    "scene.max_tries_per_object": (int, lambda v: v >= 1, "an integer >= 1"),
    "scene.max_layout_restarts": (int, lambda v: v >= 1, "an integer >= 1"),
    "scene.min_pixels_per_object": (float, lambda v: v >= 0, "a number >= 0 (pixels at 480x320)"),
    "scene.max_visibility_resamples": (int, lambda v: v >= 0, "an integer >= 0"),
    "scene.camera_position": (list, lambda v: _is_vec3(v), "[x, y, z] (three finite numbers)"),
    "scene.camera_jitter": (float, lambda v: v >= 0, "a number >= 0"),
    "scene.light_jitter": (float, lambda v: v >= 0, "a number >= 0"),
    "scene.lens_mm": (float, lambda v: v > 0, "a positive number"),
    "scene.sensor_width_mm": (float, lambda v: v > 0, "a positive number"),
    "scene.lights": (list, lambda v: len(v) >= 1, "a list of lights"),
    "rig.grid": (int, lambda v: 1 <= v <= MAX_GRID and v % 2 == 1,
                 f"an odd integer from 1 to {MAX_GRID} (the grid is grid x grid)"),
    "rig.baseline": (float, lambda v: v >= 0, "a number >= 0 (scene units between neighbouring cameras)"),
    "rig.warn_unseen_share": (float, lambda v: 0 <= v <= 1,
                              "a share from 0 to 1 (warn when more objects than this show 0 pixels in some view)"),
    "rig.focus_distance": ((float, type(None)), lambda v: v is None or v > 0,
                           "a positive number, or null for the central camera's distance to the origin"),
    "render.width": (int, lambda v: 8 <= v <= 8192, "an integer from 8 to 8192"),
    "render.height": (int, lambda v: 8 <= v <= 8192, "an integer from 8 to 8192"),
    "render.samples": (int, lambda v: 1 <= v <= 65536, "an integer from 1 to 65536"),
    "render.adaptive_threshold": (float, lambda v: v >= 0, "a number >= 0 (0 turns adaptive sampling off)"),
    "render.denoise": (bool, None, "true or false"),
    "render.denoiser": (str, lambda v: v in DENOISERS,
                        "auto (the driver's OpenImageDenoise when pyoidn is installed, else Cycles'), driver or cycles"),
    "render.denoise_prefilter": (str, lambda v: v in DENOISE_PREFILTERS,
                                 "accurate (the albedo and normal guides cleaned by filters of their own "
                                 "first; Cycles' default), fast (the noisy guides fed to the colour filter: "
                                 "about a seventh of the filtering, lower PSNR) or none (the guides taken as "
                                 "clean)"),
    "render.denoise_quality": (str, lambda v: v in DENOISE_QUALITIES, "high, balanced or fast (OpenImageDenoise's "
                               "quality, as Cycles' denoising_quality)"),
    "render.max_bounces": (int, lambda v: 0 <= v <= 128, "an integer from 0 to 128"),
    "render.seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "render.device": (str, lambda v: v in DEVICES, "one of " + ", ".join(DEVICES)),
    "expressions.per_scene": (int, lambda v: v >= 0, "an integer >= 0"),
    "expressions.min_visible_pixels": (int, lambda v: v >= 1, "an integer >= 1"),
    "expressions.when_hidden": (str, lambda v: v in ("drop_expression", "mark_views"),
                                "\"drop_expression\" (the source's rule: drop an expression whose target or anchor "
                                "is hidden in any view) or \"mark_views\" (keep it; valid_views marks those views)"),
    "expressions.targets": (str, lambda v: v in ("single", "generalized"),
                            "\"single\" (the source: every expression names one object) or \"generalized\" "
                            "(the GRES setting: also expressions that name several objects or none; docs/expressions.md)"),
    "expressions.max_relations": (int, lambda v: v in (1, 2),
                                  "1 (the source) or 2 (also two-relation chains: \"the cube left of the sphere "
                                  "that is behind the red cylinder\")"),
    "expressions.multi_target_share": (float, lambda v: 0 <= v <= 1,
                                       "a number from 0 to 1: the share of several-target expressions under "
                                       "targets \"generalized\" (gRefCOCO: about a third)"),
    "expressions.no_target_share": (float, lambda v: 0 <= v <= 1,
                                    "a number from 0 to 1: the share of no-target expressions under targets "
                                    "\"generalized\" (gRefCOCO: about a tenth)"),
    "output.shard_size": (int, lambda v: v >= 1, "an integer >= 1 (scenes per shard)"),
    "output.splits": (dict, lambda v: len(v) >= 1 and all(
        _is_number(x) and x >= 0 for x in v.values()) and sum(v.values()) > 0,
                      "an object of split name -> share (finite numbers >= 0, not all 0), "
                      "e.g. {\"train\": 0.7, \"val\": 0.15, \"test\": 0.15}"),
    "output.compression": (str, lambda v: v in COMPRESSIONS, "one of " + ", ".join(COMPRESSIONS)),
    "output.compression_level": (int, lambda v: 0 <= v <= 22, "an integer from 0 to 22"),
    "output.depth_dtype": (str, lambda v: v in ("float32", "float16"),
                           "float16 (relative error at most 4.9e-4; the default) or float32"),
    # Profile and codec names are checked against clevr_remv/render/codecs.py when a run
    # starts (render.outputs.check_codecs), so that a new codec is one class in that file.
    "output.profile": (str, None, "standard (every output an HDF5 array; h5py reads it) or compact (RGB, "
                       "depth and normals as lossless WebP, about 40% smaller; reading needs Pillow too)"),
    "output.codecs": (dict, lambda v: all(isinstance(c, str) for c in v.values()),
                      "an object of output name -> codec name, e.g. {\"images\": \"png\"}"),
    "workers.count": ((int, type(None)), lambda v: v is None or v >= 1,
                      "an integer >= 1, or null for one per GPU (one on CPU)"),
    "workers.restart_every": (int, lambda v: v >= 1, "an integer >= 1 (scenes per Blender process)"),
    "workers.blender": ((str, type(None)), None,
                        "null for the bpy module, or the path of a blender executable"),
    "workers.startup_timeout": (float, lambda v: v > 0, "seconds > 0 a worker may take to start (process up, hello and configure answered)"),
    "workers.first_view_timeout": (float, lambda v: v > 0, "seconds > 0 a worker may take for its first view (scene build, GPU kernel compiles)"),
    "workers.view_timeout_min": (float, lambda v: v > 0, "seconds > 0: the least time allowed for one view"),
    "workers.view_timeout_factor": (float, lambda v: v >= 1, "a number >= 1: a view may take this many times the slowest view so far"),
    "workers.tries": (int, lambda v: 1 <= v <= 100, "an integer from 1 to 100 (tries per scene, each on a fresh Blender process)"),
}

# A split name becomes a folder and a file-name prefix under --out: one plain path component
# (letters, digits, '_', '-', '.'; starting with a letter or digit), so no '..', '/', absolute
# path, empty or hidden name can ever point outside --out.  'logs' is the run's log folder.
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_NAMES = ("logs",)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_vec3(v) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v)


def check_split_name(name) -> str | None:
    """None when ``name`` is a usable split name, else what is wrong with it."""
    if not isinstance(name, str) or not SPLIT_NAME.fullmatch(name):
        return ("must be a plain name of letters, digits, '_', '-' or '.', starting with a letter "
                "or digit, at most 64 characters (no '..', '/', absolute, empty or hidden names)")
    if name in RESERVED_NAMES:
        return f"is reserved ({', '.join(RESERVED_NAMES)} is the run's log folder)"
    return None


def _check_blender(path: str) -> str | None:
    """None when ``path`` names an executable file (directly or on PATH), else why not."""
    if not path.strip():
        return "is empty; use null for the bpy module"
    if os.sep in path or (os.altsep and os.altsep in path):
        if not os.path.exists(path):
            return "not found"
        if os.path.isdir(path):
            return "is a folder, not a blender executable"
        if not os.access(path, os.X_OK):
            return "is not executable (chmod +x, or give the blender executable itself)"
        return None
    return None if shutil.which(path) else "not found on PATH"


# Settings that do not change a single byte of the dataset: excluded from the digest so that
# a run can be resumed on another machine, device or worker count.
_NOT_IN_DIGEST = ("workers", "render.device", "name", "description", "rig.warn_unseen_share")


def shipped_config_names() -> list[str]:
    return sorted(p.stem for p in resource_dir("scene_configs").glob("*.json"))


def _load_shipped(name: str) -> dict:
    path = resource_dir("scene_configs") / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def default_config() -> dict:
    return _load_shipped("default")


def _read_user_file(spec: str) -> dict:
    path = Path(spec)
    if not path.is_file():
        if spec in shipped_config_names():  # a preset, even beside a folder of that name
            return _load_shipped(spec)
        names = ", ".join(shipped_config_names())
        if path.is_dir():
            raise UsageError(f"--config '{spec}' is a folder; give a JSON/TOML file or one of: {names}")
        if not path.exists():
            raise UsageError(f"config file '{spec}' does not exist; give a JSON/TOML file or one of: {names}")
        # a device or a pipe (/dev/null, <(...)): read it like a file
    fmt = CONFIG_FORMATS.get(path.suffix.lower())
    if fmt is None:
        if path.suffix.lower() in (".yaml", ".yml"):
            raise UsageError(f"config file '{spec}' is YAML, which is not read; write the same settings "
                             f"as JSON (.json) or TOML (.toml)")
        what = f"extension '{path.suffix}'" if path.suffix else "no extension"
        raise UsageError(f"config file '{spec}' has {what}; configs are read by extension: "
                         f".json (JSON) or .toml (TOML)")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read config file '{spec}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file '{spec}' is not UTF-8 text (byte {exc.start}); "
                         f"save it as UTF-8 JSON or TOML") from None
    try:
        data = tomllib.loads(text) if fmt == "TOML" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file '{spec}' is not valid {fmt}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file '{spec}' must hold an object of settings at the top level")
    return data


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{prefix}{key}"
        if key not in out:
            known = ", ".join(sorted(out)) or "(none)"
            raise UsageError(f"unknown config key '{path}'; known keys here: {known}")
        if isinstance(out[key], dict) and path not in ("output.splits", "output.codecs"):
            if not isinstance(value, dict):
                raise UsageError(f"config key '{path}' must be an object of settings")
            out[key] = _merge(out[key], value, path + ".")
        else:
            out[key] = value
    return out


def _get(cfg: dict, path: str):
    node = cfg
    for part in path.split("."):
        node = node[part]
    return node


def _set(cfg: dict, path: str, value) -> None:
    parts = path.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def validate(cfg: dict) -> dict:
    """Check every known key; coerce ints to floats where a float is expected."""
    for path, (typ, check, hint) in _SCHEMA.items():
        try:
            value = _get(cfg, path)
        except KeyError:
            raise UsageError(f"config is missing '{path}' ({hint})") from None
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise UsageError(f"config '{path}' = {value} is invalid: expected {hint}") from None
            _set(cfg, path, value)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False
        if not ok or (check is not None and not check(value)):
            raise UsageError(f"config '{path}' = {json.dumps(value)} is invalid: expected {hint}")
    scene = cfg["scene"]
    if scene["min_objects"] > scene["max_objects"]:
        raise UsageError(f"config scene.min_objects ({scene['min_objects']}) is larger than "
                         f"scene.max_objects ({scene['max_objects']}); lower min_objects or raise max_objects")
    ex = cfg["expressions"]
    if ex["multi_target_share"] + ex["no_target_share"] > 1:
        raise UsageError(f"config expressions.multi_target_share ({ex['multi_target_share']:g}) and "
                         f"expressions.no_target_share ({ex['no_target_share']:g}) add up to more than 1; "
                         f"lower one of them")
    scene["camera_position"] = [float(x) for x in scene["camera_position"]]
    names = set()
    for i, light in enumerate(scene["lights"]):
        where = f"config scene.lights[{i}]"
        if not isinstance(light, dict):
            raise UsageError(f"{where} = {json.dumps(light)} is invalid: expected an object with "
                             f"name, position, size and energy")
        missing = {"name", "position", "size", "energy"} - set(light)
        if missing:
            raise UsageError(f"{where} lacks {', '.join(sorted(missing))}")
        checks = {
            "name": (lambda v: isinstance(v, str) and v.strip() != "" and v not in names, "a non-empty name, unique among the lights"),
            "position": (_is_vec3, "[x, y, z] (three finite numbers)"),
            "size": (lambda v: _is_number(v) and v > 0, "a positive number (side of the area light)"),
            "energy": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (watts)"),
        }
        for key, (check, hint) in checks.items():
            if not check(light[key]):
                raise UsageError(f"{where}.{key} = {json.dumps(light[key])} is invalid: expected {hint}")
        names.add(light["name"])
        light["position"] = [float(x) for x in light["position"]]
    for name in cfg["output"]["splits"]:
        problem = check_split_name(name)
        if problem:
            raise UsageError(f"config output.splits: split name {json.dumps(name)} {problem}")
    blender = cfg["workers"]["blender"]
    if blender is not None:
        problem = _check_blender(blender)
        if problem:
            raise UsageError(f"cannot start Blender: '{blender}' {problem}; "
                             f"fix --blender / workers.blender, or leave it null to use the bpy module")
    return cfg


def load_config(spec: str | None = None, overrides: dict | None = None) -> dict:
    """Defaults <- preset or user file <- command-line overrides (dotted keys), validated."""
    cfg = default_config()
    if spec:
        cfg = _merge(cfg, _read_user_file(spec))
    for path, value in (overrides or {}).items():
        if value is not None:
            _set(cfg, path, value)
    cfg = validate(cfg)
    warn_split_shares(cfg["output"]["splits"])
    return cfg


def warn_split_shares(splits: dict) -> bool:
    """Warn (and return True) when the split shares do not sum to 1: they are then taken
    relative to their sum, which is rarely what was meant (0.9/0.5/0.1 gives 60/33/7%)."""
    total = sum(float(x) for x in splits.values())
    if math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-6):
        return False
    shares = ", ".join(f"{name} {100 * float(x) / total:.1f}%" for name, x in splits.items())
    log.warning("output.splits shares sum to %g, not 1: they are taken relative to their sum (%s); "
                "give shares that sum to 1 to silence this", total, shares)
    return True


def prefilter_of(render_cfg: dict) -> str:
    """The prefilter a run uses: ``render.denoise_prefilter``, ``accurate`` (Cycles' default)
    where a configuration predates the setting.

    ``fast`` costs a seventh of ``accurate``'s filtering at 96x64 (16 against 118 ms of CPU per
    view) and a seventh at 480x320, but its PSNR is lower at every size and sample count
    measured but one (docs/benchmarks.md, "The prefilter"), so it is an option, not the
    default."""
    return render_cfg.get("denoise_prefilter") or "accurate"


def dataset_settings(cfg: dict) -> dict:
    """The part of the configuration that determines the dataset's bytes."""
    out = copy.deepcopy(cfg)
    for path in _NOT_IN_DIGEST:
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            node = node[part]
        node.pop(parts[-1], None)
    # The denoiser's prefilter and quality, resolved.  Cycles' defaults (accurate, high), which
    # every run made before these settings existed used, leave no trace, so such a run resumes.
    rc = out["render"]
    rc["denoise_prefilter"] = prefilter_of(rc)
    rc.setdefault("denoise_quality", "high")
    if not rc.get("denoise") or (rc["denoise_prefilter"], rc["denoise_quality"]) == ("accurate", "high"):
        rc.pop("denoise_prefilter")
        rc.pop("denoise_quality")
    # The storage codecs (format 1.2): the standard profile without overrides stores what every
    # run before these settings stored, so it leaves no trace and such a run resumes.
    oc = out["output"]
    if oc.get("profile", "standard") == "standard":
        oc.pop("profile", None)
    if not oc.get("codecs"):
        oc.pop("codecs", None)
    return out


def digest(cfg: dict, seed: int, scenes: int, format_version: str | None = None) -> str:
    """The settings digest of a run (``format_version``: the run's, by default this version's;
    a run resumed from an older format is checked with its own)."""
    from . import FORMAT_VERSION
    from .scene import catalogue

    # The format version and the catalogue (objects, looks, render policy) too: a run made
    # with other ones never resumes into this one.
    payload = {"config": dataset_settings(cfg), "seed": int(seed), "scenes": int(scenes),
               "format_version": format_version or FORMAT_VERSION, "catalogue": catalogue.digest_payload()}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
