"""Reading a worker's multilayer EXR of one view into arrays, through the output registry."""

from __future__ import annotations

import os

from . import outputs as outputs_mod


# -- passes --------------------------------------------------------------------------------
def read_view(path: str | os.PathLike, outputs=None, view: dict | None = None, remove: bool = True) -> dict:
    """Decode the worker's EXR of one view into ``{output name: array}`` for ``outputs``
    (names or :class:`~clevr_remv.render.outputs.Output`; default: every stored output).  ``view``
    (``{"intrinsics": K, "world_to_camera": E}``) is needed by outputs in the camera frame."""
    import OpenEXR

    wanted = outputs_mod.from_render(outputs_mod.get(o) if isinstance(o, str) else o
                                     for o in (outputs if outputs is not None else outputs_mod.stored()))
    with OpenEXR.File(str(path), separate_channels=False) as exr:
        # Blender 4.x writes one part; 5.x one part per pass (and renames some passes).
        channels = {name: ch.pixels for part in exr.parts for name, ch in part.channels.items()}
        result = {o.name: o.decode(outputs_mod.find_pixels(channels, o), view) for o in wanted}
    if remove:
        try:
            os.unlink(path)
        except OSError:
            pass
    return result
