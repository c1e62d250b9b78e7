"""User-facing error types.

Every error a person can cause with bad input (a wrong checkpoint, a corrupt image, an epsilon out
of range, a missing dataset) is raised as a subclass of :class:`RobustScopeError`, so the CLI and
the dashboard can show its message plainly instead of a traceback.
"""


class RobustScopeError(Exception):
    """Base class for errors caused by user input or the environment, with a readable message."""


class InvalidParameterError(RobustScopeError, ValueError):
    """A parameter is out of range or of the wrong kind (e.g. epsilon < 0, zero steps)."""


class DatasetUnavailableError(RobustScopeError):
    """A dataset's files are missing and could not be downloaded."""


class CheckpointError(RobustScopeError):
    """A checkpoint cannot be loaded: corrupt file, card/weights mismatch, unknown format."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint needs arbitrary unpickling and the user did not opt in."""
