"""Errors a user can act on."""


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits with code 2."""


class NotADatasetError(UsageError, FileNotFoundError):
    """A folder without manifest.json: exit code 2 on the command line; a FileNotFoundError
    for the Python API."""


class BadManifestError(UsageError, ValueError):
    """A manifest that cannot be read or is not a clevr-remv manifest: exit code 2 on the
    command line; a ValueError for the Python API."""


class LayoutError(UsageError):
    """No layout satisfies the constraints within the configured number of attempts."""


class WorkerError(RuntimeError):
    """A Blender worker failed (crashed, or reported an error)."""


class CorruptShardError(OSError):
    """A shard that cannot be read or does not match its recorded checksum.  The message names
    the shard and what to run; the CLI prints it on one line and exits with code 1."""


class DiskFullError(OSError):
    """The disk ran out of space while writing; everything finished is kept (exit code 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (scancel, a time limit, preemption, kill): ends like Ctrl-C, but with exit code
    143 (128 + 15), as schedulers and shells expect; Ctrl-C stays 130."""
