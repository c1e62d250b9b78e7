"""Checkpoints: our format (``NAME.safetensors`` + ``NAME.json`` model card), safe loading,
listing, and importers for plain/torchvision, MadryLab ``robustness`` and RobustBench files.

Public API (docs/ENGINE_API.md): :func:`make_card`, :func:`save_checkpoint`, :func:`load`
(also ``engine.load``) -> :class:`LoadedCheckpoint`, :func:`list_checkpoints` ->
:class:`CheckpointInfo`, :func:`import_checkpoint`, :func:`save_imported`, :func:`checkpoints_root`.
"""
from engine.checkpoints.card import (  # noqa: F401
    CARD_FORMAT,
    REQUIRED_FIELDS,
    AttackRecord,
    Metrics,
    ModelCard,
    Recipe,
    library_versions,
    make_card,
)
from engine.checkpoints.importers import FORMATS, detect_format, import_checkpoint, save_imported  # noqa: F401
from engine.checkpoints.safe_io import parse_torch, parse_weights, read_weights  # noqa: F401
from engine.checkpoints.store import (  # noqa: F401
    CheckpointInfo,
    LoadedCheckpoint,
    check_state_dict,
    checkpoint_paths,
    checkpoints_root,
    default_roots,
    list_checkpoints,
    load,
    read_card,
    save_checkpoint,
    update_card,
)
