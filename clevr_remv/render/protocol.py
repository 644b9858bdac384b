"""The driver-worker protocol: the messages, and the :class:`Worker` interface the run uses.

On the wire: JSON lines, one reply per request (``render`` replies once per view, then
``done``); replies carry :data:`PROTOCOL_MARKER` so that a standalone Blender's own output
can share the stream.  ``run/`` talks to a worker only through :class:`Worker`; the Blender
client (``render.blender.BlenderWorker``) is its production implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, runtime_checkable

import numpy as np

PROTOCOL_MARKER = "@clevr-remv@ "  # as in blender_scripts/worker.py

# The driver's denoiser: (noisy colour, albedo, normal) -> denoised linear colour.
Denoise = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Hello(TypedDict, total=False):
    """Reply to ``hello``: the Blender version and ``{backend: [device names]}``."""

    event: str       # "hello"
    blender: str
    devices: dict


class Configured(TypedDict, total=False):
    """Reply to ``configure``: the device the worker renders on."""

    event: str       # "configured"
    device: str
    names: list


class Done(TypedDict, total=False):
    """Last reply to ``render``: how long building the scene took."""

    event: str       # "done"
    build_seconds: float


@dataclass
class ViewEvent:
    """Reply to ``render``, once per view: its file (EXR) is written."""

    u: int
    v: int
    path: str
    seconds: float


@runtime_checkable
class Worker(Protocol):
    """What the run needs from a worker process.  Its reply timeouts and its denoiser are
    given when it is made (see ``run.job.blender_worker``)."""

    name: str
    info: Hello                   # the hello reply, once started
    denoiser: Denoise | None      # the driver's denoiser for this worker's views, if it denoises

    @property
    def rendered(self) -> bool:
        """Whether a render reply came already (the first may wait on kernel compiles)."""
        ...

    @property
    def pid(self) -> int | None:
        ...

    def configure(self, settings: dict) -> Configured:
        ...

    def render(self, scene: dict, views: Sequence[tuple[int, int]], tag: str,
               settings: dict | None = None) -> Generator[ViewEvent, None, Done]:
        """A :class:`ViewEvent` per view as soon as its file is written; returns ``done``."""
        ...

    def read_view(self, event: ViewEvent, outputs=None, view: dict | None = None) -> dict:
        """The arrays of a rendered view (names from the output registry); removes its file."""
        ...

    def meshes(self) -> dict:
        """``{shape: {"vertices": [[x, y, z], ...], "faces": [[i, ...], ...]}}``: each shape's
        mesh as the worker builds it, in the shape's own frame (for the amodal masks)."""
        ...

    def close(self) -> None:
        ...

    def kill(self) -> None:
        ...

    def peak_rss_bytes(self) -> int | None:
        ...

    def rss_bytes(self) -> int | None:
        ...
