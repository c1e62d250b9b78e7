"""RobustScope engine: a plain Python library (no Streamlit) for comparing standard and robust models.

Images are float tensors in [0, 1], shape (B, C, H, W); models normalise inside. The dashboard
(``app.py``), the CLI (``python -m engine``) and notebooks are all clients of this package.

``engine.load(path)`` loads a checkpoint and returns an object with ``.model`` and ``.card``.
"""
from engine.errors import (  # noqa: F401
    CheckpointError,
    DatasetUnavailableError,
    InvalidParameterError,
    RobustScopeError,
    UnsafeCheckpointError,
)

from engine.version import __version__  # noqa: F401,E402


def load(path, device="cpu", allow_pickle=False, bn_branch="main"):
    """Load a RobustScope checkpoint; see :func:`engine.checkpoints.load`."""
    from engine.checkpoints import load as _load

    return _load(path, device=device, allow_pickle=allow_pickle, bn_branch=bn_branch)
