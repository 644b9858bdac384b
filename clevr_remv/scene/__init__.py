"""The scene: what a CLEVR-REMV scene is and how the rig sees it (catalogue, layout, light-field
geometry, seeding, visible pixels).  Pure Python with numpy; imports nothing else of clevr_remv
but ``errors``, and is the only part the Blender side (``blender_scripts/``) imports."""
