"""Builds a scene record in Blender, procedurally (no .blend assets), and renders views.

Runs only inside Blender: under the PyPI ``bpy`` module or ``blender --background``, on the
4.5 LTS and 5.x lines.  It makes no dataset decision: the scene record says what to build,
the request says what to render; this module only turns them into Blender data.

Kept between scenes, to keep memory flat and builds fast: the ground, the world, the camera,
the three lights, one mesh per shape and one material per (color, material).  Per scene only
the shape objects are created (as users of the cached meshes) and the rest is moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import bmesh
import bpy
import mathutils

from clevr_remv.scene import catalogue, lightfield

# Looks of the materials (Principled BSDF inputs that exist on every supported line), the
# ground and the world: all from the object catalogue (clevr_remv/catalogue.json).
MATERIAL_LOOK = catalogue.material_looks()
GROUND_ROUGHNESS = catalogue.load()["ground"]["roughness"]
WORLD_GRAY = catalogue.load()["world_gray"]
RENDER_POLICY = catalogue.render_policy()  # bounces, caustics, view transform (in the digest)
GROUND_SIZE = 400.0  # fills every view of the rig at any jitter


def srgb_to_linear(c: float) -> float:
    c = c / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _enable_nodes(idblock):
    # use_nodes is always on (and deprecated) from Blender 5.0; set it where it still matters.
    if hasattr(idblock, "use_nodes") and not getattr(idblock, "use_nodes"):
        try:
            idblock.use_nodes = True
        except AttributeError:
            pass


def _set_input(node, name, value):
    sock = node.inputs.get(name)
    if sock is not None:
        sock.default_value = value


def _smooth_rounded(bm, flat_tolerance=1e-3):
    """Smooth-shade the rounded parts; keep the large flat faces flat (no auto-smooth API
    needed, which changed between Blender lines)."""
    for face in bm.faces:
        n = face.normal
        axis_aligned = max(abs(n.x), abs(n.y), abs(n.z)) > 1.0 - flat_tolerance
        face.smooth = not axis_aligned


def _to_mesh(bm, name):
    me = bpy.data.meshes.new(name)
    bm.to_mesh(me)
    bm.free()
    return me


def _mesh_cube():
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=2.0)  # half side 1, scaled per object
    bmesh.ops.bevel(bm, geom=list(bm.edges), offset=0.12, segments=4, profile=0.5, affect="EDGES")
    bm.normal_update()
    _smooth_rounded(bm)
    return _to_mesh(bm, "shape_cube")


def _mesh_sphere():
    bm = bmesh.new()
    bmesh.ops.create_uvsphere(bm, u_segments=64, v_segments=32, radius=1.0)
    for face in bm.faces:
        face.smooth = True
    return _to_mesh(bm, "shape_sphere")


def _mesh_cylinder():
    bm = bmesh.new()
    bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=64, radius1=1.0,
                          radius2=1.0, depth=2.0)
    rim = [e for e in bm.edges if len(e.link_faces) == 2 and
           abs(e.link_faces[0].normal.z - e.link_faces[1].normal.z) > 0.5]
    bmesh.ops.bevel(bm, geom=rim, offset=0.08, segments=4, profile=0.5, affect="EDGES")
    bm.normal_update()
    for face in bm.faces:
        face.smooth = abs(face.normal.z) < 0.999
    return _to_mesh(bm, "shape_cylinder")


class MissingFeature(RuntimeError):
    """The Blender at hand lacks something the request needs; the driver decides what to do."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class SceneBuilder:
    """Owns the Blender scene of one worker process."""

    def __init__(self):
        self._reset_file()
        self.scene = bpy.context.scene
        makers = {"cube": _mesh_cube, "sphere": _mesh_sphere, "cylinder": _mesh_cylinder}
        missing = [s for s in catalogue.shapes() if s not in makers]
        if missing:
            raise MissingFeature("shape", f"no mesh for catalogue shape(s) {', '.join(missing)}")
        self.meshes = {name: makers[name]() for name in catalogue.shapes()}
        for me in self.meshes.values():
            me.materials.append(None)  # one slot, filled per object
        self.materials: dict[tuple, bpy.types.Material] = {}
        self.shape_objects: list = []
        self.current_key = None
        # The last GPU set_device: its key, its reply, and has_oidn_gpu_devices() for it
        # (None: not asked yet).  Every check render's configure (and the one after it)
        # would otherwise enumerate the devices again.
        self._gpu_key = None
        self._gpu_used: dict = {}
        self._oidn_gpu = None
        self._setup_static()

    # -- one-time set-up -------------------------------------------------------------
    @staticmethod
    def _reset_file():
        bpy.ops.wm.read_factory_settings(use_empty=True)

    def _setup_static(self):
        sc = self.scene
        sc.render.engine = "CYCLES"
        sc.render.resolution_percentage = 100
        sc.render.use_persistent_data = True  # keep Cycles' scene data between views
        sc.render.film_transparent = False
        sc.view_settings.view_transform = RENDER_POLICY["view_transform"]
        self.passes: set = set()
        self.set_passes(["use_pass_z", "use_pass_object_index"])
        settings = sc.render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5.x: pick the media type first
            settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        settings.exr_codec = "NONE"

        world = bpy.data.worlds.new("world")
        _enable_nodes(world)
        bg = world.node_tree.nodes.get("Background")
        if bg is not None:
            bg.inputs["Color"].default_value = (WORLD_GRAY, WORLD_GRAY, WORLD_GRAY, 1.0)
            bg.inputs["Strength"].default_value = 1.0
        sc.world = world

        h = GROUND_SIZE / 2
        me = bpy.data.meshes.new("ground")
        me.from_pydata([(-h, -h, 0), (h, -h, 0), (h, h, 0), (-h, h, 0)], [], [(0, 1, 2, 3)])
        self.ground = bpy.data.objects.new("ground", me)
        self.ground.pass_index = 0
        self.ground_material = self._principled("ground", (0.5, 0.5, 0.5), catalogue.load()["ground"]["material"])
        self.ground_material.node_tree.nodes["Principled BSDF"].inputs["Roughness"].default_value = GROUND_ROUGHNESS
        me.materials.append(self.ground_material)
        sc.collection.objects.link(self.ground)

        cam_data = bpy.data.cameras.new("camera")
        cam_data.sensor_fit = "HORIZONTAL"
        cam_data.clip_start = 0.05
        cam_data.clip_end = 2000.0
        self.camera = bpy.data.objects.new("camera", cam_data)
        sc.collection.objects.link(self.camera)
        sc.camera = self.camera

        self.lights = {}

    def _principled(self, name, linear_rgb, material):
        mat = bpy.data.materials.new(name)
        _enable_nodes(mat)
        node = mat.node_tree.nodes.get("Principled BSDF")
        _set_input(node, "Base Color", (*linear_rgb, 1.0))
        for key, value in MATERIAL_LOOK[material].items():
            _set_input(node, key, value)
        return mat

    def _material(self, rgb, material):
        key = (tuple(rgb), material)
        if key not in self.materials:
            lin = tuple(srgb_to_linear(c) for c in rgb)
            self.materials[key] = self._principled(f"{material}_{'_'.join(map(str, rgb))}", lin, material)
        return self.materials[key]

    # -- render settings ----------------------------------------------------------------
    def configure(self, settings: dict) -> dict:
        """Resolution, samples, denoising, bounces, seed and device. Returns the device used."""
        sc = self.scene
        cy = sc.cycles
        sc.render.resolution_x = int(settings["width"])
        sc.render.resolution_y = int(settings["height"])
        cy.samples = int(settings["samples"])
        cy.use_adaptive_sampling = settings["adaptive_threshold"] > 0
        if settings["adaptive_threshold"] > 0:
            cy.adaptive_threshold = float(settings["adaptive_threshold"])
        cy.use_denoising = bool(settings["denoise"])
        if settings["denoise"]:
            try:
                cy.denoiser = "OPENIMAGEDENOISE"
            except TypeError:  # a Blender build without OIDN (e.g. some distribution packages)
                raise MissingFeature("denoiser", "this Blender build has no OpenImageDenoise") from None
            # Blenders older than these properties keep their defaults (Accurate prefilter, High
            # quality), which are also ours.
            for prop, key, default in (("denoising_prefilter", "denoise_prefilter", "accurate"),
                                       ("denoising_quality", "denoise_quality", "high")):
                if hasattr(cy, prop):
                    setattr(cy, prop, str(settings.get(key) or default).upper())
        bounces = int(settings["max_bounces"])
        policy = RENDER_POLICY
        cy.max_bounces = bounces
        cy.diffuse_bounces = min(bounces, int(policy["diffuse_bounces_max"]))
        cy.glossy_bounces = bounces
        cy.transmission_bounces = int(policy["transmission_bounces"])
        cy.volume_bounces = int(policy["volume_bounces"])
        cy.transparent_max_bounces = int(policy["transparent_max_bounces"])
        cy.caustics_reflective = bool(policy["caustics_reflective"])
        cy.caustics_refractive = bool(policy["caustics_refractive"])
        cy.seed = int(settings.get("seed", 0))
        if settings.get("threads"):
            sc.render.threads_mode = "FIXED"
            sc.render.threads = int(settings["threads"])
        else:
            sc.render.threads_mode = "AUTO"
        cy.use_animated_seed = False
        if "passes" in settings:
            self.set_passes(settings["passes"])
        if settings.get("cycles_path"):
            self.set_cycles_path(settings["cycles_path"])
        used = self.set_device(settings.get("device", "cpu"), settings.get("gpu_index"))
        # Denoise where the render runs: OIDN on the GPU is ~4x faster per scene on an H100
        # (Blender's default is the CPU).  The driver decides; an absent property is ignored.
        if hasattr(cy, "denoising_use_gpu"):
            cy.denoising_use_gpu = bool(settings.get("denoising_use_gpu", False))
        used["denoiser"] = self.denoiser_device()
        return used

    def set_cycles_path(self, path: str) -> None:
        """Point Cycles at another copy of its add-on folder (kernels built by the driver for
        a read-only Blender install): the folder it looks up ``lib/kernel_*`` in."""
        if getattr(self, "_cycles_path", None) == path:
            return
        import _cycles

        user = os.path.dirname(os.path.abspath(bpy.utils.user_resource("CONFIG", path="")))
        _cycles.init(path, user, bpy.app.background)
        self._cycles_path = path

    def denoiser_device(self) -> str:
        """Where Cycles will denoise, as Blender sees it: 'gpu', 'cpu' or 'off'."""
        cy = self.scene.cycles
        if not cy.use_denoising:
            return "off"
        if cy.device != "GPU" or not getattr(cy, "denoising_use_gpu", False):
            return "cpu"
        if self._oidn_gpu is None:  # depends on the GPU devices in use: reset by set_device
            try:
                prefs = bpy.context.preferences.addons["cycles"].preferences
                self._oidn_gpu = bool(prefs.has_oidn_gpu_devices())
            except (KeyError, AttributeError):
                self._oidn_gpu = False
        return "gpu" if self._oidn_gpu else "cpu"

    def set_passes(self, flags) -> None:
        """Enable exactly these view-layer passes (flags such as ``use_pass_normal``); the
        driver's registry of outputs (clevr_remv/outputs.py) decides which."""
        vl = self.scene.view_layers[0]

        def owner(flag):  # "cycles.denoising_store_passes" lives on the layer's Cycles settings
            return (getattr(vl, "cycles", None), flag[7:]) if flag.startswith("cycles.") else (vl, flag)

        for flag in self.passes - set(flags):
            setattr(*owner(flag), False)
        for flag in flags:
            ob, name = owner(flag)
            if ob is None or not hasattr(ob, name):
                raise MissingFeature("pass", f"this Blender has no view-layer pass {flag!r}")
            setattr(ob, name, True)
        self.passes = set(flags)

    def set_device(self, device: str, gpu_index=None) -> dict:
        """Use ``device`` ("cpu" or a backend the driver chose from :func:`available_devices`;
        the driver resolves "auto"); LookupError when this Blender does not have it."""
        sc = self.scene
        if device == "cpu":
            sc.cycles.device = "CPU"
            return {"device": "cpu", "names": ["CPU"]}
        key = (device, gpu_index, getattr(self, "_cycles_path", None))
        if key == self._gpu_key:  # the preferences are still as that call left them
            sc.cycles.device = "GPU"
            return {**self._gpu_used, "names": list(self._gpu_used["names"])}
        self._gpu_key = None  # until the preferences below are all set
        backend = device.upper()
        if not available_devices([device]).get(device.lower()):
            raise LookupError(device)
        prefs = bpy.context.preferences.addons["cycles"].preferences
        prefs.compute_device_type = backend
        gpus = [d for d in prefs.get_devices_for_type(backend) if d.type != "CPU"]
        for d in prefs.devices:
            d.use = False
        for i, d in enumerate(gpus):
            d.use = gpu_index is None or i == gpu_index
        sc.cycles.device = "GPU"
        used = {"device": backend.lower(), "names": [d.name for d in gpus if d.use]}
        self._gpu_key, self._gpu_used, self._oidn_gpu = key, used, None
        return {**used, "names": list(used["names"])}

    # -- scene ----------------------------------------------------------------------------
    def build(self, record: dict) -> bool:
        """Make the Blender scene match ``record``; returns False when it already did.  The
        cache key is what is built (objects, lights, ground), hashed, not the scene's index."""
        built = {k: record.get(k) for k in ("objects", "lights", "ground")}
        key = hashlib.sha256(json.dumps(built, sort_keys=True).encode("utf-8")).hexdigest()
        if key == self.current_key:
            return False
        for ob in self.shape_objects:
            bpy.data.objects.remove(ob, do_unlink=True)
        self.shape_objects = []
        for obj in record["objects"]:
            ob = bpy.data.objects.new(f"object_{obj['id']}", self.meshes[obj["shape"]])
            r = obj["radius"]
            s = catalogue.centre_height(obj["shape"], r)  # meshes span [-1, 1]: scale = centre height
            ob.location = obj["position"]
            ob.rotation_euler = (0.0, 0.0, obj["yaw"])
            ob.scale = (s, s, s)
            ob.pass_index = int(obj["id"])
            self.scene.collection.objects.link(ob)
            # The mesh is shared; the material is linked to the object's own slot.
            ob.material_slots[0].link = "OBJECT"
            ob.material_slots[0].material = self._material(obj["rgb"], obj["material"])
            self.shape_objects.append(ob)
        gray = tuple(srgb_to_linear(c) for c in record.get("ground", {}).get("rgb", (128, 128, 128)))
        self.ground_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*gray, 1.0)
        for light in record["lights"]:
            self._light(light)
        self.current_key = key
        return True

    def mesh_geometry(self) -> dict:
        """{shape: {"vertices": [[x, y, z], ...], "faces": [[i, j, k, ...], ...]}}: each shape's
        mesh in its own frame (it spans [-1, 1]; an object scales it by its centre height, turns
        it by its yaw about z and moves it to its position).  Geometry only: the driver decides
        what to do with it."""
        return {name: {"vertices": [list(v.co) for v in me.vertices],
                       "faces": [list(p.vertices) for p in me.polygons]}
                for name, me in self.meshes.items()}

    def _light(self, light: dict):
        ob = self.lights.get(light["name"])
        if ob is None:
            data = bpy.data.lights.new(light["name"], "AREA")
            ob = bpy.data.objects.new(light["name"], data)
            self.scene.collection.objects.link(ob)
            self.lights[light["name"]] = ob
        ob.data.shape = "SQUARE"
        ob.data.size = float(light["size"])
        ob.data.energy = float(light["energy"])
        pos = mathutils.Vector(light["position"])
        ob.location = pos
        direction = mathutils.Vector(light.get("target", (0, 0, 0))) - pos
        ob.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()

    def place_camera(self, rig: dict, u: int, v: int):
        cam = lightfield.blender_camera(rig, u, v)
        data = self.camera.data
        data.lens = cam["lens_mm"]
        data.sensor_width = cam["sensor_width_mm"]
        data.shift_x = cam["shift_x"]
        data.shift_y = cam["shift_y"]
        m = mathutils.Matrix(cam["rotation_matrix"]).to_4x4()
        m.translation = mathutils.Vector(cam["location"])
        self.camera.matrix_world = m

    def render_view(self, rig: dict, u: int, v: int, path: str) -> float:
        self.place_camera(rig, u, v)
        self.scene.render.filepath = path
        t0 = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        return time.perf_counter() - t0


def available_devices(backends) -> dict:
    """Compute devices this Blender can use among ``backends`` (the driver's names, lower case,
    in its order of preference), by backend; the CPU always."""
    found = {"cpu": ["CPU"]}
    try:
        prefs = bpy.context.preferences.addons["cycles"].preferences
    except KeyError:
        return found
    try:
        prefs.refresh_devices()
    except Exception:  # noqa: BLE001 - older API, or no driver at all
        pass
    for backend in (b.upper() for b in backends if b.lower() != "cpu"):
        try:
            devices = prefs.get_devices_for_type(backend)
        except Exception:  # noqa: BLE001 - backend not compiled in / no driver
            continue
        names = [d.name for d in devices if d.type == backend]
        if names:
            found[backend.lower()] = names
    return found
