"""Blender worker process: renders the views the driver asks for, nothing else.

Started by the driver (``clevr_remv.render.blender``) as a child process, either

    python worker.py -- --pythonpath DIR                       (PyPI bpy module)
    blender --background --factory-startup --python worker.py -- --pythonpath DIR

Protocol: one JSON object per line.  Requests come on stdin; replies go to the process's
original stdout, each line prefixed with ``MARKER`` (a standalone Blender prints its banner
on stdout before this script runs; the driver skips any line without the marker).  Once the
script runs, everything Blender or Python prints goes to stderr or nowhere (the driver keeps
stderr in a per-worker log).

Requests and replies:
  {"cmd": "hello", "backends": [...]}
                                   -> {"event": "hello", "blender": "4.5.15", "devices": {...}}
                                      (the devices of those GPU backends, and the CPU)
  {"cmd": "configure", "settings"} -> {"event": "configured", "device": ..., "names": [...]}
  {"cmd": "render", "scene": record, "views": [[u, v], ...], "out_dir": DIR,
   "tag": str, "settings": {...optional overrides...}}
        -> one {"event": "view", "u", "v", "path", "seconds"} per view as each file is
           written, then {"event": "done", "build_seconds", "seconds"}
  {"cmd": "meshes"}                -> {"event": "meshes", "shapes": {shape: {"vertices", "faces"}}}
                                      (each shape's mesh in its own frame; after configure)
  {"cmd": "quit"}                  -> process exits 0
Any failure: {"event": "error", "message": str, "kind": str}; the worker keeps serving.
"""

import json
import os
import sys
import time
import traceback

MARKER = "@clevr-remv@ "


def _args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    paths = []
    for i, a in enumerate(argv):
        if a == "--pythonpath" and i + 1 < len(argv):
            paths.append(argv[i + 1])
    return paths


def main():
    # Keep the original stdout for the protocol; route every other print to stderr.
    # Blender's per-render progress chatter goes to C stdout: drop it unless asked for
    # (CLEVR_REMV_BLENDER_VERBOSE=1); warnings and errors on stderr reach the worker log.
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    if os.environ.get("CLEVR_REMV_BLENDER_VERBOSE"):
        os.dup2(2, 1)
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    sys.stdout = sys.stderr

    here = os.path.dirname(os.path.abspath(__file__))
    for p in [here] + _args():
        if p not in sys.path:
            sys.path.insert(0, p)

    def send(obj):
        proto.write(MARKER + json.dumps(obj) + "\n")
        proto.flush()

    try:
        import bpy  # noqa: F401  (imported here so that start-up failures reach the driver)
        import scene_builder
    except Exception as exc:  # noqa: BLE001 - e.g. a Blender whose Python lacks numpy
        traceback.print_exc()
        send({"event": "error", "kind": "startup", "message": f"{type(exc).__name__}: {exc}"})
        sys.exit(1)

    builder = None
    base_settings = None
    backends = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                break
            if cmd == "hello":
                backends = list(msg.get("backends") or [])
                send({"event": "hello", "blender": bpy.app.version_string,
                      "version": list(bpy.app.version), "devices": scene_builder.available_devices(backends),
                      "pid": os.getpid()})
            elif cmd == "configure":
                if builder is None:
                    builder = scene_builder.SceneBuilder()
                base_settings = dict(msg["settings"])
                try:
                    used = builder.configure(base_settings)
                except scene_builder.MissingFeature as exc:
                    send({"event": "error", "kind": exc.kind, "message": str(exc)})
                    continue
                except LookupError:
                    send({"event": "error", "kind": "device",
                          "message": f"device '{base_settings.get('device')}' is not available",
                          "devices": scene_builder.available_devices(backends)})
                    continue
                send({"event": "configured", **used})
            elif cmd == "meshes":
                if builder is None:
                    raise RuntimeError("meshes before configure")
                send({"event": "meshes", "shapes": builder.mesh_geometry()})
            elif cmd == "render":
                if builder is None or base_settings is None:
                    raise RuntimeError("render before configure")
                t0 = time.perf_counter()
                override = msg.get("settings") or {}
                try:
                    if override:
                        builder.configure({**base_settings, **override})
                    builder.build(msg["scene"])
                    build_s = time.perf_counter() - t0
                    rig = msg["scene"]["rig"]
                    tag = msg.get("tag", "view")
                    for u, v in msg["views"]:
                        path = os.path.join(msg["out_dir"], f"{tag}_{u:02d}_{v:02d}.exr")
                        seconds = builder.render_view(rig, u, v, path)
                        send({"event": "view", "u": u, "v": v, "path": path, "seconds": seconds})
                finally:
                    if override:  # a failed render must not leave the override in place
                        builder.configure(base_settings)
                send({"event": "done", "build_seconds": build_s,
                      "seconds": time.perf_counter() - t0})
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which decides
            traceback.print_exc()
            send({"event": "error", "kind": type(exc).__name__, "message": str(exc)})
    proto.close()


if __name__ == "__main__":
    main()
