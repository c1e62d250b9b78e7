"""Our checkpoint format: ``NAME.safetensors`` (weights) + ``NAME.json`` (model card).

Saving is atomic: both files are first written to temporary files in the target folder, then
moved into place with ``os.replace``, so a crash or error mid-save never leaves a half-written
checkpoint and never damages an existing one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from engine.checkpoints.card import check_card, merge_structure
from engine.checkpoints.safe_io import (
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    read_bytes,
    read_weights,
    sha256_bytes,
)
from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError

CARD_SUFFIX = ".json"
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES)
CHECKPOINTS_ENV = "ROBUSTSCOPE_CHECKPOINTS"
UPLOADS_FOLDER = "uploads"
_MAX_NAMES_IN_ERROR = 8


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint.

    Attributes:
        model: the ``engine.models.Classifier`` in eval mode, taking (B, C, H, W) images in [0, 1].
        card: the model card (dict).
        path: the weights file.
        sha256: hex sha256 of the weights file's bytes.
    """

    model: nn.Module
    card: dict
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        """The card's name, else the file stem."""
        return self.card.get("name") or self.path.stem

    @property
    def card_path(self) -> Path:
        """The model card file beside the weights."""
        return self.path.with_suffix(CARD_SUFFIX)


class CheckpointInfo(NamedTuple):
    """One entry of :func:`list_checkpoints`.

    Attributes:
        path: the weights file (or the card, when the weights are missing).
        name: the card's name, else the file stem.
        card: the model card dict, or None when it could not be read.
        error: why this checkpoint cannot be loaded, or None when it looks fine.
    """

    path: Path
    name: str
    card: dict | None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# paths


def checkpoints_root() -> Path:
    """``$ROBUSTSCOPE_CHECKPOINTS``, else ``./checkpoints``."""
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env) if env else Path("checkpoints")


def checkpoint_stem(path: Path) -> Path:
    """The checkpoint stem: ``a/b/name`` for ``a/b/name.safetensors``, ``.json``, ``.pt`` or ``a/b/name``."""
    if path.suffix.lower() in (CARD_SUFFIX, *WEIGHT_SUFFIXES):
        return path.with_suffix("")
    return path


def _with_suffix(stem: Path, suffix: str) -> Path:
    return stem.parent / (stem.name + suffix)


