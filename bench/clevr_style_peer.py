"""A CLEVR-style renderer, the peer of the fast-renderer benchmark (docs/benchmarks.md).

It does what CLEVR's render_images.py does, per image, for each view of the rig: reset
Blender to an empty file, build the whole scene again (ground, lights, camera, objects and
materials), render the RGB image to PNG, then swap every object's material for a flat
emission colour, hide the ground and lights, render a second 1-sample pass to PNG and read
it back to map colours to instance ids.  Same scenes (clevr_remv.layout), same meshes and
materials (blender_scripts/scene_builder.py), same Cycles settings as clevr-remv.

    python bench/clevr_style_peer.py --scenes 3 --width 96 --height 64 --samples 1 --grid 9
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "blender_scripts"))
sys.path.insert(0, str(HERE.parent))

import bpy  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import scene_builder  # noqa: E402
from clevr_remv import config, layout  # noqa: E402


def flat_pass(builder: scene_builder.SceneBuilder, record: dict, path: str) -> np.ndarray:
    """CLEVR's render_shadeless: unique emission colours, no lights, no ground; 1 sample."""
    sc = builder.scene
    colours = {}
    for k, ob in enumerate(builder.shape_objects):
        mat = bpy.data.materials.new(f"flat_{k}")
        scene_builder._enable_nodes(mat)
        nodes = mat.node_tree.nodes
        nodes.clear()
        emit = nodes.new("ShaderNodeEmission")
        out = nodes.new("ShaderNodeOutputMaterial")
        rgb = ((k + 1) * 23 % 256 / 255.0, (k + 1) * 71 % 256 / 255.0, (k + 1) * 131 % 256 / 255.0)
        emit.inputs["Color"].default_value = (*rgb, 1.0)
        mat.node_tree.links.new(emit.outputs["Emission"], out.inputs["Surface"])
        ob.material_slots[0].material = mat
        colours[k + 1] = rgb
    for ob in list(builder.lights.values()) + [builder.ground]:
        ob.hide_render = True
    sc.world.node_tree.nodes["Background"].inputs["Color"].default_value = (0, 0, 0, 1)
    sc.cycles.samples = 1
    sc.cycles.use_denoising = False
    sc.cycles.use_adaptive_sampling = False
    sc.view_settings.view_transform = "Standard"
    sc.render.image_settings.file_format = "PNG"
    sc.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    ids = np.zeros(img.shape[:2], np.uint8)
    for k, rgb in colours.items():
        want = np.round(np.asarray(rgb) ** (1 / 2.2) * 255)  # approximately the sRGB encoding
        ids[np.abs(img - want).sum(-1) < 24] = k
    return ids


def render_view(record: dict, settings: dict, u: int, v: int, tmp: str) -> None:
    builder = scene_builder.SceneBuilder()          # resets the file: everything built anew
    builder.configure(settings)
    builder.build(record)
    builder.place_camera(record["rig"], u, v)
    sc = builder.scene
    if hasattr(sc.render.image_settings, "media_type"):
        sc.render.image_settings.media_type = "IMAGE"
    sc.render.image_settings.file_format = "PNG"
    sc.render.filepath = os.path.join(tmp, f"rgb_{u}_{v}.png")
    bpy.ops.render.render(write_still=True)
    flat_pass(builder, record, os.path.join(tmp, f"mask_{u}_{v}.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = config.load_config(None, {"render.width": args.width, "render.height": args.height,
                                    "render.samples": args.samples, "render.denoise": False,
                                    "rig.grid": args.grid})
    settings = {**cfg["render"], "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.scenes):
            t0 = time.perf_counter()
            record = layout.sample_scene(cfg, args.seed, index)
            for u in range(args.grid):
                for v in range(args.grid):
                    render_view(record, settings, u, v, tmp)
            print(f"scene {index}: {time.perf_counter() - t0:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
