"""User-facing error types.

Every error a person can cause with bad input (a wrong checkpoint, a corrupt image, an epsilon out
of range, a missing dataset) is raised as a subclass of :class:`RobustScopeError`, so the CLI and
the dashboard can show its message plainly instead of a traceback.
"""
import os


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


class StorageError(RobustScopeError, OSError):
    """The environment refused a file operation: the disk is full, the folder is read-only or not
    ours, or it vanished. The message is one sentence: what failed — what to do. It is an OSError
    too, so code that handles a failed write as an OSError keeps doing so (``errno`` and
    ``filename`` are the original fault's)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: errno -> (what happened, what to do about it)
_STORAGE_FAULTS = {
    "ENOSPC": ("the disk is full", "free some space, or set ROBUSTSCOPE_RUNS to a folder on a larger disk"),
    "EDQUOT": ("the disk quota is used up", "free some space, or set ROBUSTSCOPE_RUNS to a folder outside the quota"),
    "EROFS": ("the file system is read-only", "set ROBUSTSCOPE_RUNS (or --out) to a writable folder"),
    "EACCES": ("permission denied", "make the folder writable for this user, or choose another folder"),
    "EPERM": ("the operation is not permitted", "make the folder writable for this user, or choose another folder"),
    "ENOENT": ("the folder vanished while it was in use", "check that it still exists (and its disk is mounted), then retry"),
    "ENOTDIR": ("a part of the path is not a folder", "check the path"),
    "EIO": ("the disk reported an input/output error", "check the disk, then retry"),
}


def storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError this module turns into a :class:`StorageError` (or one it
    made, which keeps the errno)."""
    import errno

    return isinstance(exc, OSError) and errno.errorcode.get(exc.errno or -1) in _STORAGE_FAULTS


def storage_error(exc: OSError, what: str) -> StorageError:
    """The :class:`StorageError` for ``exc`` raised while doing ``what`` (e.g. "cannot save the
    result in runs/results"): ``"<what>: <what happened> (<path>) — <what to do>"``."""
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    happened, advice = _STORAGE_FAULTS.get(name, (exc.strerror or str(exc), "check the folder, then retry"))
    path = str(getattr(exc, "filename", None) or "")
    # the failing path, unless ``what`` names it already or it is one of our hidden temp files
    where = f" ({path})" if path and path not in what and not os.path.basename(path).startswith(".") \
        and "/." not in path else ""
    error = StorageError(f"{what}: {happened}{where} — {advice}")
    error.errno, error.filename = exc.errno, getattr(exc, "filename", None)
    return error


class storage:
    """``with storage("cannot save the result"):`` turns a disk-full, read-only, permission or
    vanished-folder OSError inside the block into a one-sentence :class:`StorageError`; any other
    error passes unchanged."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> "storage":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and storage_fault(exc):  # an inner layer's StorageError too: the
            raise storage_error(exc, self.what) from exc   # outermost layer says what failed
        return False
