"""Errors a user can act on."""


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits with code 2."""


class LayoutError(UsageError):
    """No layout satisfies the constraints within the configured number of attempts."""


class WorkerError(RuntimeError):
    """A Blender worker failed (crashed, or reported an error)."""
