"""Reading weight files without running code from them.

``.safetensors`` files hold only tensors. PyTorch files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``)
are pickles: unpickling may call any Python function named in the file (a checkpoint can delete
files or open a shell while it "loads"). They are read with ``torch.load(weights_only=True)``,
whose restricted unpickler accepts only tensors and plain containers and refuses everything else
*before* calling it. A file that needs more is refused with :class:`UnsafeCheckpointError`, unless
the caller explicitly passes ``allow_pickle=True`` (CLI ``--allow-pickle``, the dashboard's
"Allow arbitrary unpickling" checkbox), which uses ``torch.load(weights_only=False)``.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError, UnsafeCheckpointError

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path) -> bytes:
    """The file's bytes; a missing or unreadable file raises ``CheckpointError``."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from exc


def parse_safetensors(data: bytes, where: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes (on CPU); corrupt/truncated raises ``CheckpointError``."""
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError (and others) for bad bytes
        raise CheckpointError(f"{where} is not a valid safetensors file (corrupt or truncated?): {exc}") from exc


def _unsafe_message(where: Path, exc: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    detail = f" (it references {found.group(1)})" if found else ""
    return (
        f"{where} cannot be loaded safely: it contains pickled Python objects{detail}, and unpickling "
        "them could run arbitrary code from the file. Nothing in it was executed. If you trust where "
        "the file comes from, load it with pickle explicitly: the CLI flag --allow-pickle, the "
        "dashboard's 'Allow arbitrary unpickling' checkbox, or allow_pickle=True in Python. "
        "Better: convert it once, in a trusted environment, to a plain state dict or to our format."
    )


def parse_torch(data: bytes, where: Path, allow_pickle: bool = False) -> Any:
    """Unpickle a PyTorch file's bytes, tensors only unless ``allow_pickle``.

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling and ``allow_pickle`` is False
            (nothing from the file ran).
        CheckpointError: the file is corrupt, truncated or not a PyTorch file.
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{where} is not a readable PyTorch file (corrupt?): {exc}") from exc
        if not allow_pickle:
            raise UnsafeCheckpointError(_unsafe_message(where, exc)) from None
    except Exception as exc:  # torch raises RuntimeError/KeyError/EOFError... for damaged files
        raise CheckpointError(f"{where} is not a readable PyTorch file (corrupt or truncated?): {exc}") from exc
    return _parse_torch_unsafe(data, where)


def _parse_torch_unsafe(data: bytes, where: Path) -> Any:
    """``torch.load(weights_only=False)``: runs whatever the pickle says. Only after explicit opt-in."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # anything the pickle's code raised
        raise CheckpointError(f"{where} could not be unpickled even with allow_pickle: {exc}") from exc


def read_weights(path: Path, allow_pickle: bool = False) -> tuple[Any, str]:
    """Read a weights file: ``(contents, sha256 of the file)``.

    ``.safetensors`` gives a dict of tensors; any other suffix is read as a PyTorch file with
    :func:`parse_torch` (its contents may be a state dict or a dict holding one).
    """
    path = Path(path)
    data = read_bytes(path)
    digest = sha256_bytes(data)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return parse_safetensors(data, path), digest
    return parse_torch(data, path, allow_pickle=allow_pickle), digest
