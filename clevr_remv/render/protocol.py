"""The driver-worker protocol: JSON lines, one reply per event."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOL_MARKER = "@clevr-remv@ "  # as in blender_scripts/worker.py


@dataclass
class ViewEvent:
    u: int
    v: int
    path: str
    seconds: float
