"""Where a checkpoint's files are, their sha256 and its model card, without torch.

A checkpoint is ``NAME.safetensors`` (or ``NAME.pt`` ...) + ``NAME.json`` (the card). Resolving a
path, reading and validating the card and hashing the weights need no torch, so requests, result
keys and ``--json`` answers from the result store stay fast; the loader
(``engine.checkpoints.store``) uses the same functions.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engine.checkpoints.card import MAX_CARD_BYTES, ModelCard
from engine.errors import CheckpointError

CARD_SUFFIX = ".json"
SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
#: Weights-file suffixes a checkpoint stem resolves to, in the order they are tried.
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)
#: Largest weights file read (WRN-94-16, the largest RobustBench CIFAR model, is ~1.4 GB).
MAX_WEIGHTS_BYTES = 4 << 30
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------
# bytes


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_size(path: str | os.PathLike, limit: int = MAX_WEIGHTS_BYTES, label: str | None = None) -> int:
    """The size of a regular file, refusing missing, special or over-large files (``CheckpointError``
    naming ``label``, default the path: an upload's own name, not its temporary file)."""
    path = Path(path)
    label = label or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {label} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {label}: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise CheckpointError(f"{label} is not a regular file")
    if info.st_size > limit:
        raise CheckpointError(f"{label} is {info.st_size / 2**30:.1f} GiB; files over {limit / 2**30:.0f} GiB are not read")
    return info.st_size


def read_bytes(path: str | os.PathLike, limit: int = MAX_WEIGHTS_BYTES) -> bytes:
    """The file's bytes (at most ``limit``); a missing or unreadable file raises ``CheckpointError``."""
    file_size(path, limit)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------------------------
# paths


def with_suffix(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` (``a/b.c`` + ``.json`` -> ``a/b.c.json``: stems may hold dots)."""
    return stem.parent / (stem.name + suffix)


def checkpoint_stem(path: str | os.PathLike) -> Path:
    """The checkpoint stem: ``a/b/name`` for ``a/b/name.safetensors``, ``.json``, ``.pt`` or ``a/b/name``."""
    path = Path(path)
    if path.suffix.lower() in (CARD_SUFFIX, *WEIGHT_SUFFIXES):
        return path.with_suffix("")
    return path


def find_weights(stem: Path) -> Path | None:
    """The first weights file ``stem`` + one of :data:`WEIGHT_SUFFIXES` that exists, else None."""
    return next((p for p in (with_suffix(stem, s) for s in WEIGHT_SUFFIXES) if p.is_file()), None)


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights file, card file)`` of the checkpoint at ``path``: its stem, its weights file
    (``.safetensors``, ``.pt`` ...) or its ``.json`` card.

    Raises:
        CheckpointError: the card or the weights file does not exist.
    """
    given = Path(path)
    stem = checkpoint_stem(given)
    card = with_suffix(stem, CARD_SUFFIX)
    named = given.suffix.lower() in WEIGHT_SUFFIXES
    weights = given if named else find_weights(stem)
    if not card.is_file():
        raise CheckpointError(
            f"no model card {card}: a RobustScope checkpoint is NAME.safetensors + NAME.json; "
            "convert other files with `python -m engine import FILE --arch A --dataset D`"
        )
    if weights is None or not weights.is_file():
        expected = given if named else with_suffix(stem, SAFETENSORS_SUFFIX)
        raise CheckpointError(f"the weights file of {card} is missing (expected {expected})")
    return weights, card


# ---------------------------------------------------------------------------------------------
# the card and the weights' hash


def read_card_file(path: str | os.PathLike) -> ModelCard:
    """The validated model card in the card file ``path`` (for any checkpoint path:
    ``read_card_file(checkpoint_files(path)[1])``).

    Raises:
        CheckpointError: a missing, over-large (> ``MAX_CARD_BYTES``) or unreadable file, bad JSON,
            missing or out-of-bounds fields (named).
    """
    return ModelCard.from_json(read_bytes(path, limit=MAX_CARD_BYTES), str(path))


def weights_sha256(path: str | os.PathLike) -> str:
    """The sha256 of the checkpoint's weights file: the card's ``weights_sha256`` (which the loader
    checks against the file before using it), else the file hashed.

    Raises:
        CheckpointError: no card or no weights file at ``path``, or an invalid card.
    """
    weights, card = checkpoint_files(path)
    return read_card_file(card).weights_sha256 or sha256_file(weights)
