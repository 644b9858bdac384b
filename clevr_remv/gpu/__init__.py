"""NVIDIA GPUs: discovery, Cycles' kernels (built with ptxas where the wheel has none) and the
preparation of a run.  Imports ``render.system_libs`` (where Blender is) and ``progress``."""
