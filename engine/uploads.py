"""Add a user's checkpoint file to the uploads folder, validated and converted to our format."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from engine import checkpoints as ckpt
from engine.errors import CheckpointError, InvalidParameterError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
MAX_UPLOAD_BYTES = 1 << 30


def uploads_dir() -> Path:
    """Where uploaded checkpoints go: the ``uploads/`` folder of the checkpoints root."""
    return ckpt.checkpoints_root() / "uploads"


def safe_name(name: str) -> str:
    """A file-system-safe checkpoint name (letters, digits, ``-``, ``_``, ``.``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip("-.")
    if not cleaned:
        raise InvalidParameterError(f"{name!r} does not give a usable checkpoint name")
    return cleaned


def _check_upload(weights_name: str, weights: bytes) -> None:
    """Refuse unknown file types, empty files and files over the size limit."""
    if not weights_name.lower().endswith(WEIGHT_SUFFIXES):
        raise InvalidParameterError(
            f"{weights_name!r} is not a weights file; expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not weights:
        raise InvalidParameterError(f"{weights_name!r} is empty")
    if len(weights) > MAX_UPLOAD_BYTES:
        raise InvalidParameterError(f"{weights_name!r} is larger than {MAX_UPLOAD_BYTES >> 20} MiB")


def _destination(name: str, dest_dir: Path) -> Path:
    """The stem to save under, refusing to overwrite an existing checkpoint."""
    stem = dest_dir / safe_name(name)
    if stem.with_suffix(".json").exists() or stem.with_suffix(".safetensors").exists():
        raise CheckpointError(f"a checkpoint named {stem.name!r} already exists in {dest_dir}; choose another name")
    return stem


def _load_with_card(folder: Path, weights_name: str, weights: bytes, card: bytes):
    """Validate a RobustScope upload (safetensors + JSON card) by loading it."""
    if not weights_name.lower().endswith(".safetensors"):
        raise InvalidParameterError("a model card goes with a .safetensors weights file")
    try:
        json.loads(card)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the model card is not valid JSON: {exc}") from exc
    (folder / "upload.safetensors").write_bytes(weights)
    (folder / "upload.json").write_bytes(card)
    return ckpt.load(folder / "upload.safetensors")


def install_upload(
    weights_name: str,
    weights: bytes,
    card: bytes | None = None,
    *,
    name: str | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    fmt: str = "auto",
    arch_kwargs: dict | None = None,
    allow_pickle: bool = False,
    dest_dir: Path | None = None,
) -> Path:
    """Validate an uploaded checkpoint and save it, in our format, into the uploads folder.

    With ``card`` (JSON bytes) the weights must be our safetensors format; without it, ``arch``
    and ``dataset`` say how to import a foreign state dict (``fmt``: see ``import_checkpoint``).
    Nothing is written unless the checkpoint loads; existing checkpoints are never overwritten.
    Returns the saved checkpoint's path.
    """
    _check_upload(weights_name, weights)
    dest_dir = Path(dest_dir) if dest_dir is not None else uploads_dir()
    stem = _destination(name or weights_name, dest_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if card is not None:
            loaded = _load_with_card(folder, weights_name, weights, card)
        else:
            if not arch or not dataset:
                raise InvalidParameterError("without a model card, choose the architecture and the dataset")
            src = folder / Path(weights_name).name
            src.write_bytes(weights)
            loaded = ckpt.import_checkpoint(
                src, arch, dataset, fmt=fmt, allow_pickle=allow_pickle, arch_kwargs=arch_kwargs
            )
        card_dict = dict(loaded.card, name=stem.name)
        dest_dir.mkdir(parents=True, exist_ok=True)
        return ckpt.save_checkpoint(loaded.model, card_dict, stem)
