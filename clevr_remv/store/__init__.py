"""Storage: the one definition of the shard format, writing scenes and shards, the expressions
reader and writer, the manifest, and safe file operations inside an output folder.  Imports
``render.outputs`` (the registry the format is derived from), ``scene`` and ``language``."""
