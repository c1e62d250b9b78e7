"""Choosing the torch device. No module-level device: callers resolve one per call."""
from __future__ import annotations

import torch

from engine.errors import InvalidParameterError

#: Accepted device names (``"cuda:N"`` picks a specific GPU).
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``, checking that it exists here.

    Args:
        name: ``"auto"`` (or ``None``): CUDA when available, else CPU; ``"cpu"``; ``"cuda"`` or
            ``"cuda:N"``; ``"mps"``; or an existing ``torch.device``.

    Returns:
        The ``torch.device`` to use.

    Raises:
        InvalidParameterError: an unknown name, or a GPU that is not available on this machine.
    """
    if name is None:
        name = "auto"
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise InvalidParameterError(f"device must be a string such as 'auto' or 'cpu', got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not _mps_available():
            raise InvalidParameterError("device 'mps' requested but Apple MPS is not available; use 'cpu'")
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        return _resolve_cuda(key)
    raise InvalidParameterError(
        f"unknown device {name!r}; use one of {', '.join(DEVICE_NAMES)} or 'cuda:N'"
    )


def _resolve_cuda(key: str) -> torch.device:
    """Check a ``"cuda"``/``"cuda:N"`` name against the GPUs present."""
    if not torch.cuda.is_available():
        raise InvalidParameterError(
            f"device {key!r} requested but no CUDA GPU is available here; use 'cpu' or 'auto'"
        )
    if key == "cuda":
        return torch.device("cuda")
    index_text = key.split(":", 1)[1]
    if not index_text.isdigit():
        raise InvalidParameterError(f"bad CUDA device {key!r}; expected 'cuda:N' with N a GPU index")
    index = int(index_text)
    count = torch.cuda.device_count()
    if index >= count:
        raise InvalidParameterError(f"device {key!r} requested but only {count} CUDA GPU(s) exist")
    return torch.device("cuda", index)
