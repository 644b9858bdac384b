"""Where the shipped data folders are: inside the installed package, or beside it in a source
checkout (``templates/``, ``scene_configs/`` and ``blender_scripts/`` at the repository's top)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_dir(name: str) -> Path:
    """``name`` is one of templates, scene_configs, blender_scripts."""
    try:
        return Path(str(resources.files(f"clevr_remv.{name}")))
    except ModuleNotFoundError:
        here = Path(__file__).resolve().parent.parent / name
        if here.is_dir():
            return here
        raise
