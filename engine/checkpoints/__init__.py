"""Checkpoints: our format (``NAME.safetensors`` + ``NAME.json`` model card), safe loading,
listing, and importers for plain/torchvision, MadryLab ``robustness`` and RobustBench files.

Public API (docs/ENGINE_API.md): :func:`make_card`, :func:`save_checkpoint`, :func:`load`
(also ``engine.load``) -> :class:`LoadedCheckpoint`, :func:`list_checkpoints` ->
:class:`CheckpointInfo`, :func:`import_checkpoint`, :func:`save_imported`, :func:`checkpoints_root`.

The names are imported on first use (PEP 562), so ``import engine.checkpoints.card`` or
``engine.checkpoints.files`` (the typed card, finding a checkpoint's files, reading its card)
imports no torch; the loader, the store and the importers do.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the submodule that defines it
_EXPORTS = {
    # torch-free
    "CARD_FORMAT": "card", "REQUIRED_FIELDS": "card", "AttackRecord": "card", "Metrics": "card",
    "ModelCard": "card", "Recipe": "card",
    "WEIGHT_SUFFIXES": "files", "checkpoint_files": "files", "read_card_file": "files",
    "sha256_file": "files", "weights_sha256": "files",
    # torch
    "library_versions": "making", "make_card": "making", "merge_structure": "making", "model_fields": "making",
    "FORMATS": "importers", "detect_format": "importers", "import_checkpoint": "importers",
    "save_imported": "importers",
    "parse_torch": "safe_io", "parse_weights": "safe_io", "read_weights": "safe_io",
    "CheckpointInfo": "store", "LoadedCheckpoint": "store", "check_state_dict": "store",
    "checkpoint_paths": "store", "checkpoints_root": "store", "default_roots": "store",
    "list_checkpoints": "store", "load": "store", "read_card": "store", "save_checkpoint": "store",
    "update_card": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
