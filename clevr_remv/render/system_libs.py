"""System libraries Blender needs, and the Debian/Ubuntu packages that provide them.

The bpy wheel links against the X11 and OpenGL client libraries even when it renders
headless; a bare GPU server or a slim container lacks them, and ``import bpy`` fails with
``ImportError: libGL.so.1: cannot open shared object file``.  This module turns that into
one line naming the packages to install.  Pure Python (``ldd`` where it exists); never
imports bpy.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

# Shared object -> Debian/Ubuntu package (bookworm, trixie, Ubuntu 22.04/24.04 names).
# Checked against dpkg on the machines where the library is installed (tests).
DEBIAN_PACKAGES = {
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libXrender.so.1": "libxrender1",
    "libXfixes.so.3": "libxfixes3",
    "libXi.so.6": "libxi6",
    "libXext.so.6": "libxext6",
    "libXxf86vm.so.1": "libxxf86vm1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb.so.1": "libxcb1",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
    "libuuid.so.1": "libuuid1",
    "libbsd.so.0": "libbsd0",
    "libmd.so.0": "libmd0",
    "libgomp.so.1": "libgomp1",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
    "libz.so.1": "zlib1g",
    "libdbus-1.so.3": "libdbus-1-3",
    "libwayland-client.so.0": "libwayland-client0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
}

_MISSING_RE = re.compile(r"([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")


def library_in_error(message: str) -> str | None:
    """The shared object an ImportError (or dlopen error) could not find, if any."""
    m = _MISSING_RE.search(message or "")
    return m.group(1) if m else None


def bpy_binary() -> Path | None:
    """bpy's extension module (``bpy/__init__.so``), found without importing it."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        return None
    origin = Path(spec.origin)
    return origin if origin.suffix == ".so" else None


def blender_binary(blender: str) -> Path | None:
    """The executable a ``--blender`` name or path stands for (looked up on PATH, as the
    worker's subprocess does); None where there is no such file."""
    found = shutil.which(blender)
    if found:
        return Path(found)
    return Path(blender) if Path(blender).is_file() else None


def missing_libraries(binary: Path | str | None) -> list[str]:
    """Shared objects ``binary`` needs that the dynamic loader cannot find (``ldd``)."""
    ldd = shutil.which("ldd")
    if binary is None or ldd is None:
        return []
    try:
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({line.split()[0] for line in out.splitlines() if "not found" in line})


def packages_for(libraries) -> tuple[list[str], list[str]]:
    """(Debian/Ubuntu packages, libraries with no known package)."""
    pkgs, unknown = [], []
    for lib in libraries:
        pkg = DEBIAN_PACKAGES.get(lib)
        if pkg is None:
            unknown.append(lib)
        elif pkg not in pkgs:
            pkgs.append(pkg)
    return pkgs, unknown


def install_hint(libraries) -> str:
    """'apt-get install libgl1 libxi6' (plus what has no known package)."""
    pkgs, unknown = packages_for(libraries)
    parts = []
    if pkgs:
        parts.append("apt-get install " + " ".join(pkgs))
    if unknown:
        parts.append("install the package that provides " + ", ".join(unknown)
                     + " (Debian/Ubuntu: apt-file search " + unknown[0] + ")")
    return "; ".join(parts)


def missing_library_message(error: str, binary: Path | str | None = None,
                            missing: list[str] | None = None) -> str | None:
    """One line for a Blender that failed to start because a system library is missing,
    naming every library the binary lacks (not only the first the loader tripped on) and
    the Debian/Ubuntu packages to install; None when the error is something else.
    ``missing``: the binary's :func:`missing_libraries`, where the caller has them already."""
    first = library_in_error(error)
    if first is None:
        return None
    libs = list(missing) if missing is not None else missing_libraries(binary if binary is not None else bpy_binary())
    if first not in libs:
        libs = [first] + libs
    return (f"Blender cannot start: system {'libraries' if len(libs) > 1 else 'library'} "
            f"{', '.join(libs)} missing; on Debian/Ubuntu: {install_hint(libs)}")
