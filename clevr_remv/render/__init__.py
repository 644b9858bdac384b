"""Rendering, from the driver's side: the worker protocol and the Blender worker client, EXR
reading, the registry of per-view outputs (each with its storage codec), denoising and the
device policy.  Imports ``scene`` and ``config``; never imports bpy."""
