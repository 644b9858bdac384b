"""clevr-remv: generator for the CLEVR-REMV multi-view referring expression dataset.

Kept import-light on purpose: `clevr_remv.lightfield` is also imported by the Blender-side
worker, which may run under a standalone Blender whose Python has only numpy.
"""

__version__ = "0.1.0"

# Version of the shard format (docs/format.md). Bump on any change to a fixed point.
# 1.1: per-view surface normals (``normals``).
# 1.2: per-output storage codecs (shard attribute ``codecs``); depth float16 by default.
# 1.3: expressions with several targets or none and chains of relations (``refexps/targets``,
# ``refexps/anchors``, variable-length; ``refexps/object`` -1 for none).
# 1.4: amodal masks per object and view (``amodal``, codec ``bits``) and ``amodal_pixels``.
FORMAT_VERSION = "1.4"
