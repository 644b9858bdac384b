"""CLEVR-style renderers, the peers of the fast-renderer benchmarks (docs/benchmarks.md).

Two peers, both rendering RGB to PNG and instance masks from a separate flat pass, as CLEVR
did (its ``render_shadeless``: every object gets a unique emission colour, lights and ground
are hidden, anti-aliasing is off; here: Cycles, 1 sample, pixel filter width 0.01, no
denoising, read back and mapped from colours to ids):

* ``--mode rebuild`` (CLEVR's render_images.py, per image): for each view of the rig, reset
  Blender to an empty file and build the whole scene again (ground, lights, camera, objects,
  materials), render RGB, then the flat pass.
* ``--mode build-once``: build each scene once; per view, move the camera, render RGB, swap
  in the flat materials for the mask pass, swap them back.

Same scenes (clevr_remv.layout), meshes and materials (blender_scripts/scene_builder.py) and
Cycles settings as clevr-remv; the denoiser as the configuration sets it (on by default, with
its render.denoise_prefilter and render.denoise_quality) and
the device given with --device (as `clevr-remv generate --device`).

    python bench/clevr_style_peer.py --mode rebuild --scenes 3 --width 96 --height 64 --samples 1 --grid 9
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
import scene_builder  # noqa: E402
from PIL import Image  # noqa: E402

from clevr_remv import config
from clevr_remv.render import denoise
from clevr_remv.scene import layout  # noqa: E402


def _png(sc, path):
    if hasattr(sc.render.image_settings, "media_type"):
        sc.render.image_settings.media_type = "IMAGE"
    sc.render.image_settings.file_format = "PNG"
    sc.render.filepath = path


class FlatPass:
    """CLEVR's render_shadeless: unique emission colours, no lights, no ground, no AA."""

    def __init__(self, builder: scene_builder.SceneBuilder):
        self.builder = builder
        self.colours = {}
        self.flat = []
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
            self.flat.append(mat)
            self.colours[k + 1] = rgb

    def render(self, path: str) -> np.ndarray:
        b = self.builder
        sc, cy = b.scene, b.scene.cycles
        saved_mats = [ob.material_slots[0].material for ob in b.shape_objects]
        saved = (cy.samples, cy.use_denoising, cy.use_adaptive_sampling, cy.filter_width,
                 tuple(sc.world.node_tree.nodes["Background"].inputs["Color"].default_value))
        for ob, mat in zip(b.shape_objects, self.flat):
            ob.material_slots[0].material = mat
        for ob in list(b.lights.values()) + [b.ground]:
            ob.hide_render = True
        sc.world.node_tree.nodes["Background"].inputs["Color"].default_value = (0, 0, 0, 1)
        cy.samples, cy.use_denoising, cy.use_adaptive_sampling, cy.filter_width = 1, False, False, 0.01
        _png(sc, path)
        bpy.ops.render.render(write_still=True)
        # restore (the build-once peer renders RGB again in the next view)
        for ob, mat in zip(b.shape_objects, saved_mats):
            ob.material_slots[0].material = mat
        for ob in list(b.lights.values()) + [b.ground]:
            ob.hide_render = False
        cy.samples, cy.use_denoising, cy.use_adaptive_sampling, cy.filter_width = saved[:4]
        sc.world.node_tree.nodes["Background"].inputs["Color"].default_value = saved[4]
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        ids = np.zeros(img.shape[:2], np.uint8)
        for k, rgb in self.colours.items():
            want = np.round(np.asarray(rgb) ** (1 / 2.2) * 255)  # approximately the sRGB encoding
            ids[np.abs(img - want).sum(-1) < 24] = k
        return ids


def rgb_pass(builder, path):
    _png(builder.scene, path)
    bpy.ops.render.render(write_still=True)


def scene_rebuild(record, settings, grid, tmp):
    for u in range(grid):
        for v in range(grid):
            builder = scene_builder.SceneBuilder()          # resets the file: everything built anew
            builder.configure(settings)
            builder.build(record)
            builder.place_camera(record["rig"], u, v)
            rgb_pass(builder, os.path.join(tmp, f"rgb_{u}_{v}.png"))
            FlatPass(builder).render(os.path.join(tmp, f"mask_{u}_{v}.png"))


def scene_build_once(record, settings, grid, tmp, builder):
    builder.build(record)
    flat = FlatPass(builder)
    for u in range(grid):
        for v in range(grid):
            builder.place_camera(record["rig"], u, v)
            rgb_pass(builder, os.path.join(tmp, f"rgb_{u}_{v}.png"))
            flat.render(os.path.join(tmp, f"mask_{u}_{v}.png"))
    for mat in flat.flat:
        bpy.data.materials.remove(mat)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("rebuild", "build-once"), default="rebuild")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="Cycles device, as `clevr-remv generate --device`")
    ap.add_argument("--config", default=None, help="a clevr-remv config file (e.g. to turn the denoiser off)")
    args = ap.parse_args()
    overrides = {"rig.grid": args.grid}
    for key, val in (("render.width", args.width), ("render.height", args.height),
                     ("render.samples", args.samples)):
        if val is not None:
            overrides[key] = val
    cfg = config.load_config(args.config, overrides)
    settings = {**cfg["render"], "device": args.device}
    settings["denoise_prefilter"] = denoise.prefilter_of(settings)  # as generate applies it
    builder = None
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.scenes):
            t0 = time.perf_counter()
            record = layout.sample_scene(cfg, args.seed, index)
            if args.mode == "rebuild":
                scene_rebuild(record, settings, args.grid, tmp)
            else:
                if builder is None:
                    builder = scene_builder.SceneBuilder()
                    builder.configure(settings)
                scene_build_once(record, settings, args.grid, tmp, builder)
            print(f"scene {index}: {time.perf_counter() - t0:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
