"""The options of a run that override config keys, shared by ``generate`` and ``submit slurm``.

One table: the flag, its parameter name, the config key it sets, its type and help.  Their
help shows each shipped preset's value, since --config may change the default.  Import-light
(click and config only), so that cli.py and submit.py both import it without a cycle.
"""

from __future__ import annotations

import functools

import click

from ..config import DEVICES, _get, load_config, shipped_config_names
from ..render.codecs import PROFILES


def _workers_text(value) -> str:
    return "one per GPU (one on CPU)" if value is None else str(value)


# (flag, parameter name, config key, type, help, how a preset's value is shown)
RUN_OPTIONS = (
    ("--shard-size", "shard_size", "output.shard_size", int, "Scenes per HDF5 shard.", str),
    ("--workers", "workers", "workers.count", int, "Blender processes rendering at once.", _workers_text),
    ("--device", "device", "render.device", click.Choice(DEVICES),
     "Cycles device; 'auto' picks a working GPU backend and falls back to CPU.", str),
    ("--samples", "samples", "render.samples", int,
     "Most Cycles samples per pixel; adaptive sampling stops earlier where the image has converged "
     "(render.adaptive_threshold), then OpenImageDenoise (render.denoise).", str),
    ("--width", "width", "render.width", int, "Image width in pixels.", str),
    ("--height", "height", "render.height", int, "Image height in pixels.", str),
    ("--grid", "grid", "rig.grid", int, "Light-field grid size U = V, odd.", str),
    ("--baseline", "baseline", "rig.baseline", float, "Distance between neighbouring cameras, scene units.", str),
    ("--profile", "profile", "output.profile", click.Choice(tuple(PROFILES)),
     "Storage profile (docs/format.md): 'standard' stores every output as an HDF5 array (h5py alone "
     "reads it); 'compact' stores RGB, depth and normals as lossless WebP (the same values, "
     "about 40% smaller; reading needs Pillow too).", str),
)


@functools.cache
def _presets() -> dict[str, dict]:
    return {name: load_config(name) for name in shipped_config_names()}


def from_config(key: str, text=str) -> str:
    """Help for an option whose default is a config key: the value in each shipped preset,
    so that no single number is shown as the default when --config may change it."""
    values = {name: text(_get(cfg, key)) for name, cfg in _presets().items()}
    if len(set(values.values())) == 1:
        return f"  [default: from --config: {values['default']} in every shipped preset]"
    listed = ", ".join(f"{v} in {'the default preset' if n == 'default' else n}" for n, v in values.items())
    return f"  [default: from --config: {listed}]"


def run_options(f):
    """Decorator: the options of RUN_OPTIONS, in the table's order in --help."""
    for flag, name, key, typ, text, shown in reversed(RUN_OPTIONS):
        f = click.option(flag, name, type=typ, help=text + from_config(key, shown))(f)
    return f


def overrides(kw: dict) -> dict:
    """{config key: value} of the RUN_OPTIONS parameters in ``kw`` (None: not given)."""
    return {key: kw[name] for _, name, key, *_ in RUN_OPTIONS}


def flags(kw: dict) -> list[str]:
    """The RUN_OPTIONS given in ``kw`` as command-line arguments again (for generate on a node)."""
    out = []
    for flag, name, *_ in RUN_OPTIONS:
        if kw[name] is not None:
            out += [flag, str(kw[name])]
    return out