def _find_weights(stem: Path) -> Path | None:
    return next((p for p in (_with_suffix(stem, s) for s in WEIGHT_SUFFIXES) if p.is_file()), None)


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights file, card file)`` for a stem, a ``.safetensors`` (or ``.pt``) or a ``.json`` path.

    Raises:
        CheckpointError: the card or the weights file does not exist.
    """
    given = Path(path)
    stem = checkpoint_stem(given)
    card = _with_suffix(stem, CARD_SUFFIX)
    weights = given if given.suffix.lower() in WEIGHT_SUFFIXES else _find_weights(stem)
    if not card.is_file():
        raise CheckpointError(
            f"no model card {card}: a RobustScope checkpoint is NAME.safetensors + NAME.json; "
            "convert other files with `python -m engine import FILE --arch A --dataset D`"
        )
    if weights is None or not weights.is_file():
        raise CheckpointError(f"the weights file of {card} is missing (expected {_with_suffix(stem, SAFETENSORS_SUFFIX)})")
    return weights, card


# ---------------------------------------------------------------------------------------------
# save


def _card_text(card: Mapping[str, Any]) -> str:
    try:
        return json.dumps(card, indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"the model card is not JSON-serialisable: {exc}") from exc


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


def _write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt", "producer": "robustscope"})


def _write_text(text: str, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (safetensors refuses sharing)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(model: nn.Module, card: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save ``model`` as ``PATH.safetensors`` + ``PATH.json``, atomically.

    Args:
        model: an ``engine.models.Classifier``; its structure fields (arch, arch_kwargs,
            num_classes, input_shape, mean, std, dual_bn) are written into the card.
        card: the model card (see ``make_card``); ``name`` defaults to the file stem and
            ``weights_sha256`` is set here.
        path: the stem, or a ``.safetensors``/``.json`` path; parent folders are created.

    Returns:
        The path of the ``.safetensors`` file.

    Raises:
        InvalidParameterError: the card disagrees with the model or is not JSON-serialisable.
    """
    stem = checkpoint_stem(Path(path))
    weights_path, card_path = _with_suffix(stem, SAFETENSORS_SUFFIX), _with_suffix(stem, CARD_SUFFIX)
    full_card = merge_structure(dict(card), model)
    full_card["name"] = full_card.get("name") or stem.name
    _card_text(full_card)  # fail on a bad card before touching the disk
    stem.parent.mkdir(parents=True, exist_ok=True)
    temps = [_temp_path(weights_path), _temp_path(card_path)]
    try:
        _write_weights(_cpu_state(model), temps[0])
        full_card["weights_sha256"] = sha256_bytes(temps[0].read_bytes())
        _write_text(_card_text(full_card), temps[1])
        os.replace(temps[0], weights_path)
        os.replace(temps[1], card_path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return weights_path


def update_card(path: str | os.PathLike, updates: Mapping[str, Any]) -> Path:
    """Merge ``updates`` into a checkpoint's card (top-level keys replaced), atomically.

    The weights are not touched; the card is written to a temp file and renamed over the old one,
    so a crash leaves either the old or the new card, never a torn one.

    Returns:
        The card's path.
    """
    _, card_path = checkpoint_paths(path)
    card = {**read_card(card_path), **dict(updates)}
    temp = _temp_path(card_path)
    try:
        _write_text(_card_text(card), temp)
        os.replace(temp, card_path)
    finally:
        temp.unlink(missing_ok=True)
    return card_path


# ---------------------------------------------------------------------------------------------
# load


def read_card(card_path: Path) -> dict:
    """Parse a model card file; bad JSON or missing fields raise ``CheckpointError``."""
    try:
        card = json.loads(read_bytes(card_path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"model card {card_path} is not valid JSON: {exc}") from exc
    return check_card(card, str(card_path))


def extract_tensors(contents: Any, where: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded weights file (a state dict), refusing anything else."""
    if isinstance(contents, Mapping) and contents and all(isinstance(v, torch.Tensor) for v in contents.values()):
        return dict(contents)
    raise CheckpointError(f"{where} does not hold a plain state dict (name -> tensor)")


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _MAX_NAMES_IN_ERROR} more)" if len(keys) > _MAX_NAMES_IN_ERROR else ""
    return ", ".join(keys[:_MAX_NAMES_IN_ERROR]) + more


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise ``CheckpointError`` naming missing/unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        more = f" (+{len(shapes) - _MAX_NAMES_IN_ERROR} more)" if len(shapes) > _MAX_NAMES_IN_ERROR else ""
        problems.append("shape mismatches: " + "; ".join(shapes[:_MAX_NAMES_IN_ERROR]) + more)
    if problems:
        raise CheckpointError(
            f"the weights in {where} do not match the architecture "
            f"({getattr(model, 'arch', type(model).__name__)}, options {getattr(model, 'arch_kwargs', {})}): "
            + "; ".join(problems)
        )


def _check_normalisation(card: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: Path) -> None:
    for key in ("mean", "std"):
        stored = state.get(f"normalize.{key}")
        if stored is None:
            continue
        values = stored.flatten().tolist()
        if len(values) != len(card[key]) or not all(math.isclose(a, float(b), rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(values, card[key])):
            raise CheckpointError(f"model card {where} says {key}={card[key]} but the weights hold {key}={values}")


def build_from_card(card: Mapping[str, Any], where: Path) -> nn.Module:
    """A fresh Classifier with the structure the card describes."""
    from engine.models import build_model

    try:
        return build_model(
            card["arch"], card["num_classes"], card["input_shape"], card["mean"], card["std"],
            dual_bn=bool(card.get("dual_bn", False)), **dict(card.get("arch_kwargs") or {}),
        )
    except (InvalidParameterError, TypeError) as exc:
        raise CheckpointError(f"model card {where} describes a model that cannot be built: {exc}") from exc


def _resolve(device) -> torch.device:
    from engine.device import resolve_device

    return resolve_device(device)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", allow_pickle: bool = False) -> LoadedCheckpoint:
    """Load a RobustScope checkpoint.

    Args:
        path: the stem, the ``.safetensors`` (or ``.pt``) weights file, or the ``.json`` card.
        device: "cpu", "cuda", "auto", ... (see ``engine.device.resolve_device``).
        allow_pickle: only for ``.pt`` weights that need arbitrary unpickling (DANGEROUS, see
            ``engine.checkpoints.safe_io``); safetensors never need it.

    Returns:
        :class:`LoadedCheckpoint` with the model in eval mode on ``device``.

    Raises:
        CheckpointError: missing/corrupt/truncated files, a card that does not describe the
            weights (missing/unexpected keys and shape mismatches are named), a changed weights file.
        UnsafeCheckpointError: ``.pt`` weights that need unpickling, without ``allow_pickle``.
    """
    target = _resolve(device)
    weights_path, card_path = checkpoint_paths(path)
    card = read_card(card_path)
    contents, digest = read_weights(weights_path, allow_pickle=allow_pickle)
    recorded = card.get("weights_sha256")
    if recorded and recorded != digest:
        raise CheckpointError(
            f"{weights_path} is not the file its card {card_path.name} was written for "
            "(sha256 differs): the weights were changed or damaged"
        )
    state = extract_tensors(contents, weights_path)
    model = build_from_card(card, card_path)
    check_state_dict(model, state, str(weights_path))
    _check_normalisation(card, state, card_path)
    model.load_state_dict(state)
    model.to(target).eval()
    return LoadedCheckpoint(model=model, card=card, path=weights_path, sha256=digest)


# ---------------------------------------------------------------------------------------------
# list


def default_roots() -> list[Path]:
    """The checkpoints root and its ``uploads/`` folder."""
    root = checkpoints_root()
    return [root, root / UPLOADS_FOLDER]


def _info_for_card(card_path: Path) -> CheckpointInfo:
    stem = checkpoint_stem(card_path)
    weights = _find_weights(stem)
    try:
        card = read_card(card_path)
    except RobustScopeError as exc:
        return CheckpointInfo(weights or card_path, stem.name, None, str(exc))
    name = str(card.get("name") or stem.name)
    if weights is None:
        return CheckpointInfo(card_path, name, card, f"weights file missing (expected {_with_suffix(stem, SAFETENSORS_SUFFIX).name})")
    return CheckpointInfo(weights, name, card, None)


def _orphan_weights(root: Path) -> list[CheckpointInfo]:
    infos = []
    for weights in sorted(root.iterdir()):
        if weights.suffix.lower() in WEIGHT_SUFFIXES and not _with_suffix(checkpoint_stem(weights), CARD_SUFFIX).exists():
            infos.append(CheckpointInfo(
                weights, weights.stem, None,
                "no model card beside it; import it with `python -m engine import FILE --arch A --dataset D`",
            ))
    return infos


def list_checkpoints(roots: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> list[CheckpointInfo]:
    """Every checkpoint found in ``roots`` (not recursive), without loading weights.

    Args:
        roots: a folder or folders; default ``$ROBUSTSCOPE_CHECKPOINTS`` (else ``./checkpoints``)
            and its ``uploads/`` folder. Missing folders are skipped.

    Returns:
        ``list[CheckpointInfo]`` ordered by folder then file name. Broken entries (unreadable card,
        missing weights, weights without a card) are included with ``error`` set, never raised.
    """
    if roots is None:
        folders = default_roots()
    elif isinstance(roots, (str, os.PathLike)):
        folders = [Path(roots)]
    else:
        folders = [Path(r) for r in roots]
    infos: list[CheckpointInfo] = []
    for folder in dict.fromkeys(f.resolve() for f in folders):
        if not folder.is_dir():
            continue
        infos += [_info_for_card(card) for card in sorted(folder.glob("*" + CARD_SUFFIX))]
        infos += _orphan_weights(folder)
    return infos
